//! The 46 WASI functions: decoding raw arguments, reading and writing guest memory, and mapping
//! every failure to an errno.
//!
//! Each function first validates everything it will touch (fds, flags, every guest buffer and
//! result pointer) and only then changes state, so a call that fails has no effect. Guest-supplied
//! lengths are checked against guest memory before anything is allocated for them.

mod fd;
mod path;
mod process;

use crate::abi::{Errno, func, layout};
use crate::chunk::HostStop;
use crate::ctx::WasiCtx;
use crate::fs::MAX_PATH_BYTES;
use crate::memory::{GuestMemory, check_range};

/// The most iovecs one read or write accepts (`INVAL` beyond). POSIX only promises 1024 (`IOV_MAX`);
/// the higher value keeps programs working that pass more, while bounding the iovec array we copy.
pub const MAX_IOVECS: u32 = 16_384;

/// The result of one WASI function, before it is turned into the raw errno.
pub(crate) type WasiResult = Result<(), Errno>;

/// Runs function `function` (already checked to exist and to match `args.len()`).
pub(crate) fn dispatch(
    ctx: &mut WasiCtx,
    memory: &mut dyn GuestMemory,
    function: usize,
    args: &[u64],
) -> Result<i32, HostStop> {
    // i32 parameters arrive zero-extended; truncating also accepts hosts that sign-extend.
    let a = |index: usize| args[index] as u32;
    let l = |index: usize| args[index];
    let result = match function {
        func::ARGS_GET => ctx.args_get(memory, a(0), a(1)),
        func::ARGS_SIZES_GET => ctx.args_sizes_get(memory, a(0), a(1)),
        func::ENVIRON_GET => ctx.environ_get(memory, a(0), a(1)),
        func::ENVIRON_SIZES_GET => ctx.environ_sizes_get(memory, a(0), a(1)),
        func::CLOCK_RES_GET => ctx.clock_res_get(memory, a(0), a(1)),
        func::CLOCK_TIME_GET => ctx.clock_time_get(memory, a(0), l(1), a(2)),
        func::FD_ADVISE => ctx.fd_advise(a(0), l(1), l(2), a(3)),
        func::FD_ALLOCATE => ctx.fd_allocate(a(0), l(1), l(2)),
        func::FD_CLOSE => ctx.close_fd(a(0)),
        func::FD_DATASYNC | func::FD_SYNC => ctx.fd(a(0)).map(|_| ()),
        func::FD_FDSTAT_GET => ctx.fd_fdstat_get(memory, a(0), a(1)),
        func::FD_FDSTAT_SET_FLAGS => ctx.fd_fdstat_set_flags(a(0), a(1)),
        func::FD_FDSTAT_SET_RIGHTS => ctx.fd(a(0)).map(|_| ()),
        func::FD_FILESTAT_GET => ctx.fd_filestat_get(memory, a(0), a(1)),
        func::FD_FILESTAT_SET_SIZE => ctx.fd_filestat_set_size(a(0), l(1)),
        func::FD_FILESTAT_SET_TIMES => ctx.fd_filestat_set_times(a(0), l(1), l(2), a(3)),
        func::FD_PREAD => ctx.fd_pread(memory, a(0), a(1), a(2), l(3), a(4)),
        func::FD_PRESTAT_GET => ctx.fd_prestat_get(memory, a(0), a(1)),
        func::FD_PRESTAT_DIR_NAME => ctx.fd_prestat_dir_name(memory, a(0), a(1), a(2)),
        func::FD_PWRITE => ctx.fd_pwrite(memory, a(0), a(1), a(2), l(3), a(4)),
        func::FD_READ => ctx.fd_read(memory, a(0), a(1), a(2), a(3)),
        func::FD_READDIR => ctx.fd_readdir(memory, a(0), a(1), a(2), l(3), a(4)),
        func::FD_RENUMBER => ctx.renumber_fd(a(0), a(1)),
        func::FD_SEEK => ctx.fd_seek(memory, a(0), l(1), a(2), a(3)),
        func::FD_TELL => ctx.fd_tell(memory, a(0), a(1)),
        func::FD_WRITE => ctx.fd_write(memory, a(0), a(1), a(2), a(3)),
        func::PATH_CREATE_DIRECTORY => ctx.path_create_directory(memory, a(0), a(1), a(2)),
        func::PATH_FILESTAT_GET => ctx.path_filestat_get(memory, a(0), a(1), a(2), a(3), a(4)),
        func::PATH_FILESTAT_SET_TIMES => ctx.path_filestat_set_times(memory, a(0), a(1), a(2), a(3), l(4), l(5), a(6)),
        // Hard links and symbolic links do not exist in this file system.
        func::PATH_LINK | func::PATH_SYMLINK => Err(Errno::Notsup),
        func::PATH_OPEN => ctx.path_open(memory, a(0), a(1), a(2), a(3), a(4), l(5), l(6), a(7), a(8)),
        func::PATH_READLINK => ctx.path_readlink(memory, a(0), a(1), a(2)),
        func::PATH_REMOVE_DIRECTORY => ctx.path_remove_directory(memory, a(0), a(1), a(2)),
        func::PATH_RENAME => ctx.path_rename(memory, a(0), a(1), a(2), a(3), a(4), a(5)),
        func::PATH_UNLINK_FILE => ctx.path_unlink_file(memory, a(0), a(1), a(2)),
        func::POLL_ONEOFF => ctx.poll_oneoff(memory, a(0), a(1), a(2), a(3)),
        func::PROC_EXIT => return Err(HostStop::Exit(a(0))),
        func::PROC_RAISE => ctx.proc_raise(a(0))?,
        func::SCHED_YIELD => Ok(()),
        func::RANDOM_GET => ctx.random_get(memory, a(0), a(1)),
        // There is no network: no fd is ever a socket.
        func::SOCK_ACCEPT | func::SOCK_RECV | func::SOCK_SEND | func::SOCK_SHUTDOWN => Err(Errno::Notsup),
        _ => Err(Errno::Inval),
    };
    Ok(match result {
        Ok(()) => Errno::Success.raw(),
        Err(errno) => errno.raw(),
    })
}

/// One `iovec` or `ciovec`: a guest buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Iovec {
    pub(crate) pointer: u32,
    pub(crate) len: u32,
}

/// Reads an iovec array and checks that every buffer lies inside guest memory. Returns the iovecs and
/// their total length, which must fit the u32 that reports how much was transferred.
pub(crate) fn read_iovecs(memory: &dyn GuestMemory, iovs: u32, iovs_len: u32) -> Result<(Vec<Iovec>, u32), Errno> {
    if iovs_len > MAX_IOVECS {
        return Err(Errno::Inval);
    }
    let mut raw = vec![0u8; (iovs_len * layout::IOVEC_SIZE) as usize];
    memory.read(iovs, &mut raw)?;
    let mut total: u32 = 0;
    let mut iovecs = Vec::with_capacity(iovs_len as usize);
    for chunk in raw.chunks_exact(layout::IOVEC_SIZE as usize) {
        let pointer = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        check_range(memory, pointer, u64::from(len))?;
        // POSIX readv/writev fail with EINVAL when the total overflows; here it must fit a u32.
        total = total.checked_add(len).ok_or(Errno::Inval)?;
        iovecs.push(Iovec { pointer, len });
    }
    Ok((iovecs, total))
}

/// Copies `source` into the iovec buffers in order; returns how many bytes were copied.
pub(crate) fn scatter(memory: &mut dyn GuestMemory, iovecs: &[Iovec], source: &[u8]) -> Result<u32, Errno> {
    let mut copied = 0usize;
    for iovec in iovecs {
        if copied == source.len() {
            break;
        }
        let take = (iovec.len as usize).min(source.len() - copied);
        memory.write(iovec.pointer, &source[copied..copied + take])?;
        copied += take;
    }
    // At most the iovecs' total, which read_iovecs checked to fit a u32.
    u32::try_from(copied).map_err(|_| Errno::Inval)
}

/// Fills `destination` from the iovec buffers in order (their total is `destination.len()`).
pub(crate) fn gather(memory: &dyn GuestMemory, iovecs: &[Iovec], destination: &mut [u8]) -> Result<(), Errno> {
    let mut filled = 0usize;
    for iovec in iovecs {
        let take = (iovec.len as usize).min(destination.len() - filled);
        memory.read(iovec.pointer, &mut destination[filled..filled + take])?;
        filled += take;
    }
    Ok(())
}

/// Reads a path argument: at most [`MAX_PATH_BYTES`], valid UTF-8 (witx `string`), no NUL bytes.
pub(crate) fn read_path(memory: &dyn GuestMemory, pointer: u32, len: u32) -> Result<String, Errno> {
    if len as usize > MAX_PATH_BYTES {
        return Err(Errno::Nametoolong);
    }
    let mut bytes = vec![0u8; len as usize];
    memory.read(pointer, &mut bytes)?;
    let path = String::from_utf8(bytes).map_err(|_| Errno::Ilseq)?;
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    Ok(path)
}

/// Reads a flags argument that is narrower than the i32 it is passed as, rejecting unknown bits.
pub(crate) fn flags_u16(raw: u32, known: u16) -> Result<u16, Errno> {
    u16::try_from(raw).ok().filter(|flags| flags & !known == 0).ok_or(Errno::Inval)
}

/// Reads one field of a struct image read from guest memory.
pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(field)
}
