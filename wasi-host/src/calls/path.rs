//! The `path_*` functions: everything that names a file by a path relative to a directory fd.

use super::fd::write_filestat;
use super::{WasiResult, flags_u16, read_path};
use crate::abi::{Errno, fdflags, lookupflags, oflags, rights};
use crate::ctx::{FdKind, MAX_OPEN_FDS, WasiCtx};
use crate::memory::{GuestMemory, check_range, write_u32};

/// Symbolic links do not exist, so following them or not makes no difference; unknown bits are
/// still refused.
fn check_lookup_flags(flags: u32) -> WasiResult {
    if flags & !lookupflags::ALL != 0 {
        return Err(Errno::Inval);
    }
    Ok(())
}

impl WasiCtx {
    // The parameters mirror the WASI signature one to one, which is easier to check than a struct.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_open(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        lookup_flags: u32,
        path_pointer: u32,
        path_len: u32,
        open_flags: u32,
        rights_base: u64,
        _rights_inheriting: u64,
        fd_flags: u32,
        fd_pointer: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        check_lookup_flags(lookup_flags)?;
        let open_flags = flags_u16(open_flags, oflags::ALL)?;
        let fd_flags = flags_u16(fd_flags, fdflags::ALL)?;
        let path = read_path(memory, path_pointer, path_len)?;
        check_range(memory, fd_pointer, 4)?;
        // Refuse before creating or truncating anything, so that MFILE leaves the file system untouched.
        if self.fds.len() >= MAX_OPEN_FDS {
            return Err(Errno::Mfile);
        }
        let now = self.clock.realtime_ns();
        // Rights are not enforced, but asking to write a directory is refused as POSIX open() does.
        let write_requested = rights_base & rights::FD_WRITE != 0;
        let inode = self.fs.open(directory, &path, open_flags, write_requested, now)?;
        let kind = if self.fs.is_directory(inode) {
            FdKind::Directory { inode, preopen: false }
        } else {
            FdKind::File { inode, position: 0 }
        };
        let fd = self.allocate_fd(kind, fd_flags)?;
        write_u32(memory, fd_pointer, fd)
    }

    pub(crate) fn path_create_directory(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        path_pointer: u32,
        path_len: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        let path = read_path(memory, path_pointer, path_len)?;
        let now = self.clock.realtime_ns();
        self.fs.create_directory(directory, &path, now)
    }

    pub(crate) fn path_remove_directory(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        path_pointer: u32,
        path_len: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        let path = read_path(memory, path_pointer, path_len)?;
        let now = self.clock.realtime_ns();
        self.fs.remove_directory(directory, &path, now)
    }

    pub(crate) fn path_unlink_file(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        path_pointer: u32,
        path_len: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        let path = read_path(memory, path_pointer, path_len)?;
        let now = self.clock.realtime_ns();
        self.fs.unlink_file(directory, &path, now)
    }

    pub(crate) fn path_filestat_get(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        lookup_flags: u32,
        path_pointer: u32,
        path_len: u32,
        stat_pointer: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        check_lookup_flags(lookup_flags)?;
        let path = read_path(memory, path_pointer, path_len)?;
        let inode = self.fs.resolve_existing(directory, &path)?;
        let stat = self.fs.stat(inode)?;
        write_filestat(memory, stat_pointer, &stat)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_filestat_set_times(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        lookup_flags: u32,
        path_pointer: u32,
        path_len: u32,
        atim: u64,
        mtim: u64,
        fst_flags: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        check_lookup_flags(lookup_flags)?;
        let fst_flags = u16::try_from(fst_flags).map_err(|_| Errno::Inval)?;
        let path = read_path(memory, path_pointer, path_len)?;
        let inode = self.fs.resolve_existing(directory, &path)?;
        let now = self.clock.realtime_ns();
        self.fs.set_times(inode, atim, mtim, fst_flags, now)
    }

    // The parameters mirror the WASI signature one to one, which is easier to check than a struct.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_rename(
        &mut self,
        memory: &mut dyn GuestMemory,
        old_dir_fd: u32,
        old_path_pointer: u32,
        old_path_len: u32,
        new_dir_fd: u32,
        new_path_pointer: u32,
        new_path_len: u32,
    ) -> WasiResult {
        let old_directory = self.directory_fd(old_dir_fd)?;
        let new_directory = self.directory_fd(new_dir_fd)?;
        let old_path = read_path(memory, old_path_pointer, old_path_len)?;
        let new_path = read_path(memory, new_path_pointer, new_path_len)?;
        let now = self.clock.realtime_ns();
        self.fs.rename(old_directory, &old_path, new_directory, &new_path, now)
    }

    /// There are no symbolic links, so any existing path is "not a symbolic link" (`INVAL`, as
    /// readlink(2) says); a missing one is `NOENT` as usual.
    pub(crate) fn path_readlink(
        &mut self,
        memory: &mut dyn GuestMemory,
        dir_fd: u32,
        path_pointer: u32,
        path_len: u32,
    ) -> WasiResult {
        let directory = self.directory_fd(dir_fd)?;
        let path = read_path(memory, path_pointer, path_len)?;
        self.fs.resolve_existing(directory, &path)?;
        Err(Errno::Inval)
    }
}
