//! Validation by replication against real cheaters: scripted workers on real WebSockets that answer every
//! replica at once with a lie (and replay and forge reports), next to honest native workers. Only correct
//! results are accepted, the cheaters earn nothing and lose reputation, and the honest volunteers are
//! paid exactly for their validated replicas.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use distributivecom_protocol::api::{
    ChunkRequest, JobRequest, JobState, LimitsRequest, ReplicationRequest, VolunteerCredential,
};
use distributivecom_protocol::worker::{
    Assignment, Credential, Hello, Output, ReplicaReport, RunStatus, ServerMessage, WorkerKind, WorkerMessage,
};
use distributivecom_protocol::{PROTOCOL_VERSION, decode, encode};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Every chunk runs on two volunteers (nobody is trusted to run one alone), so the counts are exact.
const ALWAYS_REPLICATE: &[&str] = &["--trust-after", "1000000"];

/// How a cheater answers, without running anything.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// A plausible wrong count of primes, claiming a great deal of work.
    WrongCount,
    /// Different garbage for every replica.
    Garbage,
    /// Claims the program trapped.
    ClaimsTrap,
    /// Claims to have worked without end, to be paid the whole escrow.
    ClaimsEndlessWork,
}

impl Lie {
    fn report(self, assignment: &Assignment) -> ReplicaReport {
        let (status, stdout, work_units) = match self {
            Lie::WrongCount => {
                let range = assignment.args[1..].join(", ");
                (RunStatus::Exited { code: 0 }, format!("primes in [{range}): 0\n").into_bytes(), 5_000_000_000)
            }
            Lie::Garbage => {
                let noise = assignment.replica.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                (RunStatus::Exited { code: 0 }, noise.to_le_bytes().to_vec(), noise % 1_000_000_000)
            }
            Lie::ClaimsEndlessWork => (RunStatus::Exited { code: 0 }, b"done\n".to_vec(), u64::MAX),
            Lie::ClaimsTrap => {
                (RunStatus::Trapped { message: "wasm trap: wasm `unreachable` instruction executed".into() }, vec![], 1)
            }
        };
        ReplicaReport {
            replica: assignment.replica,
            status,
            output: Output { stdout: stdout.into(), ..Output::default() },
            compute_us: 1,
            work_units,
        }
    }
}

/// A scripted cheater: a real WebSocket worker with an anonymous identity that lies about every replica
/// it is given, replays its reports and forges one for a replica it never held.
struct Cheater {
    identity: VolunteerCredential,
    /// Replicas it lied about (once each).
    lies: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cheater {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cheater {
    /// A cheater under a fresh anonymous identity.
    async fn start(server: &TestServer, lie: Lie, slots: u32) -> Cheater {
        let identity = server.anonymous_client().register_volunteer().await.unwrap();
        let credential = Credential::Volunteer { id: identity.id.clone(), secret: identity.secret.clone() };
        Cheater::start_as(server, lie, slots, identity, credential).await
    }

    async fn start_as(
        server: &TestServer,
        lie: Lie,
        slots: u32,
        identity: VolunteerCredential,
        credential: Credential,
    ) -> Cheater {
        let mut socket = connect(server).await;
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            kind: WorkerKind::Native,
            slots,
            agent: format!("cheater ({lie:?})"),
            max_memory_bytes: None,
            prefetch_per_slot: None,
            credential: Some(credential),
            blobs: Vec::new(),
        };
        send(&mut socket, &WorkerMessage::Hello(hello)).await;
        let Some(ServerMessage::Welcome(welcome)) = receive(&mut socket).await else {
            panic!("the cheater's hello was refused")
        };
        let lies = Arc::new(AtomicU32::new(0));
        let counter = lies.clone();
        let task = tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(Duration::from_millis(welcome.heartbeat_interval_ms));
            let mut replayed = false;
            loop {
                let outgoing = tokio::select! {
                    _ = heartbeat.tick() => vec![WorkerMessage::Heartbeat],
                    frame = socket.next() => match frame {
                        Some(Ok(Message::Binary(bytes))) => {
                            let Ok(ServerMessage::Assign(assignments)) = decode::<ServerMessage>(&bytes) else {
                                continue;
                            };
                            let reports: Vec<ReplicaReport> =
                                assignments.iter().map(|assignment| lie.report(assignment)).collect();
                            counter.fetch_add(reports.len() as u32, Ordering::SeqCst);
                            let mut messages = vec![WorkerMessage::Results(reports.clone())];
                            if !replayed {
                                // A replay of the same reports, and a forgery for a replica never leased.
                                replayed = true;
                                let mut forged = reports[0].clone();
                                forged.replica += 1_000_000;
                                messages.push(WorkerMessage::Results(reports));
                                messages.push(WorkerMessage::Results(vec![forged]));
                            }
                            messages
                        }
                        Some(Ok(_)) => continue,
                        _ => return,
                    },
                };
                for message in outgoing {
                    if socket.send(Message::Binary(encode(&message).into())).await.is_err() {
                        return;
                    }
                }
            }
        });
        Cheater { identity, lies, task }
    }

    fn account(&self) -> String {
        format!("volunteer:{}", self.identity.id)
    }
}

fn prime_chunks(count: u64, width: u64) -> Vec<ChunkRequest> {
    (0..count).map(|index| chunk(&[&(index * width).to_string(), &((index + 1) * width).to_string()])).collect()
}

/// Every volunteer account's balance, from the database.
fn volunteer_balances(server: &TestServer) -> BTreeMap<String, i64> {
    let connection = read_only(&server.database());
    let mut statement = connection
        .prepare("SELECT account, SUM(amount) FROM ledger WHERE account LIKE 'volunteer:%' GROUP BY account")
        .unwrap();
    statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// Checks that the cheater lied, was caught every time, and earned nothing.
async fn assert_caught(server: &TestServer, cheater: &Cheater) {
    let lies = cheater.lies.load(Ordering::SeqCst);
    assert!(lies > 0, "the cheater was given replicas to lie about");
    let standing = server.anonymous_client().volunteer_info(&cheater.identity).await.unwrap();
    assert_eq!(standing.balance_millicredits, 0, "no credit for invalid replicas");
    assert_eq!(standing.validated_replicas, 0);
    assert_eq!(standing.invalid_replicas, u64::from(lies), "every lie counted against its reputation");
    let entries: i64 = read_only(&server.database())
        .query_row("SELECT COUNT(*) FROM ledger WHERE account = ?1", [cheater.account()], |row| row.get(0))
        .unwrap();
    assert_eq!(entries, 0, "not one ledger entry pays the cheater");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cheater_among_three_volunteers_gets_no_result_accepted_and_no_credit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let client = server.client();
    let _honest = [server.worker(1), server.worker(1)];
    // The cheater answers instantly and asks for more work than anyone: it gets into many chunks.
    let cheater = Cheater::start(&server, Lie::WrongCount, 4).await;
    eventually("three volunteers", Duration::from_secs(30), || async {
        client.stats().await.is_ok_and(|stats| stats.workers == 3)
    })
    .await;

    let chunks = prime_chunks(12, 3_000_000);
    let job = submit(&client, "primes", chunks.clone()).await;
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    // Only correct results: each equals a local run of the chunk, output and work units alike.
    assert_results_match_native_runs(&status, "primes", &chunks, &results);
    assert_caught(&server, &cheater).await;
    // Each chunk the cheater lied about needed a third replica to settle it.
    let settled_by_a_third = results.iter().filter(|result| result.attempts == 3).count() as u32;
    assert_eq!(settled_by_a_third, cheater.lies.load(Ordering::SeqCst));

    // The two honest volunteers were paid for exactly the replicas that validated: two per chunk, each
    // `ceil(work units × price / 1e6)` of which they keep the published share (rounded up).
    let pricing = client.pricing().await.unwrap();
    let cost = |work_units: u64| {
        (u128::from(work_units) * u128::from(pricing.millicredits_per_million_work_units)).div_ceil(1_000_000) as i64
    };
    let expected: i64 = results
        .iter()
        .map(|result| 2 * ((cost(result.work_units) * i64::from(pricing.volunteer_share_percent) + 99) / 100))
        .sum();
    let balances = volunteer_balances(&server);
    assert_eq!(balances.len(), 2, "only the honest volunteers hold credits: {balances:?}");
    assert!(balances.values().all(|balance| *balance > 0), "{balances:?}");
    assert_eq!(balances.values().sum::<i64>(), expected);
    assert_ledger_conserved(&server.database());
}

#[tokio::test(flavor = "multi_thread")]
async fn honest_and_cheating_volunteers_together_give_only_correct_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let client = server.client();
    let _honest = [server.worker(1), server.worker(1), server.worker(1)];
    // Two cheaters that do not agree with each other: together they are a disagreeing pair that still
    // needs two honest replicas to settle.
    let garbage = Cheater::start(&server, Lie::Garbage, 2).await;
    let trap = Cheater::start(&server, Lie::ClaimsTrap, 2).await;
    eventually("five volunteers", Duration::from_secs(30), || async {
        client.stats().await.is_ok_and(|stats| stats.workers == 5)
    })
    .await;

    let chunks: Vec<ChunkRequest> = (0..10).map(|index| chunk(&[&format!("chunk-{index}")])).collect();
    let job = submit(&client, "entropy", chunks.clone()).await;
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_results_match_native_runs(&status, "entropy", &chunks, &results);
    assert!(results.iter().all(|result| result.succeeded), "no claimed trap was accepted");
    assert_caught(&server, &garbage).await;
    assert_caught(&server, &trap).await;
    let balances = volunteer_balances(&server);
    assert_eq!(balances.len(), 3, "only the honest volunteers hold credits: {balances:?}");
    assert_ledger_conserved(&server.database());
    // The server took the replays and forgeries in its stride.
    assert_eq!(client.stats().await.unwrap().workers, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_replica_is_paid_for_more_than_the_jobs_work_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    // The administrator's own scripted worker runs its single-replica job and claims endless work.
    let identity = client.register_volunteer().await.unwrap();
    let token = Credential::Token(server.admin_token.clone());
    let _worker = Cheater::start_as(&server, Lie::ClaimsEndlessWork, 1, identity, token).await;
    let request = JobRequest {
        chunks: vec![chunk(&["x"])],
        limits: LimitsRequest { max_work_units: Some(2_000_000_000), ..LimitsRequest::default() },
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        // A budget far above what the limit allows: only the cap stands between the claim and all of it.
        budget_millicredits: Some(1_000_000),
        ..JobRequest::default()
    };
    let job = submit_request(&client, "echo-args", request).await;
    let (status, _) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    // Paid as if it had used the limit (2,000 millicredits), not the escrow's every credit.
    assert_eq!(status.budget_millicredits, 1_000_000);
    assert_eq!(status.spent_millicredits, 2_000);
    let paid: i64 = read_only(&server.database())
        .query_row(
            "SELECT -SUM(amount) FROM ledger WHERE kind = 'payment' AND job_id = ?1 AND amount < 0",
            [job],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(paid, 2_000);
    assert_eq!(ledger_balance(&server.database(), &format!("escrow:job:{job}")), 0);
    assert_ledger_conserved(&server.database());
}
