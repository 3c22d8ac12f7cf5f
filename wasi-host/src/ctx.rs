//! The state of one chunk run ([`WasiCtx`]): arguments, stdio buffers, the fd table, the file
//! system, the clock and the random stream.
//!
//! The WASI functions themselves live in `calls/`; this module owns construction from a
//! [`ChunkInput`], the fd table and turning the state into [`ChunkOutputs`] at the end.

use std::collections::BTreeMap;

use crate::abi::{Errno, FUNCTIONS};
use crate::chunk::{ChunkInput, ChunkOutputs, HostStop, InputError};
use crate::clock::VirtualClock;
use crate::fs::{FileSystem, Inode, ROOT};
use crate::memory::GuestMemory;
use crate::random::RandomStream;

/// The fd of the preopened /data directory.
pub const PREOPEN_FD: u32 = 3;
/// The name `fd_prestat_dir_name` reports for [`PREOPEN_FD`]; wasi-libc and Rust std map absolute
/// paths under it to that fd.
pub const PREOPEN_NAME: &str = "/data";
/// The lowest fd number `path_open` hands out; 0 to 3 are reserved for stdio and the preopen.
pub const FIRST_FREE_FD: u32 = 4;
/// The most fds that can be open at once (`MFILE` beyond); it bounds the size of the fd table.
pub const MAX_OPEN_FDS: usize = 4096;

/// What an fd refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    Stdin,
    Stdout,
    Stderr,
    Directory { inode: Inode, preopen: bool },
    File { inode: Inode, position: u64 },
}

impl FdKind {
    fn inode(self) -> Option<Inode> {
        match self {
            FdKind::Directory { inode, .. } | FdKind::File { inode, .. } => Some(inode),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => None,
        }
    }
}

/// One entry of the fd table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FdEntry {
    pub(crate) kind: FdKind,
    /// The `fdflags` set by `path_open` or `fd_fdstat_set_flags`; only `APPEND` changes behaviour.
    pub(crate) flags: u16,
}

/// An output stream that keeps at most `cap` bytes.
#[derive(Debug)]
pub(crate) struct CappedBuffer {
    pub(crate) data: Vec<u8>,
    pub(crate) cap: u64,
    pub(crate) truncated: bool,
}

impl CappedBuffer {
    fn new(cap: u64) -> CappedBuffer {
        CappedBuffer { data: Vec::new(), cap, truncated: false }
    }

    /// How many of `len` offered bytes still fit; marks the buffer truncated if not all of them do.
    pub(crate) fn reserve(&mut self, len: u32) -> usize {
        let room = self.cap.saturating_sub(self.data.len() as u64);
        if u64::from(len) > room {
            self.truncated = true;
        }
        // `room` is only taken when it is below `len`, a u32, so the result always fits into usize.
        u64::from(len).min(room) as usize
    }
}

/// Argument or environment strings, laid out once as `args_get`/`environ_get` copy them into the
/// guest: every string NUL-terminated, back to back, plus the offset of each one.
#[derive(Debug, Default)]
pub(crate) struct StringList {
    pub(crate) buffer: Vec<u8>,
    pub(crate) offsets: Vec<u32>,
}

impl StringList {
    fn new<'a>(
        strings: impl Iterator<Item = std::borrow::Cow<'a, str>>,
        what: &'static str,
    ) -> Result<StringList, InputError> {
        let mut list = StringList::default();
        for string in strings {
            let offset = u32::try_from(list.buffer.len()).map_err(|_| InputError::ArgumentsTooLarge { what })?;
            list.offsets.push(offset);
            list.buffer.extend_from_slice(string.as_bytes());
            list.buffer.push(0);
        }
        // The pointer array must fit into 32-bit guest memory as well.
        let pointer_bytes = (list.offsets.len() as u64).saturating_mul(4);
        if u32::try_from(list.buffer.len()).is_err() || u32::try_from(pointer_bytes).is_err() {
            return Err(InputError::ArgumentsTooLarge { what });
        }
        Ok(list)
    }
}

/// The WASI state of one chunk run.
pub struct WasiCtx {
    pub(crate) args: StringList,
    pub(crate) env: StringList,
    pub(crate) stdin: Vec<u8>,
    /// How many bytes of `stdin` the program has read.
    pub(crate) stdin_position: usize,
    pub(crate) stdout: CappedBuffer,
    pub(crate) stderr: CappedBuffer,
    pub(crate) fds: BTreeMap<u32, FdEntry>,
    pub(crate) fs: FileSystem,
    pub(crate) clock: VirtualClock,
    pub(crate) random: RandomStream,
}

impl std::fmt::Debug for WasiCtx {
    // A summary rather than a dump: the buffers and files can be hundreds of megabytes.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WasiCtx")
            .field("args", &self.args.offsets.len())
            .field("stdin_position", &self.stdin_position)
            .field("stdout_bytes", &self.stdout.data.len())
            .field("stderr_bytes", &self.stderr.data.len())
            .field("fds", &self.fds)
            .field("fs_bytes", &self.fs.bytes_used())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Checks that arguments and environment variables can be passed as C strings.
pub(crate) fn check_args_and_env<'a>(
    args: impl IntoIterator<Item = &'a str>,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), InputError> {
    for (index, argument) in args.into_iter().enumerate() {
        if argument.contains('\0') {
            return Err(InputError::ArgumentContainsNul { index, argument: argument.to_owned() });
        }
    }
    for (name, value) in env {
        let invalid = |reason| InputError::InvalidEnvironmentVariable { name: name.to_owned(), reason };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if name.contains('=') {
            return Err(invalid("the name contains '='"));
        }
        if name.contains('\0') || value.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }
    }
    Ok(())
}

/// Checks, without building anything, what [`WasiCtx::new`] would refuse about a chunk's arguments,
/// environment and input files (given as path and size). The coordinator calls it when a job is
/// submitted, so that bad input is refused up front instead of failing on every volunteer.
pub fn check_inputs<'a>(
    args: impl IntoIterator<Item = &'a str>,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    files: impl IntoIterator<Item = (&'a str, u64)>,
    max_fs_bytes: u64,
) -> Result<(), InputError> {
    check_args_and_env(args, env)?;
    let mut paths = BTreeMap::new();
    let mut total_bytes = 0u64;
    for (path, size) in files {
        if size > crate::MAX_FILE_BYTES {
            return Err(InputError::FileTooLarge {
                path: path.to_owned(),
                size,
                max_file_bytes: crate::MAX_FILE_BYTES,
            });
        }
        total_bytes = total_bytes.saturating_add(size);
        paths.insert(path.to_owned(), Vec::new());
    }
    if total_bytes > max_fs_bytes {
        return Err(InputError::FilesTooLarge { total_bytes, max_fs_bytes });
    }
    // Building the tree with empty contents checks the paths, collisions and the node limit exactly as a
    // real run does.
    FileSystem::new(paths, max_fs_bytes, 0).map(drop)
}

impl WasiCtx {
    /// Prepares a run of one chunk: validates the input and builds the file system and fd table.
    pub fn new(input: ChunkInput) -> Result<WasiCtx, InputError> {
        check_args_and_env(
            input.args.iter().map(String::as_str),
            input.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        let args = StringList::new(input.args.iter().map(|argument| argument.as_str().into()), "arguments")?;
        let env = StringList::new(
            input.env.iter().map(|(name, value)| format!("{name}={value}").into()),
            "environment variables",
        )?;
        let clock = VirtualClock::new(input.clock_start_ns);
        let fs = FileSystem::new(input.files, input.limits.max_fs_bytes, clock.realtime_ns())?;

        let mut fds = BTreeMap::new();
        fds.insert(0, FdEntry { kind: FdKind::Stdin, flags: 0 });
        fds.insert(1, FdEntry { kind: FdKind::Stdout, flags: 0 });
        fds.insert(2, FdEntry { kind: FdKind::Stderr, flags: 0 });
        fds.insert(PREOPEN_FD, FdEntry { kind: FdKind::Directory { inode: ROOT, preopen: true }, flags: 0 });
        let mut ctx = WasiCtx {
            args,
            env,
            stdin: input.stdin,
            stdin_position: 0,
            stdout: CappedBuffer::new(input.limits.max_stdout_bytes),
            stderr: CappedBuffer::new(input.limits.max_stderr_bytes),
            fds,
            fs,
            clock,
            random: RandomStream::new(input.random_seed),
        };
        ctx.fs.fd_opened(ROOT);
        Ok(ctx)
    }

    /// Runs preview-1 function `FUNCTIONS[func]` with raw argument values: each i32 param is passed as
    /// its u32 bit pattern zero-extended to u64 (only the low 32 bits are used, so sign-extended
    /// values work too), each i64 param as its u64 bit pattern.
    ///
    /// `memory` can be a `&mut dyn GuestMemory`, or directly the `&mut [u8]` of a linear memory (or a
    /// `&mut Vec<u8>`, or any other implementation): the parameter is generic because an unsized
    /// `[u8]` cannot be turned into a `dyn GuestMemory` by the caller.
    ///
    /// Returns the i32 result (the errno; 0 = success) or [`HostStop`] for `proc_exit`/`proc_raise`.
    /// An unknown `func` or a wrong number of arguments is a host bug and yields errno `INVAL`. Never
    /// panics on any guest input.
    pub fn call<M: GuestMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        func: usize,
        args: &[u64],
    ) -> Result<i32, HostStop> {
        match FUNCTIONS.get(func) {
            Some(signature) if signature.params.len() == args.len() => {}
            _ => return Ok(Errno::Inval.raw()),
        }
        // `&mut M` is sized even when `M` is not, so it can become the trait object the calls use;
        // that keeps the whole implementation non-generic.
        let mut memory = memory;
        crate::calls::dispatch(self, &mut memory, func, args)
    }

    /// The outputs once the run is over.
    pub fn finish(self) -> ChunkOutputs {
        ChunkOutputs {
            stdout: self.stdout.data,
            stdout_truncated: self.stdout.truncated,
            stderr: self.stderr.data,
            stderr_truncated: self.stderr.truncated,
            files: self.fs.into_outputs(),
        }
    }

    /// Nanoseconds of virtual time that have passed since the start of the run.
    pub fn elapsed_ns(&self) -> u64 {
        self.clock.elapsed_ns()
    }

    /// The total size of all file contents under /data right now.
    pub fn fs_bytes_used(&self) -> u64 {
        self.fs.bytes_used()
    }

    pub(crate) fn fd(&self, fd: u32) -> Result<FdEntry, Errno> {
        self.fds.get(&fd).copied().ok_or(Errno::Badf)
    }

    /// The directory an fd refers to, for the `path_*` calls.
    pub(crate) fn directory_fd(&self, fd: u32) -> Result<Inode, Errno> {
        match self.fd(fd)?.kind {
            FdKind::Directory { inode, .. } => Ok(inode),
            _ => Err(Errno::Notdir),
        }
    }

    /// Adds an fd for `kind` at the lowest free number from [`FIRST_FREE_FD`] on.
    pub(crate) fn allocate_fd(&mut self, kind: FdKind, flags: u16) -> Result<u32, Errno> {
        if self.fds.len() >= MAX_OPEN_FDS {
            return Err(Errno::Mfile);
        }
        let fd = (FIRST_FREE_FD..=u32::MAX).find(|fd| !self.fds.contains_key(fd)).ok_or(Errno::Mfile)?;
        if let Some(inode) = kind.inode() {
            self.fs.fd_opened(inode);
        }
        self.fds.insert(fd, FdEntry { kind, flags });
        Ok(fd)
    }

    /// Removes an fd, releasing the node it referred to.
    pub(crate) fn close_fd(&mut self, fd: u32) -> Result<(), Errno> {
        let entry = self.fds.remove(&fd).ok_or(Errno::Badf)?;
        if let Some(inode) = entry.kind.inode() {
            self.fs.fd_closed(inode);
        }
        Ok(())
    }

    /// Moves fd `from` to number `to`, closing what `to` referred to.
    pub(crate) fn renumber_fd(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        // Both must be open, as in wasmtime; renumbering onto an unused number is not a preview-1 feature.
        self.fd(from)?;
        self.fd(to)?;
        if from == to {
            return Ok(());
        }
        self.close_fd(to)?;
        let entry = self.fds.remove(&from).ok_or(Errno::Badf)?;
        self.fds.insert(to, entry);
        Ok(())
    }

    pub(crate) fn set_fd_kind(&mut self, fd: u32, kind: FdKind) {
        if let Some(entry) = self.fds.get_mut(&fd) {
            entry.kind = kind;
        }
    }
}
