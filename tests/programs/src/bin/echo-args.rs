//! `echo-args`: prints each argument (not the program name) on its own line, then copies stdin to stdout.
//!
//! Arguments are written as raw bytes, so non-UTF-8 arguments pass through unchanged. Exits with status 0.

use std::io::Write as _;

fn main() -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for argument in std::env::args_os().skip(1) {
        stdout.write_all(argument.as_encoded_bytes())?;
        stdout.write_all(b"\n")?;
    }
    std::io::copy(&mut std::io::stdin().lock(), &mut stdout)?;
    stdout.flush()
}
