//! Which files a run reports, and which chunk inputs are refused.

use std::collections::BTreeMap;

use distributivecom_wasi::{ChunkInput, InputError, MAX_FILE_BYTES, OutputLimits, WasiCtx, oflags};

use crate::harness::{Guest, input_with_files};

fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries.iter().map(|(path, data)| (path.to_string(), data.to_vec())).collect()
}

#[test]
fn unchanged_inputs_are_not_reported() {
    let mut guest = Guest::with_files(&[("in/a.txt", b"a"), ("b.txt", b"b")]);
    // Reading, opening for writing without writing, and zero-length writes change nothing.
    let fd = guest.open("in/a.txt", 0).expect("open");
    assert_eq!(guest.read(fd, 10), Ok(b"a".to_vec()));
    assert_eq!(guest.write(fd, b""), Ok(0));
    let fd = guest.open("b.txt", 0).expect("open");
    guest.call("fd_filestat_set_size", &[u64::from(fd), 1]).expect("same size");
    assert!(guest.finish().files.is_empty());
}

#[test]
fn created_changed_and_renamed_files_are_reported_with_final_contents() {
    let mut guest = Guest::with_files(&[
        ("keep.txt", b"same"),
        ("edit.txt", b"old"),
        ("move-me.txt", b"moved"),
        ("delete-me.txt", b"gone"),
        ("deep/dir/input.bin", b"\x00\x01"),
    ]);
    let fd = guest.open("edit.txt", 0).expect("open");
    guest.pwrite(fd, b"new", 0).expect("overwrite with different bytes");
    guest.rename("move-me.txt", "deep/moved.txt").expect("rename");
    guest.unlink("delete-me.txt").expect("unlink");
    guest.mkdir("results").expect("mkdir");
    guest.mkdir("results/nested").expect("mkdir");
    let fd = guest.create("results/nested/out.csv").expect("create");
    guest.write(fd, b"1,2\n").expect("write");
    guest.create("results/empty").expect("an empty created file is reported too");
    let fd = guest.create("scratch").expect("create");
    guest.write(fd, b"temporary").expect("write");
    guest.unlink("scratch").expect("deleted outputs are not reported");
    guest.mkdir("only-a-dir").expect("directories themselves are not reported");
    guest.rename("deep/dir", "renamed-dir").expect("files inside renamed directories move too");

    let outputs = guest.finish();
    assert_eq!(
        outputs.files,
        files(&[
            ("deep/moved.txt", b"moved"),
            ("edit.txt", b"new"),
            ("renamed-dir/input.bin", b"\x00\x01"),
            ("results/empty", b""),
            ("results/nested/out.csv", b"1,2\n"),
        ])
    );
}

#[test]
fn an_input_replaced_by_a_rename_is_reported_and_a_move_back_is_not() {
    let mut guest = Guest::with_files(&[("a", b"A"), ("b", b"B"), ("c", b"C")]);
    guest.rename("a", "b").expect("a replaces b");
    guest.rename("c", "tmp").expect("move away");
    guest.rename("tmp", "c").expect("and back");
    let outputs = guest.finish();
    assert_eq!(outputs.files, files(&[("b", b"A")]));
}

#[test]
fn truncating_an_input_reports_it() {
    let mut guest = Guest::with_files(&[("data", b"123"), ("empty", b"")]);
    guest.open("data", oflags::TRUNC).expect("truncate");
    guest.open("empty", oflags::TRUNC).expect("truncating an empty file changes nothing");
    assert_eq!(guest.finish().files, files(&[("data", b"")]));
}

#[test]
fn invalid_input_files_are_refused_with_clear_messages() {
    type Files<'a> = &'a [(&'a str, &'a [u8])];
    let cases: &[(Files, &str)] = &[
        (&[("../etc/passwd", b"")], "\"../etc/passwd\""),
        (&[("/abs", b"")], "absolute"),
        (&[("a//b", b"")], "empty component"),
        (&[("dir/", b"")], "empty component"),
        (&[("", b"")], "empty"),
        (&[("a/./b", b"")], "'.'"),
        (&[("nul\0", b"")], "NUL"),
        (&[("x", b""), ("x/y", b"")], "collides"),
    ];
    for (entries, needle) in cases {
        let error = WasiCtx::new(input_with_files(entries)).expect_err("invalid input");
        let message = error.to_string();
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
    let mut input = input_with_files(&[("a", &[0u8; 10]), ("b", &[0u8; 10])]);
    input.limits = OutputLimits { max_fs_bytes: 19, ..OutputLimits::default() };
    assert!(matches!(WasiCtx::new(input), Err(InputError::FilesTooLarge { total_bytes: 20, max_fs_bytes: 19 })));
    assert_eq!(MAX_FILE_BYTES, i32::MAX as u64);
}

#[test]
fn default_limits_are_one_mebibyte_of_output_and_256_mebibytes_of_files() {
    let limits = OutputLimits::default();
    assert_eq!((limits.max_stdout_bytes, limits.max_stderr_bytes, limits.max_fs_bytes), (1 << 20, 1 << 20, 256 << 20));
    assert_eq!(ChunkInput::default().limits, limits);
}
