//! Integration tests of the WASI implementation, driving `WasiCtx::call` the way a host does, with a
//! `Vec<u8>` as guest memory.
//!
//! Modules:
//! - `harness`: the fake guest and typed call wrappers.
//! - `abi`: the function table and call dispatch.
//! - `process`: arguments, environment, exit, signals, sockets.
//! - `stdio`: stdin, stdout and stderr, caps and truncation.
//! - `files`: path_open, reading, writing, seeking, metadata.
//! - `directories`: mkdir, rmdir, unlink, rename, readdir, path resolution and escapes.
//! - `outputs`: which files a run reports, and the input validation.
//! - `time`: virtual clocks and poll_oneoff.
//! - `random`: random_get.
//! - `robustness`: bad pointers, garbage arguments and determinism.

mod harness;

mod abi;
mod directories;
mod files;
mod outputs;
mod process;
mod random;
mod robustness;
mod stdio;
mod time;
