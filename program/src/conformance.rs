//! Programs with known outcomes that every worker kind must report identically. The native worker's
//! tests run them with wasmtime and the browser worker's tests run them with V8, so that a difference
//! between engines shows up as a failing test on one side.

use std::collections::BTreeMap;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::{Assignment, Limits, ModuleRef, TrapKind};

/// A module whose `_start` executes `body`. It has a table with one function (`$f`, which takes and
/// returns an i32) and one null entry, a recursive `$recurse`, and one page of memory.
pub fn trapping_program(body: &str) -> String {
    format!(
        r#"(module (memory (export "memory") 1)
             (type $unit (func))
             (table 2 funcref) (elem (i32.const 0) $f)
             (func $f (param i32) (result i32) local.get 0)
             (func $recurse (param i32) (result i32) (call $recurse (i32.add (local.get 0) (i32.const 1))))
             (func (export "_start") {body}))"#
    )
}

/// `_start` bodies and the trap each must be reported as.
pub const TRAPS: &[(&str, TrapKind)] = &[
    ("unreachable", TrapKind::Unreachable),
    ("(drop (i32.div_u (i32.const 1) (i32.const 0)))", TrapKind::IntegerDivisionByZero),
    ("(drop (i32.rem_s (i32.const 1) (i32.const 0)))", TrapKind::IntegerDivisionByZero),
    ("(drop (i32.div_s (i32.const -2147483648) (i32.const -1)))", TrapKind::IntegerOverflow),
    ("(drop (i32.trunc_f32_s (f32.const nan)))", TrapKind::IntegerOverflow),
    ("(drop (i32.trunc_f64_u (f64.const 1e30)))", TrapKind::IntegerOverflow),
    ("(drop (i32.load (i32.const 70000)))", TrapKind::MemoryOutOfBounds),
    ("(call_indirect (type $unit) (i32.const 0))", TrapKind::BadIndirectCall),
    ("(call_indirect (type $unit) (i32.const 1))", TrapKind::BadIndirectCall),
    ("(call_indirect (type $unit) (i32.const 5))", TrapKind::TableOutOfBounds),
    ("(drop (call $recurse (i32.const 0)))", TrapKind::StackOverflow),
];

/// A loop that runs ten times: exactly 73 work units (see `instrument`).
pub const COUNTED_LOOP: &str = r#"(module (memory (export "memory") 1)
     (func (export "_start") (local i32)
       (loop $again
         local.get 0 i32.const 1 i32.add local.tee 0
         i32.const 10 i32.lt_u br_if $again)))"#;

/// Work units of [`COUNTED_LOOP`].
pub const COUNTED_LOOP_WORK_UNITS: u64 = 73;

/// An endless loop, for the work limit.
pub const ENDLESS_LOOP: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $forever br $forever)))"#;

/// Grows memory by 1000 pages and traps if that was refused.
pub const GROW_OR_TRAP: &str = r#"(module (memory (export "memory") 1)
     (func (export "_start")
       (if (i32.eq (memory.grow (i32.const 1000)) (i32.const -1)) (then unreachable))))"#;

/// An assignment for tests: this argv and nothing else, a fixed seed, and limits that stop nothing the
/// conformance programs do (16 MiB of memory, 10 s, no work limit).
pub fn assignment(args: &[&str]) -> Assignment {
    Assignment {
        replica: 1,
        job: 1,
        chunk: 0,
        job_name: "test".into(),
        module: ModuleRef { sha256: String::new(), size: 0 },
        args: args.iter().map(|arg| arg.to_string()).collect(),
        env: BTreeMap::new(),
        stdin: Bytes::default(),
        files: BTreeMap::new(),
        blobs: BTreeMap::new(),
        clock_start_ns: 0,
        random_seed: Bytes(vec![1; 32]),
        limits: Limits {
            memory_bytes: 16 << 20,
            time_limit_ms: 10_000,
            max_stdout_bytes: 1 << 20,
            max_stderr_bytes: 1 << 20,
            max_data_bytes: 1 << 20,
            max_work_units: u64::MAX,
        },
    }
}
