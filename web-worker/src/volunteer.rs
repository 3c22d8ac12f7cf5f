//! The browser volunteer's coordinator as an IO-free state machine: fed [`Input`]s (page commands, socket
//! events, executor events, timers) with the current time, it returns [`Output`]s (socket messages,
//! executor commands, timers, statistics). `coordinator.rs` performs the outputs with `web-sys`; tests
//! drive this directly on the host.
//!
//! One coordinator per tab holds the tab's only WebSocket and supervises one executor Web Worker per
//! thread: it hands each executor one replica at a time, terminates and replaces an executor whose
//! replica overran its time limit (reporting the replica as timed out), and throttles by letting an
//! executor rest after each chunk in proportion to the time the chunk took.

use std::collections::{BTreeMap, HashSet, VecDeque};

use distributivecom_protocol::PROTOCOL_VERSION;
use distributivecom_protocol::worker::{
    Assignment, Hello, Output as RunOutput, ReplicaReport, RunStatus, ServerMessage, WorkerKind, WorkerMessage,
};

use crate::messages::{ConnectionState, ExecutorCommand, ExecutorEvent, PageCommand, Settings, Stats};

pub type ExecutorId = u64;

/// How long past its time limit a replica may run before its executor is terminated: covers the
/// instantiation and the messages around the run.
pub const DEADLINE_GRACE_MS: u64 = 1_000;
/// The most memory a browser executor offers to one replica.
pub const BROWSER_MAX_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
const FIRST_BACKOFF_MS: u64 = 250;
const MAX_BACKOFF_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    Heartbeat { connection: u64 },
    Reconnect,
    Deadline { executor: ExecutorId, replica: u64 },
    Rest { executor: ExecutorId },
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

#[derive(Clone, Debug, PartialEq)]
enum Executor {
    /// Loading its wasm.
    Starting,
    Idle,
    Busy {
        replica: u64,
        connection: u64,
        started_at_ms: Option<u64>,
        time_limit_ms: u64,
    },
    /// Resting after a chunk (throttle).
    Resting,
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
    server: Option<String>,
    settings: Settings,
    started: bool,
    paused: bool,
    socket: Socket,
    /// Counts connections, so that late events of an earlier one are recognised.
    connection: u64,
    backoff_ms: u64,
    heartbeat_ms: u64,
    executors: BTreeMap<ExecutorId, Executor>,
    /// Executors that stop once their current replica is done (the thread count went down).
    retiring: HashSet<ExecutorId>,
    next_executor: ExecutorId,
    queue: VecDeque<Assignment>,
    revoked: HashSet<u64>,
    now_ms: u64,
    stats: Stats,
    last_stats: Option<Stats>,
}

impl Volunteer {
    pub fn new(agent: String) -> Volunteer {
        Volunteer {
            agent,
            server: None,
            settings: Settings::default_for(2),
            started: false,
            paused: false,
            socket: Socket::Closed,
            connection: 0,
            backoff_ms: FIRST_BACKOFF_MS,
            heartbeat_ms: 1_000,
            executors: BTreeMap::new(),
            retiring: HashSet::new(),
            next_executor: 1,
            queue: VecDeque::new(),
            revoked: HashSet::new(),
            now_ms: 0,
            stats: Stats::default(),
            last_stats: None,
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
                    })));
                }
            }
            Input::SocketMessage(message) => self.server_message(message, &mut out),
            Input::SocketClosed => self.socket_closed(&mut out),
            Input::Executor(executor, event) => self.executor_event(executor, event, &mut out),
            Input::TimerFired(timer) => self.timer(timer, &mut out),
        }
        self.dispatch(&mut out);
        self.emit_stats(&mut out);
        out
    }

    fn offered_slots(&self) -> u32 {
        if self.paused { 0 } else { self.settings.threads }
    }

    fn welcomed(&self) -> bool {
        self.socket == Socket::Open { welcomed: true }
    }

    fn command(&mut self, command: PageCommand, out: &mut Vec<Output>) {
        match command {
            PageCommand::Start { server, settings } => {
                if self.started {
                    return;
                }
                self.started = true;
                self.paused = false;
                self.server = Some(server.trim_end_matches('/').to_owned());
                self.settings = settings.clamped();
                self.backoff_ms = FIRST_BACKOFF_MS;
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
                self.executors.insert(executor, Executor::Starting);
                out.push(Output::SpawnExecutor(executor));
            }
        } else {
            let mut surplus = active - wanted;
            // Stop idle ones at once, busy ones when their replica is done.
            let candidates: Vec<(ExecutorId, bool)> = self
                .executors
                .iter()
                .filter(|(id, _)| !self.retiring.contains(id))
                .map(|(id, state)| (*id, matches!(state, Executor::Busy { .. })))
                .collect();
            for (executor, busy) in
                candidates.iter().filter(|(_, busy)| !busy).chain(candidates.iter().filter(|(_, busy)| *busy))
            {
                if surplus == 0 {
                    break;
                }
                surplus -= 1;
                if *busy {
                    self.retiring.insert(*executor);
                } else {
                    self.executors.remove(executor);
                    out.push(Output::TerminateExecutor(*executor));
                }
            }
        }
    }

    fn server_message(&mut self, message: ServerMessage, out: &mut Vec<Output>) {
        match message {
            ServerMessage::Welcome(welcome) => {
                if self.socket == (Socket::Open { welcomed: false }) {
                    self.socket = Socket::Open { welcomed: true };
                    self.backoff_ms = FIRST_BACKOFF_MS;
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
                    if self
                        .executors
                        .values()
                        .any(|state| matches!(state, Executor::Busy { replica: running, .. } if *running == replica))
                    {
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
            out.push(Output::SetTimer { timer: Timer::Reconnect, after_ms: self.backoff_ms });
            self.stats.connection = ConnectionState::Reconnecting { retry_in_ms: self.backoff_ms };
            self.backoff_ms = (self.backoff_ms * 2).min(MAX_BACKOFF_MS);
        }
    }

    fn executor_event(&mut self, executor: ExecutorId, event: ExecutorEvent, out: &mut Vec<Output>) {
        let Some(state) = self.executors.get_mut(&executor) else {
            return;
        };
        match event {
            ExecutorEvent::Ready => {
                if *state == Executor::Starting {
                    *state = Executor::Idle;
                }
            }
            ExecutorEvent::Started { replica } => {
                if let Executor::Busy { replica: running, started_at_ms, time_limit_ms, .. } = state
                    && *running == replica
                {
                    *started_at_ms = Some(self.now_ms);
                    out.push(Output::SetTimer {
                        timer: Timer::Deadline { executor, replica },
                        after_ms: *time_limit_ms + DEADLINE_GRACE_MS,
                    });
                }
            }
            ExecutorEvent::Finished(report) => {
                let Executor::Busy { replica, connection, .. } = *state else {
                    return;
                };
                if replica != report.replica {
                    return;
                }
                self.finish(executor, connection, *report, out);
            }
        }
    }

    /// Reports a finished replica (unless its connection or lease is gone) and frees the executor.
    fn finish(&mut self, executor: ExecutorId, connection: u64, report: ReplicaReport, out: &mut Vec<Output>) {
        let compute_ms = report.compute_us / 1000;
        self.stats.chunks_done += 1;
        if !report.status.is_success() {
            self.stats.chunks_failed += 1;
        }
        self.stats.compute_ms += compute_ms;
        self.stats.work_units += report.work_units;
        let revoked = self.revoked.remove(&report.replica);
        if connection == self.connection && self.welcomed() && !revoked {
            out.push(Output::Send(WorkerMessage::Results(vec![report])));
        }
        if self.retiring.remove(&executor) {
            self.executors.remove(&executor);
            out.push(Output::TerminateExecutor(executor));
            return;
        }
        let throttle = u64::from(self.settings.throttle_percent);
        let rest_ms = compute_ms * (100 - throttle) / throttle;
        if rest_ms > 0 {
            self.executors.insert(executor, Executor::Resting);
            out.push(Output::SetTimer { timer: Timer::Rest { executor }, after_ms: rest_ms });
        } else {
            self.executors.insert(executor, Executor::Idle);
        }
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
            Timer::Deadline { executor, replica } => {
                let Some(&Executor::Busy { replica: running, connection, started_at_ms, .. }) =
                    self.executors.get(&executor)
                else {
                    return;
                };
                if running != replica {
                    return;
                }
                // The page cannot interrupt wasm running in a worker: terminate the worker and start
                // another in its place.
                out.push(Output::TerminateExecutor(executor));
                let elapsed_ms = started_at_ms.map_or(0, |started| self.now_ms.saturating_sub(started));
                let report = ReplicaReport {
                    replica,
                    status: RunStatus::TimedOut,
                    output: RunOutput::default(),
                    compute_us: elapsed_ms * 1000,
                    work_units: 0,
                };
                self.retiring.remove(&executor);
                self.executors.remove(&executor);
                self.stats.chunks_done += 1;
                self.stats.chunks_failed += 1;
                self.stats.compute_ms += elapsed_ms;
                if connection == self.connection && self.welcomed() && !self.revoked.remove(&replica) {
                    out.push(Output::Send(WorkerMessage::Results(vec![report])));
                }
                if self.started {
                    self.adjust_executors(out);
                }
            }
            Timer::Rest { executor } => {
                if let Some(state) = self.executors.get_mut(&executor)
                    && *state == Executor::Resting
                {
                    *state = Executor::Idle;
                }
            }
        }
    }

    /// Gives queued replicas to idle executors.
    fn dispatch(&mut self, out: &mut Vec<Output>) {
        if self.paused || !self.welcomed() {
            return;
        }
        let Some(server) = self.server.clone() else { return };
        let idle: Vec<ExecutorId> = self
            .executors
            .iter()
            .filter(|(id, state)| **state == Executor::Idle && !self.retiring.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for executor in idle {
            let Some(assignment) = self.queue.pop_front() else { break };
            self.stats.current_job = Some(assignment.job_name.clone());
            self.executors.insert(
                executor,
                Executor::Busy {
                    replica: assignment.replica,
                    connection: self.connection,
                    started_at_ms: None,
                    time_limit_ms: assignment.limits.time_limit_ms,
                },
            );
            out.push(Output::Run {
                executor,
                command: ExecutorCommand::Run { server: server.clone(), assignment: Box::new(assignment) },
            });
        }
    }

    fn emit_stats(&mut self, out: &mut Vec<Output>) {
        self.stats.connection = match (self.started, self.socket) {
            (false, _) => ConnectionState::Stopped,
            (true, Socket::Open { welcomed: true }) => ConnectionState::Connected,
            (true, Socket::Connecting | Socket::Open { welcomed: false }) => ConnectionState::Connecting,
            (true, Socket::Closed) => match self.stats.connection {
                reconnecting @ ConnectionState::Reconnecting { .. } => reconnecting,
                _ => ConnectionState::Reconnecting { retry_in_ms: self.backoff_ms },
            },
        };
        self.stats.paused = self.paused;
        self.stats.threads = self.settings.threads;
        self.stats.running =
            self.executors.values().filter(|state| matches!(state, Executor::Busy { .. })).count() as u32;
        self.stats.queued = self.queue.len() as u32;
        if self.last_stats.as_ref() != Some(&self.stats) {
            self.last_stats = Some(self.stats.clone());
            out.push(Output::Stats(self.stats.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
