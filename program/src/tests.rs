//! Tests of the upload checks, one per way a program can be refused.

use super::*;

fn module(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test module parses")
}

fn refusal(text: &str) -> String {
    check(&module(text)).expect_err("the module is refused").to_string()
}

const COMMAND: &str = r#"
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (memory (export "memory") 2 10)
      (func (export "_start")))
"#;

#[test]
fn a_wasi_command_module_passes() {
    let info = check(&module(COMMAND)).unwrap();
    assert_eq!(info.imports, ["fd_write", "proc_exit"]);
    assert_eq!(info.memory_initial_pages, 2);
    assert_eq!(info.memory_maximum_pages, Some(10));
}

#[test]
fn empty_and_non_wasm_bytes_are_named_as_such() {
    assert_eq!(check(b""), Err(ProgramError::Empty));
    assert_eq!(check(b"#!/bin/sh\necho hi\n"), Err(ProgramError::NotWasm));
}

#[test]
fn a_component_is_refused_with_a_hint() {
    let component = b"\0asm\x0d\x00\x01\x00";
    let message = check(component).unwrap_err().to_string();
    assert!(message.contains("component"), "{message}");
    assert!(message.contains("wasm32-wasip1"), "{message}");
}

#[test]
fn truncated_wasm_is_invalid_with_an_offset() {
    let mut bytes = module(COMMAND);
    bytes.truncate(bytes.len() - 3);
    let message = check(&bytes).unwrap_err().to_string();
    assert!(message.starts_with("invalid WebAssembly at byte offset"), "{message}");
}

#[test]
fn imports_outside_wasi_are_forbidden_by_name() {
    let message =
        refusal(r#"(module (import "env" "foo" (func)) (memory (export "memory") 1) (func (export "_start")))"#);
    assert_eq!(message, "import env.foo is not allowed: programs may import only functions of wasi_snapshot_preview1");
}

#[test]
fn non_function_and_unknown_wasi_imports_are_refused() {
    let memory_import = refusal(
        r#"(module (import "wasi_snapshot_preview1" "memory" (memory 1)) (export "memory" (memory 0))
                   (func (export "_start")))"#,
    );
    assert_eq!(memory_import, "import wasi_snapshot_preview1.memory is not a function");
    let unknown = refusal(
        r#"(module (import "wasi_snapshot_preview1" "fd_teleport" (func)) (memory (export "memory") 1)
                   (func (export "_start")))"#,
    );
    assert_eq!(unknown, "import wasi_snapshot_preview1.fd_teleport is not a WASI preview 1 function");
}

#[test]
fn a_wrong_wasi_signature_names_both_types() {
    let message = refusal(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))
                   (memory (export "memory") 1) (func (export "_start")))"#,
    );
    assert_eq!(
        message,
        "import wasi_snapshot_preview1.fd_write has type (i32) -> (i32), but WASI preview 1 defines it as \
         (i32, i32, i32, i32) -> (i32)"
    );
}

#[test]
fn a_module_without_start_is_refused_and_a_reactor_is_recognised() {
    assert_eq!(
        refusal(r#"(module (memory (export "memory") 1) (func (export "main")))"#),
        "the program exports no `_start` function"
    );
    let reactor = refusal(r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#);
    assert!(reactor.contains("WASI reactor"), "{reactor}");
}

#[test]
fn start_must_have_the_command_signature() {
    assert_eq!(
        refusal(r#"(module (memory (export "memory") 1) (func (export "_start") (param i32)))"#),
        "the exported `_start` must take no parameters and return nothing"
    );
}

#[test]
fn a_module_without_exported_memory_is_refused() {
    assert_eq!(
        refusal(r#"(module (memory 1) (func (export "_start")))"#),
        "the program exports no memory named `memory`"
    );
}

#[test]
fn nondeterministic_or_unsupported_proposals_are_refused() {
    let threads = refusal(r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#);
    assert!(threads.starts_with("invalid WebAssembly"), "{threads}");
    let relaxed_simd = refusal(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (drop (f32x4.relaxed_madd (v128.const i32x4 0 0 0 0)
                                      (v128.const i32x4 0 0 0 0) (v128.const i32x4 0 0 0 0)))))"#,
    );
    assert!(relaxed_simd.starts_with("invalid WebAssembly"), "{relaxed_simd}");
}

mod instrumentation {
    //! The instrumented modules run in wasmtime, so the counts and limits are checked for real.

    use wasmtime::{Engine, Instance, Module, Store, TypedFunc};

    use crate::conformance::{COUNTED_LOOP, COUNTED_LOOP_WORK_UNITS, ENDLESS_LOOP};
    use crate::instrument::*;
    use crate::{check, instrument::instrument};

    struct Run {
        work_units: u64,
        flags: i32,
        trapped: bool,
        result: Option<i32>,
    }

    /// Instruments `text`, sets the limits, calls `_start` and reads the counters.
    fn run(text: &str, work_limit: u64, memory_limit_pages: i32) -> Run {
        let original = wat::parse_str(text).unwrap();
        check(&original).expect("the test module is a valid command");
        let instrumented = instrument(&original).expect("instrumentation succeeds");
        let engine = Engine::default();
        let module = Module::new(&engine, &instrumented).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        instance.get_global(&mut store, WORK_LIMIT).unwrap().set(&mut store, (work_limit as i64).into()).unwrap();
        instance
            .get_global(&mut store, MEMORY_LIMIT_PAGES)
            .unwrap()
            .set(&mut store, memory_limit_pages.into())
            .unwrap();
        let start: TypedFunc<(), ()> = instance.get_typed_func(&mut store, "_start").unwrap();
        let trapped = start.call(&mut store, ()).is_err();
        let result = instance.get_global(&mut store, "result").and_then(|global| global.get(&mut store).i32());
        Run {
            work_units: instance.get_global(&mut store, WORK_UNITS).unwrap().get(&mut store).i64().unwrap() as u64,
            flags: instance.get_global(&mut store, FLAGS).unwrap().get(&mut store).i32().unwrap(),
            trapped,
            result,
        }
    }

    #[test]
    fn straight_line_code_is_charged_one_unit_per_instruction() {
        let run =
            run(r#"(module (memory (export "memory") 1) (func (export "_start") i32.const 1 drop))"#, u64::MAX, 10);
        // i32.const, drop, end.
        assert_eq!(run.work_units, 3);
        assert_eq!(run.flags, 0);
        assert!(!run.trapped);
    }

    #[test]
    fn loops_are_charged_per_iteration() {
        // loop (1) + 10 iterations of 7 instructions + the loop's end (1) + the function's end (1).
        assert_eq!(COUNTED_LOOP_WORK_UNITS, 1 + 70 + 1 + 1);
        assert_eq!(run(COUNTED_LOOP, u64::MAX, 10).work_units, COUNTED_LOOP_WORK_UNITS);
    }

    #[test]
    fn an_infinite_loop_stops_at_the_work_limit() {
        let run = run(ENDLESS_LOOP, 1000, 10);
        assert!(run.trapped);
        assert_eq!(run.flags, FLAG_WORK_LIMIT);
        assert!(run.work_units > 1000 && run.work_units < 1010, "{}", run.work_units);
    }

    #[test]
    fn memory_growth_past_the_limit_is_refused_and_recorded() {
        let module = r#"(module (memory (export "memory") 1)
              (global $result (export "result") (mut i32) (i32.const 0))
              (func (export "_start")
                (global.set $result (memory.grow (i32.const 2)))))"#;
        let allowed = run(module, u64::MAX, 3);
        assert_eq!(allowed.result, Some(1), "growing from 1 to 3 pages is within the limit");
        assert_eq!(allowed.flags, 0);
        let refused = run(module, u64::MAX, 2);
        assert_eq!(refused.result, Some(-1));
        assert_eq!(refused.flags, FLAG_MEMORY_REFUSED);
        assert!(!refused.trapped, "a refused growth is not a trap: the program decides what to do");
    }

    #[test]
    fn reserved_export_names_are_refused() {
        let text = format!(
            r#"(module (memory (export "memory") 1) (func (export "_start")) (global (export "{WORK_UNITS}") i32 (i32.const 0)))"#
        );
        let error = instrument(&wat::parse_str(text).unwrap()).unwrap_err();
        assert!(error.to_string().contains("reserved name"), "{error}");
    }
}
