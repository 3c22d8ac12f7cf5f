//! Step-by-step tests of the browser courier with a fake clock.

use std::collections::BTreeMap;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::{Limits, ModuleRef, Welcome};

use super::*;
use distributivecom_protocol::backoff::Backoff;

const SERVER: &str = "http://127.0.0.1:8080";

fn credential() -> Credential {
    Credential::Volunteer { id: "v-1".into(), secret: "s".into() }
}

struct Harness {
    volunteer: Volunteer,
    now: u64,
}

fn assignment(replica: u64) -> Assignment {
    Assignment {
        replica,
        job: 1,
        chunk: replica as u32,
        job_name: "render frames".into(),
        module: ModuleRef { sha256: "ab".repeat(32), size: 10 },
        args: vec!["p.wasm".into()],
        env: BTreeMap::new(),
        stdin: Bytes::default(),
        files: BTreeMap::new(),
        blobs: BTreeMap::new(),
        clock_start_ns: 0,
        random_seed: Bytes(vec![0; 32]),
        limits: Limits {
            memory_bytes: 1 << 20,
            time_limit_ms: 5_000,
            max_stdout_bytes: 100,
            max_stderr_bytes: 100,
            max_data_bytes: 100,
            max_work_units: 1_000,
        },
    }
}

fn report(replica: u64, compute_ms: u64) -> ExecutorEvent {
    ExecutorEvent::Finished(Box::new(ReplicaReport {
        replica,
        status: RunStatus::Exited { code: 0 },
        output: RunOutput::default(),
        compute_us: compute_ms * 1000,
        work_units: 42,
    }))
}

impl Harness {
    /// A started, connected volunteer with `threads` ready executors (ids 1..=threads).
    fn connected(threads: u32, throttle_percent: u32) -> Harness {
        let mut harness = Harness { volunteer: Volunteer::new("test".into()), now: 0 };
        let started = harness.feed(Input::Command(PageCommand::Start {
            server: SERVER.into(),
            settings: Settings { threads, throttle_percent },
            credential: credential(),
        }));
        assert!(started.contains(&Output::Connect { url: "ws://127.0.0.1:8080/api/workers/ws".into() }));
        assert_eq!(
            started.iter().filter(|output| matches!(output, Output::SpawnExecutor(_))).count(),
            threads as usize
        );
        let hello = harness.feed(Input::SocketOpened);
        assert!(
            matches!(&hello[0], Output::Send(WorkerMessage::Hello(hello)) if hello.slots == threads && hello.kind == WorkerKind::Browser && hello.credential == Some(credential()))
        );
        let welcome = harness.feed(Input::SocketMessage(ServerMessage::Welcome(Welcome {
            worker_id: 1,
            heartbeat_interval_ms: 1000,
            lease_timeout_ms: 5000,
            prefetch_per_slot: 2,
        })));
        assert!(welcome.contains(&Output::SetTimer { timer: Timer::Heartbeat { connection: 1 }, after_ms: 1000 }));
        for executor in 1..=u64::from(threads) {
            harness.feed(Input::Executor(executor, ExecutorEvent::Ready));
        }
        harness
    }

    fn feed(&mut self, input: Input) -> Vec<Output> {
        self.volunteer.handle(self.now, input)
    }

    fn assign(&mut self, replicas: &[u64]) -> Vec<Output> {
        self.feed(Input::SocketMessage(ServerMessage::Assign(replicas.iter().map(|&id| assignment(id)).collect())))
    }
}

/// The replicas started by `outputs`, as (executor, replica).
fn runs(outputs: &[Output]) -> Vec<(ExecutorId, u64)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Run { executor, command: ExecutorCommand::Run { assignment, .. } } => {
                Some((*executor, assignment.replica))
            }
            _ => None,
        })
        .collect()
}

fn sent_results(outputs: &[Output]) -> Vec<(u64, RunStatus)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send(WorkerMessage::Results(reports)) => {
                Some(reports.iter().map(|report| (report.replica, report.status.clone())).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn last_stats(outputs: &[Output]) -> Stats {
    outputs
        .iter()
        .rev()
        .find_map(|output| match output {
            Output::Stats(stats) => Some(stats.clone()),
            _ => None,
        })
        .expect("stats were emitted")
}

#[test]
fn ready_executors_are_kept_supplied_ahead() {
    let queue = EXECUTOR_QUEUE as u64;
    let mut harness = Harness { volunteer: Volunteer::new("test".into()), now: 0 };
    harness.feed(Input::Command(PageCommand::Start {
        server: SERVER.into(),
        settings: Settings { threads: 2, throttle_percent: 100 },
        credential: credential(),
    }));
    harness.feed(Input::SocketOpened);
    harness.feed(Input::SocketMessage(ServerMessage::Welcome(Welcome {
        worker_id: 1,
        heartbeat_interval_ms: 1000,
        lease_timeout_ms: 5000,
        prefetch_per_slot: 2,
    })));
    let replicas: Vec<u64> = (10..10 + 2 * queue + 1).collect();
    assert!(runs(&harness.assign(&replicas)).is_empty(), "no executor is ready yet");
    // At full throttle an executor holds the replica it runs and the next few.
    let first: Vec<(ExecutorId, u64)> = replicas[..EXECUTOR_QUEUE].iter().map(|&replica| (1, replica)).collect();
    assert_eq!(runs(&harness.feed(Input::Executor(1, ExecutorEvent::Ready))), first);
    harness.now += 1_000;
    let second = harness.feed(Input::Executor(2, ExecutorEvent::Ready));
    let expected: Vec<(ExecutorId, u64)> =
        replicas[EXECUTOR_QUEUE..2 * EXECUTOR_QUEUE].iter().map(|&replica| (2, replica)).collect();
    assert_eq!(runs(&second), expected);
    let stats = last_stats(&second);
    assert_eq!((stats.running, stats.queued, stats.connection), (2, 2 * queue as u32 - 1, ConnectionState::Connected));
    assert_eq!(stats.current_job.as_deref(), Some("render frames"));
    // Finishing one reports it and tops the executor up again.
    harness.now += 1_000;
    let finished = harness.feed(Input::Executor(1, report(10, 5)));
    assert_eq!(sent_results(&finished), [(10, RunStatus::Exited { code: 0 })]);
    assert_eq!(runs(&finished), [(1, replicas[2 * EXECUTOR_QUEUE])]);
    let stats = last_stats(&finished);
    assert_eq!((stats.chunks_done, stats.work_units, stats.compute_ms), (1, 42, 5));
}

#[test]
fn statistics_reach_the_page_at_a_bounded_rate() {
    let mut harness = Harness::connected(1, 100);
    harness.assign(&[1, 2, 3, 4]);
    harness.now += 1_000;
    let first = harness.feed(Input::Executor(1, report(1, 1)));
    assert!(first.iter().any(|output| matches!(output, Output::Stats(_))));
    harness.now += 10;
    let soon = harness.feed(Input::Executor(1, report(2, 1)));
    assert!(!soon.iter().any(|output| matches!(output, Output::Stats(_))), "too soon for another message");
    assert!(soon.contains(&Output::SetTimer { timer: Timer::Stats, after_ms: STATS_INTERVAL_MS - 10 }));
    harness.now += STATS_INTERVAL_MS;
    let flushed = harness.feed(Input::TimerFired(Timer::Stats));
    assert_eq!(last_stats(&flushed).chunks_done, 2);
    // A change of connection state is never held back.
    harness.now += 1;
    // The first reconnect waits the shared policy's first delay, with the clock's reading as jitter.
    let first = Backoff::new().next_delay_ms(harness.now);
    assert!((250..=312).contains(&first));
    assert_eq!(
        last_stats(&harness.feed(Input::SocketClosed)).connection,
        ConnectionState::Reconnecting { retry_in_ms: first }
    );
}

#[test]
fn the_throttle_rests_an_executor_in_proportion_to_its_chunk() {
    let mut harness = Harness::connected(1, 25);
    // A throttled executor holds one replica at a time, so that it can rest between them.
    assert_eq!(runs(&harness.assign(&[1, 2])), [(1, 1)]);
    let finished = harness.feed(Input::Executor(1, report(1, 100)));
    // At 25% an executor rests three times as long as it computed.
    assert!(finished.contains(&Output::SetTimer { timer: Timer::Rest { executor: 1 }, after_ms: 300 }));
    assert!(runs(&finished).is_empty());
    harness.now += 300;
    assert_eq!(runs(&harness.feed(Input::TimerFired(Timer::Rest { executor: 1 }))), [(1, 2)]);
}

#[test]
fn an_overrunning_replica_is_reported_as_timed_out_and_its_executor_replaced() {
    let mut harness = Harness::connected(1, 100);
    harness.now = 1_000;
    let assigned = harness.assign(&[7, 8]);
    assert_eq!(runs(&assigned), [(1, 7), (1, 8)]);
    assert!(assigned.contains(&Output::SetTimer { timer: Timer::Supervise, after_ms: SUPERVISE_INTERVAL_MS }));
    // Within its time limit (5 s) and the grace, the replica runs on.
    harness.now = 1_000 + 5_000 + DEADLINE_GRACE_MS - 1;
    let early = harness.feed(Input::TimerFired(Timer::Supervise));
    assert!(!early.contains(&Output::TerminateExecutor(1)));
    assert!(early.contains(&Output::SetTimer { timer: Timer::Supervise, after_ms: SUPERVISE_INTERVAL_MS }));
    harness.now += 1;
    let expired = harness.feed(Input::TimerFired(Timer::Supervise));
    assert!(expired.contains(&Output::TerminateExecutor(1)));
    assert!(expired.contains(&Output::SpawnExecutor(2)), "a fresh executor takes its place");
    assert_eq!(sent_results(&expired), [(7, RunStatus::TimedOut)]);
    assert!(expired.contains(&Output::Send(WorkerMessage::Release(vec![8]))), "the waiting replica goes back");
    // A late report from the terminated executor is ignored.
    assert!(harness.feed(Input::Executor(1, report(7, 1))).iter().all(|output| !matches!(output, Output::Send(_))));
    // The replacement takes new work once it is ready.
    assert_eq!(runs(&harness.feed(Input::Executor(2, ExecutorEvent::Ready))), []);
    assert_eq!(runs(&harness.assign(&[9])), [(2, 9)]);
}

#[test]
fn the_deadline_counts_from_when_a_replica_really_starts() {
    let mut harness = Harness::connected(1, 100);
    harness.assign(&[1, 2]);
    // Loading the module took 4 s: the executor says when the run began.
    harness.now = 4_000;
    harness.feed(Input::Executor(1, ExecutorEvent::Started { replica: 1 }));
    harness.now = 4_000 + 5_000 + DEADLINE_GRACE_MS - 1;
    assert!(!harness.feed(Input::TimerFired(Timer::Supervise)).contains(&Output::TerminateExecutor(1)));
    // The second replica starts when the first finishes, so its deadline starts then too.
    harness.now = 10_000;
    harness.feed(Input::Executor(1, report(1, 5_000)));
    harness.now = 10_000 + 5_000 + DEADLINE_GRACE_MS - 1;
    assert!(!harness.feed(Input::TimerFired(Timer::Supervise)).contains(&Output::TerminateExecutor(1)));
    harness.now += 1;
    let expired = harness.feed(Input::TimerFired(Timer::Supervise));
    assert_eq!(sent_results(&expired), [(2, RunStatus::TimedOut)]);
}

#[test]
fn a_lost_connection_drops_queued_work_ignores_late_reports_and_reconnects_with_backoff() {
    let mut harness = Harness::connected(1, 100);
    harness.assign(&[1, 2, 3]);
    let closed = harness.feed(Input::SocketClosed);
    let first = Backoff::new().next_delay_ms(harness.now);
    assert!(closed.contains(&Output::SetTimer { timer: Timer::Reconnect, after_ms: first }));
    assert_eq!(last_stats(&closed).connection, ConnectionState::Reconnecting { retry_in_ms: first });
    // The replicas the executor held finish after the connection is gone: nothing is sent.
    assert!(sent_results(&harness.feed(Input::Executor(1, report(1, 1)))).is_empty());
    let late = harness.feed(Input::Executor(1, report(2, 1)));
    assert!(sent_results(&late).is_empty());
    assert!(runs(&late).is_empty(), "queued replicas of the old connection are dropped");
    let reconnect = harness.feed(Input::TimerFired(Timer::Reconnect));
    assert!(reconnect.iter().any(|output| matches!(output, Output::Connect { .. })));
    // Failing again doubles the delay.
    let again = harness.feed(Input::SocketClosed);
    assert!(again.contains(&Output::SetTimer { timer: Timer::Reconnect, after_ms: 500 }));
}

#[test]
fn pausing_hands_queued_replicas_back_and_lets_held_ones_finish() {
    let mut harness = Harness::connected(1, 100);
    let replicas: Vec<u64> = (1..=EXECUTOR_QUEUE as u64 + 1).collect();
    harness.assign(&replicas);
    let paused = harness.feed(Input::Command(PageCommand::Pause));
    assert!(paused.contains(&Output::Send(WorkerMessage::Slots { slots: 0 })));
    let waiting = *replicas.last().unwrap();
    assert!(paused.contains(&Output::Send(WorkerMessage::Release(vec![waiting]))), "only the unheld one goes back");
    for &replica in &replicas[..EXECUTOR_QUEUE] {
        let finished = harness.feed(Input::Executor(1, report(replica, 1)));
        assert_eq!(sent_results(&finished), [(replica, RunStatus::Exited { code: 0 })]);
        assert!(runs(&finished).is_empty());
    }
    // Assignments that crossed the pause go straight back.
    assert!(harness.assign(&[100]).contains(&Output::Send(WorkerMessage::Release(vec![100]))));
    let resumed = harness.feed(Input::Command(PageCommand::Resume));
    assert!(resumed.contains(&Output::Send(WorkerMessage::Slots { slots: 1 })));
}

#[test]
fn fewer_threads_stop_idle_executors_at_once_and_busy_ones_after_their_replicas() {
    let mut harness = Harness::connected(3, 100);
    // A short queue spreads over the executors, one replica each.
    assert_eq!(runs(&harness.assign(&[1, 2])), [(1, 1), (2, 2)]);
    let fewer = harness.feed(Input::Command(PageCommand::Settings(Settings { threads: 1, throttle_percent: 100 })));
    assert!(fewer.contains(&Output::TerminateExecutor(3)), "the idle executor stops at once");
    assert!(fewer.contains(&Output::Send(WorkerMessage::Slots { slots: 1 })));
    let finished = harness.feed(Input::Executor(1, report(1, 1)));
    assert!(finished.contains(&Output::TerminateExecutor(1)), "a busy executor retires after its replica");
    assert_eq!(sent_results(&finished), [(1, RunStatus::Exited { code: 0 })]);
    let more = harness.feed(Input::Command(PageCommand::Settings(Settings { threads: 2, throttle_percent: 100 })));
    assert!(more.contains(&Output::SpawnExecutor(4)));
}

#[test]
fn revoked_replicas_are_dropped_from_the_queue_and_not_reported() {
    let mut harness = Harness::connected(1, 100);
    let queue = EXECUTOR_QUEUE as u64;
    // The executor holds 1..=queue; queue + 1 and queue + 2 wait in the courier.
    harness.assign(&(1..=queue + 2).collect::<Vec<u64>>());
    harness.feed(Input::SocketMessage(ServerMessage::Revoke(vec![1, queue + 1])));
    let finished = harness.feed(Input::Executor(1, report(1, 1)));
    assert!(sent_results(&finished).is_empty(), "the running replica was revoked");
    assert_eq!(runs(&finished), [(1, queue + 2)], "the queued revoked replica was dropped");
    assert_eq!(sent_results(&harness.feed(Input::Executor(1, report(2, 1)))), [(2, RunStatus::Exited { code: 0 })]);
}

#[test]
fn stopping_closes_the_socket_and_terminates_every_executor() {
    let mut harness = Harness::connected(2, 100);
    harness.assign(&[1]);
    let stopped = harness.feed(Input::Command(PageCommand::Stop));
    assert!(stopped.contains(&Output::CloseSocket));
    assert!(stopped.contains(&Output::TerminateExecutor(1)) && stopped.contains(&Output::TerminateExecutor(2)));
    assert_eq!(last_stats(&stopped).connection, ConnectionState::Stopped);
    // A late close event and reconnect timer do nothing.
    assert!(harness.feed(Input::SocketClosed).is_empty());
    assert!(harness.feed(Input::TimerFired(Timer::Reconnect)).is_empty());
}

#[test]
fn heartbeats_repeat_only_for_the_current_connection() {
    let mut harness = Harness::connected(1, 100);
    let beat = harness.feed(Input::TimerFired(Timer::Heartbeat { connection: 1 }));
    assert!(beat.contains(&Output::Send(WorkerMessage::Heartbeat)));
    assert!(beat.contains(&Output::SetTimer { timer: Timer::Heartbeat { connection: 1 }, after_ms: 1000 }));
    harness.feed(Input::SocketClosed);
    assert!(harness.feed(Input::TimerFired(Timer::Heartbeat { connection: 1 })).is_empty());
}

#[test]
fn the_blobs_in_the_browsers_cache_are_announced_once_and_in_every_hello() {
    let mut harness = Harness::connected(2, 100);
    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    let cached = |added: &[(&str, u64)], evicted: &[&str]| ExecutorEvent::Cached {
        added: added.iter().map(|(sha, size)| (sha.to_string(), *size)).collect(),
        evicted: evicted.iter().map(|sha| sha.to_string()).collect(),
    };
    let sent = |outputs: &[Output]| -> Vec<WorkerMessage> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Send(message @ WorkerMessage::Cached { .. }) => Some(message.clone()),
                _ => None,
            })
            .collect()
    };
    // Both executors find the same blob on start: the server hears of it once.
    let first = harness.feed(Input::Executor(1, cached(&[(&a, 1000)], &[])));
    assert_eq!(sent(&first), [WorkerMessage::Cached { added: vec![a.clone()], evicted: vec![] }]);
    assert!(sent(&harness.feed(Input::Executor(2, cached(&[(&a, 1000)], &[])))).is_empty());
    // A fetch that evicts: both told.
    harness.now += 1_000;
    let fetched = harness.feed(Input::Executor(1, cached(&[(&b, 3000)], &[&a])));
    assert_eq!(sent(&fetched), [WorkerMessage::Cached { added: vec![b.clone()], evicted: vec![a.clone()] }]);
    let stats = last_stats(&fetched);
    assert_eq!((stats.cached_blobs, stats.cached_bytes), (1, 3000), "the donate page shows what is kept");
    // After a reconnect, the hello says what the cache holds.
    harness.feed(Input::SocketClosed);
    harness.feed(Input::TimerFired(Timer::Reconnect));
    let hello = harness.feed(Input::SocketOpened);
    assert!(
        matches!(&hello[0], Output::Send(WorkerMessage::Hello(hello)) if hello.blobs == vec![b.clone()]),
        "{hello:?}"
    );
}
