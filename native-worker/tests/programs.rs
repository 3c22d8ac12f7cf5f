//! Runs the real test programs (built for wasm32-wasip1 by `cargo xtask build-programs`) through the
//! worker's wasmtime runtime and the shared WASI implementation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use distributivecom_program::conformance::{
    self, COUNTED_LOOP, COUNTED_LOOP_WORK_UNITS, ENDLESS_LOOP, GROW_OR_TRAP, TRAPS, trapping_program,
};
use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::{Assignment, RunStatus};
use distributivecom_worker::runtime::Runtime;

/// A test program, instrumented as the coordinator does on upload.
fn program(name: &str) -> Vec<u8> {
    // Where cargo builds: CARGO_TARGET_DIR when set (as `.ci/run` does), otherwise the workspace's target/.
    // Read at run time (`cargo test` sets it): a shared build cache may hold a binary from another clone.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let workspace = PathBuf::from(manifest).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    let path = target.join("wasm32-wasip1/wasi-release").join(format!("{name}.wasm"));
    let original = std::fs::read(&path).unwrap_or_else(|error| {
        panic!("{} is missing ({error}): build the programs first with `cargo xtask build-programs`", path.display())
    });
    distributivecom_program::instrument::instrument(&original).expect("the test programs instrument")
}

/// A chunk with environment, stdin and an input file, and room for the memory hog to show itself.
fn assignment(args: &[&str]) -> Assignment {
    let mut assignment = conformance::assignment(args);
    assignment.env = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
    assignment.stdin = Bytes::from("standard input\n");
    assignment.files = BTreeMap::from([("input.txt".to_owned(), Bytes::from("some input"))]);
    assignment.clock_start_ns = 1_700_000_000_000_000_000;
    assignment.random_seed = Bytes(vec![7; 32]);
    assignment.limits.memory_bytes = 256 << 20;
    assignment.limits.time_limit_ms = 2_000;
    assignment.limits.max_data_bytes = 64 << 20;
    assignment
}

#[test]
fn fsops_sees_its_arguments_environment_and_files() {
    let runtime = Runtime::new(1).unwrap();
    let module = runtime.compile(&program("fsops")).unwrap();
    let run = runtime.run(&module, assignment(&["fsops", "one", "two"]));
    let (status, output) = (run.status, run.output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        status,
        RunStatus::Exited { code: 0 },
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("arg: one"), "{stdout}");
    assert!(stdout.contains("env: GREETING=hello"), "{stdout}");
    assert!(stdout.contains("input: 10 bytes"), "{stdout}");
    let files: Vec<&String> = output.files.keys().collect();
    assert!(files.contains(&&"out/renamed.txt".to_owned()), "{files:?}");
    assert!(files.contains(&&"stdin-copy.bin".to_owned()), "{files:?}");
    assert_eq!(output.files["stdin-copy.bin"], Bytes::from("standard input\n"));
    assert!(!files.contains(&&"input.txt".to_owned()), "unchanged inputs are not outputs");
}

#[test]
fn the_same_chunk_twice_gives_the_same_bytes_and_another_seed_does_not() {
    let runtime = Runtime::new(1).unwrap();
    let module = runtime.compile(&program("entropy")).unwrap();
    let chunk = assignment(&["entropy"]);
    let first = runtime.run(&module, chunk.clone());
    let second = runtime.run(&module, chunk.clone());
    assert_eq!(first.status, RunStatus::Exited { code: 0 }, "{}", String::from_utf8_lossy(&first.output.stderr));
    assert_eq!(first.output, second.output);
    assert_eq!(first.work_units, second.work_units);
    assert!(first.work_units > 1000, "work units are counted: {}", first.work_units);
    let mut other = chunk.clone();
    other.random_seed = Bytes(vec![8; 32]);
    let third = runtime.run(&module, other.clone());
    assert_ne!(first.output.files["random.bin"], third.output.files["random.bin"]);
    let stdout = String::from_utf8_lossy(&first.output.stdout);
    assert!(stdout.contains("system_time_ns: 17000000000000"), "{stdout}");
}

#[test]
fn limits_and_failures_are_reported_with_their_reason() {
    let runtime = Runtime::new(1).unwrap();
    let mut chunk = assignment(&["program"]);
    chunk.limits.time_limit_ms = 300;
    let spin = runtime.compile(&program("spin")).unwrap();
    assert_eq!(runtime.run(&spin, chunk.clone()).status, RunStatus::TimedOut);
    chunk.limits.max_work_units = 5_000_000;
    chunk.limits.time_limit_ms = 20_000;
    let stopped = runtime.run(&spin, chunk.clone());
    assert_eq!(stopped.status, RunStatus::WorkLimit);
    assert!(stopped.work_units > 5_000_000 && stopped.work_units < 5_001_000, "{}", stopped.work_units);
    assert_eq!(runtime.run(&spin, chunk.clone()).work_units, stopped.work_units, "the limit stops at the same place");
    chunk.limits.max_work_units = u64::MAX;

    chunk.limits.memory_bytes = 64 << 20;
    let hog = runtime.compile(&program("hog")).unwrap();
    assert_eq!(runtime.run(&hog, chunk.clone()).status, RunStatus::MemoryLimit);

    let fail = runtime.compile(&program("fail")).unwrap();
    let run = runtime.run(&fail, chunk.clone());
    let (status, output) = (run.status, run.output);
    assert_eq!(status, RunStatus::Exited { code: 3 });
    assert_eq!(output.stderr, Bytes::from("fail: something went wrong (this is on purpose)\n"));
    assert_eq!(output.files["partial.txt"], Bytes::from("partial"));
}

/// Checks, instruments, compiles and runs a module written in the text format.
fn run_text(text: &str, assignment: &Assignment) -> distributivecom_worker::runtime::RunOutcome {
    let original = wat::parse_str(text).expect("the test module parses");
    distributivecom_program::check(&original).expect("the test module is a valid command");
    let runtime = Runtime::new(1).unwrap();
    let module = runtime.compile(&distributivecom_program::instrument::instrument(&original).unwrap()).unwrap();
    runtime.run(&module, assignment.clone())
}

#[test]
fn traps_are_reported_with_the_same_canonical_messages_as_in_browsers() {
    for (body, kind) in TRAPS {
        let outcome = run_text(&trapping_program(body), &assignment(&[]));
        assert_eq!(outcome.status, kind.status(), "{body}");
    }
}

#[test]
fn work_units_and_limits_match_the_browser_worker() {
    let counted = run_text(COUNTED_LOOP, &assignment(&[]));
    assert_eq!((counted.status, counted.work_units), (RunStatus::Exited { code: 0 }, COUNTED_LOOP_WORK_UNITS));
    let mut limited = assignment(&[]);
    limited.limits.max_work_units = 10_000;
    let stopped = run_text(ENDLESS_LOOP, &limited);
    assert_eq!(stopped.status, RunStatus::WorkLimit);
    assert!(stopped.work_units > 10_000 && stopped.work_units < 10_010, "{}", stopped.work_units);
    let mut small = assignment(&[]);
    small.limits.memory_bytes = 16 << 20;
    assert_eq!(run_text(GROW_OR_TRAP, &small).status, RunStatus::MemoryLimit);
    small.limits.memory_bytes = 128 << 20;
    assert_eq!(run_text(GROW_OR_TRAP, &small).status, RunStatus::Exited { code: 0 });
}

/// Compiles a module written in the text format, checked and instrumented as the coordinator does.
fn compile_text(runtime: &Runtime, text: &str) -> distributivecom_worker::runtime::CompiledModule {
    let original = wat::parse_str(text).expect("the test module parses");
    distributivecom_program::check(&original).expect("the test module is a valid command");
    runtime.compile(&distributivecom_program::instrument::instrument(&original).unwrap()).unwrap()
}

/// Exits with the sum of three bytes (its data segment's "A" at 200, and 0 at 100 and at 65,636 once
/// memory grew a page), then overwrites all three: a run that sees another run's memory exits otherwise.
const LEAVES_TRACES: &str = r#"(module
     (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
     (memory (export "memory") 1)
     (data (i32.const 200) "A")
     (func (export "_start") (local $sum i32)
       (drop (memory.grow (i32.const 1)))
       (local.set $sum (i32.add (i32.load8_u (i32.const 200))
         (i32.add (i32.load8_u (i32.const 100)) (i32.load8_u (i32.const 65636)))))
       (i32.store8 (i32.const 100) (i32.const 17))
       (i32.store8 (i32.const 65636) (i32.const 17))
       (i32.store8 (i32.const 200) (i32.const 0))
       (call $exit (local.get $sum))))"#;

#[test]
fn a_pooled_run_starts_from_the_modules_own_memory_never_the_last_runs() {
    let runtime = Runtime::new(1).unwrap();
    let module = compile_text(&runtime, LEAVES_TRACES);
    assert!(module.pooled(), "an ordinary module takes the pool's slots");
    for run in 0..4 {
        let outcome = runtime.run(&module, assignment(&[]));
        assert_eq!(outcome.status, RunStatus::Exited { code: 65 }, "run {run}");
    }
    // Another module in the same slot does not see this one's memory either.
    let reader = compile_text(&runtime, &LEAVES_TRACES.replace(r#""A""#, r#""B""#));
    assert_eq!(runtime.run(&reader, assignment(&[])).status, RunStatus::Exited { code: 66 });
    assert_eq!(runtime.run(&module, assignment(&[])).status, RunStatus::Exited { code: 65 });
}

#[test]
fn modules_beyond_the_pools_slots_run_on_demand_with_the_same_results() {
    let runtime = Runtime::new(1).unwrap();
    // Two tables (reference types allow them; a pool slot has one).
    let two_tables = compile_text(
        &runtime,
        &LEAVES_TRACES.replace("(memory (export", "(table 1 funcref) (table 2 funcref) (memory (export"),
    );
    assert!(!two_tables.pooled());
    // A table far past wasmtime's default pool slot (20,000 elements) still fits ours.
    let big_table =
        compile_text(&runtime, &LEAVES_TRACES.replace("(memory (export", "(table 500000 funcref) (memory (export"));
    assert!(big_table.pooled());
    for module in [&two_tables, &big_table, &two_tables, &big_table] {
        assert_eq!(runtime.run(module, assignment(&[])).status, RunStatus::Exited { code: 65 });
    }
    // Limits hold on demand as in the pool.
    let mut small = assignment(&[]);
    small.limits.memory_bytes = 16 << 20;
    let grow = GROW_OR_TRAP.replace("(memory (export", "(table 1 funcref) (table 1 funcref) (memory (export");
    let on_demand = compile_text(&runtime, &grow);
    assert!(!on_demand.pooled());
    assert_eq!(runtime.run(&on_demand, small.clone()).status, RunStatus::MemoryLimit);
    assert_eq!(runtime.run(&compile_text(&runtime, GROW_OR_TRAP), small).status, RunStatus::MemoryLimit);
}

#[test]
fn as_many_runs_as_slots_run_at_once_in_the_pool() {
    let slots = 4;
    let runtime = std::sync::Arc::new(Runtime::new(slots).unwrap());
    let module = std::sync::Arc::new(runtime.compile(&program("entropy")).unwrap());
    let expected = runtime.run(&module, assignment(&["entropy"]));
    assert_eq!(expected.status, RunStatus::Exited { code: 0 });
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(slots as usize));
    let runs: Vec<_> = (0..slots)
        .map(|_| {
            let (runtime, module, barrier) = (runtime.clone(), module.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..20).map(|_| runtime.run(&module, assignment(&["entropy"]))).collect::<Vec<_>>()
            })
        })
        .collect();
    for run in runs {
        for outcome in run.join().unwrap() {
            assert_eq!(
                outcome,
                distributivecom_worker::runtime::RunOutcome { elapsed: outcome.elapsed, ..expected.clone() }
            );
        }
    }
}

#[test]
fn a_memory_that_starts_past_the_limit_is_refused_alike_in_the_pool_and_on_demand() {
    let runtime = Runtime::new(1).unwrap();
    let mut small = assignment(&[]);
    small.limits.memory_bytes = 16 << 20;
    // 512 pages (32 MiB) from the start, over the 16 MiB limit.
    let big = COUNTED_LOOP.replace("(memory (export \"memory\") 1)", "(memory (export \"memory\") 512)");
    let pooled = compile_text(&runtime, &big);
    let on_demand =
        compile_text(&runtime, &big.replace("(memory (export", "(table 1 funcref) (table 1 funcref) (memory (export"));
    assert!(pooled.pooled() && !on_demand.pooled());
    for module in [&pooled, &on_demand] {
        assert_eq!(runtime.run(module, small.clone()).status, RunStatus::MemoryLimit);
    }
    small.limits.memory_bytes = 64 << 20;
    for module in [&pooled, &on_demand] {
        assert_eq!(runtime.run(module, small.clone()).status, RunStatus::Exited { code: 0 });
    }
}

#[test]
fn without_the_address_space_for_a_pool_every_module_runs_on_demand() {
    // 100,000 slots of 4 GiB each is more address space than a 64-bit Linux process has.
    let runtime = Runtime::new(100_000).unwrap();
    let module = compile_text(&runtime, LEAVES_TRACES);
    assert!(!module.pooled());
    for _ in 0..2 {
        assert_eq!(runtime.run(&module, assignment(&[])).status, RunStatus::Exited { code: 65 });
    }
}
