//! The abstract guest memory that every WASI call reads its arguments from and writes its results to.
//!
//! Native hosts hand over the wasm linear memory as a `[u8]` slice; the browser worker implements
//! [`GuestMemory`] by copying to and from a `WebAssembly.Memory`. Everything above this module only
//! ever sees the trait, which is what lets one WASI implementation serve both.

use crate::abi::Errno;

/// What a guest memory must offer.
///
/// Implementations must behave like one contiguous range of bytes starting at address 0: an access
/// is either entirely in bounds (and then succeeds) or fails without changing anything. Out-of-bounds
/// accesses return [`MemoryError`], which the WASI calls turn into errno `FAULT`.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes starting at guest address `offset` into `buf`.
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Copies `data` into guest memory starting at guest address `offset`.
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemoryError>;
}

/// A guest memory access that fell outside the memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest memory access out of bounds at {offset}+{len}")]
pub struct MemoryError {
    /// The guest address where the access started.
    pub offset: u64,
    /// The length of the access in bytes.
    pub len: u64,
}

impl MemoryError {
    fn new(offset: u32, len: usize) -> MemoryError {
        MemoryError { offset: u64::from(offset), len: len as u64 }
    }
}

/// Returns the byte range `offset..offset + len` of a slice of `total` bytes, if it is in bounds.
fn range_in(total: usize, offset: u32, len: usize) -> Option<std::ops::Range<usize>> {
    // `u32` always fits into `usize` on the 32- and 64-bit targets we build for; the conversion
    // still goes through `try_from` so that a hypothetical 16-bit target fails cleanly.
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= total).then_some(start..end)
}

impl GuestMemory for [u8] {
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), MemoryError> {
        let range = range_in(self.len(), offset, buf.len()).ok_or(MemoryError::new(offset, buf.len()))?;
        buf.copy_from_slice(&self[range]);
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemoryError> {
        let range = range_in(self.len(), offset, data.len()).ok_or(MemoryError::new(offset, data.len()))?;
        self[range].copy_from_slice(data);
        Ok(())
    }
}

/// A `Vec<u8>` behaves exactly like its slice; this impl only saves tests and tools an `as_mut_slice()`.
impl GuestMemory for Vec<u8> {
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.as_slice().read(offset, buf)
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemoryError> {
        self.as_mut_slice().write(offset, data)
    }
}

/// A mutable reference to a memory is a memory; among other things this lets
/// [`WasiCtx::call`](crate::WasiCtx::call) accept an unsized `[u8]`.
impl<M: GuestMemory + ?Sized> GuestMemory for &mut M {
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(offset, buf)
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemoryError> {
        (**self).write(offset, data)
    }
}

impl From<MemoryError> for Errno {
    fn from(_: MemoryError) -> Errno {
        Errno::Fault
    }
}

/// Adds a field offset to a guest pointer; an address past 4 GiB cannot exist, so it is a `FAULT`.
pub(crate) fn field(pointer: u32, field_offset: u64) -> Result<u32, Errno> {
    u64::from(pointer).checked_add(field_offset).and_then(|address| u32::try_from(address).ok()).ok_or(Errno::Fault)
}

/// Checks that the whole range `pointer..pointer + len` lies inside guest memory without changing it.
///
/// Because guest memory is contiguous from address 0 (see [`GuestMemory`]), probing the last byte
/// is enough. Calls use this to validate every buffer before they have any side effect, so a bad
/// pointer yields `FAULT` and leaves the context exactly as it was.
pub(crate) fn check_range(memory: &dyn GuestMemory, pointer: u32, len: u64) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    let last = field(pointer, len - 1)?;
    let mut probe = [0u8; 1];
    memory.read(last, &mut probe)?;
    Ok(())
}

pub(crate) fn read_bytes<const N: usize>(memory: &dyn GuestMemory, pointer: u32) -> Result<[u8; N], Errno> {
    let mut bytes = [0u8; N];
    memory.read(pointer, &mut bytes)?;
    Ok(bytes)
}

pub(crate) fn write_u32(memory: &mut dyn GuestMemory, pointer: u32, value: u32) -> Result<(), Errno> {
    Ok(memory.write(pointer, &value.to_le_bytes())?)
}

pub(crate) fn write_u64(memory: &mut dyn GuestMemory, pointer: u32, value: u64) -> Result<(), Errno> {
    Ok(memory.write(pointer, &value.to_le_bytes())?)
}

/// Builds a little-endian struct image in host memory so that it can be written with one access.
///
/// Writing a struct field by field could leave half of it written when a later field is out of
/// bounds; a single write either fully succeeds or changes nothing.
pub(crate) struct StructImage<const N: usize> {
    pub(crate) bytes: [u8; N],
}

impl<const N: usize> StructImage<N> {
    pub(crate) fn new() -> Self {
        StructImage { bytes: [0u8; N] }
    }

    pub(crate) fn put_u8(&mut self, at: usize, value: u8) {
        self.bytes[at] = value;
    }

    pub(crate) fn put_u16(&mut self, at: usize, value: u16) {
        self.bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn put_u32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn put_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_accesses_are_bounds_checked() {
        let mut memory = vec![0u8; 16];
        memory.write(12, &[1, 2, 3, 4]).expect("in bounds");
        let mut buf = [0u8; 4];
        memory.read(12, &mut buf).expect("in bounds");
        assert_eq!(buf, [1, 2, 3, 4]);
        let error = memory.write(13, &[1, 2, 3, 4]).expect_err("one byte past the end");
        assert_eq!(error, MemoryError { offset: 13, len: 4 });
        assert_eq!(error.to_string(), "guest memory access out of bounds at 13+4");
        assert!(memory.read(u32::MAX, &mut buf).is_err());
        // A failed write must not have changed anything.
        assert_eq!(&memory[12..], &[1, 2, 3, 4]);
    }

    #[test]
    fn check_range_probes_the_last_byte() {
        let memory = vec![0u8; 16];
        assert!(check_range(&memory, 0, 16).is_ok());
        assert!(check_range(&memory, 100, 0).is_ok());
        assert_eq!(check_range(&memory, 1, 16), Err(Errno::Fault));
        assert_eq!(check_range(&memory, u32::MAX, 2), Err(Errno::Fault));
    }
}
