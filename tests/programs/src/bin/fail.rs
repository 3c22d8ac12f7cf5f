//! `fail`: fails on purpose after producing some output, to test how failed replicas are reported.
//!
//! Writes `fail: something went wrong (this is on purpose)` to stderr, `partial output` to stdout (each with
//! a newline), creates `/data/partial.txt` containing `partial` (no newline) and exits with status 3.

use std::io::Write as _;

fn main() {
    eprintln!("fail: something went wrong (this is on purpose)");
    println!("partial output");
    if let Err(error) = std::fs::write("/data/partial.txt", "partial") {
        // Only a misconfigured run (no `/data` preopen) gets here; say so rather than hide it.
        eprintln!("fail: cannot write /data/partial.txt: {error}");
    }
    // `process::exit` runs no destructors, so flush explicitly rather than rely on the line buffer.
    let _ = std::io::stdout().flush();
    std::process::exit(3);
}
