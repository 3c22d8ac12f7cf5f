//! Deterministic WASI preview 1 (`wasi_snapshot_preview1`) over an abstract guest memory.
//!
//! This is the one WASI implementation of Distributivecom. The native worker calls it from
//! wasmtime host functions, passing the linear memory as a `[u8]`; the browser worker calls it from
//! JS imports with a [`GuestMemory`] that copies to and from a `WebAssembly.Memory`.
//!
//! **Architecture Invariant:** the outputs of a chunk run are a pure function of its [`ChunkInput`]
//! and the sequence of calls the program makes. Nothing here reads the host's clock, file system,
//! environment or entropy, iterates a hash map, or depends on the pointer width, so every replica of
//! a chunk produces byte-identical [`ChunkOutputs`] on every host, 32- or 64-bit.
//!
//! # Using it
//!
//! A host declares one import per entry of [`FUNCTIONS`] (module [`MODULE_NAME`]), and forwards each
//! call to [`WasiCtx::call`] with the raw argument values. `Ok(errno)` is the function's i32 result;
//! `Err(HostStop)` means the program exited (or raised a signal) and the host must stop executing it.
//!
//! ```
//! use distributivecom_wasi::{lookup, ChunkInput, WasiCtx};
//!
//! let mut ctx = WasiCtx::new(ChunkInput::default()).expect("valid input");
//! // The guest wrote "hi" at address 16 and a ciovec {buf: 16, buf_len: 2} at address 0.
//! let mut memory = vec![0u8; 64];
//! memory[0..4].copy_from_slice(&16u32.to_le_bytes());
//! memory[4..8].copy_from_slice(&2u32.to_le_bytes());
//! memory[16..18].copy_from_slice(b"hi");
//! let fd_write = lookup("fd_write").expect("preview 1 has fd_write");
//! // fd_write(fd 1, iovs 0, iovs_len 1, nwritten at 32)
//! assert_eq!(ctx.call(&mut memory[..], fd_write, &[1, 0, 1, 32]), Ok(0));
//! assert_eq!(ctx.finish().stdout, b"hi");
//! ```
//!
//! # What the program sees
//!
//! * **fds**: 0 is stdin (the chunk's `stdin` bytes, then end of file), 1 and 2 are stdout and
//!   stderr (captured up to their caps; bytes beyond are dropped but reported as written, and the
//!   `*_truncated` flag is set), and 3 is the preopened directory /data. New fds take the lowest
//!   free number from 4 on. `fd_prestat_get` fails with `BADF` on every fd but the preopen.
//!   wasi-libc and Rust std turn "/data/x" into (fd 3, "x"); a relative path such as "x" resolves
//!   against libc's working directory, which is "/" unless the program calls `chdir("/data")`, and
//!   therefore matches no preopen.
//! * **/data** is an in-memory file system of directories and regular files, filled with the
//!   chunk's input files. Paths are resolved relative to a directory fd; ".." never leaves /data
//!   (`NOTCAPABLE`) and absolute paths are refused (`NOTCAPABLE`). There are no symbolic or hard
//!   links. Inode numbers count up from 1 (/data itself) in creation order, `dev` is
//!   [`DEVICE_ID`], and timestamps are the realtime virtual clock at the time of the change
//!   (reads do not update `atim`). Rights are reported as all rights and not enforced. Limits:
//!   `max_fs_bytes` for all file contents (`NOSPC`), [`MAX_FILE_BYTES`] per file (`FBIG`),
//!   [`MAX_FS_NODES`] files and directories (`NOSPC`), [`MAX_PATH_BYTES`] per path and
//!   [`MAX_NAME_BYTES`] per name (`NAMETOOLONG`), [`MAX_OPEN_FDS`] open fds (`MFILE`) and
//!   [`MAX_IOVECS`] iovecs per call (`INVAL`).
//! * **Outputs**: every regular file reachable under /data at the end that the program created,
//!   wrote at least one byte to or resized, or that sits at a path other than its input path (it
//!   was renamed), is reported with its final contents.
//! * **Clocks** are virtual. Elapsed time starts at 0; `REALTIME` reads `clock_start_ns + elapsed`,
//!   the other three clocks read `elapsed`. Every successful `clock_time_get` advances elapsed time
//!   by [`CLOCK_STEP_NS`] after reading it, and `clock_res_get` reports [`CLOCK_STEP_NS`].
//!   `poll_oneoff` never waits: fd subscriptions are always ready at once, and when only clock
//!   subscriptions are pending, elapsed time jumps to the earliest deadline.
//!
//! # random_get
//!
//! `random_get` returns consecutive bytes of one keystream, consumed across calls (two calls of 8
//! bytes return the same bytes as one call of 16). The keystream is defined so that it can be
//! reproduced in any language:
//!
//! * Block `i` (for `i = 0, 1, 2, ...`) is the ChaCha20 block function of RFC 8439, section 2.3
//!   (20 rounds, i.e. 10 double rounds), with key = the 32 bytes of `random_seed`, block counter =
//!   the low 32 bits of `i`, and a 12-byte nonce whose first 4 bytes are the high 32 bits of `i`
//!   (little-endian) and whose last 8 bytes are zero. For the first 2^32 blocks (256 GiB) this is
//!   exactly RFC 8439 ChaCha20 with an all-zero nonce and initial counter 0.
//! * The keystream is block 0, block 1, ... concatenated, each block being the 64 serialized
//!   (little-endian) output bytes. It equals the ChaCha20 encryption of an all-zero plaintext.
//!
//! For an all-zero seed the stream starts `76 b8 e0 ad a0 f1 3d 90` (RFC 8439, appendix A.1, test
//! vector #1).
//!
//! # Errors
//!
//! [`InputError`] rejects a chunk that cannot be run (bad file paths, files over the limit, NUL
//! bytes in arguments...). Inside a run, failures are errnos for the guest; the only other outcome
//! of a call is [`HostStop`].

mod abi;
#[cfg(feature = "protocol")]
pub mod assignment;
mod calls;

mod chunk;
mod clock;
mod ctx;
mod fs;
mod memory;
mod random;

pub use abi::{
    Errno, FUNCTIONS, FuncSig, MODULE_NAME, SIGNAL_MAX, ValType, advice, clockid, eventrwflags, eventtype, fdflags,
    filetype, fstflags, func, layout, lookup, lookupflags, oflags, preopentype, rights, subclockflags, whence,
};
pub use calls::MAX_IOVECS;
pub use chunk::{ChunkInput, ChunkOutputs, HostStop, InputError, OutputLimits};
pub use clock::CLOCK_STEP_NS;
pub use ctx::{FIRST_FREE_FD, MAX_OPEN_FDS, PREOPEN_FD, PREOPEN_NAME, WasiCtx, check_inputs};
pub use fs::{DEVICE_ID, MAX_FILE_BYTES, MAX_FS_NODES, MAX_NAME_BYTES, MAX_PATH_BYTES};
pub use memory::{GuestMemory, MemoryError};
pub use random::chacha20_block;
