//! `fsops`: exercises argv, environment variables and the WASI filesystem under `/data`, printing what it
//! sees in a form meant to be compared line by line with a reference WASI runtime.
//!
//! Nothing printed depends on timestamps, inode numbers or directory sizes, and the run is repeatable in
//! the same directory (files are truncated before being appended to). Output lines, in order:
//! - `arg: A` for every element of argv (argv[0] included), then `env: K=V` for every variable, sorted;
//! - `input: N bytes fnv1a64=H` for `/data/input.txt`, or `input: absent`;
//! - one line per step: `mkdir`, `write`, `append`, `rename`, `read`, `seek`, `remove`, `rmdir`, `missing`;
//! - `ls: PATH file SIZE` / `ls: PATH dir` for `/data/out`, sorted by name;
//! - `stdin: N bytes fnv1a64=H -> /data/stdin-copy.bin` after copying stdin there;
//! - `ls:` lines for `/data` itself, sorted by name.
//!
//! Exits with status 0, or 1 with the failing step on stderr.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use anyhow::{Context as _, ensure};
use distributivecom_test_programs::fnv1a_64;

fn main() -> anyhow::Result<()> {
    for argument in std::env::args_os() {
        println!("arg: {}", argument.to_string_lossy());
    }
    let mut variables: Vec<_> = std::env::vars_os().collect();
    variables.sort();
    for (key, value) in variables {
        println!("env: {}={}", key.to_string_lossy(), value.to_string_lossy());
    }

    match fs::read("/data/input.txt") {
        Ok(bytes) => println!("input: {} bytes fnv1a64={:016x}", bytes.len(), fnv1a_64(&bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => println!("input: absent"),
        Err(error) => return Err(error).context("cannot read /data/input.txt"),
    }

    fs::create_dir_all("/data/out").context("mkdir /data/out")?;
    ensure!(fs::metadata("/data/out").context("stat /data/out")?.is_dir(), "/data/out is not a directory");
    println!("mkdir: /data/out");

    fs::write("/data/out/a.txt", "alpha\n").context("write /data/out/a.txt")?;
    println!("write: /data/out/a.txt {} bytes", file_size("/data/out/a.txt")?);
    let all_bytes: Vec<u8> = (0..=255).collect();
    fs::write("/data/out/b.bin", &all_bytes).context("write /data/out/b.bin")?;
    println!("write: /data/out/b.bin {} bytes", file_size("/data/out/b.bin")?);

    append("/data/out/a.txt", b"beta\n")?;
    fs::write("/data/out/log.txt", "one\n").context("write /data/out/log.txt")?;
    append("/data/out/log.txt", b"two\n")?;

    fs::rename("/data/out/a.txt", "/data/out/renamed.txt").context("rename /data/out/a.txt")?;
    println!(
        "rename: /data/out/a.txt -> /data/out/renamed.txt (old exists: {}, new exists: {})",
        Path::new("/data/out/a.txt").exists(),
        Path::new("/data/out/renamed.txt").exists()
    );

    let mut renamed = File::open("/data/out/renamed.txt").context("open /data/out/renamed.txt")?;
    renamed.seek(SeekFrom::Start(6)).context("seek /data/out/renamed.txt")?;
    let mut tail = String::new();
    renamed.read_to_string(&mut tail).context("read /data/out/renamed.txt")?;
    println!("read: /data/out/renamed.txt from offset 6: {tail:?}");

    overwrite_with_seeks()?;

    fs::write("/data/out/tmp.txt", "temporary\n").context("write /data/out/tmp.txt")?;
    fs::remove_file("/data/out/tmp.txt").context("remove /data/out/tmp.txt")?;
    println!("remove: /data/out/tmp.txt (exists after: {})", Path::new("/data/out/tmp.txt").exists());
    fs::create_dir("/data/out/tmpdir").context("mkdir /data/out/tmpdir")?;
    fs::remove_dir("/data/out/tmpdir").context("rmdir /data/out/tmpdir")?;
    println!("rmdir: /data/out/tmpdir (exists after: {})", Path::new("/data/out/tmpdir").exists());
    match fs::metadata("/data/out/missing") {
        Ok(_) => println!("missing: /data/out/missing unexpectedly exists"),
        Err(error) => println!("missing: /data/out/missing {:?}", error.kind()),
    }

    list("/data/out")?;

    let mut stdin_bytes = Vec::new();
    std::io::stdin().read_to_end(&mut stdin_bytes).context("read stdin")?;
    fs::write("/data/stdin-copy.bin", &stdin_bytes).context("write /data/stdin-copy.bin")?;
    println!("stdin: {} bytes fnv1a64={:016x} -> /data/stdin-copy.bin", stdin_bytes.len(), fnv1a_64(&stdin_bytes));

    list("/data")?;
    Ok(())
}

fn file_size(path: &str) -> anyhow::Result<u64> {
    Ok(fs::metadata(path).with_context(|| format!("stat {path}"))?.len())
}

/// Appends through `OpenOptions::append` (WASI's `FDFLAGS_APPEND`) and prints the resulting content.
fn append(path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new().append(true).open(path).with_context(|| format!("open {path} for append"))?;
    file.write_all(bytes).with_context(|| format!("append to {path}"))?;
    drop(file);
    let content = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    println!("append: {path} now {} bytes {content:?}", content.len());
    Ok(())
}

/// Overwrites bytes inside `/data/out/b.bin` and past its end, then checks and prints the result.
fn overwrite_with_seeks() -> anyhow::Result<()> {
    const PATH: &str = "/data/out/b.bin";
    let mut file = OpenOptions::new().read(true).write(true).open(PATH).context("open /data/out/b.bin")?;
    file.seek(SeekFrom::Start(16)).context("seek /data/out/b.bin")?;
    file.write_all(&[0xFF; 4]).context("overwrite /data/out/b.bin")?;
    let position = file.stream_position().context("tell /data/out/b.bin")?;
    let end = file.seek(SeekFrom::End(0)).context("seek to end of /data/out/b.bin")?;
    // Writing past the end must extend the file and fill the gap with zeros.
    file.seek(SeekFrom::Start(300)).context("seek past end of /data/out/b.bin")?;
    file.write_all(&[0x42]).context("write past end of /data/out/b.bin")?;
    drop(file);

    let bytes = fs::read(PATH).context("read /data/out/b.bin")?;
    let mut expected: Vec<u8> = (0..=255).collect();
    expected[16..20].fill(0xFF);
    expected.resize(300, 0);
    expected.push(0x42);
    println!(
        "seek: {PATH} overwrote 4 bytes at 16 (position after: {position}, end: {end}), wrote 1 byte at 300; \
         now {} bytes fnv1a64={:016x} as expected: {}",
        bytes.len(),
        fnv1a_64(&bytes),
        bytes == expected
    );
    Ok(())
}

/// Prints the entries of `directory` sorted by name, with sizes for files only (directory sizes differ
/// between runtimes and file systems).
fn list(directory: &str) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(directory).with_context(|| format!("list {directory}"))? {
        let entry = entry.with_context(|| format!("list {directory}"))?;
        let metadata = entry.metadata().with_context(|| format!("stat {}", entry.path().display()))?;
        let description = if metadata.is_dir() {
            "dir".to_string()
        } else if metadata.is_file() {
            format!("file {}", metadata.len())
        } else {
            "other".to_string()
        };
        entries.push((entry.file_name(), description));
    }
    entries.sort();
    for (name, description) in entries {
        println!("ls: {directory}/{} {description}", name.to_string_lossy());
    }
    Ok(())
}
