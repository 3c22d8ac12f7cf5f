//! The slots: one OS thread per slot, taking replicas from a shared queue and running them.
//!
//! Each queued replica carries the generation of the connection that received it. When a connection ends,
//! the generation moves on and everything it queued is dropped unrun: the server has requeued it already.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::{Assignment, Output, ReplicaReport, RunStatus};
use tokio::sync::mpsc;

use crate::runtime::{CompiledModule, Runtime};

/// One replica waiting for a slot.
pub struct Task {
    pub assignment: Assignment,
    pub module: Arc<CompiledModule>,
    /// Input files that are blobs, as open files of the blob cache: read into the assignment's files
    /// only when the replica runs.
    pub blobs: Vec<(String, std::fs::File)>,
    pub generation: u64,
    pub reports: mpsc::UnboundedSender<ReplicaReport>,
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<Task>,
    revoked: HashSet<u64>,
}

/// The worker's slots.
pub struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    generation: AtomicU64,
    slots: u32,
    /// A wait before each replica (for tests that need a slow worker).
    delay: std::time::Duration,
}

impl Pool {
    /// Starts `slots` threads running replicas with `runtime`.
    pub fn start(runtime: Arc<Runtime>, slots: u32, delay: std::time::Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            generation: AtomicU64::new(0),
            slots,
            delay,
        });
        for slot in 0..slots {
            let pool = pool.clone();
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn(move || pool.serve(&runtime))
                .expect("the operating system can start a slot thread");
        }
        pool
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Starts a new connection's generation and drops everything queued by earlier ones.
    pub fn new_generation(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut queue = self.lock();
        queue.tasks.clear();
        queue.revoked.clear();
        generation
    }

    pub fn submit(&self, task: Task) {
        self.lock().tasks.push_back(task);
        self.ready.notify_one();
    }

    /// Drops queued replicas the server took back. One that is already running finishes, and the server
    /// ignores its report.
    pub fn revoke(&self, replicas: &[u64]) {
        let mut queue = self.lock();
        queue.tasks.retain(|task| !replicas.contains(&task.assignment.replica));
        // A revoke can overtake an assignment still waiting for its module: remember it.
        queue.revoked.extend(replicas);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next(&self) -> Task {
        let mut queue = self.lock();
        loop {
            while let Some(task) = queue.tasks.pop_front() {
                let current = self.generation.load(Ordering::SeqCst);
                if task.generation == current && !queue.revoked.remove(&task.assignment.replica) {
                    return task;
                }
            }
            queue = self.ready.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn serve(&self, runtime: &Runtime) {
        loop {
            let mut task = self.next();
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            let replica = task.assignment.replica;
            let report = match read_blobs(&mut task) {
                Ok(()) => {
                    let outcome = runtime.run(&task.module, task.assignment);
                    ReplicaReport {
                        replica,
                        status: outcome.status,
                        output: outcome.output,
                        compute_us: outcome.elapsed.as_micros() as u64,
                        work_units: outcome.work_units,
                    }
                }
                Err(message) => ReplicaReport {
                    replica,
                    status: RunStatus::Failed { message },
                    output: Output::default(),
                    compute_us: 0,
                    work_units: 0,
                },
            };
            // The connection may have ended meanwhile; then the report is simply dropped.
            let _ = task.reports.send(report);
        }
    }
}

/// Reads a replica's blob files into its input files, just before it runs.
fn read_blobs(task: &mut Task) -> Result<(), String> {
    for (path, mut file) in std::mem::take(&mut task.blobs) {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|error| format!("could not read the cached blob for {path}: {error}"))?;
        task.assignment.files.insert(path, Bytes(bytes));
    }
    Ok(())
}
