//! The executor Web Worker: fetches modules by hash (cached across reloads with the Cache API), compiles
//! each once, and runs replicas with the browser's WebAssembly engine, every WASI import forwarding to the
//! shared WASI implementation.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};

use std::rc::Rc;

use distributivecom_protocol::metering::{FLAGS, MEMORY_LIMIT_PAGES, WORK_LIMIT, WORK_UNITS};
use distributivecom_protocol::worker::{Assignment, BlobRef, ModuleRef, Output, ReplicaReport, RunStatus};
use distributivecom_protocol::{decode, encode};
use distributivecom_wasi::assignment::{Ending, Prepared, ending_status, output, prepare};
use distributivecom_wasi::{FUNCTIONS, HostStop, MODULE_NAME, ValType, WasiCtx};
use js_sys::{Array, BigInt, Function, Object, Reflect, Uint8Array, WebAssembly};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, DedicatedWorkerGlobalScope, MessageEvent, Request, Response};

use crate::js_memory::JsMemory;
use crate::messages::{ExecutorCommand, ExecutorEvent};
use crate::traps::trap_kind;

/// The Cache API cache that keeps modules across reloads. Modules are immutable, so it never expires.
const MODULE_CACHE: &str = "distributivecom-modules-v1";
/// The Cache API cache that keeps blobs across reloads, and the most it holds.
const BLOB_CACHE: &str = "distributivecom-blobs-v1";
const BLOB_CACHE_BYTES: u64 = 512 * 1024 * 1024;
/// Blobs an executor keeps in memory too, so that a session's shards are not read back from the Cache
/// API for every round.
const RECENT_BLOB_BYTES: usize = 32 * 1024 * 1024;
/// What a WASI import throws to unwind the program after `proc_exit`.
const STOP: &str = "distributivecom: the program stopped itself";

#[wasm_bindgen(
    inline_js = "export function make_import(index, dispatch) { return (...args) => dispatch(index, args); }"
)]
extern "C" {
    /// A JS function with the import's arity that forwards its arguments to `dispatch(index, args)`.
    fn make_import(index: u32, dispatch: &Function) -> Function;
}

/// The state of the run in progress, shared with the WASI imports.
struct RunState {
    wasi: WasiCtx,
    memory: Option<WebAssembly::Memory>,
    stop: Option<HostStop>,
}

type Dispatch = Closure<dyn FnMut(u32, Array) -> Result<JsValue, JsValue>>;

/// Runs replicas of compiled modules: the WASI imports and the state they share with a run.
pub struct Runner {
    run: Rc<RefCell<Option<RunState>>>,
    imports: Object,
    _dispatch: Dispatch,
}

struct Executor {
    scope: DedicatedWorkerGlobalScope,
    modules: RefCell<HashMap<String, WebAssembly::Module>>,
    /// Blobs this executor has used since it started (each is moved to the young end of the cache once).
    touched_blobs: RefCell<HashSet<String>>,
    /// The blobs it used last, verified, in memory.
    recent_blobs: RefCell<crate::recent::RecentBlobs>,
    runner: Runner,
    /// Replicas received and not yet run, in order (the courier sends the next one ahead).
    pending: RefCell<VecDeque<(String, Assignment)>>,
    /// Whether the loop that runs `pending` is active.
    draining: Cell<bool>,
}

/// Starts the executor: handles `early` messages (queued by `volunteer-worker.js` while the wasm loaded),
/// then every message that follows, and tells the courier it is ready.
#[wasm_bindgen]
pub fn start_executor(early: Array) -> Result<(), JsValue> {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let executor = Rc::new(Executor {
        scope: scope.clone(),
        modules: RefCell::new(HashMap::new()),
        touched_blobs: RefCell::new(HashSet::new()),
        recent_blobs: RefCell::new(crate::recent::RecentBlobs::new(RECENT_BLOB_BYTES)),
        runner: Runner::new()?,
        pending: RefCell::new(VecDeque::new()),
        draining: Cell::new(false),
    });

    let handler = {
        let executor = executor.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| executor.clone().receive(event))
    };
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    handler.forget();
    for event in early.iter() {
        executor.clone().receive(event.unchecked_into());
    }
    executor.post(&ExecutorEvent::Ready);
    wasm_bindgen_futures::spawn_local(async move { executor.announce_cached_blobs().await });
    Ok(())
}

/// The function every WASI import calls: converts the arguments and runs the shared implementation.
fn wasi_dispatch(run: Rc<RefCell<Option<RunState>>>) -> Dispatch {
    Closure::new(move |index: u32, args: Array| -> Result<JsValue, JsValue> {
        let mut slot = run.borrow_mut();
        let state = slot.as_mut().ok_or_else(|| JsValue::from_str("WASI was called outside a run"))?;
        let memory = state.memory.clone().ok_or_else(|| JsValue::from_str("WASI was called before _start"))?;
        let signature = FUNCTIONS.get(index as usize).ok_or_else(|| JsValue::from_str("unknown WASI function"))?;
        let mut raw = [0u64; 16];
        for ((slot, value), kind) in raw.iter_mut().zip(args.iter()).zip(signature.params) {
            *slot = match kind {
                // i32 arguments arrive as numbers in the signed range.
                ValType::I32 => u64::from(value.as_f64().unwrap_or(0.0) as i64 as u32),
                // i64 arguments arrive as BigInts.
                ValType::I64 => i64::try_from(value).unwrap_or(0) as u64,
            };
        }
        let count = (args.length() as usize).min(raw.len());
        match state.wasi.call(&mut JsMemory::new(&memory), index as usize, &raw[..count]) {
            Ok(errno) => Ok(JsValue::from(errno)),
            Err(stop) => {
                state.stop = Some(stop);
                Err(JsValue::from_str(STOP))
            }
        }
    })
}

impl Executor {
    fn post(&self, event: &ExecutorEvent) {
        let bytes = Uint8Array::from(&encode(event)[..]);
        if let Err(error) = self.scope.post_message(&bytes) {
            web_sys::console::error_2(&"executor: could not post a message".into(), &error);
        }
    }

    fn receive(self: Rc<Self>, event: MessageEvent) {
        let bytes = Uint8Array::new(&event.data()).to_vec();
        match decode::<ExecutorCommand>(&bytes) {
            Ok(ExecutorCommand::Run { server, assignment }) => {
                self.pending.borrow_mut().push_back((server, *assignment));
                // One loop runs the replicas strictly in order, even while a module is being fetched.
                if !self.draining.replace(true) {
                    wasm_bindgen_futures::spawn_local(async move {
                        loop {
                            let next = self.pending.borrow_mut().pop_front();
                            let Some((server, assignment)) = next else { break };
                            let report = self.run_replica(&server, assignment).await;
                            self.post(&ExecutorEvent::Finished(Box::new(report)));
                        }
                        self.draining.set(false);
                    });
                }
            }
            Err(error) => web_sys::console::error_1(&format!("executor: {error}").into()),
        }
    }

    fn now_ms(&self) -> f64 {
        self.scope.performance().map(|performance| performance.now()).unwrap_or(0.0)
    }

    async fn run_replica(&self, server: &str, mut assignment: Assignment) -> ReplicaReport {
        let cached = self.modules.borrow().contains_key(&assignment.module.sha256);
        let fetches_blobs = !assignment.blobs.is_empty();
        let mut ready = self.module(server, &assignment.module).await;
        for (path, blob) in std::mem::take(&mut assignment.blobs) {
            if ready.is_err() {
                break;
            }
            match self.blob_bytes(server, &blob).await {
                Ok(bytes) => drop(assignment.files.insert(path, bytes.into())),
                Err(message) => ready = Err(message),
            }
        }
        let module = match ready {
            Ok(module) => module,
            Err(message) => {
                return ReplicaReport {
                    replica: assignment.replica,
                    status: RunStatus::Failed { message },
                    output: Output::default(),
                    compute_us: 0,
                    work_units: 0,
                };
            }
        };
        // The courier counts the time limit from when a replica reaches the front of this executor's
        // queue; loading a module or blobs delays the start, so say when the run really begins.
        if !cached || fetches_blobs {
            self.post(&ExecutorEvent::Started { replica: assignment.replica });
        }
        let started = self.now_ms();
        let replica = assignment.replica;
        let (status, output, work_units) = self.runner.execute(&module, assignment);
        let compute_us = ((self.now_ms() - started) * 1000.0).max(0.0) as u64;
        ReplicaReport { replica, status, output, compute_us, work_units }
    }

    /// The compiled module: from this worker's memory, else from the Cache API, else from the server.
    async fn module(&self, server: &str, module: &ModuleRef) -> Result<WebAssembly::Module, String> {
        if let Some(compiled) = self.modules.borrow().get(&module.sha256) {
            return Ok(compiled.clone());
        }
        let bytes = self.module_bytes(server, module).await?;
        let compiled = JsFuture::from(WebAssembly::compile(&Uint8Array::from(&bytes[..])))
            .await
            .map_err(|error| format!("could not compile the module: {}", describe(&error)))?;
        let compiled: WebAssembly::Module = compiled.unchecked_into();
        self.modules.borrow_mut().insert(module.sha256.clone(), compiled.clone());
        Ok(compiled)
    }

    async fn module_bytes(&self, server: &str, module: &ModuleRef) -> Result<Vec<u8>, String> {
        let url = format!("{server}/modules/{}", module.sha256);
        let cache = Kept { cache: MODULE_CACHE, key: &url, max_bytes: None };
        let (bytes, _) = fetch_verified(&self.scope, &cache, &url, &module.sha256, module.size).await?;
        Ok(bytes)
    }

    /// A blob's bytes: from the Cache API (kept across reloads, least recently used out first), else
    /// fetched with the replica's capability; verified by hash either way. What the cache gains and loses
    /// goes to the courier, which tells the server.
    async fn blob_bytes(&self, server: &str, blob: &BlobRef) -> Result<Vec<u8>, String> {
        if let Some(bytes) = self.recent_blobs.borrow_mut().get(&blob.sha256) {
            return Ok(bytes);
        }
        let key = format!("{server}/blobs/{}", blob.sha256);
        let url = format!("{key}?capability={}", blob.capability);
        let cache = Kept { cache: BLOB_CACHE, key: &key, max_bytes: Some(BLOB_CACHE_BYTES) };
        let touched = self.touched_blobs.borrow().contains(&blob.sha256);
        let (bytes, source) = fetch_verified(&self.scope, &cache, &url, &blob.sha256, blob.size)
            .await
            .map_err(|message| format!("blob {}: {message}", blob.sha256))?;
        match source {
            Source::Fetched { evicted } => {
                let evicted = evicted.iter().filter_map(|key| key.rsplit('/').next().map(str::to_owned)).collect();
                self.post(&ExecutorEvent::Cached { added: vec![(blob.sha256.clone(), blob.size)], evicted });
            }
            // The Cache API lists entries in the order they were put: putting a blob again the first
            // time this executor uses it keeps the order close to least recently used.
            Source::Cache(copy) if !touched => {
                if let Some(cache) = open_cache(&self.scope, BLOB_CACHE).await {
                    let _ = JsFuture::from(cache.put_with_str(&key, &copy)).await;
                }
            }
            Source::Cache(_) => {}
        }
        self.touched_blobs.borrow_mut().insert(blob.sha256.clone());
        self.recent_blobs.borrow_mut().keep(&blob.sha256, &bytes);
        Ok(bytes)
    }

    /// Tells the courier which blobs the cache holds, as this executor finds it on start.
    async fn announce_cached_blobs(&self) {
        let Some(cache) = open_cache(&self.scope, BLOB_CACHE).await else { return };
        let added: Vec<(String, u64)> = cache_entries(&cache)
            .await
            .into_iter()
            .filter_map(|(key, size)| Some((key.url().rsplit('/').next()?.to_owned(), size)))
            .collect();
        if !added.is_empty() {
            self.post(&ExecutorEvent::Cached { added, evicted: Vec::new() });
        }
    }
}

/// Where fetched bytes came from: the cache (with a copy of the cached response, unread), or the
/// server (with the keys the cache evicted to make room).
enum Source {
    Cache(Response),
    Fetched { evicted: Vec<String> },
}

/// A Cache API cache, if this context has the Cache API.
async fn open_cache(scope: &DedicatedWorkerGlobalScope, name: &str) -> Option<Cache> {
    // The Cache API exists only in secure contexts (https or localhost); elsewhere the HTTP cache still
    // avoids most downloads of immutable modules.
    let caches = scope.caches().ok()?;
    JsFuture::from(caches.open(name)).await.ok().map(JsCast::unchecked_into)
}

/// Where fetched bytes are kept: a Cache API cache, under a key, within a size (the oldest entries
/// leave first), or unbounded (modules).
struct Kept<'a> {
    cache: &'a str,
    key: &'a str,
    max_bytes: Option<u64>,
}

/// Bytes named by their SHA-256: from the cache if they are there and whole, else fetched from `url`
/// (no more than `size` bytes), checked against the hash, and kept. Bytes with another hash are
/// discarded and the fetch fails.
async fn fetch_verified(
    scope: &DedicatedWorkerGlobalScope,
    kept: &Kept<'_>,
    url: &str,
    sha256: &str,
    size: u64,
) -> Result<(Vec<u8>, Source), String> {
    let cache = open_cache(scope, kept.cache).await;
    if let Some(cache) = &cache
        && let Ok(hit) = JsFuture::from(cache.match_with_str(kept.key)).await
        && let Ok(response) = hit.dyn_into::<Response>()
        && let Ok(copy) = response.clone()
        && let Ok(bytes) = response_bytes(&response).await
        && hex::encode(Sha256::digest(&bytes)) == sha256
    {
        return Ok((bytes, Source::Cache(copy)));
    }
    let response: Response = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|error| format!("could not fetch it: {}", describe(&error)))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("could not fetch it: HTTP {}", response.status()));
    }
    let announced = response.headers().get("content-length").ok().flatten().and_then(|text| text.parse::<u64>().ok());
    if announced.is_some_and(|announced| announced > size) {
        return Err(format!("the server announced {} bytes, more than the {size} expected", announced.unwrap_or(0)));
    }
    let for_cache = response.clone().ok();
    let bytes = response_bytes(&response).await?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(format!("the bytes fetched hash to {actual}, not {sha256}; they were discarded"));
    }
    let mut evicted = Vec::new();
    if let (Some(cache), Some(copy)) = (cache, for_cache) {
        // Caching is an optimisation: a full disk or a private window must not fail the replica.
        if JsFuture::from(cache.put_with_str(kept.key, &copy)).await.is_ok()
            && let Some(max_bytes) = kept.max_bytes
        {
            evicted = trim(&cache, max_bytes, kept.key).await;
        }
    }
    Ok((bytes, Source::Fetched { evicted }))
}

/// Every entry of `cache`, oldest first (the Cache API lists keys in the order they were put), with the
/// size its response declares.
async fn cache_entries(cache: &Cache) -> Vec<(Request, u64)> {
    let Ok(keys) = JsFuture::from(cache.keys()).await else { return Vec::new() };
    let keys: Array = keys.unchecked_into();
    let mut entries = Vec::new();
    for key in keys.iter() {
        let key: Request = key.unchecked_into();
        let size = match JsFuture::from(cache.match_with_request(&key)).await {
            Ok(hit) => hit
                .dyn_into::<Response>()
                .ok()
                .and_then(|response| response.headers().get("content-length").ok().flatten())
                .and_then(|text| text.parse::<u64>().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        entries.push((key, size));
    }
    entries
}

/// Deletes the oldest entries of `cache` but `keep` until their sizes add up to at most `max_bytes`;
/// returns the URLs deleted.
async fn trim(cache: &Cache, max_bytes: u64, keep: &str) -> Vec<String> {
    let entries = cache_entries(cache).await;
    let mut total: u64 = entries.iter().map(|(_, size)| size).sum();
    let mut deleted = Vec::new();
    for (key, size) in entries {
        if total <= max_bytes {
            break;
        }
        if key.url() == keep {
            continue;
        }
        let _ = JsFuture::from(cache.delete_with_request(&key)).await;
        total = total.saturating_sub(size);
        deleted.push(key.url());
    }
    deleted
}

impl Runner {
    /// Builds the WASI imports once; every run reuses them.
    pub fn new() -> Result<Runner, JsValue> {
        let run = Rc::new(RefCell::new(None::<RunState>));
        let dispatch = wasi_dispatch(run.clone());
        let wasi = Object::new();
        for (index, function) in FUNCTIONS.iter().enumerate() {
            Reflect::set(&wasi, &function.name.into(), &make_import(index as u32, dispatch.as_ref().unchecked_ref()))?;
        }
        let imports = Object::new();
        Reflect::set(&imports, &MODULE_NAME.into(), &wasi)?;
        Ok(Runner { run, imports, _dispatch: dispatch })
    }

    /// Instantiates and runs the program (its input files move into the run). Returns its status, outputs
    /// and work units.
    pub fn execute(&self, module: &WebAssembly::Module, assignment: Assignment) -> (RunStatus, Output, u64) {
        let failed = |message: String| (RunStatus::Failed { message }, Output::default(), 0);
        let Prepared { wasi, work_limit, memory_limit_pages, memory_bytes: memory_limit } = match prepare(assignment) {
            Ok(prepared) => prepared,
            Err(status) => return (status, Output::default(), 0),
        };
        *self.run.borrow_mut() = Some(RunState { wasi, memory: None, stop: None });

        let instance = match WebAssembly::Instance::new(module, &self.imports) {
            Ok(instance) => instance,
            Err(error) => {
                let state = self.run.borrow_mut().take();
                let output = state.map(|state| output(state.wasi.finish())).unwrap_or_default();
                return (
                    RunStatus::Failed { message: format!("could not instantiate: {}", describe(&error)) },
                    output,
                    0,
                );
            }
        };
        let exports = instance.exports();
        let export = |name: &str| Reflect::get(&exports, &name.into()).ok().filter(|value| !value.is_undefined());
        let memory: Option<WebAssembly::Memory> = export("memory").and_then(|value| value.dyn_into().ok());
        let outcome = match &memory {
            None => Err(JsValue::from_str("the module exports no memory")),
            // The memory the module starts with must already fit the limit (as wasmtime refuses it natively).
            Some(memory) if memory_bytes(memory) > memory_limit => Err(JsValue::NULL),
            Some(memory) => {
                if let Some(state) = self.run.borrow_mut().as_mut() {
                    state.memory = Some(memory.clone());
                }
                set_global(export(WORK_LIMIT), BigInt::from(work_limit).into());
                set_global(export(MEMORY_LIMIT_PAGES), JsValue::from(memory_limit_pages));
                match export("_start").and_then(|value| value.dyn_into::<Function>().ok()) {
                    Some(start) => start.call0(&JsValue::UNDEFINED).map(drop),
                    None => Err(JsValue::from_str("the module exports no _start function")),
                }
            }
        };
        let work_units =
            global_value(export(WORK_UNITS)).and_then(|value| i64::try_from(value).ok()).unwrap_or(0) as u64;
        let flags = global_value(export(FLAGS)).and_then(|value| value.as_f64()).unwrap_or(0.0) as i32;
        let memory_too_big = memory.as_ref().is_some_and(|memory| memory_bytes(memory) > memory_limit);
        let Some(state) = self.run.borrow_mut().take() else {
            return failed("the run's state vanished".to_owned());
        };
        let status = match outcome {
            Ok(()) => RunStatus::Exited { code: 0 },
            Err(error) => classify(&error, state.stop.as_ref(), flags, memory_too_big),
        };
        (status, output(state.wasi.finish()), work_units)
    }
}

fn memory_bytes(memory: &WebAssembly::Memory) -> u64 {
    memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as u64
}

fn set_global(global: Option<JsValue>, value: JsValue) {
    if let Some(global) = global.and_then(|value| value.dyn_into::<WebAssembly::Global>().ok()) {
        global.set_value(&value);
    }
}

fn global_value(global: Option<JsValue>) -> Option<JsValue> {
    global.and_then(|value| value.dyn_into::<WebAssembly::Global>().ok()).map(|global| global.value())
}

/// How a run that threw ended; the shared rules decide, from what the browser tells.
fn classify(error: &JsValue, stop: Option<&HostStop>, flags: i32, memory_too_big: bool) -> RunStatus {
    let name = Reflect::get(error, &"name".into()).ok().and_then(|name| name.as_string()).unwrap_or_default();
    let message = Reflect::get(error, &"message".into()).ok().and_then(|message| message.as_string());
    let message = message.or_else(|| error.as_string()).unwrap_or_default();
    ending_status(&Ending {
        stop,
        flags,
        // Overrunning executors are terminated by the courier, which reports the timeout itself.
        timed_out: false,
        memory_refused: memory_too_big,
        trap: trap_kind(&name, &message),
        message: format!("{name}: {message}"),
    })
}

async fn response_bytes(response: &Response) -> Result<Vec<u8>, String> {
    let buffer = response.array_buffer().map_err(|error| describe(&error))?;
    let buffer = JsFuture::from(buffer).await.map_err(|error| describe(&error))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A JavaScript error as text.
pub fn describe(error: &JsValue) -> String {
    Reflect::get(error, &"message".into())
        .ok()
        .and_then(|message| message.as_string())
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}
