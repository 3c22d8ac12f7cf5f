//! The in-memory file system behind the /data preopen: directories and regular files, nothing else.
//!
//! Every node is identified by its inode number, assigned in creation order and never reused, so
//! `stat` results are the same on every host. Nodes form a tree: without hard links a node has at
//! most one parent, which keeps rename and removal simple. A node that has been unlinked stays alive
//! while an fd still refers to it, as POSIX requires, and is dropped (and its bytes given back to
//! the quota) when the last such fd is closed.
//!
//! This module knows nothing about guest memory or fds; the calls in `calls/` translate between the
//! two. All functions report failures as the errno the guest will see.

use std::collections::BTreeMap;

use crate::abi::{Errno, filetype, fstflags, layout, oflags};
use crate::chunk::InputError;

/// The most files and directories (the root included) that can exist at once; creating more fails
/// with `NOSPC`. It bounds the host memory a program can tie up with empty files.
pub const MAX_FS_NODES: usize = 65_536;
/// The longest path, relative to /data, that any file or directory may have (`NAMETOOLONG` beyond).
/// It is also the longest path argument any call accepts.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest name of a single directory entry (`NAMETOOLONG` beyond).
pub const MAX_NAME_BYTES: usize = 255;
/// The largest size of a single file (`FBIG` beyond). It is `i32::MAX` so that a file's contents
/// always fit into one `Vec<u8>` even on 32-bit hosts, which keeps results identical everywhere.
pub const MAX_FILE_BYTES: u64 = i32::MAX as u64;
/// The `dev` value of every `filestat`: everything lives on one virtual device.
pub const DEVICE_ID: u64 = 1;

/// An inode number, which is also the node's key in the file system.
pub(crate) type Inode = u64;

/// The inode of /data, the root of the file system. It is the first node created.
pub(crate) const ROOT: Inode = 1;

#[derive(Debug)]
enum NodeKind {
    Directory {
        entries: BTreeMap<String, Inode>,
    },
    File {
        data: Vec<u8>,
        /// The path this file had in the chunk input, or `None` if the program created it.
        input_path: Option<String>,
        /// Whether the program changed the contents since the file was created or loaded.
        changed: bool,
    },
}

#[derive(Debug)]
struct Node {
    kind: NodeKind,
    /// The directory containing this node; `None` for the root and for unlinked nodes.
    parent: Option<Inode>,
    /// The entry name in `parent` (empty for the root).
    name: String,
    /// Whether the node is still reachable from the root.
    linked: bool,
    /// How many fds refer to this node; an unlinked node lives on until this drops to zero.
    open_fds: u32,
    atim: u64,
    mtim: u64,
    ctim: u64,
}

impl Node {
    fn is_directory(&self) -> bool {
        matches!(self.kind, NodeKind::Directory { .. })
    }
}

/// The metadata `fd_filestat_get` and `path_filestat_get` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Filestat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) filetype: u8,
    pub(crate) nlink: u64,
    pub(crate) size: u64,
    pub(crate) atim: u64,
    pub(crate) mtim: u64,
    pub(crate) ctim: u64,
}

/// What a path names once every component but the last has been walked.
#[derive(Debug)]
pub(crate) enum Target {
    /// The path ends in a name inside `parent`; `existing` is the node of that name, if any.
    Entry { parent: Inode, name: String, existing: Option<Inode> },
    /// The path ends in "." or "..", so it names an existing directory but no entry that could be
    /// created, removed or renamed.
    Directory(Inode),
}

/// A resolved path.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) target: Target,
    /// Whether the path ended in '/', which requires the target to be a directory.
    pub(crate) trailing_slash: bool,
}

impl Resolved {
    fn existing(&self) -> Option<Inode> {
        match self.target {
            Target::Entry { existing, .. } => existing,
            Target::Directory(node) => Some(node),
        }
    }
}

/// The file system of one chunk run.
#[derive(Debug)]
pub(crate) struct FileSystem {
    nodes: BTreeMap<Inode, Node>,
    next_inode: Inode,
    /// The total size of all file contents, unlinked-but-open files included.
    bytes_used: u64,
    max_bytes: u64,
}

/// Checks that an input file path is a clean relative path, so that it names exactly one place.
fn validate_input_path(path: &str) -> Result<(), InputError> {
    let invalid = |reason: &'static str| InputError::InvalidFilePath { path: path.to_string(), reason };
    if path.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("absolute paths are not allowed; input paths are relative to /data"));
    }
    if path.contains('\0') {
        return Err(invalid("the path contains a NUL byte"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid("the path is longer than 4096 bytes"));
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(invalid("the path has an empty component (a doubled or trailing '/')"));
        }
        if component == "." || component == ".." {
            return Err(invalid("the path has a '.' or '..' component"));
        }
        if component.len() > MAX_NAME_BYTES {
            return Err(invalid("the path has a component longer than 255 bytes"));
        }
    }
    Ok(())
}

impl FileSystem {
    /// Builds the file system holding the chunk's input files, all stamped with time `now`. The files'
    /// contents move in, not copied: a replica's input files can be large.
    pub(crate) fn new(files: BTreeMap<String, Vec<u8>>, max_bytes: u64, now: u64) -> Result<FileSystem, InputError> {
        let total_bytes = files.values().fold(0u64, |total, data| total.saturating_add(data.len() as u64));
        if total_bytes > max_bytes {
            return Err(InputError::FilesTooLarge { total_bytes, max_fs_bytes: max_bytes });
        }
        let mut fs = FileSystem { nodes: BTreeMap::new(), next_inode: ROOT, bytes_used: 0, max_bytes };
        let root = Node {
            kind: NodeKind::Directory { entries: BTreeMap::new() },
            parent: None,
            name: String::new(),
            linked: true,
            open_fds: 0,
            atim: now,
            mtim: now,
            ctim: now,
        };
        fs.nodes.insert(ROOT, root);
        fs.next_inode = ROOT + 1;

        // The map is sorted, and "a" sorts before "a/...", so a file is always added before anything
        // that would need it to be a directory; both orders are still detected below. The tree is built
        // and checked first; the contents move into its files after.
        let mut inodes = Vec::with_capacity(files.len());
        for (path, data) in &files {
            validate_input_path(path)?;
            if data.len() as u64 > MAX_FILE_BYTES {
                return Err(InputError::FileTooLarge {
                    path: path.clone(),
                    size: data.len() as u64,
                    max_file_bytes: MAX_FILE_BYTES,
                });
            }
            let components: Vec<&str> = path.split('/').collect();
            let (file_name, directories) = components.split_last().unwrap_or((&"", &[]));
            let mut directory = ROOT;
            for (depth, component) in directories.iter().enumerate() {
                directory = match fs.child(directory, component) {
                    Some(node) if fs.is_directory(node) => node,
                    Some(_) => {
                        return Err(InputError::PathCollision {
                            path: path.clone(),
                            other: components[..=depth].join("/"),
                        });
                    }
                    None => fs
                        .insert_node(directory, component, NodeKind::Directory { entries: BTreeMap::new() }, now)
                        .map_err(|_| InputError::TooManyFiles { max_nodes: MAX_FS_NODES })?,
                };
            }
            if fs.child(directory, file_name).is_some() {
                let prefix = format!("{path}/");
                let other = files.keys().find(|other| other.starts_with(&prefix)).cloned().unwrap_or(prefix);
                return Err(InputError::PathCollision { path: path.clone(), other });
            }
            let kind = NodeKind::File { data: Vec::new(), input_path: Some(path.clone()), changed: false };
            let inode = fs
                .insert_node(directory, file_name, kind, now)
                .map_err(|_| InputError::TooManyFiles { max_nodes: MAX_FS_NODES })?;
            inodes.push(inode);
        }
        for ((_, contents), inode) in files.into_iter().zip(inodes) {
            if let Some(Node { kind: NodeKind::File { data, .. }, .. }) = fs.nodes.get_mut(&inode) {
                *data = contents;
            }
        }
        fs.bytes_used = total_bytes;
        Ok(fs)
    }

    fn node(&self, inode: Inode) -> Result<&Node, Errno> {
        // An inode held by an fd always exists (open fds keep nodes alive); BADF is the safe answer
        // should that invariant ever break.
        self.nodes.get(&inode).ok_or(Errno::Badf)
    }

    fn node_mut(&mut self, inode: Inode) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&inode).ok_or(Errno::Badf)
    }

    pub(crate) fn is_directory(&self, inode: Inode) -> bool {
        self.nodes.get(&inode).is_some_and(Node::is_directory)
    }

    fn child(&self, directory: Inode, name: &str) -> Option<Inode> {
        match &self.nodes.get(&directory)?.kind {
            NodeKind::Directory { entries } => entries.get(name).copied(),
            NodeKind::File { .. } => None,
        }
    }

    fn parent_of(&self, directory: Inode) -> Result<Inode, Errno> {
        if directory == ROOT {
            // ".." from /data would leave the sandbox.
            return Err(Errno::Notcapable);
        }
        // A removed directory has no parent any more; POSIX reports ENOENT for lookups in it.
        self.node(directory)?.parent.ok_or(Errno::Noent)
    }

    /// The length of `inode`'s path relative to /data ("a/b" has length 3, the root 0).
    fn path_len(&self, inode: Inode) -> usize {
        let mut length = 0;
        let mut cursor = inode;
        while cursor != ROOT {
            let Some(node) = self.nodes.get(&cursor) else {
                break;
            };
            length += node.name.len() + usize::from(node.parent != Some(ROOT));
            match node.parent {
                Some(parent) => cursor = parent,
                None => break,
            }
        }
        length
    }

    /// The length of the path an entry `name` in `directory` would have.
    fn child_path_len(&self, directory: Inode, name: &str) -> usize {
        self.path_len(directory) + usize::from(directory != ROOT) + name.len()
    }

    /// The longest path suffix below `directory` (the longest "/x/y" of its descendants).
    fn longest_descendant_suffix(&self, directory: Inode) -> usize {
        let mut longest = 0;
        let mut stack = vec![(directory, 0usize)];
        while let Some((inode, suffix)) = stack.pop() {
            longest = longest.max(suffix);
            if let Some(Node { kind: NodeKind::Directory { entries }, .. }) = self.nodes.get(&inode) {
                for (name, child) in entries {
                    stack.push((*child, suffix + 1 + name.len()));
                }
            }
        }
        longest
    }

    /// Creates a node named `name` in `directory`, which must be a linked directory.
    fn insert_node(&mut self, directory: Inode, name: &str, kind: NodeKind, now: u64) -> Result<Inode, Errno> {
        if !self.node(directory)?.linked {
            // Creating inside a removed directory fails as it does on POSIX systems.
            return Err(Errno::Noent);
        }
        if self.nodes.len() >= MAX_FS_NODES {
            return Err(Errno::Nospc);
        }
        if self.child_path_len(directory, name) > MAX_PATH_BYTES {
            return Err(Errno::Nametoolong);
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        let node = Node {
            kind,
            parent: Some(directory),
            name: name.to_string(),
            linked: true,
            open_fds: 0,
            atim: now,
            mtim: now,
            ctim: now,
        };
        self.nodes.insert(inode, node);
        let parent = self.node_mut(directory)?;
        if let NodeKind::Directory { entries } = &mut parent.kind {
            entries.insert(name.to_string(), inode);
        }
        parent.mtim = now;
        parent.ctim = now;
        Ok(inode)
    }

    /// Walks `path` relative to the directory `start`.
    ///
    /// Empty components (repeated slashes) and "." are skipped, ".." goes up but never above /data,
    /// and absolute paths are refused: a WASI program only reaches files through its preopen.
    pub(crate) fn resolve(&self, start: Inode, path: &str) -> Result<Resolved, Errno> {
        if !self.node(start)?.is_directory() {
            return Err(Errno::Notdir);
        }
        if path.is_empty() {
            return Err(Errno::Noent);
        }
        if path.starts_with('/') {
            return Err(Errno::Notcapable);
        }
        let trailing_slash = path.ends_with('/');
        let mut components: Vec<&str> = path.split('/').filter(|component| !component.is_empty()).collect();
        let Some(last) = components.pop() else {
            return Err(Errno::Noent);
        };

        let mut current = start;
        for component in components {
            current = match component {
                "." => current,
                ".." => self.parent_of(current)?,
                name => {
                    if name.len() > MAX_NAME_BYTES {
                        return Err(Errno::Nametoolong);
                    }
                    let child = self.child(current, name).ok_or(Errno::Noent)?;
                    if !self.is_directory(child) {
                        return Err(Errno::Notdir);
                    }
                    child
                }
            };
        }
        let target = match last {
            "." => Target::Directory(current),
            ".." => Target::Directory(self.parent_of(current)?),
            name => {
                if name.len() > MAX_NAME_BYTES {
                    return Err(Errno::Nametoolong);
                }
                Target::Entry { parent: current, name: name.to_string(), existing: self.child(current, name) }
            }
        };
        Ok(Resolved { target, trailing_slash })
    }

    /// Resolves a path that must name an existing node.
    pub(crate) fn resolve_existing(&self, start: Inode, path: &str) -> Result<Inode, Errno> {
        let resolved = self.resolve(start, path)?;
        let inode = resolved.existing().ok_or(Errno::Noent)?;
        if resolved.trailing_slash && !self.is_directory(inode) {
            return Err(Errno::Notdir);
        }
        Ok(inode)
    }

    /// The file system part of `path_open`: finds or creates the node and applies `TRUNC`.
    pub(crate) fn open(
        &mut self,
        start: Inode,
        path: &str,
        open_flags: u16,
        write_requested: bool,
        now: u64,
    ) -> Result<Inode, Errno> {
        let create = open_flags & oflags::CREAT != 0;
        let want_directory = open_flags & oflags::DIRECTORY != 0;
        if create && want_directory {
            // Linux also refuses O_CREAT | O_DIRECTORY; path_create_directory is the way to make one.
            return Err(Errno::Inval);
        }
        let resolved = self.resolve(start, path)?;
        match resolved.existing() {
            Some(inode) => {
                if create && open_flags & oflags::EXCL != 0 {
                    return Err(Errno::Exist);
                }
                if self.is_directory(inode) {
                    // As on POSIX systems, a directory can only be opened for reading.
                    if create || open_flags & oflags::TRUNC != 0 || write_requested {
                        return Err(Errno::Isdir);
                    }
                } else {
                    if want_directory || resolved.trailing_slash {
                        return Err(Errno::Notdir);
                    }
                    if open_flags & oflags::TRUNC != 0 {
                        self.set_size(inode, 0, now)?;
                    }
                }
                Ok(inode)
            }
            None => {
                let Target::Entry { parent, name, .. } = resolved.target else {
                    return Err(Errno::Noent);
                };
                if !create {
                    return Err(Errno::Noent);
                }
                if resolved.trailing_slash {
                    // "name/" can only ever be a directory, and O_CREAT makes files.
                    return Err(Errno::Isdir);
                }
                let kind = NodeKind::File { data: Vec::new(), input_path: None, changed: true };
                self.insert_node(parent, &name, kind, now)
            }
        }
    }

    pub(crate) fn create_directory(&mut self, start: Inode, path: &str, now: u64) -> Result<(), Errno> {
        let resolved = self.resolve(start, path)?;
        match resolved.target {
            Target::Directory(_) | Target::Entry { existing: Some(_), .. } => Err(Errno::Exist),
            Target::Entry { parent, name, existing: None } => {
                self.insert_node(parent, &name, NodeKind::Directory { entries: BTreeMap::new() }, now)?;
                Ok(())
            }
        }
    }

    pub(crate) fn remove_directory(&mut self, start: Inode, path: &str, now: u64) -> Result<(), Errno> {
        let resolved = self.resolve(start, path)?;
        match resolved.target {
            // POSIX refuses to remove "." or ".." by those names.
            Target::Directory(_) => Err(Errno::Inval),
            Target::Entry { existing: None, .. } => Err(Errno::Noent),
            Target::Entry { parent, name, existing: Some(inode) } => {
                match &self.node(inode)?.kind {
                    NodeKind::File { .. } => return Err(Errno::Notdir),
                    NodeKind::Directory { entries } if !entries.is_empty() => {
                        return Err(Errno::Notempty);
                    }
                    NodeKind::Directory { .. } => {}
                }
                self.unlink_entry(parent, &name, now)
            }
        }
    }

    pub(crate) fn unlink_file(&mut self, start: Inode, path: &str, now: u64) -> Result<(), Errno> {
        let resolved = self.resolve(start, path)?;
        match resolved.target {
            Target::Directory(_) => Err(Errno::Isdir),
            Target::Entry { existing: None, .. } => Err(Errno::Noent),
            Target::Entry { parent, name, existing: Some(inode) } => {
                if self.is_directory(inode) {
                    return Err(Errno::Isdir);
                }
                if resolved.trailing_slash {
                    return Err(Errno::Notdir);
                }
                self.unlink_entry(parent, &name, now)
            }
        }
    }

    /// Removes the entry `name` from `directory` and frees its node unless an fd still uses it.
    fn unlink_entry(&mut self, directory: Inode, name: &str, now: u64) -> Result<(), Errno> {
        let parent = self.node_mut(directory)?;
        let removed = match &mut parent.kind {
            NodeKind::Directory { entries } => entries.remove(name),
            NodeKind::File { .. } => None,
        };
        let inode = removed.ok_or(Errno::Noent)?;
        parent.mtim = now;
        parent.ctim = now;
        let node = self.node_mut(inode)?;
        node.linked = false;
        node.parent = None;
        node.ctim = now;
        self.release_if_unused(inode);
        Ok(())
    }

    fn release_if_unused(&mut self, inode: Inode) {
        let unused = self.nodes.get(&inode).is_some_and(|node| !node.linked && node.open_fds == 0);
        if unused
            && let Some(node) = self.nodes.remove(&inode)
            && let NodeKind::File { data, .. } = node.kind
        {
            self.bytes_used = self.bytes_used.saturating_sub(data.len() as u64);
        }
    }

    /// Moves an entry, replacing an existing target as POSIX `rename` does.
    pub(crate) fn rename(
        &mut self,
        old_start: Inode,
        old_path: &str,
        new_start: Inode,
        new_path: &str,
        now: u64,
    ) -> Result<(), Errno> {
        let old = self.resolve(old_start, old_path)?;
        let new = self.resolve(new_start, new_path)?;
        let Target::Entry { parent: old_parent, name: old_name, existing } = old.target else {
            // Renaming "." or ".." is refused by POSIX as well.
            return Err(Errno::Inval);
        };
        let source = existing.ok_or(Errno::Noent)?;
        let Target::Entry { parent: new_parent, name: new_name, existing: target } = new.target else {
            return Err(Errno::Inval);
        };
        let source_is_directory = self.is_directory(source);
        if !source_is_directory && (old.trailing_slash || new.trailing_slash) {
            return Err(Errno::Notdir);
        }
        if let Some(target) = target {
            if target == source {
                return Ok(());
            }
            match (&self.node(target)?.kind, source_is_directory) {
                (NodeKind::File { .. }, true) => return Err(Errno::Notdir),
                (NodeKind::Directory { .. }, false) => return Err(Errno::Isdir),
                (NodeKind::Directory { entries }, true) if !entries.is_empty() => {
                    return Err(Errno::Notempty);
                }
                _ => {}
            }
        }
        if source_is_directory {
            // A directory cannot become its own descendant.
            let mut cursor = Some(new_parent);
            while let Some(directory) = cursor {
                if directory == source {
                    return Err(Errno::Inval);
                }
                cursor = if directory == ROOT { None } else { self.nodes.get(&directory).and_then(|node| node.parent) };
            }
        }
        if !self.node(new_parent)?.linked {
            return Err(Errno::Noent);
        }
        let suffix = if source_is_directory { self.longest_descendant_suffix(source) } else { 0 };
        if self.child_path_len(new_parent, &new_name) + suffix > MAX_PATH_BYTES {
            return Err(Errno::Nametoolong);
        }

        if target.is_some() {
            self.unlink_entry(new_parent, &new_name, now)?;
        }
        for (directory, insert) in [(old_parent, false), (new_parent, true)] {
            let parent = self.node_mut(directory)?;
            if let NodeKind::Directory { entries } = &mut parent.kind {
                if insert {
                    entries.insert(new_name.clone(), source);
                } else {
                    entries.remove(&old_name);
                }
            }
            parent.mtim = now;
            parent.ctim = now;
        }
        let node = self.node_mut(source)?;
        node.parent = Some(new_parent);
        node.name = new_name;
        node.ctim = now;
        Ok(())
    }

    /// Records that an fd now refers to `inode`, keeping it alive after an unlink.
    pub(crate) fn fd_opened(&mut self, inode: Inode) {
        if let Some(node) = self.nodes.get_mut(&inode) {
            node.open_fds = node.open_fds.saturating_add(1);
        }
    }

    /// Records that an fd referring to `inode` was closed.
    pub(crate) fn fd_closed(&mut self, inode: Inode) {
        if let Some(node) = self.nodes.get_mut(&inode) {
            node.open_fds = node.open_fds.saturating_sub(1);
        }
        self.release_if_unused(inode);
    }

    pub(crate) fn stat(&self, inode: Inode) -> Result<Filestat, Errno> {
        let node = self.node(inode)?;
        let (filetype, nlink, size) = match &node.kind {
            NodeKind::File { data, .. } => (filetype::REGULAR_FILE, u64::from(node.linked), data.len() as u64),
            NodeKind::Directory { entries } => {
                // A directory is linked from its parent and from its own ".", and from the ".." of each
                // subdirectory, as on POSIX file systems (tools such as find rely on this count).
                let subdirectories = entries.values().filter(|child| self.is_directory(**child)).count() as u64;
                let nlink = if node.linked { 2 + subdirectories } else { 0 };
                (filetype::DIRECTORY, nlink, 0)
            }
        };
        Ok(Filestat {
            dev: DEVICE_ID,
            ino: inode,
            filetype,
            nlink,
            size,
            atim: node.atim,
            mtim: node.mtim,
            ctim: node.ctim,
        })
    }

    /// The contents of a regular file.
    pub(crate) fn file_data(&self, inode: Inode) -> Result<&[u8], Errno> {
        match &self.node(inode)?.kind {
            NodeKind::File { data, .. } => Ok(data),
            NodeKind::Directory { .. } => Err(Errno::Isdir),
        }
    }

    /// Makes room for writing `len` bytes at `offset` of a regular file and returns that region, to be
    /// filled by the caller. The file grows (zero-filled) as needed, within the quota.
    pub(crate) fn write_region(&mut self, inode: Inode, offset: u64, len: u64, now: u64) -> Result<&mut [u8], Errno> {
        if len == 0 {
            // POSIX: a zero-length write changes nothing, not even the timestamps.
            self.file_data(inode)?;
            return Ok(&mut []);
        }
        let end = offset.checked_add(len).filter(|end| *end <= MAX_FILE_BYTES).ok_or(Errno::Fbig)?;
        let node = self.nodes.get_mut(&inode).ok_or(Errno::Badf)?;
        let NodeKind::File { data, changed, .. } = &mut node.kind else {
            return Err(Errno::Isdir);
        };
        let old_size = data.len() as u64;
        if end > old_size {
            let growth = end - old_size;
            if self.bytes_used.saturating_add(growth) > self.max_bytes {
                return Err(Errno::Nospc);
            }
            // `end` is at most MAX_FILE_BYTES, which fits into usize on every supported host.
            data.resize(end as usize, 0);
            self.bytes_used += growth;
        }
        *changed = true;
        node.mtim = now;
        node.ctim = now;
        Ok(&mut data[offset as usize..end as usize])
    }

    /// Truncates or zero-extends a regular file.
    pub(crate) fn set_size(&mut self, inode: Inode, size: u64, now: u64) -> Result<(), Errno> {
        if size > MAX_FILE_BYTES {
            return Err(Errno::Fbig);
        }
        let node = self.nodes.get_mut(&inode).ok_or(Errno::Badf)?;
        let NodeKind::File { data, changed, .. } = &mut node.kind else {
            return Err(Errno::Isdir);
        };
        let old_size = data.len() as u64;
        if size == old_size {
            return Ok(());
        }
        if size > old_size {
            if self.bytes_used.saturating_add(size - old_size) > self.max_bytes {
                return Err(Errno::Nospc);
            }
            self.bytes_used += size - old_size;
        } else {
            self.bytes_used = self.bytes_used.saturating_sub(old_size - size);
        }
        data.resize(size as usize, 0);
        *changed = true;
        node.mtim = now;
        node.ctim = now;
        Ok(())
    }

    /// Sets the access and modification times as `fd_filestat_set_times` describes.
    pub(crate) fn set_times(&mut self, inode: Inode, atim: u64, mtim: u64, flags: u16, now: u64) -> Result<(), Errno> {
        validate_fstflags(flags)?;
        let node = self.node_mut(inode)?;
        if flags & fstflags::ATIM != 0 {
            node.atim = atim;
        } else if flags & fstflags::ATIM_NOW != 0 {
            node.atim = now;
        }
        if flags & fstflags::MTIM != 0 {
            node.mtim = mtim;
        } else if flags & fstflags::MTIM_NOW != 0 {
            node.mtim = now;
        }
        node.ctim = now;
        Ok(())
    }

    /// Encodes the entries of `directory` from index `cookie` on as `fd_readdir` returns them, stopping
    /// once `buf_len` bytes are filled (the last entry may be cut off, as the spec describes).
    ///
    /// The entries are ".", "..", then the children sorted by name (byte order); the cookie of an entry
    /// is its index, and each entry's `d_next` is the index of the one after it.
    pub(crate) fn read_directory(&self, directory: Inode, cookie: u64, buf_len: u32) -> Result<Vec<u8>, Errno> {
        let node = self.node(directory)?;
        let NodeKind::Directory { entries } = &node.kind else {
            return Err(Errno::Notdir);
        };
        let buf_len = buf_len as usize;
        let mut out = Vec::new();
        if !node.linked {
            // A removed directory is empty, without even "." and "..", as on Linux.
            return Ok(out);
        }
        let parent = if directory == ROOT { ROOT } else { node.parent.unwrap_or(directory) };
        let dots = [(".", directory), ("..", parent)].into_iter();
        let children = entries.iter().map(|(name, inode)| (name.as_str(), *inode));
        let skip = usize::try_from(cookie).unwrap_or(usize::MAX);
        for (index, (name, inode)) in dots.chain(children).enumerate().skip(skip) {
            if out.len() >= buf_len {
                break;
            }
            let entry_type = if self.is_directory(inode) { filetype::DIRECTORY } else { filetype::REGULAR_FILE };
            let mut header = [0u8; layout::DIRENT_SIZE];
            header[0..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
            header[8..16].copy_from_slice(&inode.to_le_bytes());
            header[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
            header[20] = entry_type;
            out.extend_from_slice(&header);
            out.extend_from_slice(name.as_bytes());
        }
        out.truncate(buf_len);
        Ok(out)
    }

    /// The files to report at the end of the run: every regular file reachable from /data that the
    /// program created or changed, or that now sits at a different path than it had in the input.
    pub(crate) fn into_outputs(mut self) -> BTreeMap<String, Vec<u8>> {
        let mut outputs = BTreeMap::new();
        // An explicit stack rather than recursion: directory trees can be thousands of levels deep.
        let mut stack = vec![(ROOT, String::new())];
        while let Some((directory, prefix)) = stack.pop() {
            let entries = match self.nodes.get(&directory) {
                Some(Node { kind: NodeKind::Directory { entries }, .. }) => entries.clone(),
                _ => continue,
            };
            for (name, inode) in entries {
                let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                match self.nodes.get_mut(&inode).map(|node| &mut node.kind) {
                    Some(NodeKind::Directory { .. }) => stack.push((inode, path)),
                    Some(NodeKind::File { data, input_path, changed })
                        if *changed || input_path.as_deref() != Some(path.as_str()) =>
                    {
                        outputs.insert(path, std::mem::take(data));
                    }
                    Some(NodeKind::File { .. }) | None => {}
                }
            }
        }
        outputs
    }

    pub(crate) fn bytes_used(&self) -> u64 {
        self.bytes_used
    }
}

/// Rejects unknown `fstflags` bits and the contradictory "set to a value and to now" combinations.
pub(crate) fn validate_fstflags(flags: u16) -> Result<(), Errno> {
    let both_atim = fstflags::ATIM | fstflags::ATIM_NOW;
    let both_mtim = fstflags::MTIM | fstflags::MTIM_NOW;
    if flags & !fstflags::ALL != 0 || flags & both_atim == both_atim || flags & both_mtim == both_mtim {
        return Err(Errno::Inval);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_with(files: &[(&str, &str)]) -> FileSystem {
        let files = files.iter().map(|(path, data)| (path.to_string(), data.as_bytes().to_vec())).collect();
        FileSystem::new(files, 1 << 20, 7).expect("valid input files")
    }

    #[test]
    fn input_files_get_inodes_in_creation_order() {
        let fs = fs_with(&[("a.txt", "A"), ("dir/b.txt", "BB"), ("dir/sub/c.txt", "C")]);
        assert_eq!(fs.resolve_existing(ROOT, "a.txt"), Ok(2));
        assert_eq!(fs.resolve_existing(ROOT, "dir"), Ok(3));
        assert_eq!(fs.resolve_existing(ROOT, "dir/b.txt"), Ok(4));
        assert_eq!(fs.resolve_existing(ROOT, "dir/sub"), Ok(5));
        assert_eq!(fs.resolve_existing(ROOT, "dir/sub/c.txt"), Ok(6));
        assert_eq!(fs.bytes_used(), 4);
        let stat = fs.stat(4).expect("exists");
        assert_eq!((stat.size, stat.atim, stat.filetype, stat.nlink), (2, 7, filetype::REGULAR_FILE, 1));
        assert_eq!(fs.stat(3).expect("exists").nlink, 3);
    }

    #[test]
    fn bad_input_paths_are_rejected_with_their_name() {
        for path in ["", "/abs", "a//b", "a/", "./a", "a/../b", "nul\0byte"] {
            let files = BTreeMap::from([(path.to_string(), Vec::new())]);
            let error = FileSystem::new(files, 100, 0).expect_err(path);
            assert!(matches!(&error, InputError::InvalidFilePath { path: p, .. } if p == path), "{path:?}: {error}");
        }
        let files = BTreeMap::from([("a".to_string(), Vec::new()), ("a/b".to_string(), Vec::new())]);
        let error = FileSystem::new(files, 100, 0).expect_err("collision");
        assert_eq!(error, InputError::PathCollision { path: "a/b".into(), other: "a".into() });
        assert!(error.to_string().contains("\"a/b\""));

        let files = BTreeMap::from([("big".to_string(), vec![0u8; 101])]);
        let error = FileSystem::new(files, 100, 0).expect_err("too large");
        assert_eq!(error, InputError::FilesTooLarge { total_bytes: 101, max_fs_bytes: 100 });
    }

    #[test]
    fn resolution_handles_dots_and_slashes() {
        let fs = fs_with(&[("d/e/f.txt", "x")]);
        let file = fs.resolve_existing(ROOT, "d/e/f.txt").expect("exists");
        assert_eq!(fs.resolve_existing(ROOT, "./d//e/./f.txt"), Ok(file));
        assert_eq!(fs.resolve_existing(ROOT, "d/e/../e/f.txt"), Ok(file));
        assert_eq!(fs.resolve_existing(ROOT, "d/e/f.txt/"), Err(Errno::Notdir));
        assert_eq!(fs.resolve_existing(ROOT, "d/e/f.txt/g"), Err(Errno::Notdir));
        assert_eq!(fs.resolve_existing(ROOT, "d///"), fs.resolve_existing(ROOT, "d"));
        assert_eq!(fs.resolve_existing(ROOT, "."), Ok(ROOT));
        assert_eq!(fs.resolve_existing(ROOT, "d/.."), Ok(ROOT));
        assert_eq!(fs.resolve_existing(ROOT, ".."), Err(Errno::Notcapable));
        assert_eq!(fs.resolve_existing(ROOT, "d/../../x"), Err(Errno::Notcapable));
        assert_eq!(fs.resolve_existing(ROOT, "/d"), Err(Errno::Notcapable));
        assert_eq!(fs.resolve_existing(ROOT, ""), Err(Errno::Noent));
        assert_eq!(fs.resolve_existing(ROOT, "missing/x"), Err(Errno::Noent));
        assert_eq!(fs.resolve_existing(file, "x"), Err(Errno::Notdir));
    }

    #[test]
    fn unlinked_open_files_keep_their_bytes_until_closed() {
        let mut fs = fs_with(&[("f", "12345")]);
        let file = fs.resolve_existing(ROOT, "f").expect("exists");
        fs.fd_opened(file);
        fs.unlink_file(ROOT, "f", 9).expect("unlink");
        assert_eq!(fs.file_data(file), Ok(&b"12345"[..]));
        assert_eq!(fs.stat(file).expect("alive").nlink, 0);
        assert_eq!(fs.bytes_used(), 5);
        fs.fd_closed(file);
        assert_eq!(fs.bytes_used(), 0);
        assert_eq!(fs.stat(file), Err(Errno::Badf));
    }

    #[test]
    fn directories_cannot_move_into_themselves() {
        let mut fs = fs_with(&[("a/b/c", "")]);
        assert_eq!(fs.rename(ROOT, "a", ROOT, "a/b/a2", 1), Err(Errno::Inval));
        assert_eq!(fs.rename(ROOT, "a", ROOT, "a/b", 1), Err(Errno::Notempty));
        fs.rename(ROOT, "a/b", ROOT, "b2", 1).expect("move up");
        assert!(fs.resolve_existing(ROOT, "b2/c").is_ok());
    }

    #[test]
    fn path_length_is_bounded_for_renamed_subtrees() {
        let long = "x".repeat(200);
        let mut fs = fs_with(&[]);
        let mut path = String::new();
        // Build a chain of directories whose full path is just under the limit.
        while path.len() + 201 <= MAX_PATH_BYTES {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&long);
            fs.create_directory(ROOT, &path, 0).expect("within the limit");
        }
        assert_eq!(fs.create_directory(ROOT, &format!("{path}/{long}"), 0), Err(Errno::Nametoolong));
        // Moving the chain one level down would push its deepest path over the limit.
        let other = "y".repeat(200);
        fs.create_directory(ROOT, &other, 0).expect("mkdir");
        assert_eq!(fs.rename(ROOT, &long, ROOT, &format!("{other}/{long}"), 0), Err(Errno::Nametoolong));
        fs.rename(ROOT, &long, ROOT, "z", 0).expect("a shorter name is fine");
    }
}
