//! The executor in a real browser engine (headless Chromium, in a dedicated worker, through
//! wasm-bindgen-test): WASI calls, canonical trap messages from V8's errors, and metering and limits that
//! match the native worker's.
#![cfg(target_arch = "wasm32")]

use distributivecom_program::conformance::{
    COUNTED_LOOP, COUNTED_LOOP_WORK_UNITS, ENDLESS_LOOP, GROW_OR_TRAP, TRAPS, assignment, trapping_program,
};
use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::{Assignment, Output, RunStatus};
use distributivecom_web_worker::executor::Runner;
use js_sys::{Uint8Array, WebAssembly};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// Instruments the module as the coordinator does, compiles it in the browser and runs it.
fn run(text: &str, assignment: &Assignment) -> (RunStatus, Output, u64) {
    let original = wat::parse_str(text).expect("the test module parses");
    distributivecom_program::check(&original).expect("the test module is a valid command");
    let instrumented = distributivecom_program::instrument::instrument(&original).unwrap();
    let module = WebAssembly::Module::new(&Uint8Array::from(&instrumented[..]).into()).unwrap();
    Runner::new().unwrap().execute(&module, assignment.clone())
}

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from the browser\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 23))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 7))))
"#;

#[wasm_bindgen_test]
fn wasi_calls_reach_the_shared_implementation() {
    let (status, output, work_units) = run(HELLO, &assignment(&["hello"]));
    assert_eq!(status, RunStatus::Exited { code: 7 });
    assert_eq!(output.stdout, Bytes::from("hello from the browser\n"));
    assert!(work_units > 0);
}

#[wasm_bindgen_test]
fn v8_traps_are_reported_with_the_canonical_messages() {
    for (body, kind) in TRAPS {
        let (status, _, _) = run(&trapping_program(body), &assignment(&[]));
        assert_eq!(status, kind.status(), "{body}");
    }
}

#[wasm_bindgen_test]
fn work_units_match_the_native_count_and_the_limit_stops_loops() {
    let (status, _, work_units) = run(COUNTED_LOOP, &assignment(&[]));
    assert_eq!(status, RunStatus::Exited { code: 0 });
    assert_eq!(work_units, COUNTED_LOOP_WORK_UNITS);

    let mut limited = assignment(&[]);
    limited.limits.max_work_units = 10_000;
    let (status, _, work_units) = run(ENDLESS_LOOP, &limited);
    assert_eq!(status, RunStatus::WorkLimit);
    assert!(work_units > 10_000 && work_units < 10_010, "{work_units}");
}

#[wasm_bindgen_test]
fn memory_past_the_limit_is_refused_like_natively() {
    let (status, _, _) = run(GROW_OR_TRAP, &assignment(&[]));
    assert_eq!(status, RunStatus::MemoryLimit, "16 MiB is 256 pages; 1001 pages are refused");
    let mut roomy = assignment(&[]);
    roomy.limits.memory_bytes = 128 << 20;
    assert_eq!(run(GROW_OR_TRAP, &roomy).0, RunStatus::Exited { code: 0 });
}
