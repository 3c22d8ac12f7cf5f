//! The wasi_snapshot_preview1 ABI: errno values, flag and enum constants, struct layouts and the
//! signature table of all 46 functions, exactly as in the official witx.
//!
//! Nothing in here has behaviour; it is the vocabulary shared by the calls and by hosts that need to
//! declare the imports (wasmtime `Linker::func_new`, or the JS import object of the browser worker).

/// The name of the import module every preview-1 program imports its WASI functions from.
pub const MODULE_NAME: &str = "wasi_snapshot_preview1";

/// A core wasm value type as it appears in WASI function signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValType {
    /// A 32-bit integer (pointers, lengths, fds, enums and flags of up to 32 bits).
    I32,
    /// A 64-bit integer (file sizes, offsets, timestamps, rights).
    I64,
}

/// The core wasm signature of one WASI function.
#[derive(Debug)]
pub struct FuncSig {
    /// The import name inside [`MODULE_NAME`].
    pub name: &'static str,
    /// The parameter types, in order.
    pub params: &'static [ValType],
    /// The result types: `[I32]` (the errno) for every function except `proc_exit`, which returns nothing.
    pub results: &'static [ValType],
}

macro_rules! wasi_functions {
    ($( $const_name:ident $name:literal ( $($param:ident),* ) -> ( $($result:ident),* ); )*) => {
        // The discriminants of this enum are the positions in `FUNCTIONS`, so the constants in `func`
        // cannot drift away from the table.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum FunctionIndex {
            $( $const_name, )*
        }

        /// The index of every function in [`FUNCTIONS`], for hosts and tests that call a function by name
        /// without going through [`lookup`].
        pub mod func {
            $(
                #[doc = concat!("The index of `", $name, "` in [`FUNCTIONS`](super::FUNCTIONS).")]
                pub const $const_name: usize = super::FunctionIndex::$const_name as usize;
            )*
        }

        /// All 46 functions of wasi_snapshot_preview1 in witx order; the index into this slice is the `func`
        /// id passed to [`WasiCtx::call`](crate::WasiCtx::call).
        pub static FUNCTIONS: &[FuncSig] = &[
            $( FuncSig { name: $name, params: &[$(ValType::$param),*], results: &[$(ValType::$result),*] }, )*
        ];
    };
}

wasi_functions! {
    ARGS_GET "args_get" (I32, I32) -> (I32);
    ARGS_SIZES_GET "args_sizes_get" (I32, I32) -> (I32);
    ENVIRON_GET "environ_get" (I32, I32) -> (I32);
    ENVIRON_SIZES_GET "environ_sizes_get" (I32, I32) -> (I32);
    CLOCK_RES_GET "clock_res_get" (I32, I32) -> (I32);
    CLOCK_TIME_GET "clock_time_get" (I32, I64, I32) -> (I32);
    FD_ADVISE "fd_advise" (I32, I64, I64, I32) -> (I32);
    FD_ALLOCATE "fd_allocate" (I32, I64, I64) -> (I32);
    FD_CLOSE "fd_close" (I32) -> (I32);
    FD_DATASYNC "fd_datasync" (I32) -> (I32);
    FD_FDSTAT_GET "fd_fdstat_get" (I32, I32) -> (I32);
    FD_FDSTAT_SET_FLAGS "fd_fdstat_set_flags" (I32, I32) -> (I32);
    FD_FDSTAT_SET_RIGHTS "fd_fdstat_set_rights" (I32, I64, I64) -> (I32);
    FD_FILESTAT_GET "fd_filestat_get" (I32, I32) -> (I32);
    FD_FILESTAT_SET_SIZE "fd_filestat_set_size" (I32, I64) -> (I32);
    FD_FILESTAT_SET_TIMES "fd_filestat_set_times" (I32, I64, I64, I32) -> (I32);
    FD_PREAD "fd_pread" (I32, I32, I32, I64, I32) -> (I32);
    FD_PRESTAT_GET "fd_prestat_get" (I32, I32) -> (I32);
    FD_PRESTAT_DIR_NAME "fd_prestat_dir_name" (I32, I32, I32) -> (I32);
    FD_PWRITE "fd_pwrite" (I32, I32, I32, I64, I32) -> (I32);
    FD_READ "fd_read" (I32, I32, I32, I32) -> (I32);
    FD_READDIR "fd_readdir" (I32, I32, I32, I64, I32) -> (I32);
    FD_RENUMBER "fd_renumber" (I32, I32) -> (I32);
    FD_SEEK "fd_seek" (I32, I64, I32, I32) -> (I32);
    FD_SYNC "fd_sync" (I32) -> (I32);
    FD_TELL "fd_tell" (I32, I32) -> (I32);
    FD_WRITE "fd_write" (I32, I32, I32, I32) -> (I32);
    PATH_CREATE_DIRECTORY "path_create_directory" (I32, I32, I32) -> (I32);
    PATH_FILESTAT_GET "path_filestat_get" (I32, I32, I32, I32, I32) -> (I32);
    PATH_FILESTAT_SET_TIMES "path_filestat_set_times" (I32, I32, I32, I32, I64, I64, I32) -> (I32);
    PATH_LINK "path_link" (I32, I32, I32, I32, I32, I32, I32) -> (I32);
    PATH_OPEN "path_open" (I32, I32, I32, I32, I32, I64, I64, I32, I32) -> (I32);
    PATH_READLINK "path_readlink" (I32, I32, I32, I32, I32, I32) -> (I32);
    PATH_REMOVE_DIRECTORY "path_remove_directory" (I32, I32, I32) -> (I32);
    PATH_RENAME "path_rename" (I32, I32, I32, I32, I32, I32) -> (I32);
    PATH_SYMLINK "path_symlink" (I32, I32, I32, I32, I32) -> (I32);
    PATH_UNLINK_FILE "path_unlink_file" (I32, I32, I32) -> (I32);
    POLL_ONEOFF "poll_oneoff" (I32, I32, I32, I32) -> (I32);
    PROC_EXIT "proc_exit" (I32) -> ();
    PROC_RAISE "proc_raise" (I32) -> (I32);
    SCHED_YIELD "sched_yield" () -> (I32);
    RANDOM_GET "random_get" (I32, I32) -> (I32);
    SOCK_ACCEPT "sock_accept" (I32, I32, I32) -> (I32);
    SOCK_RECV "sock_recv" (I32, I32, I32, I32, I32, I32) -> (I32);
    SOCK_SEND "sock_send" (I32, I32, I32, I32, I32) -> (I32);
    SOCK_SHUTDOWN "sock_shutdown" (I32, I32) -> (I32);
}

/// Returns the index in [`FUNCTIONS`] of the preview-1 function called `name`.
pub fn lookup(name: &str) -> Option<usize> {
    FUNCTIONS.iter().position(|function| function.name == name)
}

macro_rules! errno_enum {
    ($( $variant:ident = $value:literal $name:literal, )*) => {
        /// A WASI errno, with the numeric values of the witx `errno` enum.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u16)]
        pub enum Errno {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($value), ").")]
                $variant = $value,
            )*
        }

        impl Errno {
            /// The lower-case witx name, such as `"badf"`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Errno::$variant => $name, )*
                }
            }

            /// The errno with the given numeric value, if there is one.
            pub fn from_raw(raw: u16) -> Option<Errno> {
                match raw {
                    $( $value => Some(Errno::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

errno_enum! {
    Success = 0 "success",
    TooBig = 1 "2big",
    Acces = 2 "acces",
    Addrinuse = 3 "addrinuse",
    Addrnotavail = 4 "addrnotavail",
    Afnosupport = 5 "afnosupport",
    Again = 6 "again",
    Already = 7 "already",
    Badf = 8 "badf",
    Badmsg = 9 "badmsg",
    Busy = 10 "busy",
    Canceled = 11 "canceled",
    Child = 12 "child",
    Connaborted = 13 "connaborted",
    Connrefused = 14 "connrefused",
    Connreset = 15 "connreset",
    Deadlk = 16 "deadlk",
    Destaddrreq = 17 "destaddrreq",
    Dom = 18 "dom",
    Dquot = 19 "dquot",
    Exist = 20 "exist",
    Fault = 21 "fault",
    Fbig = 22 "fbig",
    Hostunreach = 23 "hostunreach",
    Idrm = 24 "idrm",
    Ilseq = 25 "ilseq",
    Inprogress = 26 "inprogress",
    Intr = 27 "intr",
    Inval = 28 "inval",
    Io = 29 "io",
    Isconn = 30 "isconn",
    Isdir = 31 "isdir",
    Loop = 32 "loop",
    Mfile = 33 "mfile",
    Mlink = 34 "mlink",
    Msgsize = 35 "msgsize",
    Multihop = 36 "multihop",
    Nametoolong = 37 "nametoolong",
    Netdown = 38 "netdown",
    Netreset = 39 "netreset",
    Netunreach = 40 "netunreach",
    Nfile = 41 "nfile",
    Nobufs = 42 "nobufs",
    Nodev = 43 "nodev",
    Noent = 44 "noent",
    Noexec = 45 "noexec",
    Nolck = 46 "nolck",
    Nolink = 47 "nolink",
    Nomem = 48 "nomem",
    Nomsg = 49 "nomsg",
    Noprotoopt = 50 "noprotoopt",
    Nospc = 51 "nospc",
    Nosys = 52 "nosys",
    Notconn = 53 "notconn",
    Notdir = 54 "notdir",
    Notempty = 55 "notempty",
    Notrecoverable = 56 "notrecoverable",
    Notsock = 57 "notsock",
    Notsup = 58 "notsup",
    Notty = 59 "notty",
    Nxio = 60 "nxio",
    Overflow = 61 "overflow",
    Ownerdead = 62 "ownerdead",
    Perm = 63 "perm",
    Pipe = 64 "pipe",
    Proto = 65 "proto",
    Protonosupport = 66 "protonosupport",
    Prototype = 67 "prototype",
    Range = 68 "range",
    Rofs = 69 "rofs",
    Spipe = 70 "spipe",
    Srch = 71 "srch",
    Stale = 72 "stale",
    Timedout = 73 "timedout",
    Txtbsy = 74 "txtbsy",
    Xdev = 75 "xdev",
    Notcapable = 76 "notcapable",
}

impl Errno {
    /// The value a WASI function returns to the guest.
    pub fn raw(self) -> i32 {
        i32::from(self as u16)
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "errno {} ({})", *self as u16, self.name())
    }
}

/// Values of the witx `filetype` enum (u8).
pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const BLOCK_DEVICE: u8 = 1;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SOCKET_DGRAM: u8 = 5;
    pub const SOCKET_STREAM: u8 = 6;
    pub const SYMBOLIC_LINK: u8 = 7;
}

/// Bits of the witx `rights` flags (u64).
pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    /// Every right defined by preview 1; every fd reports these as both base and inheriting rights.
    pub const ALL: u64 = (1 << 30) - 1;
}

/// Bits of the witx `oflags` flags (u16), the `oflags` argument of `path_open`.
pub mod oflags {
    pub const CREAT: u16 = 1 << 0;
    pub const DIRECTORY: u16 = 1 << 1;
    pub const EXCL: u16 = 1 << 2;
    pub const TRUNC: u16 = 1 << 3;
    pub const ALL: u16 = CREAT | DIRECTORY | EXCL | TRUNC;
}

/// Bits of the witx `fdflags` flags (u16).
pub mod fdflags {
    pub const APPEND: u16 = 1 << 0;
    pub const DSYNC: u16 = 1 << 1;
    pub const NONBLOCK: u16 = 1 << 2;
    pub const RSYNC: u16 = 1 << 3;
    pub const SYNC: u16 = 1 << 4;
    pub const ALL: u16 = APPEND | DSYNC | NONBLOCK | RSYNC | SYNC;
}

/// Bits of the witx `lookupflags` flags (u32).
pub mod lookupflags {
    pub const SYMLINK_FOLLOW: u32 = 1 << 0;
    pub const ALL: u32 = SYMLINK_FOLLOW;
}

/// Values of the witx `whence` enum (u8).
pub mod whence {
    pub const SET: u8 = 0;
    pub const CUR: u8 = 1;
    pub const END: u8 = 2;
}

/// Values of the witx `clockid` enum (u32).
pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME_ID: u32 = 2;
    pub const THREAD_CPUTIME_ID: u32 = 3;
}

/// Values of the witx `eventtype` enum (u8).
pub mod eventtype {
    pub const CLOCK: u8 = 0;
    pub const FD_READ: u8 = 1;
    pub const FD_WRITE: u8 = 2;
}

/// Bits of the witx `subclockflags` flags (u16).
pub mod subclockflags {
    pub const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1 << 0;
    pub const ALL: u16 = SUBSCRIPTION_CLOCK_ABSTIME;
}

/// Bits of the witx `eventrwflags` flags (u16).
pub mod eventrwflags {
    pub const FD_READWRITE_HANGUP: u16 = 1 << 0;
}

/// Bits of the witx `fstflags` flags (u16).
pub mod fstflags {
    pub const ATIM: u16 = 1 << 0;
    pub const ATIM_NOW: u16 = 1 << 1;
    pub const MTIM: u16 = 1 << 2;
    pub const MTIM_NOW: u16 = 1 << 3;
    pub const ALL: u16 = ATIM | ATIM_NOW | MTIM | MTIM_NOW;
}

/// Values of the witx `advice` enum (u8).
pub mod advice {
    pub const NORMAL: u8 = 0;
    pub const SEQUENTIAL: u8 = 1;
    pub const RANDOM: u8 = 2;
    pub const WILLNEED: u8 = 3;
    pub const DONTNEED: u8 = 4;
    pub const NOREUSE: u8 = 5;
}

/// Values of the witx `preopentype` enum (u8).
pub mod preopentype {
    pub const DIR: u8 = 0;
}

/// The largest valid value of the witx `signal` enum (`sys`, 30).
pub const SIGNAL_MAX: u32 = 30;

/// Sizes and field offsets of the witx structs that cross the guest boundary.
pub mod layout {
    /// `iovec` and `ciovec`: `buf: u32 @0`, `buf_len: u32 @4`.
    pub const IOVEC_SIZE: u32 = 8;
    /// `fdstat`: `fs_filetype: u8 @0`, `fs_flags: u16 @2`, `fs_rights_base: u64 @8`,
    /// `fs_rights_inheriting: u64 @16`.
    pub const FDSTAT_SIZE: usize = 24;
    /// `filestat`: `dev @0`, `ino @8`, `filetype: u8 @16`, `nlink @24`, `size @32`, `atim @40`,
    /// `mtim @48`, `ctim @56` (all u64 except the filetype).
    pub const FILESTAT_SIZE: usize = 64;
    /// `prestat`: `tag: u8 @0`, `pr_name_len: u32 @4`.
    pub const PRESTAT_SIZE: usize = 8;
    /// `dirent`: `d_next: u64 @0`, `d_ino: u64 @8`, `d_namlen: u32 @16`, `d_type: u8 @20`; the name follows.
    pub const DIRENT_SIZE: usize = 24;
    /// `subscription`: `userdata: u64 @0`, tag `u8 @8`, then for clocks `id: u32 @16`, `timeout: u64 @24`,
    /// `precision: u64 @32`, `flags: u16 @40`, and for fd events `file_descriptor: u32 @16`.
    pub const SUBSCRIPTION_SIZE: usize = 48;
    /// `event`: `userdata: u64 @0`, `error: u16 @8`, `type: u8 @10`, `fd_readwrite.nbytes: u64 @16`,
    /// `fd_readwrite.flags: u16 @24`.
    pub const EVENT_SIZE: usize = 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_round_trip() {
        for raw in 0..=76u16 {
            let errno = Errno::from_raw(raw).expect("every value up to notcapable is defined");
            assert_eq!(errno as u16, raw);
        }
        assert_eq!(Errno::from_raw(77), None);
        assert_eq!(Errno::Badf.raw(), 8);
        assert_eq!(Errno::Notcapable.name(), "notcapable");
        assert_eq!(Errno::TooBig.to_string(), "errno 1 (2big)");
    }

    #[test]
    fn function_index_constants_match_the_table() {
        assert_eq!(FUNCTIONS[func::ARGS_GET].name, "args_get");
        assert_eq!(FUNCTIONS[func::FD_WRITE].name, "fd_write");
        assert_eq!(FUNCTIONS[func::PATH_OPEN].name, "path_open");
        assert_eq!(FUNCTIONS[func::SOCK_SHUTDOWN].name, "sock_shutdown");
        for (index, function) in FUNCTIONS.iter().enumerate() {
            assert_eq!(lookup(function.name), Some(index));
        }
    }
}
