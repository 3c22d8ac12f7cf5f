//! stdin, stdout and stderr: reading across calls, capture, caps and the truncation flags.

use distributivecom_wasi::{ChunkInput, Errno, OutputLimits, filetype, rights};

use crate::harness::Guest;

#[test]
fn stdin_is_read_across_calls_then_reports_eof() {
    let mut guest = Guest::new(ChunkInput { stdin: b"hello, world".to_vec(), ..ChunkInput::default() });
    assert_eq!(guest.read(0, 5), Ok(b"hello".to_vec()));
    // Two iovecs in one call are filled in order.
    let (first, second) = (guest.alloc(2), guest.alloc(100));
    let iovecs = guest.put_iovecs(&[(first, 2), (second, 100)]);
    let nread = guest.alloc(4);
    guest.call("fd_read", &[0, u64::from(iovecs), 2, u64::from(nread)]).expect("read");
    assert_eq!(guest.u32_at(nread), 7);
    assert_eq!(guest.bytes_at(first, 2), b", ");
    assert_eq!(guest.bytes_at(second, 5), b"world");
    assert_eq!(guest.read(0, 10), Ok(Vec::new()), "end of file reads 0 bytes");
    assert_eq!(guest.read(0, 10), Ok(Vec::new()));
}

#[test]
fn stdin_cannot_be_written_or_seeked_and_stdout_cannot_be_read() {
    let mut guest = Guest::new(ChunkInput { stdin: b"abc".to_vec(), ..ChunkInput::default() });
    assert_eq!(guest.write(0, b"x"), Err(Errno::Badf));
    assert_eq!(guest.read(1, 4), Err(Errno::Badf));
    assert_eq!(guest.seek(0, 1, 0), Err(Errno::Spipe));
    assert_eq!(guest.tell(1), Err(Errno::Spipe));
    assert_eq!(guest.pread(0, 1, 0), Err(Errno::Spipe));
    assert_eq!(guest.pwrite(1, b"x", 0), Err(Errno::Spipe));
    assert_eq!(guest.read(9, 4), Err(Errno::Badf));
    assert_eq!(guest.read(0, 3), Ok(b"abc".to_vec()), "failed calls consumed nothing");
}

#[test]
fn stdout_and_stderr_are_captured_separately() {
    let mut guest = Guest::new(ChunkInput::default());
    assert_eq!(guest.write(1, b"out 1\n"), Ok(6));
    assert_eq!(guest.write(2, b"err\n"), Ok(4));
    // A gathered write with an empty iovec in the middle.
    let (a, b) = (guest.put(b"out "), guest.put(b"2\n"));
    let iovecs = guest.put_iovecs(&[(a, 4), (a, 0), (b, 2)]);
    let nwritten = guest.alloc(4);
    guest.call("fd_write", &[1, u64::from(iovecs), 3, u64::from(nwritten)]).expect("write");
    assert_eq!(guest.u32_at(nwritten), 6);
    let outputs = guest.finish();
    assert_eq!(outputs.stdout, b"out 1\nout 2\n");
    assert_eq!(outputs.stderr, b"err\n");
    assert!(!outputs.stdout_truncated && !outputs.stderr_truncated);
    assert!(outputs.files.is_empty());
}

#[test]
fn output_beyond_the_cap_is_dropped_but_reported_as_written() {
    let limits = OutputLimits { max_stdout_bytes: 10, max_stderr_bytes: 3, ..OutputLimits::default() };
    let mut guest = Guest::new(ChunkInput { limits, ..ChunkInput::default() });
    assert_eq!(guest.write(1, b"0123456"), Ok(7));
    assert_eq!(guest.write(1, b"789abc"), Ok(6), "the full length counts as written");
    assert_eq!(guest.write(1, b"more"), Ok(4));
    assert_eq!(guest.write(2, b"abc"), Ok(3));
    let outputs = guest.finish();
    assert_eq!(outputs.stdout, b"0123456789");
    assert!(outputs.stdout_truncated);
    assert_eq!(outputs.stderr, b"abc");
    assert!(!outputs.stderr_truncated, "exactly reaching the cap drops nothing");
}

#[test]
fn stdio_fdstat_is_a_character_device_with_all_rights() {
    let mut guest = Guest::new(ChunkInput::default());
    let stat = guest.alloc(24);
    guest.call("fd_fdstat_get", &[1, u64::from(stat)]).expect("fdstat");
    assert_eq!(guest.bytes_at(stat, 1)[0], filetype::CHARACTER_DEVICE);
    assert_eq!(guest.u16_at(stat + 2), 0);
    assert_eq!(guest.u64_at(stat + 8), rights::ALL);
    assert_eq!(guest.u64_at(stat + 16), rights::ALL);
    let filestat = guest.filestat(0).expect("filestat");
    assert_eq!((filestat.filetype, filestat.size), (filetype::CHARACTER_DEVICE, 0));
    assert_eq!(guest.call("fd_fdstat_get", &[42, u64::from(stat)]), Err(Errno::Badf));
}

#[test]
fn fd_renumber_redirects_stdout_into_a_file() {
    let mut guest = Guest::new(ChunkInput::default());
    let fd = guest.create("log.txt").expect("create");
    assert_eq!(fd, 4);
    guest.call("fd_renumber", &[u64::from(fd), 1]).expect("renumber");
    assert_eq!(guest.write(1, b"to the file"), Ok(11));
    assert_eq!(guest.close(fd), Err(Errno::Badf), "the old number is gone");
    assert_eq!(guest.call("fd_renumber", &[1, 77]), Err(Errno::Badf), "the target must be open");
    assert_eq!(guest.call("fd_renumber", &[77, 1]), Err(Errno::Badf));
    assert_eq!(guest.call("fd_renumber", &[2, 2]), Ok(()));
    let outputs = guest.finish();
    assert!(outputs.stdout.is_empty());
    assert_eq!(outputs.files["log.txt"], b"to the file");
}
