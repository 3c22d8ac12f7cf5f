//! Running one replica with wasmtime, over the shared WASI implementation (`distributivecom-wasi`).
//!
//! Each WASI preview 1 import is a wasmtime host function that hands its raw arguments and the guest's
//! linear memory to `WasiCtx::call`. Limits: memory through a `ResourceLimiter`, run time through epoch
//! interruption (a ticker thread advances the engines' epochs every [`EPOCH_TICK`]).
//!
//! Two engines, one program semantics. Modules that fit the pooling allocator's slots (one memory, one
//! table of at most [`MAX_TABLE_ELEMENTS`], a `VMContext` of at most [`MAX_INSTANCE_BYTES`]; nearly every
//! program) compile for the pooled engine, whose instances reuse memory mappings set up once: a run then
//! makes no `mmap`/`munmap` of its own. Anything else compiles for an on-demand engine and runs exactly as
//! before, so the pool never refuses a program that runs on-demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use distributivecom_protocol::metering::{FLAGS, MEMORY_LIMIT_PAGES, WORK_LIMIT, WORK_UNITS};
use distributivecom_protocol::worker::{Assignment, Output, RunStatus, TrapKind};
use distributivecom_wasi::assignment::{Ending, Prepared, ending_status, output, prepare};
use distributivecom_wasi::{FUNCTIONS, HostStop, MODULE_NAME, ValType, WasiCtx};
use wasmtime::{
    Config, Engine, FuncType, Instance, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, Val,
};

/// How often the engine's epoch advances: the granularity of the time limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("could not set up wasmtime: {0}")]
    Setup(String),
    #[error("could not compile the module: {0}")]
    Compile(String),
}

/// Table elements a program may have, in the pool as on demand (the resource limiter's cap).
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The pooled engine's cap on an instance's `VMContext` (functions imported, globals, tables, memories).
pub const MAX_INSTANCE_BYTES: usize = 4 << 20;

/// Bytes of a pooled memory wiped by `memset` rather than handed back to the kernel when a run ends.
const KEEP_RESIDENT_BYTES: usize = 256 << 10;

/// A module compiled and linked against the WASI host functions, ready to instantiate many times.
pub struct CompiledModule {
    pre: InstancePre<ChunkState>,
    pooled: bool,
    /// The size its memory starts at: a run whose limit is smaller ends before any is allocated.
    initial_memory_bytes: u64,
}

impl CompiledModule {
    fn new(pre: InstancePre<ChunkState>, pooled: bool) -> CompiledModule {
        // Programs have one memory (imported memories and multi-memory are refused at upload).
        let initial_memory_bytes = pre
            .module()
            .exports()
            .filter_map(|export| export.ty().memory().map(|memory| memory.minimum().saturating_mul(memory.page_size())))
            .max()
            .unwrap_or(0);
        CompiledModule { pre, pooled, initial_memory_bytes }
    }

    /// Whether its runs take slots of the pooling allocator (false: on-demand allocation).
    pub fn pooled(&self) -> bool {
        self.pooled
    }
}

/// The state of one run, owned by its wasmtime `Store`.
struct ChunkState {
    wasi: WasiCtx,
    memory: Option<Memory>,
    limiter: MemoryLimiter,
    /// Set when a WASI call ended the program (`proc_exit`, `proc_raise`).
    stop: Option<HostStop>,
}

/// Refuses memory growth beyond the job's limit and remembers that it did.
struct MemoryLimiter {
    max_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a program growing one past a million entries is runaway.
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The error a host function returns to unwind the guest after `proc_exit`; the reason is in `stop`.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("the program stopped itself")
    }
}

impl std::error::Error for Stopped {}

/// How one run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub output: Output,
    pub elapsed: Duration,
    /// Work units used, from the instrumented module (0 for a module that is not instrumented).
    pub work_units: u64,
}

/// The wasmtime engines (pooled and on-demand), their WASI linkers and the epoch ticker, shared by all
/// slots of a worker.
pub struct Runtime {
    /// None if the pool's address space could not be reserved (see [`Runtime::new`]).
    pooled: Option<Linker<ChunkState>>,
    on_demand: Linker<ChunkState>,
    ticking: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    /// A runtime for at most `concurrent_runs` runs at a time (a worker's slots): the pool has that many
    /// instance slots, each reserving its memory's address space (4 GiB and a guard, not committed). Where
    /// that cannot be reserved (a `ulimit -v`, a small address space), every module runs on demand, as
    /// the log says.
    pub fn new(concurrent_runs: u32) -> Result<Runtime, RuntimeError> {
        let setup = |error: wasmtime::Error| RuntimeError::Setup(format!("{error:#}"));
        let slots = concurrent_runs.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .total_component_instances(0)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_core_instance_size(MAX_INSTANCE_BYTES)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
        let mut config = Config::new();
        config.epoch_interruption(true);
        let on_demand = Engine::new(&config).map_err(setup)?;
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let pooled = match Engine::new(&config) {
            Ok(engine) => Some(engine),
            Err(error) => {
                tracing::warn!(
                    slots,
                    error = %format!("{error:#}"),
                    "could not reserve the address space of an instance pool (4 GiB per slot); every program \
                     runs with on-demand allocation, a little slower to start"
                );
                None
            }
        };
        let ticking = Arc::new(AtomicBool::new(true));
        let engines: Vec<Engine> = pooled.iter().chain([&on_demand]).cloned().collect();
        let ticker_running = ticking.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while ticker_running.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|error| RuntimeError::Setup(error.to_string()))?;
        let pooled = pooled.as_ref().map(wasi_linker).transpose()?;
        Ok(Runtime { pooled, on_demand: wasi_linker(&on_demand)?, ticking })
    }

    /// Compiles and links a module: for the pool if it fits there, on demand otherwise (compiling it a
    /// second time: wasmtime checks the fit after compiling). This is the expensive step; keep the result.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, RuntimeError> {
        if let Some(pooled) = &self.pooled {
            match self.compile_for(pooled, bytes) {
                Ok(pre) => return Ok(CompiledModule::new(pre, true)),
                Err(error) => {
                    tracing::debug!(reason = %error, "the module does not fit the pool; it runs on demand");
                }
            }
        }
        self.compile_for(&self.on_demand, bytes).map(|pre| CompiledModule::new(pre, false))
    }

    fn compile_for(&self, linker: &Linker<ChunkState>, bytes: &[u8]) -> Result<InstancePre<ChunkState>, RuntimeError> {
        let compile = |error: wasmtime::Error| RuntimeError::Compile(format!("{error:#}"));
        let module = Module::new(linker.engine(), bytes).map_err(compile)?;
        linker.instantiate_pre(&module).map_err(compile)
    }

    /// Runs one replica to its end (its input files move into the run). Never panics on anything the
    /// program or the assignment does: every failure becomes a status.
    pub fn run(&self, module: &CompiledModule, assignment: Assignment) -> RunOutcome {
        let started = Instant::now();
        let time_limit_ms = assignment.limits.time_limit_ms;
        let Prepared { wasi, work_limit, memory_limit_pages, memory_bytes } = match prepare(assignment) {
            Ok(prepared) => prepared,
            Err(status) => {
                return RunOutcome { status, output: Output::default(), elapsed: started.elapsed(), work_units: 0 };
            }
        };
        if module.initial_memory_bytes > memory_bytes {
            // Refused before anything is allocated, as the limiter would refuse it at instantiation (a
            // pool slot maps its initial memory before asking the limiter).
            let status = ending_status(&Ending {
                stop: None,
                flags: 0,
                timed_out: false,
                memory_refused: true,
                trap: None,
                message: String::new(),
            });
            return RunOutcome { status, output: output(wasi.finish()), elapsed: started.elapsed(), work_units: 0 };
        }
        let max_bytes = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
        let state = ChunkState { wasi, memory: None, limiter: MemoryLimiter { max_bytes, denied: false }, stop: None };
        let mut store = Store::new(module.pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        let ticks = time_limit_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let mut instance = None;
        let outcome = module.pre.instantiate(&mut store).and_then(|running| {
            instance = Some(running);
            store.data_mut().memory = running.get_memory(&mut store, "memory");
            set_global(&running, &mut store, WORK_LIMIT, Val::I64(work_limit))?;
            set_global(&running, &mut store, MEMORY_LIMIT_PAGES, Val::I32(memory_limit_pages))?;
            let start = running.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        let elapsed = started.elapsed();
        let (work_units, flags) = match instance {
            Some(instance) => (
                get_global(&instance, &mut store, WORK_UNITS).and_then(|value| value.i64()).unwrap_or(0) as u64,
                get_global(&instance, &mut store, FLAGS).and_then(|value| value.i32()).unwrap_or(0),
            ),
            None => (0, 0),
        };
        let state = store.into_data();
        let status = match outcome {
            Ok(()) => RunStatus::Exited { code: 0 },
            Err(error) => classify(&error, state.stop.as_ref(), state.limiter.denied, flags),
        };
        RunOutcome { status, output: output(state.wasi.finish()), elapsed, work_units }
    }
}

/// Sets an instrumentation global if the module has it (modules that were not instrumented run unmetered).
fn set_global(instance: &Instance, store: &mut Store<ChunkState>, name: &str, value: Val) -> wasmtime::Result<()> {
    match instance.get_global(&mut *store, name) {
        Some(global) => global.set(store, value),
        None => Ok(()),
    }
}

fn get_global(instance: &Instance, store: &mut Store<ChunkState>, name: &str) -> Option<Val> {
    instance.get_global(&mut *store, name).map(|global| global.get(store))
}

/// How a run that returned an error ended.
fn classify(error: &wasmtime::Error, stop: Option<&HostStop>, memory_denied: bool, flags: i32) -> RunStatus {
    let trap = error.downcast_ref::<Trap>().copied();
    let kind = trap.map(|trap| match trap {
        Trap::UnreachableCodeReached => TrapKind::Unreachable,
        Trap::MemoryOutOfBounds => TrapKind::MemoryOutOfBounds,
        Trap::TableOutOfBounds => TrapKind::TableOutOfBounds,
        Trap::IndirectCallToNull | Trap::BadSignature => TrapKind::BadIndirectCall,
        Trap::IntegerOverflow | Trap::BadConversionToInteger => TrapKind::IntegerOverflow,
        Trap::IntegerDivisionByZero => TrapKind::IntegerDivisionByZero,
        Trap::StackOverflow => TrapKind::StackOverflow,
        _ => TrapKind::Other,
    });
    ending_status(&Ending {
        stop,
        flags,
        timed_out: trap == Some(Trap::Interrupt),
        memory_refused: memory_denied,
        trap: kind,
        message: format!("{error:#}"),
    })
}

/// Defines every WASI preview 1 function as a host function that forwards to `WasiCtx::call`.
fn wasi_linker(engine: &Engine) -> Result<Linker<ChunkState>, RuntimeError> {
    let mut linker = Linker::<ChunkState>::new(engine);
    let wasm_type = |value: &ValType| match value {
        ValType::I32 => wasmtime::ValType::I32,
        ValType::I64 => wasmtime::ValType::I64,
    };
    for (index, function) in FUNCTIONS.iter().enumerate() {
        let ty = FuncType::new(engine, function.params.iter().map(wasm_type), function.results.iter().map(wasm_type));
        linker
            .func_new(MODULE_NAME, function.name, ty, move |mut caller, params, results| {
                let mut raw = [0u64; 16];
                for (slot, param) in raw.iter_mut().zip(params) {
                    *slot = match param {
                        Val::I32(value) => u64::from(*value as u32),
                        Val::I64(value) => *value as u64,
                        // The signature only has i32 and i64 parameters.
                        _ => 0,
                    };
                }
                let Some(memory) = caller.data().memory else {
                    // Only possible if a start function calls WASI before `_start`; there is no memory
                    // to give it, so end the run.
                    return Err(wasmtime::Error::msg("WASI was called before the program's memory was ready"));
                };
                let (data, state) = memory.data_and_store_mut(&mut caller);
                match state.wasi.call(data, index, &raw[..params.len()]) {
                    Ok(errno) => {
                        if let Some(result) = results.first_mut() {
                            *result = Val::I32(errno);
                        }
                        Ok(())
                    }
                    Err(stop) => {
                        state.stop = Some(stop);
                        Err(wasmtime::Error::new(Stopped))
                    }
                }
            })
            .map_err(|error| RuntimeError::Setup(error.to_string()))?;
    }
    Ok(linker)
}
