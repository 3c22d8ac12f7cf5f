//! A fake guest for driving `WasiCtx::call`: a `Vec<u8>` memory with a bump allocator, plus typed
//! wrappers around the raw calls so that tests read like the programs they imitate.

use distributivecom_wasi::{
    ChunkInput, ChunkOutputs, Errno, HostStop, OutputLimits, PREOPEN_FD, WasiCtx, lookup, oflags, rights,
};

/// The size of the fake guest memory.
pub const MEMORY_BYTES: usize = 1 << 20;

/// Turns a raw errno into a `Result`, so tests can compare against `Err(Errno::...)`.
pub fn errno(raw: i32) -> Result<(), Errno> {
    match u16::try_from(raw).ok().and_then(Errno::from_raw) {
        Some(Errno::Success) => Ok(()),
        Some(errno) => Err(errno),
        None => panic!("a WASI call returned {raw}, which is not an errno"),
    }
}

pub struct Guest {
    pub ctx: WasiCtx,
    pub memory: Vec<u8>,
    /// The next free address of the bump allocator; address 0 stays unused like a NULL page.
    next_free: u32,
}

impl Guest {
    pub fn new(input: ChunkInput) -> Guest {
        Guest { ctx: WasiCtx::new(input).expect("valid chunk input"), memory: vec![0; MEMORY_BYTES], next_free: 64 }
    }

    /// A guest with the given input files and otherwise default input.
    pub fn with_files(files: &[(&str, &[u8])]) -> Guest {
        Guest::new(input_with_files(files))
    }

    /// Reserves `len` bytes of guest memory, 8-byte aligned.
    pub fn alloc(&mut self, len: u32) -> u32 {
        let address = self.next_free;
        self.next_free = (address + len + 7) & !7;
        assert!((self.next_free as usize) < MEMORY_BYTES, "the fake guest ran out of memory");
        address
    }

    /// Copies bytes into fresh guest memory and returns their address.
    pub fn put(&mut self, bytes: &[u8]) -> u32 {
        let address = self.alloc(bytes.len() as u32);
        self.memory[address as usize..address as usize + bytes.len()].copy_from_slice(bytes);
        address
    }

    /// Copies a string into guest memory and returns (pointer, length) as call arguments.
    pub fn put_str(&mut self, string: &str) -> (u64, u64) {
        (u64::from(self.put(string.as_bytes())), string.len() as u64)
    }

    /// Writes an iovec array for the given buffers and returns its address.
    pub fn put_iovecs(&mut self, buffers: &[(u32, u32)]) -> u32 {
        let mut raw = Vec::new();
        for (pointer, len) in buffers {
            raw.extend_from_slice(&pointer.to_le_bytes());
            raw.extend_from_slice(&len.to_le_bytes());
        }
        self.put(&raw)
    }

    pub fn try_call(&mut self, name: &str, args: &[u64]) -> Result<i32, HostStop> {
        let function = lookup(name).unwrap_or_else(|| panic!("{name} is not a preview-1 function"));
        self.ctx.call(&mut self.memory[..], function, args)
    }

    /// Calls a function that must not stop the program, returning its errno as a `Result`.
    pub fn call(&mut self, name: &str, args: &[u64]) -> Result<(), Errno> {
        errno(self.try_call(name, args).unwrap_or_else(|stop| panic!("{name} stopped the program: {stop}")))
    }

    pub fn bytes_at(&self, pointer: u32, len: usize) -> &[u8] {
        &self.memory[pointer as usize..pointer as usize + len]
    }

    pub fn u16_at(&self, pointer: u32) -> u16 {
        u16::from_le_bytes(self.bytes_at(pointer, 2).try_into().expect("2 bytes"))
    }

    pub fn u32_at(&self, pointer: u32) -> u32 {
        u32::from_le_bytes(self.bytes_at(pointer, 4).try_into().expect("4 bytes"))
    }

    pub fn u64_at(&self, pointer: u32) -> u64 {
        u64::from_le_bytes(self.bytes_at(pointer, 8).try_into().expect("8 bytes"))
    }

    pub fn open_with(
        &mut self,
        dir_fd: u32,
        path: &str,
        open_flags: u16,
        rights_base: u64,
        fd_flags: u16,
    ) -> Result<u32, Errno> {
        let (path, path_len) = self.put_str(path);
        let fd_pointer = self.alloc(4);
        let args = [
            u64::from(dir_fd),
            0,
            path,
            path_len,
            u64::from(open_flags),
            rights_base,
            rights::ALL,
            u64::from(fd_flags),
            u64::from(fd_pointer),
        ];
        self.call("path_open", &args)?;
        Ok(self.u32_at(fd_pointer))
    }

    /// Opens `path` under /data for reading and writing.
    pub fn open(&mut self, path: &str, open_flags: u16) -> Result<u32, Errno> {
        self.open_with(PREOPEN_FD, path, open_flags, rights::ALL, 0)
    }

    /// Opens `path` under /data for reading only, as wasi-libc does for O_RDONLY.
    pub fn open_read_only(&mut self, path: &str, open_flags: u16) -> Result<u32, Errno> {
        self.open_with(PREOPEN_FD, path, open_flags, rights::ALL & !rights::FD_WRITE, 0)
    }

    pub fn create(&mut self, path: &str) -> Result<u32, Errno> {
        self.open(path, oflags::CREAT | oflags::TRUNC)
    }

    pub fn write(&mut self, fd: u32, data: &[u8]) -> Result<u32, Errno> {
        let buffer = self.put(data);
        let iovecs = self.put_iovecs(&[(buffer, data.len() as u32)]);
        let nwritten = self.alloc(4);
        self.call("fd_write", &[u64::from(fd), u64::from(iovecs), 1, u64::from(nwritten)])?;
        Ok(self.u32_at(nwritten))
    }

    pub fn pwrite(&mut self, fd: u32, data: &[u8], offset: u64) -> Result<u32, Errno> {
        let buffer = self.put(data);
        let iovecs = self.put_iovecs(&[(buffer, data.len() as u32)]);
        let nwritten = self.alloc(4);
        self.call("fd_pwrite", &[u64::from(fd), u64::from(iovecs), 1, offset, u64::from(nwritten)])?;
        Ok(self.u32_at(nwritten))
    }

    pub fn read(&mut self, fd: u32, len: u32) -> Result<Vec<u8>, Errno> {
        let buffer = self.alloc(len);
        let iovecs = self.put_iovecs(&[(buffer, len)]);
        let nread = self.alloc(4);
        self.call("fd_read", &[u64::from(fd), u64::from(iovecs), 1, u64::from(nread)])?;
        Ok(self.bytes_at(buffer, self.u32_at(nread) as usize).to_vec())
    }

    pub fn pread(&mut self, fd: u32, len: u32, offset: u64) -> Result<Vec<u8>, Errno> {
        let buffer = self.alloc(len);
        let iovecs = self.put_iovecs(&[(buffer, len)]);
        let nread = self.alloc(4);
        self.call("fd_pread", &[u64::from(fd), u64::from(iovecs), 1, offset, u64::from(nread)])?;
        Ok(self.bytes_at(buffer, self.u32_at(nread) as usize).to_vec())
    }

    pub fn seek(&mut self, fd: u32, offset: i64, whence: u8) -> Result<u64, Errno> {
        let result = self.alloc(8);
        self.call("fd_seek", &[u64::from(fd), offset as u64, u64::from(whence), u64::from(result)])?;
        Ok(self.u64_at(result))
    }

    pub fn tell(&mut self, fd: u32) -> Result<u64, Errno> {
        let result = self.alloc(8);
        self.call("fd_tell", &[u64::from(fd), u64::from(result)])?;
        Ok(self.u64_at(result))
    }

    pub fn close(&mut self, fd: u32) -> Result<(), Errno> {
        self.call("fd_close", &[u64::from(fd)])
    }

    /// Calls a `path_*` function of the form (fd, path, path_len) on /data.
    pub fn path_call(&mut self, name: &str, path: &str) -> Result<(), Errno> {
        let (path, path_len) = self.put_str(path);
        self.call(name, &[u64::from(PREOPEN_FD), path, path_len])
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        self.path_call("path_create_directory", path)
    }

    pub fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        self.path_call("path_remove_directory", path)
    }

    pub fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        self.path_call("path_unlink_file", path)
    }

    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), Errno> {
        let (old, old_len) = self.put_str(old);
        let (new, new_len) = self.put_str(new);
        let fd = u64::from(PREOPEN_FD);
        self.call("path_rename", &[fd, old, old_len, fd, new, new_len])
    }

    /// Returns the raw bytes `fd_readdir` put into a buffer of `buf_len` bytes.
    pub fn readdir(&mut self, fd: u32, buf_len: u32, cookie: u64) -> Result<Vec<u8>, Errno> {
        let buffer = self.alloc(buf_len);
        let bufused = self.alloc(4);
        self.call("fd_readdir", &[u64::from(fd), u64::from(buffer), u64::from(buf_len), cookie, u64::from(bufused)])?;
        Ok(self.bytes_at(buffer, self.u32_at(bufused) as usize).to_vec())
    }

    pub fn filestat(&mut self, fd: u32) -> Result<Filestat, Errno> {
        let buffer = self.alloc(64);
        self.call("fd_filestat_get", &[u64::from(fd), u64::from(buffer)])?;
        Ok(Filestat::parse(self.bytes_at(buffer, 64)))
    }

    pub fn path_filestat(&mut self, path: &str) -> Result<Filestat, Errno> {
        let (path, path_len) = self.put_str(path);
        let buffer = self.alloc(64);
        self.call("path_filestat_get", &[u64::from(PREOPEN_FD), 0, path, path_len, u64::from(buffer)])?;
        Ok(Filestat::parse(self.bytes_at(buffer, 64)))
    }

    pub fn clock(&mut self, id: u32) -> u64 {
        let result = self.alloc(8);
        self.call("clock_time_get", &[u64::from(id), 0, u64::from(result)]).expect("a valid clock");
        self.u64_at(result)
    }

    pub fn random(&mut self, len: u32) -> Vec<u8> {
        let buffer = self.alloc(len);
        self.call("random_get", &[u64::from(buffer), u64::from(len)]).expect("random_get succeeds");
        self.bytes_at(buffer, len as usize).to_vec()
    }

    pub fn finish(self) -> ChunkOutputs {
        self.ctx.finish()
    }
}

/// A decoded `filestat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Filestat {
    fn parse(bytes: &[u8]) -> Filestat {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Filestat {
            dev: u64_at(0),
            ino: u64_at(8),
            filetype: bytes[16],
            nlink: u64_at(24),
            size: u64_at(32),
            atim: u64_at(40),
            mtim: u64_at(48),
            ctim: u64_at(56),
        }
    }
}

/// One decoded directory entry: (d_next, d_ino, d_type, name).
pub type Dirent = (u64, u64, u8, String);

/// Decodes complete entries of an `fd_readdir` buffer; a cut-off entry at the end is ignored.
pub fn parse_dirents(mut bytes: &[u8]) -> Vec<Dirent> {
    let mut entries = Vec::new();
    while bytes.len() >= 24 {
        let next = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let ino = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let name_len = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let kind = bytes[20];
        if bytes.len() < 24 + name_len {
            break;
        }
        entries.push((next, ino, kind, String::from_utf8(bytes[24..24 + name_len].to_vec()).expect("UTF-8 name")));
        bytes = &bytes[24 + name_len..];
    }
    entries
}

pub fn input_with_files(files: &[(&str, &[u8])]) -> ChunkInput {
    ChunkInput {
        args: vec!["program".into()],
        files: files.iter().map(|(path, data)| (path.to_string(), data.to_vec())).collect(),
        clock_start_ns: 1_700_000_000_000_000_000,
        random_seed: [42; 32],
        limits: OutputLimits::default(),
        ..ChunkInput::default()
    }
}
