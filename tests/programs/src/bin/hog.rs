//! `hog`: allocates memory without bound, 1 MiB at a time, until an allocation fails.
//!
//! Output: `hog: allocated N MiB` on stdout after every 64 MiB. When an allocation fails it prints
//! `hog: allocation failed after N MiB` on stderr and aborts, which on wasm32-wasip1 is an `unreachable`
//! trap — the same end as Rust's default out-of-memory handling, but with the total reported first.
//! The fixture for memory limits: the worker must refuse to grow memory past its limit.

use std::hint::black_box;

const BLOCK_BYTES: usize = 1 << 20;
const REPORT_EVERY_MIB: usize = 64;

fn main() {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::new();
        if blocks.try_reserve(1).is_err() || block.try_reserve_exact(BLOCK_BYTES).is_err() {
            eprintln!("hog: allocation failed after {} MiB", blocks.len());
            std::process::abort();
        }
        // Non-zero bytes so that every page is really written (a native run cannot leave them untouched).
        block.resize(BLOCK_BYTES, 0xA5);
        blocks.push(black_box(block));
        black_box(&blocks);
        if blocks.len().is_multiple_of(REPORT_EVERY_MIB) {
            println!("hog: allocated {} MiB", blocks.len());
        }
    }
}
