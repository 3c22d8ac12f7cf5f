//! What goes into one chunk run and what comes out of it: the host-facing data types.
//!
//! Error types by layer: [`InputError`] is the host's problem (a chunk that cannot be run at all),
//! [`HostStop`] is the program ending itself inside a call, and every other failure is an errno
//! returned to the guest ([`Errno`](crate::Errno)), never a Rust error.

use std::collections::BTreeMap;

/// Everything that defines one chunk's run. Same input => byte-identical output on every host.
#[derive(Clone, Debug, Default)]
pub struct ChunkInput {
    /// The full argv, including `argv[0]`.
    pub args: Vec<String>,
    /// The only environment variables the program sees, in this order.
    pub env: Vec<(String, String)>,
    /// The bytes fd 0 yields before end of file.
    pub stdin: Vec<u8>,
    /// Input files, keyed by their path relative to /data: '/'-separated, possibly nested ("a/b.txt").
    pub files: BTreeMap<String, Vec<u8>>,
    /// The realtime clock at the start (the job's submission time, ns since the Unix epoch).
    pub clock_start_ns: u64,
    /// The seed for `random_get` (derived by the server from the chunk's identity).
    pub random_seed: [u8; 32],
    /// Caps on what the program may produce.
    pub limits: OutputLimits,
}

/// Caps on what one chunk run may produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes of stdout that are kept; later bytes are dropped and `stdout_truncated` is set.
    pub max_stdout_bytes: u64,
    /// Bytes of stderr that are kept; later bytes are dropped and `stderr_truncated` is set.
    pub max_stderr_bytes: u64,
    /// The total size of all file contents under /data (inputs included); writes beyond it fail with `NOSPC`.
    pub max_fs_bytes: u64,
}

impl Default for OutputLimits {
    fn default() -> OutputLimits {
        OutputLimits { max_stdout_bytes: 1 << 20, max_stderr_bytes: 1 << 20, max_fs_bytes: 256 << 20 }
    }
}

/// The outputs of a chunk run, collected by [`WasiCtx::finish`](crate::WasiCtx::finish).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkOutputs {
    /// Everything written to fd 1, up to `max_stdout_bytes`.
    pub stdout: Vec<u8>,
    /// Whether bytes written to fd 1 were dropped because of the cap.
    pub stdout_truncated: bool,
    /// Everything written to fd 2, up to `max_stderr_bytes`.
    pub stderr: Vec<u8>,
    /// Whether bytes written to fd 2 were dropped because of the cap.
    pub stderr_truncated: bool,
    /// Every regular file under /data that the program created or whose contents it changed (write,
    /// truncate, rename target...), relative path -> final contents. Unchanged input files are not
    /// listed. Deleted files are not listed.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a [`ChunkInput`] cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// An input file path is not a clean relative path.
    #[error("input file path {path:?} is invalid: {reason}")]
    InvalidFilePath {
        /// The offending path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An input file path needs a directory where another input is a file, or the other way round.
    #[error(
        "input file path {path:?} collides with {other:?}: one of them would have to be both a file and a directory"
    )]
    PathCollision {
        /// The path being added.
        path: String,
        /// The path it collides with.
        other: String,
    },
    /// The input files together are larger than `max_fs_bytes`.
    #[error("the input files hold {total_bytes} bytes, more than the file system limit of {max_fs_bytes} bytes")]
    FilesTooLarge {
        /// The total size of all input files.
        total_bytes: u64,
        /// The configured limit.
        max_fs_bytes: u64,
    },
    /// One input file is larger than any file may be.
    #[error("input file {path:?} holds {size} bytes, more than the per-file limit of {max_file_bytes} bytes")]
    FileTooLarge {
        /// The offending path.
        path: String,
        /// Its size.
        size: u64,
        /// The per-file limit, [`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES).
        max_file_bytes: u64,
    },
    /// The input files need more files and directories than the file system can hold.
    #[error("the input files need more than {max_nodes} files and directories")]
    TooManyFiles {
        /// The limit, [`MAX_FS_NODES`](crate::MAX_FS_NODES).
        max_nodes: usize,
    },
    /// An argument contains a NUL byte, which cannot be passed as a C string.
    #[error("argument {index} ({argument:?}) contains a NUL byte")]
    ArgumentContainsNul {
        /// The position in argv.
        index: usize,
        /// The argument.
        argument: String,
    },
    /// An environment variable cannot be represented as `KEY=VALUE\0`.
    #[error("environment variable {name:?} is invalid: {reason}")]
    InvalidEnvironmentVariable {
        /// The variable's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The arguments or the environment do not fit into the 32-bit sizes WASI reports them with.
    #[error("the {what} take more than 4 GiB")]
    ArgumentsTooLarge {
        /// "arguments" or "environment variables".
        what: &'static str,
    },
}

/// Why the guest stopped inside a host call (the host must then unwind the wasm execution).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostStop {
    /// `proc_exit` was called with this status.
    #[error("the program exited with status {0}")]
    Exit(u32),
    /// `proc_raise` was called with this signal number.
    #[error("the program raised signal {0}")]
    Raise(u8),
}
