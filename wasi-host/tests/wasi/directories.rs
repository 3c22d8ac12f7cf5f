//! Directories: creation, removal, unlinking, renaming, listing, and path resolution.

use distributivecom_wasi::{Errno, PREOPEN_FD, filetype, oflags, rights};

use crate::harness::{Dirent, Guest, parse_dirents};

const DIR: u8 = filetype::DIRECTORY;
const FILE: u8 = filetype::REGULAR_FILE;

fn names(entries: &[Dirent]) -> Vec<&str> {
    entries.iter().map(|(_, _, _, name)| name.as_str()).collect()
}

#[test]
fn readdir_lists_dot_entries_first_then_names_in_byte_order() {
    let mut guest = Guest::with_files(&[("b.txt", b"b"), ("a.txt", b"a"), ("Z", b""), ("sub/x", b"")]);
    let entries = parse_dirents(&guest.readdir(PREOPEN_FD, 4096, 0).expect("readdir"));
    assert_eq!(names(&entries), [".", "..", "Z", "a.txt", "b.txt", "sub"]);
    // Inodes in creation order (the input map is sorted: Z, a.txt, b.txt, sub, sub/x), and d_next is
    // the cookie of the following entry.
    let expected: Vec<Dirent> = vec![
        (1, 1, DIR, ".".into()),
        (2, 1, DIR, "..".into()),
        (3, 2, FILE, "Z".into()),
        (4, 3, FILE, "a.txt".into()),
        (5, 4, FILE, "b.txt".into()),
        (6, 5, DIR, "sub".into()),
    ];
    assert_eq!(entries, expected);

    let sub = guest.open_read_only("sub", oflags::DIRECTORY).expect("open sub");
    let entries = parse_dirents(&guest.readdir(sub, 4096, 0).expect("readdir"));
    assert_eq!(entries, vec![(1, 5, DIR, ".".into()), (2, 1, DIR, "..".into()), (3, 6, FILE, "x".into())]);
    assert_eq!(guest.readdir(1, 100, 0), Err(Errno::Notdir));
    let file = guest.open_read_only("a.txt", 0).expect("open file");
    assert_eq!(guest.readdir(file, 100, 0), Err(Errno::Notdir));
}

#[test]
fn readdir_resumes_at_a_cookie_and_cuts_off_the_last_entry() {
    let mut guest = Guest::with_files(&[("alpha", b""), ("beta", b""), ("gamma", b"")]);
    let everything = guest.readdir(PREOPEN_FD, 4096, 0).expect("readdir");
    // ".", ".." (24 + 1, 24 + 2), "alpha" (29), "beta" (28), "gamma" (29).
    assert_eq!(everything.len(), 25 + 26 + 29 + 28 + 29);

    // A buffer that ends in the middle of "alpha" is filled completely; the caller sees bufused ==
    // buf_len, knows the last entry is incomplete and resumes from the last complete entry's d_next.
    let partial = guest.readdir(PREOPEN_FD, 60, 0).expect("readdir");
    assert_eq!(partial.len(), 60);
    assert_eq!(partial[..], everything[..60]);
    let complete = parse_dirents(&partial);
    assert_eq!(names(&complete), [".", ".."]);
    let resume = complete.last().expect("entries").0;
    let rest = parse_dirents(&guest.readdir(PREOPEN_FD, 4096, resume).expect("readdir"));
    assert_eq!(names(&rest), ["alpha", "beta", "gamma"]);

    // A buffer smaller than one header still gets the first bytes of it.
    let tiny = guest.readdir(PREOPEN_FD, 10, 3).expect("readdir");
    assert_eq!(tiny[..], everything[25 + 26 + 29..][..10]);
    assert_eq!(guest.readdir(PREOPEN_FD, 4096, 5), Ok(Vec::new()), "the cookie after the last entry");
    assert_eq!(guest.readdir(PREOPEN_FD, 4096, u64::MAX), Ok(Vec::new()));
    assert_eq!(guest.readdir(PREOPEN_FD, 0, 0), Ok(Vec::new()));
}

#[test]
fn mkdir_and_rmdir() {
    let mut guest = Guest::with_files(&[("file", b"")]);
    guest.mkdir("a").expect("mkdir");
    guest.mkdir("a/b/").expect("mkdir with a trailing slash");
    assert_eq!(guest.mkdir("a"), Err(Errno::Exist));
    assert_eq!(guest.mkdir("file"), Err(Errno::Exist));
    assert_eq!(guest.mkdir("."), Err(Errno::Exist));
    assert_eq!(guest.mkdir("missing/c"), Err(Errno::Noent));
    assert_eq!(guest.mkdir("file/c"), Err(Errno::Notdir));
    assert_eq!(guest.rmdir("a"), Err(Errno::Notempty));
    assert_eq!(guest.rmdir("file"), Err(Errno::Notdir));
    assert_eq!(guest.rmdir("a/b/.."), Err(Errno::Inval));
    assert_eq!(guest.rmdir("nope"), Err(Errno::Noent));
    guest.rmdir("a/b").expect("rmdir");
    guest.rmdir("a/").expect("rmdir with a trailing slash");
    assert_eq!(guest.path_filestat("a"), Err(Errno::Noent));
    let entries = parse_dirents(&guest.readdir(PREOPEN_FD, 4096, 0).expect("readdir"));
    assert_eq!(names(&entries), [".", "..", "file"]);
}

#[test]
fn removed_directories_cannot_gain_entries_through_open_fds() {
    let mut guest = Guest::new(Default::default());
    guest.mkdir("gone").expect("mkdir");
    let fd = guest.open_read_only("gone", oflags::DIRECTORY).expect("open");
    guest.rmdir("gone").expect("rmdir");
    assert_eq!(guest.open_with(fd, "new", oflags::CREAT, rights::ALL, 0), Err(Errno::Noent));
    assert_eq!(guest.readdir(fd, 4096, 0), Ok(Vec::new()));
    assert_eq!(guest.filestat(fd).map(|stat| stat.nlink), Ok(0));
}

#[test]
fn unlink_refuses_directories() {
    let mut guest = Guest::with_files(&[("dir/file", b"x")]);
    assert_eq!(guest.unlink("dir"), Err(Errno::Isdir));
    assert_eq!(guest.unlink("."), Err(Errno::Isdir));
    assert_eq!(guest.unlink("dir/file/"), Err(Errno::Notdir));
    assert_eq!(guest.unlink("dir/nope"), Err(Errno::Noent));
    guest.unlink("dir/file").expect("unlink");
    guest.rmdir("dir").expect("now empty");
}

#[test]
fn rename_files_and_directories_like_posix() {
    let mut guest =
        Guest::with_files(&[("a", b"A"), ("b", b"B"), ("d1/x", b"X"), ("d2/y", b"Y"), ("empty/.keep", b"")]);
    guest.unlink("empty/.keep").expect("unlink");
    guest.rename("a", "b").expect("a file replaces a file");
    assert_eq!(guest.path_filestat("a"), Err(Errno::Noent));
    assert_eq!(guest.rename("b", "d1"), Err(Errno::Isdir));
    assert_eq!(guest.rename("d1", "b"), Err(Errno::Notdir));
    assert_eq!(guest.rename("d1", "d2"), Err(Errno::Notempty));
    assert_eq!(guest.rename("d1", "d1/inside"), Err(Errno::Inval));
    assert_eq!(guest.rename("missing", "z"), Err(Errno::Noent));
    assert_eq!(guest.rename("b", "nodir/z"), Err(Errno::Noent));
    assert_eq!(guest.rename("b/", "z"), Err(Errno::Notdir));
    assert_eq!(guest.rename(".", "z"), Err(Errno::Inval));
    guest.rename("b", "b").expect("renaming onto itself does nothing");
    guest.rename("d1", "empty").expect("a directory replaces an empty directory");
    guest.rename("empty", "d2/moved").expect("move a directory into another");
    assert_eq!(guest.rename("d2/moved/x", "d2/./moved/../x2"), Ok(()));

    let fd = guest.open("d2/x2", 0).expect("the file followed its directory");
    assert_eq!(guest.read(fd, 10), Ok(b"X".to_vec()));
    let entries = parse_dirents(&guest.readdir(PREOPEN_FD, 4096, 0).expect("readdir"));
    assert_eq!(names(&entries), [".", "..", "b", "d2"]);
}

#[test]
fn paths_never_escape_data() {
    let mut guest = Guest::with_files(&[("sub/file", b"x"), ("top", b"t")]);
    assert_eq!(guest.open("..", 0), Err(Errno::Notcapable));
    assert_eq!(guest.open("../etc/passwd", 0), Err(Errno::Notcapable));
    assert_eq!(guest.open("sub/../../etc/passwd", 0), Err(Errno::Notcapable));
    assert_eq!(guest.open("/etc/passwd", 0), Err(Errno::Notcapable));
    assert_eq!(guest.open("/data/top", 0), Err(Errno::Notcapable), "libc strips the preopen prefix, not us");
    assert_eq!(guest.mkdir("../x"), Err(Errno::Notcapable));
    assert_eq!(guest.rename("top", "../top"), Err(Errno::Notcapable));
    assert_eq!(guest.path_filestat(".."), Err(Errno::Notcapable));
    // ".." inside /data is fine, also relative to a subdirectory fd.
    let sub = guest.open_read_only("sub", oflags::DIRECTORY).expect("open sub");
    let fd = guest.open_with(sub, "../top", 0, rights::ALL, 0).expect("sibling via ..");
    assert_eq!(guest.read(fd, 10), Ok(b"t".to_vec()));
    assert_eq!(guest.open_with(sub, "../../top", 0, rights::ALL, 0), Err(Errno::Notcapable));
    // Repeated and trailing slashes and "." components are harmless.
    let fd = guest.open(".//sub///./file", 0).expect("messy path");
    assert_eq!(guest.read(fd, 10), Ok(b"x".to_vec()));
    assert_eq!(guest.open("", 0), Err(Errno::Noent));
}

#[test]
fn bad_path_strings_are_rejected() {
    let mut guest = Guest::new(Default::default());
    let (path, _) = guest.put_str("a\0b");
    let fd = guest.alloc(4);
    let open = |path: u64, len: u64| [3, 0, path, len, u64::from(oflags::CREAT), rights::ALL, 0, 0, u64::from(fd)];
    assert_eq!(guest.call("path_open", &open(path, 3)), Err(Errno::Inval));
    let invalid_utf8 = guest.put(&[0x66, 0xff, 0x66]);
    assert_eq!(guest.call("path_open", &open(u64::from(invalid_utf8), 3)), Err(Errno::Ilseq));
    let long = "x".repeat(256);
    assert_eq!(guest.open(&long, oflags::CREAT), Err(Errno::Nametoolong));
    assert_eq!(guest.call("path_open", &open(path, 4097)), Err(Errno::Nametoolong));
    assert_eq!(guest.call("path_open", &open(path, u64::from(u32::MAX))), Err(Errno::Nametoolong));
    assert!(guest.finish().files.is_empty());
}
