//! The contract between the coordinator's instrumentation (`program::instrument`) and the workers: the
//! names of the globals an instrumented module exports, and what their values mean.
//!
//! A worker sets [`WORK_LIMIT`] and [`MEMORY_LIMIT_PAGES`] after instantiating the module and before
//! calling `_start`, and reads [`WORK_UNITS`] and [`FLAGS`] when the run is over.

/// Exported `mut i64`: work units (original WebAssembly instructions) used so far.
pub const WORK_UNITS: &str = "__distributivecom_work_units";
/// Exported `mut i64`: the run traps once work units exceed this (compared as unsigned).
pub const WORK_LIMIT: &str = "__distributivecom_work_limit";
/// Exported `mut i32`: a combination of [`FLAG_WORK_LIMIT`] and [`FLAG_MEMORY_REFUSED`].
pub const FLAGS: &str = "__distributivecom_flags";
/// Exported `mut i32`: the most 64 KiB pages the memory may grow to.
pub const MEMORY_LIMIT_PAGES: &str = "__distributivecom_memory_limit_pages";

/// The run trapped because it exceeded its work limit.
pub const FLAG_WORK_LIMIT: i32 = 1;
/// A `memory.grow` was refused, by the limit or by the engine.
pub const FLAG_MEMORY_REFUSED: i32 = 2;

/// The size of a WebAssembly page.
pub const PAGE_BYTES: u64 = 65_536;

/// The memory limit in pages for a limit in bytes (rounded down, at most the 65,536 pages of a 32-bit
/// memory).
pub fn memory_limit_pages(memory_bytes: u64) -> i32 {
    (memory_bytes / PAGE_BYTES).min(65_536) as i32
}
