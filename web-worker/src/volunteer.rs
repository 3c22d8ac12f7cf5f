//! The browser volunteer's courier as an IO-free state machine: fed [`Input`]s (page commands, socket
//! events, executor events, timers) with the current time, it returns [`Output`]s (socket messages,
//! executor commands, timers, statistics). `courier.rs` performs the outputs with `web-sys`; tests
//! drive this directly on the host.
//!
//! One courier per tab holds the tab's only WebSocket and supervises one executor Web Worker per
//! thread. It keeps each executor supplied (at full throttle an executor holds the next replica while the
//! current one runs, so it never waits for a round trip through the courier), terminates and
//! replaces an executor whose replica overran its time limit (reporting the replica as timed out and
//! handing the ones queued behind it back to the server), and throttles by letting an executor rest after
//! each chunk in proportion to the time the chunk took.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use distributivecom_protocol::PROTOCOL_VERSION;
use distributivecom_protocol::backoff::Backoff;
use distributivecom_protocol::worker::{
    Assignment, Credential, Hello, MAX_ANNOUNCED_BLOBS, Output as RunOutput, ReplicaReport, RunStatus, ServerMessage,
    WorkerKind, WorkerMessage,
};

use crate::messages::{ConnectionState, ExecutorCommand, ExecutorEvent, PageCommand, Settings, Stats};

pub type ExecutorId = u64;

/// How long past its time limit a replica may run before its executor is terminated: covers the
/// instantiation and the messages around the run.
pub const DEADLINE_GRACE_MS: u64 = 1_000;
/// The most memory a browser executor offers to one replica.
pub const BROWSER_MAX_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
/// Replicas per thread the tab asks the server to queue: a browser's round trip to the server passes
/// through several processes and threads, so it needs a deeper queue than a native worker to stay busy
/// with short chunks. (The server queues less of jobs with long chunks.)
pub const BROWSER_PREFETCH_PER_SLOT: u32 = 8;
/// Replicas an executor holds at most at full throttle: one running and a few waiting, so that it goes
/// from one short chunk to the next without waiting for the courier.
pub const EXECUTOR_QUEUE: usize = 4;
/// How often running replicas are checked against their deadlines.
pub const SUPERVISE_INTERVAL_MS: u64 = 250;
/// Statistics reach the page at most this often, unless the connection's state changes.
pub const STATS_INTERVAL_MS: u64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    Heartbeat {
        connection: u64,
    },
    Reconnect,
    /// Check running replicas against their deadlines (every [`SUPERVISE_INTERVAL_MS`] while any runs).
    Supervise,
    Rest {
        executor: ExecutorId,
    },
    /// Send the statistics that changed since the last message to the page.
    Stats,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Command(PageCommand),
    SocketOpened,
    SocketMessage(ServerMessage),
    SocketClosed,
    Executor(ExecutorId, ExecutorEvent),
    TimerFired(Timer),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Open a WebSocket to this URL; report `SocketOpened`, `SocketMessage`s and `SocketClosed`.
    Connect {
        url: String,
    },
    Send(WorkerMessage),
    CloseSocket,
    SpawnExecutor(ExecutorId),
    TerminateExecutor(ExecutorId),
    Run {
        executor: ExecutorId,
        command: ExecutorCommand,
    },
    SetTimer {
        timer: Timer,
        after_ms: u64,
    },
    Stats(Stats),
    Notice(String),
}

/// A replica handed to an executor.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    replica: u64,
    /// The connection it came from: reports for an earlier connection are dropped.
    connection: u64,
    /// When it began running (it runs once it is first in its executor's queue); its deadline runs from
    /// there.
    started_at_ms: Option<u64>,
    time_limit_ms: u64,
}

/// One executor worker; it runs the replicas it holds in order.
#[derive(Clone, Debug, Default, PartialEq)]
struct Executor {
    /// Its wasm is loaded.
    ready: bool,
    /// Resting after a chunk (throttle).
    resting: bool,
    /// The replicas it holds, the running one first.
    held: VecDeque<Held>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Socket {
    Closed,
    Connecting,
    Open { welcomed: bool },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Volunteer {
    agent: String,
    credential: Option<Credential>,
    server: Option<String>,
    settings: Settings,
    started: bool,
    paused: bool,
    socket: Socket,
    /// Counts connections, so that late events of an earlier one are recognised.
    connection: u64,
    backoff: Backoff,
    heartbeat_ms: u64,
    executors: BTreeMap<ExecutorId, Executor>,
    /// Executors that stop once the replicas they hold are done (the thread count went down).
    retiring: HashSet<ExecutorId>,
    next_executor: ExecutorId,
    queue: VecDeque<Assignment>,
    revoked: HashSet<u64>,
    now_ms: u64,
    stats: Stats,
    last_stats: Option<Stats>,
    last_stats_ms: u64,
    stats_timer_pending: bool,
    supervising: bool,
    /// The blobs in this browser's cache, by hash, with their sizes: announced to the server for affinity.
    blobs: HashMap<String, u64>,
}

/// The most blobs the courier keeps track of.
const MAX_TRACKED_BLOBS: usize = 4096;

impl Volunteer {
    pub fn new(agent: String) -> Volunteer {
        Volunteer {
            agent,
            credential: None,
            server: None,
            settings: Settings::default_for(2),
            started: false,
            paused: false,
            socket: Socket::Closed,
            connection: 0,
            backoff: Backoff::new(),
            heartbeat_ms: 1_000,
            executors: BTreeMap::new(),
            retiring: HashSet::new(),
            next_executor: 1,
            queue: VecDeque::new(),
            revoked: HashSet::new(),
            now_ms: 0,
            stats: Stats::default(),
            last_stats: None,
            last_stats_ms: 0,
            stats_timer_pending: false,
            supervising: false,
            blobs: HashMap::new(),
        }
    }

    /// Feeds one input that happened at `now_ms` and returns what to do.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        match input {
            Input::Command(command) => self.command(command, &mut out),
            Input::SocketOpened => {
                if self.socket == Socket::Connecting {
                    self.socket = Socket::Open { welcomed: false };
                    out.push(Output::Send(WorkerMessage::Hello(Hello {
                        protocol_version: PROTOCOL_VERSION,
                        kind: WorkerKind::Browser,
                        slots: self.offered_slots(),
                        agent: self.agent.clone(),
                        max_memory_bytes: Some(BROWSER_MAX_MEMORY_BYTES),
                        prefetch_per_slot: Some(BROWSER_PREFETCH_PER_SLOT),
                        credential: self.credential.clone(),
                        blobs: self.blobs.keys().take(MAX_ANNOUNCED_BLOBS).cloned().collect(),
                    })));
                }
            }
            Input::SocketMessage(message) => self.server_message(message, &mut out),
            Input::SocketClosed => self.socket_closed(&mut out),
            Input::Executor(executor, event) => self.executor_event(executor, event, &mut out),
            Input::TimerFired(timer) => self.timer(timer, &mut out),
        }
        self.dispatch(&mut out);
        self.supervise(&mut out);
        self.emit_stats(&mut out);
        out
    }

    fn offered_slots(&self) -> u32 {
        if self.paused { 0 } else { self.settings.threads }
    }

    fn welcomed(&self) -> bool {
        self.socket == Socket::Open { welcomed: true }
    }

    /// How many replicas an executor may hold: throttled executors rest between chunks, so they only
    /// get the next one when they are ready for it.
    fn executor_capacity(&self) -> usize {
        if self.settings.throttle_percent >= 100 { EXECUTOR_QUEUE } else { 1 }
    }

    fn command(&mut self, command: PageCommand, out: &mut Vec<Output>) {
        match command {
            PageCommand::Start { server, settings, credential } => {
                if self.started {
                    return;
                }
                self.started = true;
                self.credential = Some(credential);
                self.paused = false;
                self.server = Some(server.trim_end_matches('/').to_owned());
                self.settings = settings.clamped();
                self.backoff.reset();
                self.adjust_executors(out);
                self.connect(out);
            }
            PageCommand::Settings(settings) => {
                let settings = settings.clamped();
                let threads_changed = settings.threads != self.settings.threads;
                self.settings = settings;
                if self.started {
                    self.adjust_executors(out);
                    if threads_changed && self.welcomed() && !self.paused {
                        out.push(Output::Send(WorkerMessage::Slots { slots: settings.threads }));
                    }
                }
            }
            PageCommand::Pause => {
                if !self.started || self.paused {
                    return;
                }
                self.paused = true;
                if self.welcomed() {
                    out.push(Output::Send(WorkerMessage::Slots { slots: 0 }));
                    let released: Vec<u64> = self.queue.drain(..).map(|assignment| assignment.replica).collect();
                    if !released.is_empty() {
                        out.push(Output::Send(WorkerMessage::Release(released)));
                    }
                }
            }
            PageCommand::Resume => {
                if !self.started || !self.paused {
                    return;
                }
                self.paused = false;
                if self.welcomed() {
                    out.push(Output::Send(WorkerMessage::Slots { slots: self.settings.threads }));
                }
            }
            PageCommand::Stop => {
                if !self.started {
                    return;
                }
                self.started = false;
                self.paused = false;
                if self.socket != Socket::Closed {
                    out.push(Output::CloseSocket);
                }
                self.socket = Socket::Closed;
                self.connection += 1;
                self.queue.clear();
                for executor in std::mem::take(&mut self.executors).into_keys() {
                    out.push(Output::TerminateExecutor(executor));
                }
                self.retiring.clear();
            }
        }
    }

    fn connect(&mut self, out: &mut Vec<Output>) {
        let Some(server) = &self.server else { return };
        let url = match server.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}/api/workers/ws"),
            Some((_, rest)) => format!("ws://{rest}/api/workers/ws"),
            None => format!("ws://{server}/api/workers/ws"),
        };
        self.socket = Socket::Connecting;
        self.connection += 1;
        out.push(Output::Connect { url });
    }

    /// Spawns or retires executors until there are as many as the settings ask for.
    fn adjust_executors(&mut self, out: &mut Vec<Output>) {
        let wanted = self.settings.threads as usize;
        let active = self.executors.len() - self.retiring.len();
        if active < wanted {
            // Bring back retiring executors first, then start new ones.
            let mut missing = wanted - active;
            let reprieved: Vec<ExecutorId> = self.retiring.iter().copied().take(missing).collect();
            for executor in reprieved {
                self.retiring.remove(&executor);
                missing -= 1;
            }
            for _ in 0..missing {
                let executor = self.next_executor;
                self.next_executor += 1;
                self.executors.insert(executor, Executor::default());
                out.push(Output::SpawnExecutor(executor));
            }
            return;
        }
        // Stop idle executors at once, busy ones when they are done.
        let mut surplus = active - wanted;
        let mut candidates: Vec<(ExecutorId, bool)> = self
            .executors
            .iter()
            .filter(|(id, _)| !self.retiring.contains(id))
            .map(|(id, state)| (*id, !state.held.is_empty()))
            .collect();
        candidates.sort_by_key(|(_, busy)| *busy);
        for (executor, busy) in candidates {
            if surplus == 0 {
                break;
            }
            surplus -= 1;
            if busy {
                self.retiring.insert(executor);
            } else {
                self.executors.remove(&executor);
                out.push(Output::TerminateExecutor(executor));
            }
        }
    }

    fn server_message(&mut self, message: ServerMessage, out: &mut Vec<Output>) {
        match message {
            ServerMessage::Welcome(welcome) => {
                if self.socket == (Socket::Open { welcomed: false }) {
                    self.socket = Socket::Open { welcomed: true };
                    self.backoff.reset();
                    self.heartbeat_ms = welcome.heartbeat_interval_ms.max(100);
                    out.push(Output::SetTimer {
                        timer: Timer::Heartbeat { connection: self.connection },
                        after_ms: self.heartbeat_ms,
                    });
                }
            }
            ServerMessage::Assign(assignments) => {
                if self.paused {
                    // Crossed in flight with our pause: hand them straight back.
                    out.push(Output::Send(WorkerMessage::Release(
                        assignments.iter().map(|assignment| assignment.replica).collect(),
                    )));
                } else {
                    self.queue.extend(assignments);
                }
            }
            ServerMessage::Revoke(replicas) => {
                self.queue.retain(|assignment| !replicas.contains(&assignment.replica));
                for replica in replicas {
                    if self.executors.values().any(|state| state.held.iter().any(|held| held.replica == replica)) {
                        self.revoked.insert(replica);
                    }
                }
            }
            ServerMessage::Error { message } => out.push(Output::Notice(format!("the server says: {message}"))),
        }
    }

    fn socket_closed(&mut self, out: &mut Vec<Output>) {
        if self.socket == Socket::Closed {
            return;
        }
        self.socket = Socket::Closed;
        // Everything of this connection is requeued by the server; reports for it would be ignored.
        self.connection += 1;
        self.queue.clear();
        self.revoked.clear();
        if self.started {
            // The clock's reading is jitter enough to spread the tabs of a restarted server.
            let after_ms = self.backoff.next_delay_ms(self.now_ms);
            out.push(Output::SetTimer { timer: Timer::Reconnect, after_ms });
            self.stats.connection = ConnectionState::Reconnecting { retry_in_ms: after_ms };
        }
    }

    fn executor_event(&mut self, executor: ExecutorId, event: ExecutorEvent, out: &mut Vec<Output>) {
        let Some(state) = self.executors.get_mut(&executor) else {
            return;
        };
        match event {
            ExecutorEvent::Ready => state.ready = true,
            ExecutorEvent::Started { replica } => {
                // The executor had to fetch or compile the module first: the run starts only now.
                if let Some(held) = state.held.front_mut()
                    && held.replica == replica
                {
                    held.started_at_ms = Some(self.now_ms);
                }
            }
            ExecutorEvent::Cached { added, evicted } => self.cached(added, evicted, out),
            ExecutorEvent::Finished(report) => {
                if state.held.front().is_none_or(|held| held.replica != report.replica) {
                    return;
                }
                let Some(held) = state.held.pop_front() else { return };
                // The executor goes straight on to the next replica it holds.
                if let Some(next) = state.held.front_mut() {
                    next.started_at_ms = Some(self.now_ms);
                }
                self.finish(executor, held.connection, *report, out);
            }
        }
    }

    /// Records what the browser's blob cache gained and lost, and tells the server what is news to it.
    fn cached(&mut self, added: Vec<(String, u64)>, evicted: Vec<String>, out: &mut Vec<Output>) {
        let evicted: Vec<String> = evicted.into_iter().filter(|sha256| self.blobs.remove(sha256).is_some()).collect();
        let mut new = Vec::new();
        for (sha256, size) in added {
            if self.blobs.len() >= MAX_TRACKED_BLOBS && !self.blobs.contains_key(&sha256) {
                break;
            }
            if self.blobs.insert(sha256.clone(), size).is_none() {
                new.push(sha256);
            }
        }
        self.stats.cached_blobs = self.blobs.len() as u32;
        self.stats.cached_bytes = self.blobs.values().sum();
        // The hello announced what was known when the socket opened; news after it follows.
        if matches!(self.socket, Socket::Open { .. }) && !(new.is_empty() && evicted.is_empty()) {
            out.push(Output::Send(WorkerMessage::Cached { added: new, evicted }));
        }
    }

    /// Counts a finished replica, reports it (unless its connection or lease is gone), and lets the
    /// executor rest or retire.
    fn finish(&mut self, executor: ExecutorId, connection: u64, report: ReplicaReport, out: &mut Vec<Output>) {
        let compute_ms = report.compute_us / 1000;
        self.count(&report, compute_ms);
        let revoked = self.revoked.remove(&report.replica);
        if connection == self.connection && self.welcomed() && !revoked {
            out.push(Output::Send(WorkerMessage::Results(vec![report])));
        }
        let Some(state) = self.executors.get_mut(&executor) else { return };
        if state.held.is_empty() && self.retiring.remove(&executor) {
            self.executors.remove(&executor);
            out.push(Output::TerminateExecutor(executor));
            return;
        }
        let throttle = u64::from(self.settings.throttle_percent);
        let rest_ms = compute_ms * (100 - throttle) / throttle;
        if rest_ms > 0 {
            state.resting = true;
            out.push(Output::SetTimer { timer: Timer::Rest { executor }, after_ms: rest_ms });
        }
    }

    fn count(&mut self, report: &ReplicaReport, compute_ms: u64) {
        self.stats.chunks_done += 1;
        if !report.status.is_success() {
            self.stats.chunks_failed += 1;
        }
        self.stats.compute_ms += compute_ms;
        self.stats.work_units += report.work_units;
    }

    fn timer(&mut self, timer: Timer, out: &mut Vec<Output>) {
        match timer {
            Timer::Heartbeat { connection } => {
                if connection == self.connection && self.welcomed() {
                    out.push(Output::Send(WorkerMessage::Heartbeat));
                    out.push(Output::SetTimer { timer, after_ms: self.heartbeat_ms });
                }
            }
            Timer::Reconnect => {
                if self.started && self.socket == Socket::Closed {
                    self.connect(out);
                }
            }
            Timer::Supervise => {
                self.supervising = false;
                let now = self.now_ms;
                let overdue: Vec<(ExecutorId, u64)> = self
                    .executors
                    .iter()
                    .filter_map(|(id, state)| {
                        let running = state.held.front()?;
                        let started = running.started_at_ms?;
                        (now >= started + running.time_limit_ms + DEADLINE_GRACE_MS).then_some((*id, running.replica))
                    })
                    .collect();
                for (executor, replica) in overdue {
                    self.deadline(executor, replica, out);
                }
            }
            Timer::Rest { executor } => {
                if let Some(state) = self.executors.get_mut(&executor) {
                    state.resting = false;
                }
            }
            Timer::Stats => {
                self.stats_timer_pending = false;
                // The interval has passed: let `emit_stats` send whatever changed.
                self.last_stats_ms = self.now_ms.saturating_sub(STATS_INTERVAL_MS);
            }
        }
    }

    /// The executor's running replica overran its time limit (found by the supervision timer). Nothing
    /// can interrupt wasm running in a worker, so the worker is terminated and another takes its place;
    /// the replica is reported as timed out and those queued behind it go back to the server.
    fn deadline(&mut self, executor: ExecutorId, replica: u64, out: &mut Vec<Output>) {
        let Some(state) = self.executors.get(&executor) else { return };
        let Some(running) = state.held.front() else { return };
        if running.replica != replica {
            return;
        }
        let Some(mut state) = self.executors.remove(&executor) else { return };
        self.retiring.remove(&executor);
        out.push(Output::TerminateExecutor(executor));
        let Some(running) = state.held.pop_front() else { return };
        let elapsed_ms = running.started_at_ms.map_or(0, |started| self.now_ms.saturating_sub(started));
        let report = ReplicaReport {
            replica,
            status: RunStatus::TimedOut,
            output: RunOutput::default(),
            compute_us: elapsed_ms * 1000,
            work_units: 0,
        };
        self.count(&report, elapsed_ms);
        let current = |held: &Held| held.connection == self.connection && !self.revoked.contains(&held.replica);
        let waiting: Vec<u64> = state.held.iter().filter(|held| current(held)).map(|held| held.replica).collect();
        if self.welcomed() {
            if running.connection == self.connection && !self.revoked.remove(&replica) {
                out.push(Output::Send(WorkerMessage::Results(vec![report])));
            }
            if !waiting.is_empty() {
                out.push(Output::Send(WorkerMessage::Release(waiting)));
            }
        }
        if self.started {
            self.adjust_executors(out);
        }
    }

    /// Keeps every ready executor supplied from the queue.
    fn dispatch(&mut self, out: &mut Vec<Output>) {
        if self.paused || !self.welcomed() || self.queue.is_empty() {
            return;
        }
        let Some(server) = self.server.clone() else { return };
        let capacity = self.executor_capacity();
        let connection = self.connection;
        // Fill executors evenly: one replica each per pass, so that a short queue spreads out.
        loop {
            let mut gave = false;
            for (id, state) in self.executors.iter_mut() {
                if !state.ready || state.resting || self.retiring.contains(id) || state.held.len() >= capacity {
                    continue;
                }
                let Some(assignment) = self.queue.pop_front() else { break };
                self.stats.current_job = Some(assignment.job_name.clone());
                // An idle executor starts it at once (or says so later, if it must load the module).
                let started_at_ms = state.held.is_empty().then_some(self.now_ms);
                state.held.push_back(Held {
                    replica: assignment.replica,
                    connection,
                    started_at_ms,
                    time_limit_ms: assignment.limits.time_limit_ms,
                });
                out.push(Output::Run {
                    executor: *id,
                    command: ExecutorCommand::Run { server: server.clone(), assignment: Box::new(assignment) },
                });
                gave = true;
            }
            if !gave || self.queue.is_empty() {
                return;
            }
        }
    }

    /// Keeps the supervision timer running while any executor holds a replica.
    fn supervise(&mut self, out: &mut Vec<Output>) {
        if !self.supervising && self.executors.values().any(|state| !state.held.is_empty()) {
            self.supervising = true;
            out.push(Output::SetTimer { timer: Timer::Supervise, after_ms: SUPERVISE_INTERVAL_MS });
        }
    }

    /// Sends the statistics to the page when they changed: at once when the connection or pause state
    /// changed, otherwise at most every [`STATS_INTERVAL_MS`].
    fn emit_stats(&mut self, out: &mut Vec<Output>) {
        self.stats.connection = match (self.started, self.socket) {
            (false, _) => ConnectionState::Stopped,
            (true, Socket::Open { welcomed: true }) => ConnectionState::Connected,
            (true, Socket::Connecting | Socket::Open { welcomed: false }) => ConnectionState::Connecting,
            (true, Socket::Closed) => match self.stats.connection {
                reconnecting @ ConnectionState::Reconnecting { .. } => reconnecting,
                _ => ConnectionState::Reconnecting { retry_in_ms: self.backoff.next_ms() },
            },
        };
        self.stats.paused = self.paused;
        self.stats.threads = self.settings.threads;
        self.stats.running = self.executors.values().filter(|state| !state.held.is_empty()).count() as u32;
        self.stats.queued = (self.queue.len()
            + self.executors.values().map(|state| state.held.len().saturating_sub(1)).sum::<usize>())
            as u32;
        let Some(last) = &self.last_stats else {
            self.send_stats(out);
            return;
        };
        if *last == self.stats {
            return;
        }
        let urgent = last.connection != self.stats.connection
            || last.paused != self.stats.paused
            || last.threads != self.stats.threads;
        if urgent || self.now_ms >= self.last_stats_ms + STATS_INTERVAL_MS {
            self.send_stats(out);
        } else if !self.stats_timer_pending {
            self.stats_timer_pending = true;
            let wait = self.last_stats_ms + STATS_INTERVAL_MS - self.now_ms;
            out.push(Output::SetTimer { timer: Timer::Stats, after_ms: wait });
        }
    }

    fn send_stats(&mut self, out: &mut Vec<Output>) {
        // A flush timer still pending finds nothing new when it fires; the next change schedules another.
        self.stats_timer_pending = false;
        self.last_stats = Some(self.stats.clone());
        self.last_stats_ms = self.now_ms;
        out.push(Output::Stats(self.stats.clone()));
    }
}

#[cfg(test)]
mod tests;
