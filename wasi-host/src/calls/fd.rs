//! The `fd_*` functions: reading, writing, seeking and inspecting open fds.

use super::{WasiResult, flags_u16, gather, read_iovecs, scatter};
use crate::abi::{Errno, fdflags, filetype, layout, preopentype, rights, whence};
use crate::ctx::{FdKind, PREOPEN_NAME, WasiCtx};
use crate::fs::{DEVICE_ID, Filestat};
use crate::memory::{GuestMemory, StructImage, check_range, write_u32, write_u64};

/// The highest valid value of the witx `advice` enum (`noreuse`).
const ADVICE_MAX: u32 = 5;

/// The metadata reported for stdin, stdout and stderr: character devices without a file behind them.
fn stdio_filestat() -> Filestat {
    Filestat {
        dev: DEVICE_ID,
        ino: 0,
        filetype: filetype::CHARACTER_DEVICE,
        nlink: 1,
        size: 0,
        atim: 0,
        mtim: 0,
        ctim: 0,
    }
}

pub(crate) fn write_filestat(memory: &mut dyn GuestMemory, pointer: u32, stat: &Filestat) -> WasiResult {
    let mut image = StructImage::<{ layout::FILESTAT_SIZE }>::new();
    image.put_u64(0, stat.dev);
    image.put_u64(8, stat.ino);
    image.put_u8(16, stat.filetype);
    image.put_u64(24, stat.nlink);
    image.put_u64(32, stat.size);
    image.put_u64(40, stat.atim);
    image.put_u64(48, stat.mtim);
    image.put_u64(56, stat.ctim);
    Ok(memory.write(pointer, &image.bytes)?)
}

impl WasiCtx {
    pub(crate) fn fd_read(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        nread_pointer: u32,
    ) -> WasiResult {
        let entry = self.fd(fd)?;
        let (iovecs, _) = read_iovecs(memory, iovs, iovs_len)?;
        check_range(memory, nread_pointer, 4)?;
        let nread = match entry.kind {
            FdKind::Stdin => {
                let remaining = self.stdin.get(self.stdin_position..).unwrap_or_default();
                let nread = scatter(memory, &iovecs, remaining)?;
                self.stdin_position += nread as usize;
                nread
            }
            FdKind::File { inode, position } => {
                let data = self.fs.file_data(inode)?;
                let start = usize::try_from(position).unwrap_or(usize::MAX);
                let nread = scatter(memory, &iovecs, data.get(start..).unwrap_or_default())?;
                self.set_fd_kind(fd, FdKind::File { inode, position: position + u64::from(nread) });
                nread
            }
            FdKind::Directory { .. } => return Err(Errno::Isdir),
            FdKind::Stdout | FdKind::Stderr => return Err(Errno::Badf),
        };
        write_u32(memory, nread_pointer, nread)
    }

    pub(crate) fn fd_pread(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        offset: u64,
        nread_pointer: u32,
    ) -> WasiResult {
        let entry = self.fd(fd)?;
        let (iovecs, _) = read_iovecs(memory, iovs, iovs_len)?;
        check_range(memory, nread_pointer, 4)?;
        let nread = match entry.kind {
            FdKind::File { inode, .. } => {
                let data = self.fs.file_data(inode)?;
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                scatter(memory, &iovecs, data.get(start..).unwrap_or_default())?
            }
            FdKind::Directory { .. } => return Err(Errno::Isdir),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => return Err(Errno::Spipe),
        };
        write_u32(memory, nread_pointer, nread)
    }

    pub(crate) fn fd_write(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        nwritten_pointer: u32,
    ) -> WasiResult {
        let entry = self.fd(fd)?;
        let (iovecs, total) = read_iovecs(memory, iovs, iovs_len)?;
        check_range(memory, nwritten_pointer, 4)?;
        match entry.kind {
            FdKind::Stdout | FdKind::Stderr => {
                let buffer = if entry.kind == FdKind::Stdout { &mut self.stdout } else { &mut self.stderr };
                for iovec in &iovecs {
                    // Bytes past the cap are dropped, but the write still reports them as written so
                    // that programs do not retry forever.
                    let keep = buffer.reserve(iovec.len);
                    let start = buffer.data.len();
                    buffer.data.resize(start + keep, 0);
                    memory.read(iovec.pointer, &mut buffer.data[start..])?;
                }
            }
            FdKind::File { inode, position } => {
                let offset =
                    if entry.flags & fdflags::APPEND != 0 { self.fs.file_data(inode)?.len() as u64 } else { position };
                let now = self.clock.realtime_ns();
                let region = self.fs.write_region(inode, offset, u64::from(total), now)?;
                gather(memory, &iovecs, region)?;
                self.set_fd_kind(fd, FdKind::File { inode, position: offset + u64::from(total) });
            }
            FdKind::Stdin | FdKind::Directory { .. } => return Err(Errno::Badf),
        }
        write_u32(memory, nwritten_pointer, total)
    }

    pub(crate) fn fd_pwrite(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        offset: u64,
        nwritten_pointer: u32,
    ) -> WasiResult {
        let entry = self.fd(fd)?;
        let (iovecs, total) = read_iovecs(memory, iovs, iovs_len)?;
        check_range(memory, nwritten_pointer, 4)?;
        match entry.kind {
            FdKind::File { inode, .. } => {
                // The offset is used even on an APPEND fd: POSIX leaves that case open, and writing where
                // the program asked is the least surprising choice.
                let now = self.clock.realtime_ns();
                let region = self.fs.write_region(inode, offset, u64::from(total), now)?;
                gather(memory, &iovecs, region)?;
            }
            FdKind::Directory { .. } => return Err(Errno::Badf),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => return Err(Errno::Spipe),
        }
        write_u32(memory, nwritten_pointer, total)
    }

    pub(crate) fn fd_seek(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        offset: u64,
        whence: u32,
        newoffset_pointer: u32,
    ) -> WasiResult {
        let entry = self.fd(fd)?;
        let FdKind::File { inode, position } = entry.kind else {
            return Err(if matches!(entry.kind, FdKind::Directory { .. }) { Errno::Badf } else { Errno::Spipe });
        };
        let base = match whence {
            w if w == u32::from(whence::SET) => 0,
            w if w == u32::from(whence::CUR) => position,
            w if w == u32::from(whence::END) => self.fs.file_data(inode)?.len() as u64,
            _ => return Err(Errno::Inval),
        };
        // The offset is a signed filedelta; the result must be a valid, non-negative i64 position.
        let new_position = i128::from(base) + i128::from(offset as i64);
        let new_position =
            u64::try_from(new_position).ok().filter(|position| *position <= i64::MAX as u64).ok_or(Errno::Inval)?;
        check_range(memory, newoffset_pointer, 8)?;
        self.set_fd_kind(fd, FdKind::File { inode, position: new_position });
        write_u64(memory, newoffset_pointer, new_position)
    }

    pub(crate) fn fd_tell(&mut self, memory: &mut dyn GuestMemory, fd: u32, offset_pointer: u32) -> WasiResult {
        match self.fd(fd)?.kind {
            FdKind::File { position, .. } => write_u64(memory, offset_pointer, position),
            FdKind::Directory { .. } => Err(Errno::Badf),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => Err(Errno::Spipe),
        }
    }

    pub(crate) fn fd_fdstat_get(&mut self, memory: &mut dyn GuestMemory, fd: u32, pointer: u32) -> WasiResult {
        let entry = self.fd(fd)?;
        let filetype = match entry.kind {
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => filetype::CHARACTER_DEVICE,
            FdKind::Directory { .. } => filetype::DIRECTORY,
            FdKind::File { .. } => filetype::REGULAR_FILE,
        };
        let mut image = StructImage::<{ layout::FDSTAT_SIZE }>::new();
        image.put_u8(0, filetype);
        image.put_u16(2, entry.flags);
        // Rights are not enforced, so every fd reports all of them.
        image.put_u64(8, rights::ALL);
        image.put_u64(16, rights::ALL);
        Ok(memory.write(pointer, &image.bytes)?)
    }

    pub(crate) fn fd_fdstat_set_flags(&mut self, fd: u32, flags: u32) -> WasiResult {
        self.fd(fd)?;
        let flags = flags_u16(flags, fdflags::ALL)?;
        if let Some(entry) = self.fds.get_mut(&fd) {
            entry.flags = flags;
        }
        Ok(())
    }

    pub(crate) fn fd_filestat_get(&mut self, memory: &mut dyn GuestMemory, fd: u32, pointer: u32) -> WasiResult {
        let stat = match self.fd(fd)?.kind {
            FdKind::Directory { inode, .. } | FdKind::File { inode, .. } => self.fs.stat(inode)?,
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => stdio_filestat(),
        };
        write_filestat(memory, pointer, &stat)
    }

    pub(crate) fn fd_filestat_set_size(&mut self, fd: u32, size: u64) -> WasiResult {
        match self.fd(fd)?.kind {
            FdKind::File { inode, .. } => {
                let now = self.clock.realtime_ns();
                self.fs.set_size(inode, size, now)
            }
            FdKind::Directory { .. } => Err(Errno::Isdir),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => Err(Errno::Inval),
        }
    }

    pub(crate) fn fd_allocate(&mut self, fd: u32, offset: u64, len: u64) -> WasiResult {
        match self.fd(fd)?.kind {
            FdKind::File { inode, .. } => {
                if len == 0 {
                    // posix_fallocate rejects empty ranges.
                    return Err(Errno::Inval);
                }
                let end = offset.checked_add(len).ok_or(Errno::Fbig)?;
                if end > self.fs.file_data(inode)?.len() as u64 {
                    let now = self.clock.realtime_ns();
                    self.fs.set_size(inode, end, now)?;
                }
                Ok(())
            }
            FdKind::Directory { .. } => Err(Errno::Isdir),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => Err(Errno::Spipe),
        }
    }

    pub(crate) fn fd_filestat_set_times(&mut self, fd: u32, atim: u64, mtim: u64, flags: u32) -> WasiResult {
        let entry = self.fd(fd)?;
        let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
        let now = self.clock.realtime_ns();
        match entry.kind {
            FdKind::Directory { inode, .. } | FdKind::File { inode, .. } => {
                self.fs.set_times(inode, atim, mtim, flags, now)
            }
            // Stdio has no timestamps to keep; the flags are still validated.
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => crate::fs::validate_fstflags(flags),
        }
    }

    pub(crate) fn fd_advise(&mut self, fd: u32, _offset: u64, _len: u64, advice: u32) -> WasiResult {
        self.fd(fd)?;
        if advice > ADVICE_MAX {
            return Err(Errno::Inval);
        }
        Ok(())
    }

    pub(crate) fn fd_prestat_get(&mut self, memory: &mut dyn GuestMemory, fd: u32, pointer: u32) -> WasiResult {
        match self.fds.get(&fd).map(|entry| entry.kind) {
            Some(FdKind::Directory { preopen: true, .. }) => {
                let mut image = StructImage::<{ layout::PRESTAT_SIZE }>::new();
                image.put_u8(0, preopentype::DIR);
                image.put_u32(4, PREOPEN_NAME.len() as u32);
                Ok(memory.write(pointer, &image.bytes)?)
            }
            // Programs enumerate preopens from fd 3 upwards until they get BADF.
            _ => Err(Errno::Badf),
        }
    }

    pub(crate) fn fd_prestat_dir_name(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        pointer: u32,
        len: u32,
    ) -> WasiResult {
        match self.fds.get(&fd).map(|entry| entry.kind) {
            Some(FdKind::Directory { preopen: true, .. }) => {
                if (len as usize) < PREOPEN_NAME.len() {
                    return Err(Errno::Nametoolong);
                }
                Ok(memory.write(pointer, PREOPEN_NAME.as_bytes())?)
            }
            _ => Err(Errno::Badf),
        }
    }

    pub(crate) fn fd_readdir(
        &mut self,
        memory: &mut dyn GuestMemory,
        fd: u32,
        buf: u32,
        buf_len: u32,
        cookie: u64,
        bufused_pointer: u32,
    ) -> WasiResult {
        let FdKind::Directory { inode, .. } = self.fd(fd)?.kind else {
            return Err(Errno::Notdir);
        };
        check_range(memory, bufused_pointer, 4)?;
        let bytes = self.fs.read_directory(inode, cookie, buf_len)?;
        memory.write(buf, &bytes)?;
        // `bytes` is at most `buf_len` long.
        write_u32(memory, bufused_pointer, bytes.len() as u32)
    }
}
