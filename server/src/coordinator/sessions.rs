//! Sessions of rounds: opening (checked as a job would be, escrowed), rounds (each admitted as a job
//! funded from the session's escrow), the consumer's feed of validated results, and closing (by the
//! consumer, or once it has been gone for the idle time). A round its escrow cannot pay is stopped like a
//! job whose budget is spent, and the consumer is told with an `error` for that round.
//!
//! Invariant: at most one consumer socket feeds from a session at a time; a session with none is closed
//! after `ServerConfig::session_idle_ms`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, ChunkResult, JobRequest, LimitsRequest, ReplicationRequest};
use distributivecom_protocol::session::{
    MAX_METRIC_NAME, MAX_METRICS, RoundInfo, SessionCreated, SessionRequest, SessionRounds, SessionServerMessage,
    SessionStatus,
};
use distributivecom_protocol::worker::{Limits, ModuleRef};
use distributivecom_scheduler::Millis;
use tokio::sync::mpsc;

use super::admission::{Checked, Refusal};
use super::{Coordinator, Core, Usage};
use crate::clock::unix_ms;
use crate::format::human_bytes;
use crate::store::sessions::{self, NewSession, Round, RoundRow, SessionAdmission, SessionRow};
use crate::store::{StoreError, queries};

/// What the consumer's socket receives: the session's messages, bounded in count and in bytes (a result
/// carries its output).
pub struct SessionFeed {
    receiver: mpsc::Receiver<SessionServerMessage>,
    queued_bytes: Arc<AtomicU64>,
}

impl SessionFeed {
    /// The next message; `None` once the session dropped the feed (closed, or the consumer fell behind).
    pub async fn recv(&mut self) -> Option<SessionServerMessage> {
        let message = self.receiver.recv().await?;
        self.queued_bytes.fetch_sub(message_bytes(&message), Ordering::Relaxed);
        Some(message)
    }

    /// The next message if one is waiting now.
    pub fn try_recv(&mut self) -> Option<SessionServerMessage> {
        let message = self.receiver.try_recv().ok()?;
        self.queued_bytes.fetch_sub(message_bytes(&message), Ordering::Relaxed);
        Some(message)
    }
}

/// The sending half of a [`SessionFeed`].
struct FeedSender {
    sender: mpsc::Sender<SessionServerMessage>,
    queued_bytes: Arc<AtomicU64>,
    /// The most bytes that may wait.
    budget: u64,
}

/// About what a message holds in memory.
fn message_bytes(message: &SessionServerMessage) -> u64 {
    match message {
        SessionServerMessage::Result { result, .. } => 256 + result.output.total_bytes(),
        _ => 256,
    }
}

/// An open session, as the coordinator keeps it.
pub(super) struct LiveSession {
    owner: u64,
    /// Each round's job request, but for its chunks and broadcast.
    template: Arc<JobRequest>,
    /// The shards: every round's chunks, shared by the rounds (the broadcast is kept apart, once).
    shards: Arc<[ChunkRequest]>,
    /// The number the next round must carry, as far as this server knows (the store decides).
    next_round: u64,
    run_module: ModuleRef,
    /// The shards as checked at open (after a restart: at the first round), so that a round is not
    /// checked again: only its broadcast is new.
    checked: Option<Arc<Checked>>,
    /// The room it holds in its owner's usage.
    usage: Usage,
    /// The connected consumer's feed.
    feed: Option<FeedSender>,
    /// Since when no consumer has been connected.
    idle_since: Option<Millis>,
    /// Whether its rounds' slow shards get backup replicas.
    pub(super) backups: bool,
    /// Bumped on every change the live page shows.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Core {
    /// Sends `message` to the session's consumer, if one is connected.
    pub(super) fn tell_session(&mut self, session: u64, message: SessionServerMessage) {
        let Some(live) = self.sessions.get_mut(&session) else { return };
        live.changes.send_modify(|version| *version += 1);
        if let Some(feed) = live.feed.as_ref()
            && !feed.send(message)
        {
            tracing::info!(session, "closing the socket of a session's consumer that does not read");
            live.feed = None;
        }
    }
}

/// A session's round request: the shards, as the chunks of a job.
fn template(request: &SessionRequest) -> JobRequest {
    JobRequest {
        module: request.module.clone(),
        name: request.name.clone(),
        program_name: request.program_name.clone(),
        chunks: request.shards.clone(),
        env: request.env.clone(),
        limits: request.limits,
        max_retries: request.max_retries,
        budget_millicredits: None,
        replication: request.replication,
    }
}

/// The limits as a request, for rounds after a restart (checked again against the server's maxima).
fn limits_request(limits: &Limits) -> LimitsRequest {
    LimitsRequest {
        memory_limit_bytes: Some(limits.memory_bytes),
        time_limit_ms: Some(limits.time_limit_ms),
        max_stdout_bytes: Some(limits.max_stdout_bytes),
        max_stderr_bytes: Some(limits.max_stderr_bytes),
        max_data_bytes: Some(limits.max_data_bytes),
        max_work_units: Some(limits.max_work_units),
    }
}

impl Coordinator {
    /// Opens `owner`'s session: its shards are checked as a job's chunks would be, and its budget escrowed.
    pub async fn open_session(
        &self,
        owner: u64,
        request: SessionRequest,
        run_module: Option<ModuleRef>,
    ) -> Result<SessionCreated, Refusal> {
        if request.budget_millicredits <= 0 {
            return Err(Refusal::Invalid(format!(
                "budget_millicredits must be more than 0, not {}",
                request.budget_millicredits
            )));
        }
        if let Some(shard) = request.shards.iter().position(|shard| !shard.stdin.is_empty()) {
            return Err(Refusal::Invalid(format!(
                "shard {shard}: stdin must be empty, since each round's broadcast is every run's stdin"
            )));
        }
        // The room (one of the account's sessions, the shards' bytes) is taken before anything awaits, so
        // that requests racing each other cannot open more sessions than the limit between them.
        let usage = Usage::of_session(&request.shards);
        let reservation = self.reserve(owner, usage).map_err(Refusal::TooMuchRunning)?;
        let template = template(&request);
        let checked = self.check_shards(owner, &template, run_module).await?;
        let Checked { limits, max_retries, replicas, quorum, ref program_name, max_cost, ref run_module, .. } = checked;
        let (program_name, run_module) = (program_name.clone(), run_module.clone());
        let budget = request.budget_millicredits;
        let new = NewSession {
            owner,
            name: request.name.clone(),
            module: request.module.clone(),
            program_name,
            env: request.env.clone(),
            limits,
            max_retries,
            replicas,
            quorum,
            shards: request.shards.clone().into(),
            budget,
            backups: request.backups.unwrap_or(true),
            created_at_ms: unix_ms(),
        };
        let id = match self.store.transact(move |connection| sessions::insert(connection, &new)).await? {
            SessionAdmission::Accepted { id } => id,
            SessionAdmission::InsufficientCredits { balance, budget } => {
                return Err(Refusal::InsufficientCredits(format!(
                    "the session's budget is {budget} millicredits but your balance is {balance}; lower \
                     budget_millicredits or earn credits by volunteering"
                )));
            }
        };
        let shards = request.shards.len() as u32;
        // The live session holds the room until it closes.
        reservation.keep();
        let mut template = template;
        let shared: Arc<[ChunkRequest]> = std::mem::take(&mut template.chunks).into();
        let live = LiveSession {
            owner,
            template: Arc::new(template),
            shards: shared,
            next_round: 1,
            run_module,
            checked: Some(Arc::new(checked)),
            usage,
            feed: None,
            idle_since: Some(self.now()),
            backups: request.backups.unwrap_or(true),
            changes: tokio::sync::watch::Sender::new(0),
        };
        self.lock().sessions.insert(id, live);
        Ok(SessionCreated { id, shards, budget_millicredits: budget, max_round_cost_millicredits: max_cost })
    }

    /// Takes the open sessions back after a restart: their consumers have the idle time to reconnect.
    pub(super) fn recover_sessions(&self) -> Result<(), StoreError> {
        for id in self.store.read_blocking(sessions::open_ids)? {
            let (row, shards, run_module) = self.store.read_blocking(|connection| {
                let row = sessions::get(connection, id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("session {id} vanished during recovery")))?;
                let shards = sessions::shards(connection, id)?;
                let run_module = queries::module_info(connection, &row.module, row.owner)?.map(|(module, _)| module);
                Ok((row, shards, run_module))
            })?;
            let Some(run_module) = run_module else {
                return Err(StoreError::Corrupt(format!("session {id}'s program is gone")));
            };
            let template = JobRequest {
                module: row.module.clone(),
                name: Some(row.name.clone()),
                program_name: Some(row.program_name.clone()),
                chunks: Vec::new(),
                env: row.env.clone(),
                limits: limits_request(&row.limits),
                max_retries: Some(row.max_retries),
                budget_millicredits: None,
                replication: Some(ReplicationRequest { replicas: row.replicas, quorum: row.quorum }),
            };
            tracing::info!(session = id, next_round = row.next_round, "resuming session");
            // A session opened before a restart stays open, whatever the limits say now.
            let usage = Usage::of_session(&shards);
            let mut core = self.lock();
            core.hold(row.owner, usage);
            let live = LiveSession {
                owner: row.owner,
                template: Arc::new(template),
                shards: shards.into(),
                next_round: row.next_round,
                run_module,
                checked: None,
                usage,
                feed: None,
                idle_since: Some(self.now()),
                backups: row.backups,
                changes: tokio::sync::watch::Sender::new(0),
            };
            core.sessions.insert(id, live);
        }
        Ok(())
    }

    /// Starts round `round` of `owner`'s session with `broadcast` as every run's stdin. Returns the job
    /// that runs it.
    pub async fn start_round(&self, owner: u64, session: u64, round: u64, broadcast: Bytes) -> Result<u64, Refusal> {
        // Everything that can be refused without the store is, before anything is built: a round holds
        // its broadcast once, and shares the session's shards.
        let (template, shards, run_module, checked) = {
            let core = self.lock();
            let live = core.sessions.get(&session).filter(|live| live.owner == owner);
            let Some(live) = live else {
                return Err(Refusal::UnknownSession(format!("no open session {session}")));
            };
            if round != live.next_round {
                return Err(Refusal::Round(format!(
                    "round {round} is out of order: the next round of this session is {}",
                    live.next_round
                )));
            }
            let running = core.jobs.values().filter(|job| job.row.session_round.is_some_and(|(s, _)| s == session));
            if running.count() >= self.config.max_rounds_running as usize {
                return Err(Refusal::Round(format!(
                    "{} rounds of this session are running, the most at once; wait for one to finish",
                    self.config.max_rounds_running
                )));
            }
            (live.template.clone(), live.shards.clone(), live.run_module.clone(), live.checked.clone())
        };
        let checked = match checked {
            Some(checked) => checked,
            None => {
                let request = JobRequest { chunks: shards.to_vec(), ..(*template).clone() };
                let checked = Arc::new(self.check_shards(owner, &request, Some(run_module)).await?);
                if let Some(live) = self.lock().sessions.get_mut(&session) {
                    live.checked = Some(checked.clone());
                }
                checked
            }
        };
        let limit = self.config.max_broadcast_bytes.min(checked.limits.max_data_bytes);
        if broadcast.len() as u64 > limit {
            return Err(Refusal::Invalid(format!(
                "the broadcast holds {}, more than the limit of {} (the server's broadcast limit, and the \
                 session's data limit)",
                human_bytes(broadcast.len() as u64),
                human_bytes(limit)
            )));
        }
        let mut request = (*template).clone();
        let name = request.name.take().unwrap_or_else(|| format!("session-{session}"));
        request.name = Some(format!("{name} round {round}"));
        let funding = Round { session, round, broadcast };
        let created = self.admit(owner, request, shards, (*checked).clone(), Some(funding)).await;
        if created.is_ok()
            && let Some(live) = self.lock().sessions.get_mut(&session)
        {
            live.next_round = live.next_round.max(round + 1);
        }
        Ok(created?.id)
    }

    /// Checks a session's shards as a job's chunks, naming shards in refusals.
    async fn check_shards(
        &self,
        owner: u64,
        template: &JobRequest,
        run_module: Option<ModuleRef>,
    ) -> Result<Checked, Refusal> {
        self.check(owner, template, run_module).await.map_err(|refusal| match refusal {
            Refusal::Invalid(message) => Refusal::Invalid(message.replace("chunk ", "shard ")),
            Refusal::UnknownBlob(message) => Refusal::UnknownBlob(message.replace("chunk ", "shard ")),
            other => other,
        })
    }

    /// Closes a session: its running rounds stop and the rest of its escrow goes back to its owner. `None`
    /// if it was closed already; else the refund.
    pub async fn close_session(&self, session: u64, reason: &str) -> Result<Option<i64>, StoreError> {
        let closing = reason.to_owned();
        let refunded =
            self.store.transact(move |connection| sessions::close(connection, session, &closing, unix_ms())).await?;
        let rounds: Vec<u64> = {
            let mut core = self.lock();
            let live = core.sessions.remove(&session);
            if let Some(live) = &live {
                core.give_back(live.owner, live.usage);
            }
            let feed = live.and_then(|live| live.feed);
            if let (Some(feed), Some(refunded)) = (feed, refunded) {
                let feed = feed.sender;
                let closed =
                    SessionServerMessage::Closed { reason: reason.to_owned(), refunded_millicredits: refunded };
                // A consumer so far behind that even this does not fit learns it from the session's status.
                let _ = feed.try_send(closed);
            }
            core.jobs
                .values()
                .filter(|job| job.row.session_round.is_some_and(|(s, _)| s == session))
                .map(|job| job.row.id)
                .collect()
        };
        // Their cancellation was part of the close.
        for job in rounds {
            self.stopped(job, reason);
        }
        Ok(refunded)
    }

    /// Connects a consumer's socket to `owner`'s session; a second socket is refused.
    pub fn attach_session(&self, owner: u64, session: u64) -> Result<SessionFeed, Refusal> {
        let mut core = self.lock();
        let Some(live) = core.sessions.get_mut(&session).filter(|live| live.owner == owner) else {
            return Err(Refusal::UnknownSession(format!("no open session {session}")));
        };
        if live.feed.as_ref().is_some_and(|feed| !feed.sender.is_closed()) {
            return Err(Refusal::Round(
                "another socket is connected to this session; close it first (one consumer per session)".to_owned(),
            ));
        }
        let (sender, receiver) = mpsc::channel(self.config.session_feed_capacity.max(1));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let budget = self.config.session_feed_bytes;
        live.feed = Some(FeedSender { sender, queued_bytes: queued_bytes.clone(), budget });
        live.idle_since = None;
        Ok(SessionFeed { receiver, queued_bytes })
    }

    /// The consumer's socket closed: the session waits for it for its idle time.
    pub fn detach_session(&self, session: u64) {
        let now = self.now();
        if let Some(live) = self.lock().sessions.get_mut(&session)
            // A consumer that connected again meanwhile keeps its feed.
            && live.feed.as_ref().is_none_or(|feed| feed.sender.is_closed())
        {
            live.feed = None;
            live.idle_since = Some(now);
        }
    }

    /// Closes the sessions whose consumer has been gone for the idle time (called on each tick).
    pub(super) fn close_idle_sessions(&self, core: &Core) {
        let now = self.now();
        let idle = core
            .sessions
            .iter()
            .filter(|(_, live)| live.idle_since.is_some_and(|since| now >= since.plus(self.config.session_idle_ms)))
            .map(|(id, _)| *id);
        for session in idle {
            let Some(coordinator) = self.this.upgrade() else { return };
            tokio::spawn(async move {
                // A consumer may have come back since the tick looked.
                let still_idle = coordinator.lock().sessions.get(&session).is_some_and(|live| live.feed.is_none());
                if !still_idle {
                    return;
                }
                let reason = "no consumer was connected for the session's idle time";
                if let Err(error) = coordinator.close_session(session, reason).await {
                    tracing::error!(session, %error, "could not close an idle session");
                }
            });
        }
    }

    /// Stores the consumer's figures for a round of its session (see `SessionClientMessage::Note`).
    pub async fn note_round(
        &self,
        owner: u64,
        session: u64,
        round: u64,
        metrics: BTreeMap<String, f64>,
    ) -> Result<(), Refusal> {
        if self.lock().sessions.get(&session).is_none_or(|live| live.owner != owner) {
            return Err(Refusal::UnknownSession(format!("no open session {session}")));
        }
        if metrics.len() > MAX_METRICS {
            return Err(Refusal::Invalid(format!("a note holds at most {MAX_METRICS} figures, not {}", metrics.len())));
        }
        // Names are shown on the live page: no control characters.
        let bad_name =
            |name: &str| name.is_empty() || name.len() > MAX_METRIC_NAME || name.chars().any(char::is_control);
        if let Some((name, value)) = metrics.iter().find(|(name, value)| bad_name(name) || !value.is_finite()) {
            return Err(Refusal::Invalid(format!(
                "figure {name:?} = {value}: names have 1 to {MAX_METRIC_NAME} bytes and no control characters, and \
                 values are finite numbers"
            )));
        }
        let noted = self.store.transact(move |connection| sessions::note(connection, session, round, &metrics)).await?;
        if !noted {
            return Err(Refusal::Round(format!("round {round} has not been started in this session")));
        }
        if let Some(live) = self.lock().sessions.get(&session) {
            live.changes.send_modify(|version| *version += 1);
        }
        Ok(())
    }

    /// A session of `owner`'s and its rounds from `from` on, for its live page. With `wait`, once the
    /// session has changed since `version` (or `wait` passed, or the session is closed).
    pub async fn session_rounds(
        &self,
        owner: u64,
        session: u64,
        from: u64,
        version: Option<u64>,
        wait: std::time::Duration,
    ) -> Result<Option<SessionRounds>, StoreError> {
        let changes =
            self.lock().sessions.get(&session).filter(|live| live.owner == owner).map(|live| live.changes.subscribe());
        let mut current = 0;
        if let Some(mut changes) = changes {
            if version.is_some_and(|known| known == *changes.borrow()) {
                let _ = tokio::time::timeout(wait, changes.changed()).await;
            }
            current = *changes.borrow();
        }
        let Some(status) = self.session_status(owner, session).await? else { return Ok(None) };
        let rows = self.store.read(move |connection| sessions::round_rows(connection, session, from, 1000)).await?;
        let running: Vec<u64> = rows
            .iter()
            .filter(|row| row.results_stored < row.chunk_count && !row.cancelled)
            .map(|row| row.job)
            .collect();
        let volunteers_working = {
            let core = self.lock();
            let mut volunteers = std::collections::HashSet::new();
            for (worker, volunteer) in &core.worker_volunteers {
                if core.scheduler.held_by_job(*worker).any(|(job, held)| held > 0 && running.contains(&job)) {
                    volunteers.insert(volunteer.as_str());
                }
            }
            volunteers.len() as u32
        };
        let rounds = rows
            .into_iter()
            .map(|row| RoundInfo {
                round: row.round,
                job: row.job,
                state: if row.results_stored == row.chunk_count {
                    "done"
                } else if row.cancelled {
                    "stopped"
                } else {
                    "running"
                }
                .to_owned(),
                shards_done: row.results_stored,
                started_at_ms: row.created_at_ms,
                finished_at_ms: row.last_finished_at_ms.filter(|_| row.results_stored == row.chunk_count),
                spent_millicredits: row.spent,
                metrics: row.metrics,
            })
            .collect();
        Ok(Some(SessionRounds { version: current, session: status, volunteers_working, rounds }))
    }

    /// A session of `owner`'s as it stands.
    pub async fn session_status(&self, owner: u64, session: u64) -> Result<Option<SessionStatus>, StoreError> {
        self.store
            .read(move |connection| {
                let Some(row) = sessions::get(connection, session)?.filter(|row| row.owner == owner) else {
                    return Ok(None);
                };
                let running = sessions::running_rounds(connection, session)?;
                let (spent, escrowed) = sessions::money(connection, session)?;
                Ok(Some(status(row, running.into_iter().map(|(round, _)| round).collect(), spent, escrowed)))
            })
            .await
    }

    /// The session's rounds from `from_round` on (at most [`BACKLOG_ROUNDS`]), for a consumer that
    /// reconnects: their rows only; their results are read a page at a time with [`Self::round_results`].
    pub async fn session_backlog_rounds(&self, session: u64, from_round: u64) -> Result<Vec<RoundRow>, StoreError> {
        self.store.read(move |connection| sessions::round_rows(connection, session, from_round, BACKLOG_ROUNDS)).await
    }

    /// A page of a round's results that completed after the `after`-th (within the page size of the
    /// results API), each with its place.
    pub async fn round_results(&self, job: u64, after: u64) -> Result<Vec<(u64, ChunkResult)>, StoreError> {
        self.store
            .read(move |connection| {
                let Some((last, _)) = queries::completed_span(connection, job, after, 1000, BACKLOG_PAGE_BYTES)? else {
                    return Ok(Vec::new());
                };
                queries::results_completed_between(connection, job, after, last)
            })
            .await
    }
}

/// A reconnecting consumer gets at most this many rounds again, a page of at most this many bytes of
/// stored results at a time.
pub const BACKLOG_ROUNDS: u32 = 1000;
const BACKLOG_PAGE_BYTES: u64 = 16 * 1024 * 1024;

impl FeedSender {
    /// Queues `message` unless the feed is full (in count or in bytes); false then.
    fn send(&self, message: SessionServerMessage) -> bool {
        let bytes = message_bytes(&message);
        // Counted before it is queued, so that the receiver never subtracts what was not added.
        let before = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.budget {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        match self.sender.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                false
            }
            // The conversation is over; the consumer reconnects or the session idles out.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }
}

/// A validated result of round `round`, for the session's feed.
pub(super) fn round_result(round: u64, result: ChunkResult) -> SessionServerMessage {
    SessionServerMessage::Result { round, result }
}

fn status(row: SessionRow, rounds_running: Vec<u64>, spent: i64, escrowed: i64) -> SessionStatus {
    SessionStatus {
        id: row.id,
        name: row.name,
        module: row.module,
        shards: row.shard_count,
        state: if row.closed_at_ms.is_some() { "closed" } else { "open" }.to_owned(),
        close_reason: row.close_reason,
        next_round: row.next_round,
        rounds_running,
        budget_millicredits: row.budget,
        spent_millicredits: spent,
        escrowed_millicredits: escrowed,
        created_at_ms: row.created_at_ms,
        closed_at_ms: row.closed_at_ms,
    }
}
