//! path_open and everything done through a file fd: reads, writes, seeks and metadata.

use distributivecom_wasi::{
    DEVICE_ID, Errno, OutputLimits, PREOPEN_FD, fdflags, filetype, fstflags, oflags, rights, whence,
};

use crate::harness::{Guest, input_with_files};

const START: u64 = 1_700_000_000_000_000_000;

#[test]
fn the_preopen_is_fd_3_named_data_and_the_only_one() {
    let mut guest = Guest::new(Default::default());
    let prestat = guest.alloc(8);
    guest.call("fd_prestat_get", &[3, u64::from(prestat)]).expect("fd 3 is preopened");
    assert_eq!(guest.bytes_at(prestat, 1)[0], 0, "preopentype dir");
    assert_eq!(guest.u32_at(prestat + 4), 5);
    let name = guest.alloc(5);
    guest.call("fd_prestat_dir_name", &[3, u64::from(name), 5]).expect("name");
    assert_eq!(guest.bytes_at(name, 5), b"/data");
    assert_eq!(guest.call("fd_prestat_dir_name", &[3, u64::from(name), 4]), Err(Errno::Nametoolong));
    for fd in [0, 1, 2, 4, 5, 1000] {
        assert_eq!(guest.call("fd_prestat_get", &[fd, u64::from(prestat)]), Err(Errno::Badf), "fd {fd}");
    }
    // An fd opened on the same directory is not a preopen.
    let fd = guest.open(".", oflags::DIRECTORY).expect_err("directories cannot be opened for writing");
    assert_eq!(fd, Errno::Isdir);
    let fd = guest.open_read_only(".", oflags::DIRECTORY).expect("open /data again");
    assert_eq!(guest.call("fd_prestat_get", &[u64::from(fd), u64::from(prestat)]), Err(Errno::Badf));
}

#[test]
fn create_write_seek_and_read_back() {
    let mut guest = Guest::new(input_with_files(&[]));
    let fd = guest.create("out.bin").expect("create");
    assert_eq!(guest.write(fd, b"hello "), Ok(6));
    assert_eq!(guest.write(fd, b"world"), Ok(5));
    assert_eq!(guest.tell(fd), Ok(11));
    assert_eq!(guest.read(fd, 10), Ok(Vec::new()), "the position is at the end");
    assert_eq!(guest.seek(fd, 0, whence::SET), Ok(0));
    assert_eq!(guest.read(fd, 5), Ok(b"hello".to_vec()));
    assert_eq!(guest.seek(fd, 1, whence::CUR), Ok(6));
    assert_eq!(guest.read(fd, 100), Ok(b"world".to_vec()));
    assert_eq!(guest.seek(fd, -3, whence::END), Ok(8));
    assert_eq!(guest.read(fd, 100), Ok(b"rld".to_vec()));
    assert_eq!(guest.seek(fd, -12, whence::END), Err(Errno::Inval), "negative positions are refused");
    assert_eq!(guest.seek(fd, -1, whence::SET), Err(Errno::Inval));
    assert_eq!(guest.seek(fd, 0, 3), Err(Errno::Inval), "unknown whence");
    assert_eq!(guest.tell(fd), Ok(11), "failed seeks do not move");
    // Seeking past the end and writing leaves a zero-filled hole.
    assert_eq!(guest.seek(fd, 13, whence::SET), Ok(13));
    assert_eq!(guest.write(fd, b"!"), Ok(1));
    assert_eq!(guest.pread(fd, 100, 9), Ok(b"ld\0\0!".to_vec()));
    assert_eq!(guest.pread(fd, 100, 1000), Ok(Vec::new()));
    assert_eq!(guest.close(fd), Ok(()));
    assert_eq!(guest.close(fd), Err(Errno::Badf));
    assert_eq!(guest.finish().files["out.bin"], b"hello world\0\0!");
}

#[test]
fn pwrite_and_pread_do_not_move_the_position() {
    let mut guest = Guest::with_files(&[("data.txt", b"0123456789")]);
    let fd = guest.open("data.txt", 0).expect("open");
    assert_eq!(guest.pwrite(fd, b"AB", 4), Ok(2));
    assert_eq!(guest.tell(fd), Ok(0));
    assert_eq!(guest.pread(fd, 4, 3), Ok(b"3AB6".to_vec()));
    assert_eq!(guest.tell(fd), Ok(0));
    assert_eq!(guest.read(fd, 3), Ok(b"012".to_vec()));
    assert_eq!(guest.finish().files["data.txt"], b"0123AB6789");
}

#[test]
fn append_writes_always_go_to_the_end() {
    let mut guest = Guest::with_files(&[("log", b"line1\n")]);
    let fd = guest.open_with(PREOPEN_FD, "log", 0, rights::ALL, fdflags::APPEND).expect("open");
    assert_eq!(guest.write(fd, b"line2\n"), Ok(6));
    assert_eq!(guest.seek(fd, 0, whence::SET), Ok(0));
    assert_eq!(guest.write(fd, b"line3\n"), Ok(6));
    assert_eq!(guest.tell(fd), Ok(18));
    let stat = guest.alloc(24);
    guest.call("fd_fdstat_get", &[u64::from(fd), u64::from(stat)]).expect("fdstat");
    assert_eq!(guest.bytes_at(stat, 1)[0], filetype::REGULAR_FILE);
    assert_eq!(guest.u16_at(stat + 2), fdflags::APPEND);
    // Clearing APPEND makes writes positional again.
    guest.call("fd_fdstat_set_flags", &[u64::from(fd), 0]).expect("set flags");
    assert_eq!(guest.seek(fd, 0, whence::SET), Ok(0));
    assert_eq!(guest.write(fd, b"LINE1"), Ok(5));
    assert_eq!(guest.call("fd_fdstat_set_flags", &[u64::from(fd), 0x20]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_fdstat_set_rights", &[u64::from(fd), 0, 0]), Ok(()));
    assert_eq!(guest.finish().files["log"], b"LINE1\nline2\nline3\n");
}

#[test]
fn open_flags_behave_as_on_posix() {
    let mut guest = Guest::with_files(&[("exists.txt", b"content"), ("dir/inner", b"")]);
    assert_eq!(guest.open("missing.txt", 0), Err(Errno::Noent));
    assert_eq!(guest.open("exists.txt", oflags::CREAT | oflags::EXCL), Err(Errno::Exist));
    assert_eq!(guest.open("exists.txt", oflags::DIRECTORY), Err(Errno::Notdir));
    assert_eq!(guest.open("exists.txt/", 0), Err(Errno::Notdir));
    assert_eq!(guest.open("dir", oflags::TRUNC), Err(Errno::Isdir));
    assert_eq!(guest.open("dir", oflags::CREAT), Err(Errno::Isdir));
    assert_eq!(guest.open("new", oflags::CREAT | oflags::DIRECTORY), Err(Errno::Inval));
    assert_eq!(guest.open("nodir/new", oflags::CREAT), Err(Errno::Noent));
    assert_eq!(guest.open("new/", oflags::CREAT), Err(Errno::Isdir));
    assert_eq!(guest.open("x", 0x10), Err(Errno::Inval), "unknown oflags bit");
    assert_eq!(guest.open_with(PREOPEN_FD, "x", oflags::CREAT, rights::ALL, 0x40), Err(Errno::Inval));
    assert_eq!(guest.open_with(1, "x", oflags::CREAT, rights::ALL, 0), Err(Errno::Notdir));
    assert_eq!(guest.open_with(99, "x", oflags::CREAT, rights::ALL, 0), Err(Errno::Badf));

    let fd = guest.open("exists.txt", oflags::CREAT).expect("CREAT alone opens an existing file");
    assert_eq!(guest.read(fd, 100), Ok(b"content".to_vec()));
    let fd = guest.open("exists.txt", oflags::TRUNC).expect("truncate");
    assert_eq!(guest.read(fd, 100), Ok(Vec::new()));
    let dir = guest.open_read_only("dir/", oflags::DIRECTORY).expect("open a directory");
    assert_eq!(guest.read(dir, 10), Err(Errno::Isdir));
    assert_eq!(guest.write(dir, b"x"), Err(Errno::Badf));
    assert_eq!(guest.seek(dir, 0, whence::SET), Err(Errno::Badf));
    let fd = guest.open_with(dir, "inner", 0, rights::ALL, 0).expect("open relative to a directory fd");
    assert_eq!(guest.write(fd, b"via dir fd"), Ok(10));
    let outputs = guest.finish();
    assert_eq!(outputs.files["dir/inner"], b"via dir fd");
    assert_eq!(outputs.files["exists.txt"], b"");
}

#[test]
fn new_fds_take_the_lowest_free_number_from_4() {
    let mut guest = Guest::with_files(&[("a", b""), ("b", b""), ("c", b"")]);
    assert_eq!(guest.open("a", 0), Ok(4));
    assert_eq!(guest.open("b", 0), Ok(5));
    assert_eq!(guest.open("c", 0), Ok(6));
    guest.close(5).expect("close");
    assert_eq!(guest.open("c", 0), Ok(5));
    guest.close(3).expect("even the preopen can be closed");
    assert_eq!(guest.open("a", 0), Err(Errno::Badf), "its directory is gone");
    guest.close(0).expect("close stdin");
    assert_eq!(guest.read(0, 1), Err(Errno::Badf));
}

#[test]
fn filestat_reports_deterministic_inodes_sizes_and_times() {
    let mut guest = Guest::with_files(&[("a.txt", b"12345"), ("sub/b.txt", b"")]);
    let root = guest.filestat(PREOPEN_FD).expect("stat /data");
    assert_eq!((root.ino, root.filetype, root.dev), (1, filetype::DIRECTORY, DEVICE_ID));
    assert_eq!(root.nlink, 3, "/data, its '.', and sub's '..'");
    let a = guest.path_filestat("a.txt").expect("stat a");
    assert_eq!((a.ino, a.filetype, a.nlink, a.size), (2, filetype::REGULAR_FILE, 1, 5));
    assert_eq!((a.atim, a.mtim, a.ctim), (START, START, START));
    assert_eq!(guest.path_filestat("sub").expect("stat sub").ino, 3);
    assert_eq!(guest.path_filestat("sub/b.txt").expect("stat b").ino, 4);
    assert_eq!(guest.path_filestat("nope"), Err(Errno::Noent));

    // Time moves only when clocks are read; a write then stamps the file with the current time.
    let now = guest.clock(0);
    assert_eq!(now, START);
    let fd = guest.create("c.txt").expect("create");
    let c = guest.filestat(fd).expect("stat c");
    assert_eq!((c.ino, c.mtim), (5, START + 1_000));
    guest.clock(1);
    guest.write(fd, b"abc").expect("write");
    let c = guest.filestat(fd).expect("stat c");
    assert_eq!((c.size, c.mtim, c.ctim, c.atim), (3, START + 2_000, START + 2_000, START + 1_000));
}

#[test]
fn set_size_allocate_and_set_times() {
    let mut guest = Guest::with_files(&[("f", b"0123456789")]);
    let fd = guest.open("f", 0).expect("open");
    guest.call("fd_filestat_set_size", &[u64::from(fd), 4]).expect("shrink");
    assert_eq!(guest.pread(fd, 100, 0), Ok(b"0123".to_vec()));
    guest.call("fd_filestat_set_size", &[u64::from(fd), 6]).expect("grow");
    assert_eq!(guest.pread(fd, 100, 0), Ok(b"0123\0\0".to_vec()));
    guest.call("fd_allocate", &[u64::from(fd), 2, 6]).expect("allocate grows to 8");
    assert_eq!(guest.filestat(fd).map(|stat| stat.size), Ok(8));
    guest.call("fd_allocate", &[u64::from(fd), 0, 3]).expect("allocate never shrinks");
    assert_eq!(guest.filestat(fd).map(|stat| stat.size), Ok(8));
    assert_eq!(guest.call("fd_allocate", &[u64::from(fd), 0, 0]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_allocate", &[u64::from(fd), u64::MAX, 2]), Err(Errno::Fbig));
    assert_eq!(guest.call("fd_filestat_set_size", &[u64::from(fd), u64::MAX]), Err(Errno::Fbig));
    assert_eq!(guest.call("fd_filestat_set_size", &[1, 0]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_filestat_set_size", &[3, 0]), Err(Errno::Isdir));

    let flags = u64::from(fstflags::ATIM | fstflags::MTIM_NOW);
    guest.call("fd_filestat_set_times", &[u64::from(fd), 5, 6, flags]).expect("set times");
    let stat = guest.filestat(fd).expect("stat");
    assert_eq!((stat.atim, stat.mtim), (5, START));
    let (path, path_len) = guest.put_str("f");
    let flags = u64::from(fstflags::MTIM);
    guest.call("path_filestat_set_times", &[3, 0, path, path_len, 0, 77, flags]).expect("set mtime");
    let stat = guest.path_filestat("f").expect("stat");
    assert_eq!((stat.atim, stat.mtim), (5, 77));
    let both = u64::from(fstflags::ATIM | fstflags::ATIM_NOW);
    assert_eq!(guest.call("fd_filestat_set_times", &[u64::from(fd), 0, 0, both]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_filestat_set_times", &[u64::from(fd), 0, 0, 0x10]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_sync", &[u64::from(fd)]), Ok(()));
    assert_eq!(guest.call("fd_datasync", &[u64::from(fd)]), Ok(()));
    assert_eq!(guest.call("fd_advise", &[u64::from(fd), 0, 10, 4]), Ok(()));
    assert_eq!(guest.call("fd_advise", &[u64::from(fd), 0, 10, 6]), Err(Errno::Inval));
    assert_eq!(guest.call("fd_sync", &[50]), Err(Errno::Badf));
}

#[test]
fn writes_beyond_the_file_system_limit_fail_with_nospc() {
    let mut input = input_with_files(&[("input", b"0123456789")]);
    input.limits = OutputLimits { max_fs_bytes: 16, ..OutputLimits::default() };
    let mut guest = Guest::new(input);
    let fd = guest.create("out").expect("create");
    assert_eq!(guest.write(fd, b"abcdef"), Ok(6), "exactly filling the quota works");
    assert_eq!(guest.write(fd, b"g"), Err(Errno::Nospc));
    assert_eq!(guest.pwrite(fd, b"ABC", 3), Ok(3), "overwriting needs no new space");
    assert_eq!(guest.call("fd_filestat_set_size", &[u64::from(fd), 7]), Err(Errno::Nospc));
    // Deleting the input gives its bytes back.
    guest.unlink("input").expect("unlink");
    assert_eq!(guest.write(fd, b"ghij"), Ok(4));
    assert_eq!(guest.ctx.fs_bytes_used(), 10);
    assert_eq!(guest.finish().files["out"], b"abcABCghij");
}

#[test]
fn unlinked_files_stay_readable_through_open_fds() {
    let mut guest = Guest::with_files(&[("temp", b"scratch data")]);
    let fd = guest.open("temp", 0).expect("open");
    guest.unlink("temp").expect("unlink");
    assert_eq!(guest.open("temp", 0), Err(Errno::Noent));
    assert_eq!(guest.read(fd, 7), Ok(b"scratch".to_vec()));
    assert_eq!(guest.write(fd, b"!"), Ok(1));
    assert_eq!(guest.filestat(fd).map(|stat| stat.nlink), Ok(0));
    assert_eq!(guest.ctx.fs_bytes_used(), 12);
    guest.close(fd).expect("close");
    assert_eq!(guest.ctx.fs_bytes_used(), 0);
    assert!(guest.finish().files.is_empty());
}
