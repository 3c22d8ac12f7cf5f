//! A WebAssembly.Memory seen through the shared WASI implementation's `GuestMemory`.

use distributivecom_wasi::{GuestMemory, MemoryError};
use js_sys::{Uint8Array, WebAssembly};

/// A view of the guest's memory for one WASI call. The view is taken per call because `memory.grow`
/// replaces the memory's buffer.
pub struct JsMemory {
    view: Uint8Array,
}

impl JsMemory {
    pub fn new(memory: &WebAssembly::Memory) -> JsMemory {
        JsMemory { view: Uint8Array::new(&memory.buffer()) }
    }

    fn range(&self, offset: u32, len: usize) -> Result<(u32, u32), MemoryError> {
        let end = u64::from(offset) + len as u64;
        if end > u64::from(self.view.length()) {
            return Err(MemoryError { offset: u64::from(offset), len: len as u64 });
        }
        Ok((offset, end as u32))
    }
}

impl GuestMemory for JsMemory {
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), MemoryError> {
        let (start, end) = self.range(offset, buf.len())?;
        self.view.subarray(start, end).copy_to(buf);
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemoryError> {
        let (start, end) = self.range(offset, data.len())?;
        self.view.subarray(start, end).copy_from(data);
        Ok(())
    }
}
