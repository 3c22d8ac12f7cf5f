//! Tests of the store against real SQLite files in temporary directories.

use std::sync::mpsc as std_mpsc;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::ChunkRequest;
use distributivecom_protocol::worker::{Limits, Output, RunStatus};

use super::ledger::Totals;
use super::writes::{Admission, Settlement};
use super::*;

const PRICING: Pricing = Pricing { millicredits_per_million_work_units: 1000, volunteer_share_percent: 90 };

fn limits() -> Limits {
    Limits {
        memory_bytes: 1 << 30,
        time_limit_ms: 1000,
        max_stdout_bytes: 100,
        max_stderr_bytes: 100,
        max_data_bytes: 1000,
        max_work_units: 10_000,
    }
}

fn module(sha256: &str, owner: u64) -> NewModule {
    NewModule {
        owner,
        sha256: sha256.to_owned(),
        bytes: bytes::Bytes::from_static(b"\0asm"),
        imports: vec![],
        instrumented_sha256: format!("{sha256}-instrumented"),
        instrumented: bytes::Bytes::from_static(b"\0asm instrumented"),
        created_at_ms: 1,
        name: None,
    }
}

fn job(module: &str, owner: u64, chunks: usize, budget: Option<i64>) -> NewJob {
    NewJob {
        owner,
        budget,
        max_cost: 1_000_000,
        replicas: 2,
        quorum: 2,
        name: None,
        module: module.to_owned(),
        program_name: "p.wasm".to_owned(),
        env: BTreeMap::from([("K".to_owned(), "V".to_owned())]),
        limits: limits(),
        max_retries: 2,
        created_at_ms: 42,
        chunks: (0..chunks)
            .map(|index| ChunkRequest { args: vec![index.to_string()], stdin: Bytes::from("in"), ..Default::default() })
            .collect::<Vec<_>>()
            .into(),
        round: None,
    }
}

async fn user(store: &Store, name: &str, grant: i64) -> u64 {
    let name = name.to_owned();
    store
        .transact(move |connection| writes::create_user(connection, &name, "hash", false, grant, 1))
        .await
        .unwrap()
        .expect("a fresh name")
}

/// The program of [`one_job`]'s job (its hash, repeated).
const ONE_JOB_PROGRAM: &str = "1";

/// A store with one account, "owner" (granted `grant`), and one accepted job of its own with `chunks`
/// chunks and `budget`. The directory is removed when dropped.
async fn one_job(grant: i64, chunks: usize, budget: i64) -> (tempfile::TempDir, Store, u64, u64) {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let owner = user(&store, "owner", grant).await;
    let sha = ONE_JOB_PROGRAM.repeat(64);
    store.put_module(module(&sha, owner)).await.unwrap();
    let id = accepted(&store, job(&sha, owner, chunks, Some(budget))).await;
    (directory, store, owner, id)
}

async fn accepted(store: &Store, job: NewJob) -> u64 {
    match store.insert_job(job).await.unwrap() {
        Admission::Accepted { id, .. } => id,
        refused => panic!("the job was refused: {refused:?}"),
    }
}

fn result(job: u64, chunk: u32, status: RunStatus, payments: Vec<Payment>) -> NewResult {
    let output = Output { stdout: Bytes::from(format!("out {chunk}").as_str()), ..Output::default() };
    let reputation = payments
        .iter()
        .map(|payment| ReputationChange { volunteer: payment.volunteer.clone(), valid: true, run: 1 })
        .collect();
    NewResult {
        job,
        chunk,
        status,
        attempts: 1,
        work_units: 7,
        output,
        finished_at_ms: 100 + u64::from(chunk),
        payments,
        reputation,
        pricing: PRICING,
    }
}

/// Stores a result and waits until it is durable.
fn store_result(store: &Store, result: NewResult) -> Result<Settlement, StoreError> {
    let (done, durable) = std_mpsc::channel();
    store.insert_result(result, move |settled| done.send(settled).unwrap());
    durable.recv().unwrap()
}

fn pay(volunteer: &str, replica: u64, work_units: u64) -> Payment {
    Payment { volunteer: volunteer.to_owned(), replica, work_units, compute_us: 0 }
}

async fn balance(store: &Store, account: String) -> i64 {
    store.read(move |connection| ledger::balance(connection, &account)).await.unwrap()
}

async fn totals(store: &Store) -> Totals {
    store.read(ledger::totals).await.unwrap()
}

#[tokio::test]
async fn jobs_and_results_survive_a_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let sha = "a".repeat(64);
    let id = {
        let store = Store::open(directory.path()).unwrap();
        let owner = user(&store, "owner", 10_000).await;
        store.put_module(module(&sha, owner)).await.unwrap();
        let id = accepted(&store, job(&sha, owner, 3, Some(5_000))).await;
        store_result(&store, result(id, 1, RunStatus::Exited { code: 0 }, vec![])).unwrap();
        store_result(&store, result(id, 0, RunStatus::Exited { code: 3 }, vec![])).unwrap();
        id
    };
    let store = Store::open(directory.path()).unwrap();
    let (row, counts, results, specs, finished, unfinished) = store
        .read(move |connection| {
            Ok((
                queries::job(connection, id)?.unwrap(),
                queries::job_counts(connection, id)?,
                queries::results(connection, id, 0, 10)?,
                queries::chunk_specs(connection, id)?,
                queries::finished_chunks(connection, id)?,
                queries::unfinished_jobs(connection)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(row.name, format!("job-{id}"));
    assert_eq!(row.env.get("K").map(String::as_str), Some("V"));
    assert_eq!(row.limits, limits());
    assert_eq!((row.budget, row.replicas, row.quorum), (5_000, 2, 2));
    assert_eq!(row.run_module.size, "\0asm instrumented".len() as u64);
    assert_eq!(results[1].work_units, 7);
    assert_eq!(counts, JobCounts { succeeded: 1, failed: 1, last_finished_at_ms: Some(101) });
    assert_eq!(results.iter().map(|result| result.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(results[0].reason, "exited with status 3");
    assert!(!results[0].succeeded);
    assert_eq!(results[1].output.stdout, Bytes::from("out 1"));
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[2].args, ["2"]);
    assert_eq!(finished, [0, 1]);
    assert_eq!(unfinished, [id]);
}

#[tokio::test]
async fn a_second_result_for_the_same_chunk_is_refused_and_pays_nothing() {
    let (_directory, store, owner, id) = one_job(100_000, 2, 50_000).await;
    // Queue three writes at once so they share one commit: the duplicate fails (and the commit's writes run
    // again, each in a savepoint), and its payment is rolled back with it.
    let (done, durable) = std_mpsc::channel();
    for (chunk, replica) in [(0, 1), (0, 2), (1, 3)] {
        let done = done.clone();
        let paid = result(id, chunk, RunStatus::Exited { code: 0 }, vec![pay("volunteer:v1", replica, 1_000_000)]);
        store.insert_result(paid, move |settled| done.send((chunk, settled.is_ok())).unwrap());
    }
    let mut answers: Vec<(u32, bool)> = (0..3).map(|_| durable.recv().unwrap()).collect();
    answers.sort();
    assert_eq!(answers, [(0, false), (0, true), (1, true)]);
    let counts = store.read(move |connection| queries::job_counts(connection, id)).await.unwrap();
    assert_eq!((counts.succeeded, counts.failed), (2, 0));
    // Two payments of 1000 millicredits, 90% to the volunteer; the rest of the budget went back.
    assert_eq!(balance(&store, "volunteer:v1".to_owned()).await, 1_800);
    assert_eq!(balance(&store, ledger::user(owner)).await, 100_000 - 2_000);
    assert_eq!(balance(&store, ledger::escrow(id)).await, 0);
    let totals = totals(&store).await;
    assert!(totals.conserved(), "{totals:?}");
    assert_eq!(totals.burned, 200);
}

#[tokio::test]
async fn a_job_escrows_its_budget_pays_validated_replicas_and_refunds_the_rest() {
    let (_directory, store, owner, id) = one_job(10_000, 2, 6_000).await;
    assert_eq!(balance(&store, ledger::user(owner)).await, 4_000);
    assert_eq!(store.read(move |connection| accounts::escrowed(connection, owner)).await.unwrap(), 6_000);

    // Two volunteers agreed on chunk 0: each replica costs 1.5 million work units × 1000 / 10^6 = 1500.
    let settled = store_result(
        &store,
        result(
            id,
            0,
            RunStatus::Exited { code: 0 },
            vec![pay("volunteer:a", 1, 1_500_000), pay("volunteer:b", 2, 1_500_000)],
        ),
    )
    .unwrap();
    assert_eq!(settled, Settlement { paid: 3_000, budget_spent: false, withheld: false });
    assert_eq!(balance(&store, "volunteer:a".to_owned()).await, 1_350);
    assert_eq!(store.read(move |connection| accounts::job_money(connection, id)).await.unwrap(), (6_000, 3_000));

    // The last chunk: the rest of the escrow goes back to the owner.
    store_result(&store, result(id, 1, RunStatus::Exited { code: 0 }, vec![pay("volunteer:a", 3, 1_000_000)])).unwrap();
    assert_eq!(balance(&store, ledger::escrow(id)).await, 0);
    assert_eq!(balance(&store, ledger::user(owner)).await, 10_000 - 4_000);
    assert_eq!(store.read(move |connection| accounts::job_money(connection, id)).await.unwrap(), (6_000, 4_000));
    let entries =
        store.read(move |connection| accounts::entries(connection, &ledger::user(owner), None, 10)).await.unwrap();
    let kinds: Vec<&str> = entries.iter().map(|entry| entry.kind.as_str()).collect();
    assert_eq!(kinds, ["refund", "escrow", "grant"]);
    assert!(totals(&store).await.conserved());
}

#[tokio::test]
async fn a_budget_that_runs_out_pays_what_it_has_and_says_so() {
    let (_directory, store, _, id) = one_job(10_000, 3, 1_500).await;
    let first = store_result(&store, result(id, 0, RunStatus::Exited { code: 0 }, vec![pay("user:9", 1, 1_000_000)]));
    assert_eq!(first.unwrap(), Settlement { paid: 1_000, budget_spent: false, withheld: false });
    let second = store_result(&store, result(id, 1, RunStatus::Exited { code: 0 }, vec![pay("user:9", 2, 1_000_000)]));
    assert_eq!(second.unwrap(), Settlement { paid: 500, budget_spent: true, withheld: true });
    assert!(store.cancel_job(id, "its budget is spent".to_owned(), 5).await.unwrap());
    let row = store.read(move |connection| queries::job(connection, id)).await.unwrap().unwrap();
    assert_eq!(row.stop_reason.as_deref(), Some("its budget is spent"));
    // The chunk paid in full keeps its output; the one paid short is stored failed, without its output.
    let stored: Vec<(u32, bool, String, usize)> = store
        .read(move |connection| {
            let mut statement = connection
                .prepare("SELECT idx, succeeded, status, length(output) FROM results WHERE job_id = ?1 ORDER BY idx")?;
            let rows =
                statement.query_map([id as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[0].1, "{stored:?}");
    assert!(!stored[1].1 && stored[1].2.contains("the budget ran out"), "{stored:?}");
    assert!(stored[1].3 < stored[0].3, "the withheld result keeps no output: {stored:?}");
    let counts: (i64, i64) = store
        .read(move |connection| {
            Ok(connection.query_row(
                "SELECT results_stored, results_succeeded FROM jobs WHERE id = ?1",
                [id as i64],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(counts, (2, 1));
    assert!(totals(&store).await.conserved());
}

#[tokio::test]
async fn a_job_stored_before_the_ledger_finishes_unpaid_with_its_results() {
    let (_directory, store, owner, _) = one_job(10_000, 1, 1_000).await;
    // Such a job has no budget (schema version 2 gave every job 0).
    let id: u64 = store
        .transact(move |connection| {
            connection.execute(
                "INSERT INTO jobs (module, program_name, env, limits, max_retries, chunk_count, created_at_ms,
                                   owner_id, budget, replicas, quorum)
                 SELECT module, program_name, env, limits, max_retries, 2, created_at_ms, ?1, 0, 1, 1 FROM jobs LIMIT 1",
                [owner as i64],
            )?;
            Ok(connection.last_insert_rowid() as u64)
        })
        .await
        .unwrap();
    let settled = store_result(&store, result(id, 0, RunStatus::Exited { code: 0 }, vec![pay("user:9", 1, 1_000_000)]));
    assert_eq!(settled.unwrap(), Settlement { paid: 0, budget_spent: false, withheld: false });
    let succeeded: bool = store
        .read(move |connection| {
            Ok(connection
                .query_row("SELECT succeeded FROM results WHERE job_id = ?1", [id as i64], |row| row.get(0))?)
        })
        .await
        .unwrap();
    assert!(succeeded, "its result is kept, as before the ledger");
}

#[tokio::test]
async fn a_job_the_owner_cannot_afford_is_not_stored() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let owner = user(&store, "owner", 1_000).await;
    let sha = "1".repeat(64);
    store.put_module(module(&sha, owner)).await.unwrap();
    let refused = store.insert_job(job(&sha, owner, 1, Some(1_001))).await.unwrap();
    assert_eq!(refused, Admission::InsufficientCredits { balance: 1_000, budget: 1_001 });
    // Without a budget, the job takes what the owner has, up to its maximum cost.
    let Admission::Accepted { budget, .. } = store.insert_job(job(&sha, owner, 1, None)).await.unwrap() else {
        panic!("an affordable job is accepted");
    };
    assert_eq!(budget, 1_000);
    // Now nothing is left: even a budget-less job is refused.
    let broke = store.insert_job(job(&sha, owner, 1, None)).await.unwrap();
    assert_eq!(broke, Admission::InsufficientCredits { balance: 0, budget: 0 });
    let jobs = store.read(move |connection| queries::list_jobs(connection, owner, None, 10)).await.unwrap();
    assert_eq!(jobs.len(), 1);
}

#[tokio::test]
async fn replica_blocks_never_repeat_across_reopens() {
    let directory = tempfile::tempdir().unwrap();
    let first = Store::open(directory.path()).unwrap().next_replica_block().await.unwrap();
    let second = Store::open(directory.path()).unwrap().next_replica_block().await.unwrap();
    assert!(second > first);
}

#[tokio::test]
async fn cancelling_refunds_and_stops_a_job_from_being_resumed_but_not_a_finished_one() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let owner = user(&store, "owner", 10_000).await;
    let sha = "c".repeat(64);
    store.put_module(module(&sha, owner)).await.unwrap();
    let running = accepted(&store, job(&sha, owner, 2, Some(3_000))).await;
    let finished = accepted(&store, job(&sha, owner, 1, Some(3_000))).await;
    store_result(&store, result(finished, 0, RunStatus::Exited { code: 0 }, vec![])).unwrap();
    assert_eq!(balance(&store, ledger::user(owner)).await, 7_000);
    assert!(store.cancel_job(running, "cancelled by its owner".to_owned(), 7).await.unwrap());
    assert_eq!(balance(&store, ledger::user(owner)).await, 10_000);
    assert!(!store.cancel_job(running, "again".to_owned(), 8).await.unwrap(), "cancelling twice changes nothing");
    assert!(!store.cancel_job(finished, "late".to_owned(), 9).await.unwrap(), "a finished job cannot be cancelled");
    let unfinished = store.read(queries::unfinished_jobs).await.unwrap();
    assert!(unfinished.is_empty());
    let row = store.read(move |connection| queries::job(connection, running)).await.unwrap().unwrap();
    assert_eq!(row.cancelled_at_ms, Some(7));
    assert!(totals(&store).await.conserved());
}

#[tokio::test]
async fn programs_and_jobs_are_visible_only_to_their_owner() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let (alice, bob) = (user(&store, "alice", 10_000).await, user(&store, "bob", 10_000).await);
    let sha = "2".repeat(64);
    store.put_module(module(&sha, alice)).await.unwrap();
    let id = accepted(&store, job(&sha, alice, 1, Some(10))).await;
    let key = sha.clone();
    let (for_alice, for_bob, bobs_jobs) = store
        .read(move |connection| {
            Ok((
                queries::module_info(connection, &key, alice)?,
                queries::module_info(connection, &key, bob)?,
                queries::list_jobs(connection, bob, None, 10)?,
            ))
        })
        .await
        .unwrap();
    assert!(for_alice.is_some());
    assert!(for_bob.is_none(), "bob never uploaded this program");
    assert!(bobs_jobs.is_empty());
    let row = store.read(move |connection| queries::job(connection, id)).await.unwrap().unwrap();
    assert_eq!(row.owner, Some(alice));
    // Workers fetch the instrumented module; the program as uploaded is never served.
    let (instrumented, original) = store
        .read(move |connection| {
            Ok((
                queries::module_bytes(connection, &format!("{sha}-instrumented"))?,
                queries::module_bytes(connection, &sha)?,
            ))
        })
        .await
        .unwrap();
    assert!(instrumented.is_some());
    assert!(original.is_none());
}

#[tokio::test]
async fn claiming_a_volunteer_moves_its_credits_once_and_only_to_one_account() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let (alice, bob) = (user(&store, "alice", 10_000).await, user(&store, "bob", 0).await);
    store.transact(|connection| writes::register_volunteer(connection, "v-1", "secret-hash", 1)).await.unwrap();
    let sha = "3".repeat(64);
    store.put_module(module(&sha, alice)).await.unwrap();
    let id = accepted(&store, job(&sha, alice, 2, Some(5_000))).await;
    store_result(&store, result(id, 0, RunStatus::Exited { code: 0 }, vec![pay("volunteer:v-1", 1, 1_000_000)]))
        .unwrap();
    assert_eq!(balance(&store, "volunteer:v-1".to_owned()).await, 900);

    let claimed = store.transact(move |connection| writes::claim_volunteer(connection, "v-1", bob, 2)).await.unwrap();
    assert_eq!(claimed, Some(900));
    assert_eq!(balance(&store, ledger::user(bob)).await, 900);
    let stolen = store.transact(move |connection| writes::claim_volunteer(connection, "v-1", alice, 3)).await.unwrap();
    assert_eq!(stolen, None, "a claimed volunteer stays with its account");
    // What the identity earns from now on goes to its account directly.
    store_result(&store, result(id, 1, RunStatus::Exited { code: 0 }, vec![pay("volunteer:v-1", 2, 1_000_000)]))
        .unwrap();
    assert_eq!(balance(&store, ledger::user(bob)).await, 1_800);
    assert_eq!(balance(&store, "volunteer:v-1".to_owned()).await, 0);
    assert!(totals(&store).await.conserved());
}

#[tokio::test]
async fn the_ledger_refuses_unbalanced_transactions_and_any_rewrite() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    user(&store, "owner", 1_000).await;
    let unbalanced = store
        .transact(|connection| {
            ledger::record(connection, "grant", &[(ledger::MINT, -5), ("user:1", 6)], Default::default(), 1)
        })
        .await
        .unwrap_err();
    assert!(matches!(unbalanced, StoreError::Unbalanced(_)), "{unbalanced}");
    for statement in ["UPDATE ledger SET amount = amount * 2", "DELETE FROM ledger"] {
        let error = store.transact(move |connection| Ok(connection.execute(statement, [])?)).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert_eq!(balance(&store, "user:1".to_owned()).await, 1_000);
}

#[tokio::test]
async fn kept_balances_equal_the_sums_of_entries_and_the_audit_finds_any_drift() {
    let (directory, store, _, id) = one_job(10_000, 2, 6_000).await;
    store_result(&store, result(id, 0, RunStatus::Exited { code: 0 }, vec![pay("volunteer:a", 1, 1_500_000)])).unwrap();
    store_result(&store, result(id, 1, RunStatus::Exited { code: 0 }, vec![pay("volunteer:a", 2, 500_000)])).unwrap();
    assert_eq!(store.read(ledger::audit).await.unwrap(), vec![]);
    assert_eq!(balance(&store, "volunteer:a".to_owned()).await, 1_350 + 450);
    assert_eq!(balance(&store, "nobody".to_owned()).await, 0, "an account without entries holds nothing");

    // Anything that changes a kept balance behind the ledger's back is found.
    let connection = rusqlite::Connection::open(directory.path().join(DATABASE_FILE)).unwrap();
    connection.execute("UPDATE ledger_accounts SET balance = balance + 1 WHERE account = 'volunteer:a'", []).unwrap();
    let found = store.read(ledger::audit).await.unwrap();
    assert_eq!(
        found,
        vec![ledger::Disagreement {
            account: "volunteer:a".to_owned(),
            entries_sum: 1_800,
            entries: 2,
            kept_balance: 1_801,
            kept_entries: 2,
        }]
    );
}

#[tokio::test]
async fn a_database_from_before_kept_balances_gets_them_from_its_history() {
    let directory = tempfile::tempdir().unwrap();
    {
        // Schema version 2, with a ledger, a job, a result and a payment, as an older release left them.
        let connection = rusqlite::Connection::open(directory.path().join(DATABASE_FILE)).unwrap();
        schema::configure(&connection).unwrap();
        schema::migrate_to(&connection, 2).unwrap();
        connection
            .execute_batch(
                "INSERT INTO users (id, username, password_hash, created_at_ms) VALUES (1, 'old', 'h', 1);
                 INSERT INTO modules VALUES ('m', 1, '[]', x'00', 'mi', 1, x'00', 1);
                 INSERT INTO jobs (id, module, program_name, env, limits, max_retries, chunk_count, created_at_ms,
                                   owner_id, budget, replicas, quorum)
                     VALUES (7, 'm', 'p.wasm', '{}', '{}', 2, 2, 1, 1, 500, 2, 2);
                 INSERT INTO results VALUES (7, 0, 1, '{}', 2, 10, x'80', 99);
                 INSERT INTO ledger (txn, account, amount, kind, created_at_ms) VALUES
                     (1, 'mint', -1000, 'grant', 1), (1, 'user:1', 1000, 'grant', 1),
                     (2, 'user:1', -500, 'escrow', 2), (2, 'escrow:job:7', 500, 'escrow', 2),
                     (3, 'escrow:job:7', -100, 'payment', 3), (3, 'volunteer:v', 90, 'payment', 3),
                     (3, 'burn', 10, 'payment', 3);",
            )
            .unwrap();
    }
    let store = Store::open(directory.path()).unwrap();
    assert_eq!(store.read(ledger::audit).await.unwrap(), vec![]);
    assert_eq!(balance(&store, "user:1".to_owned()).await, 500);
    assert_eq!(balance(&store, ledger::escrow(7)).await, 400);
    assert_eq!(balance(&store, "volunteer:v".to_owned()).await, 90);
    let (counts, money, escrowed, unfinished) = store
        .read(|connection| {
            Ok((
                queries::job_counts(connection, 7)?,
                accounts::job_money(connection, 7)?,
                accounts::escrowed(connection, 1)?,
                queries::unfinished_jobs(connection)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(counts, JobCounts { succeeded: 1, failed: 0, last_finished_at_ms: Some(99) });
    assert_eq!(money, (500, 100));
    assert_eq!(escrowed, 400);
    assert_eq!(unfinished, vec![7]);
}

#[tokio::test]
async fn a_job_for_a_missing_module_is_refused_by_the_database() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let owner = user(&store, "owner", 1_000).await;
    let error = store.insert_job(job(&"d".repeat(64), owner, 1, Some(10))).await.unwrap_err();
    assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
    assert_eq!(balance(&store, ledger::user(owner)).await, 1_000, "nothing was escrowed");
}

#[test]
fn the_database_uses_write_ahead_logging() {
    let directory = tempfile::tempdir().unwrap();
    drop(Store::open(directory.path()).unwrap());
    let connection = rusqlite::Connection::open(directory.path().join(DATABASE_FILE)).unwrap();
    let mode: String = connection.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_replica_costs_its_work_units_rounded_up() {
    let pricing = Pricing { millicredits_per_million_work_units: 1, volunteer_share_percent: 90 };
    assert_eq!(pricing.cost(0), 0);
    assert_eq!(pricing.cost(1), 1, "no work is free");
    assert_eq!(pricing.cost(1_000_000), 1);
    assert_eq!(pricing.cost(1_000_001), 2);
    assert_eq!(pricing.cost(u64::MAX), 18_446_744_073_710);
}

mod conservation;

#[tokio::test]
async fn opening_the_store_removes_blob_files_that_no_upload_recorded() {
    let directory = tempfile::tempdir().unwrap();
    let (recorded, unrecorded) = ("b".repeat(64), "c".repeat(64));
    {
        let store = Store::open(directory.path()).unwrap();
        let owner = user(&store, "owner", 0).await;
        let files = directory.path().join("blobs");
        std::fs::write(files.join(&recorded), b"kept").unwrap();
        let name = recorded.clone();
        store.transact(move |connection| blobs::record_upload(connection, owner, &name, 4, 1)).await.unwrap();
        // A crash between the rename into place and the commit of its row leaves this.
        std::fs::write(files.join(&unrecorded), b"orphan").unwrap();
        std::fs::write(files.join("staging/1-1"), b"half an upload").unwrap();
    }
    let store = Store::open(directory.path()).unwrap();
    assert!(store.blob_files().path(&recorded).exists(), "a recorded blob stays");
    assert!(!store.blob_files().path(&unrecorded).exists(), "a file without a row is removed");
    assert_eq!(std::fs::read_dir(directory.path().join("blobs/staging")).unwrap().count(), 0);
}

#[tokio::test]
async fn results_stored_before_completion_order_was_kept_get_it_from_their_times() {
    let directory = tempfile::tempdir().unwrap();
    {
        let connection = rusqlite::Connection::open(directory.path().join(DATABASE_FILE)).unwrap();
        schema::configure(&connection).unwrap();
        schema::migrate_to(&connection, 4).unwrap();
        connection
            .execute_batch(
                "INSERT INTO users (id, username, password_hash, created_at_ms) VALUES (1, 'old', 'h', 1);
                 INSERT INTO modules VALUES ('m', 1, '[]', x'00', 'mi', 1, x'00', 1);
                 INSERT INTO jobs (id, module, program_name, env, limits, max_retries, chunk_count, created_at_ms,
                                   owner_id, budget, replicas, quorum, results_stored, results_succeeded)
                     VALUES (7, 'm', 'p.wasm', '{}', '{}', 2, 3, 1, 1, 500, 2, 2, 2, 2);",
            )
            .unwrap();
        let status = encoding::status_to_column(&RunStatus::Exited { code: 0 }).unwrap();
        let output = encoding::output_to_column(&Output::default()).unwrap();
        for (chunk, finished_at_ms) in [(0, 99), (2, 50)] {
            connection
                .execute(
                    "INSERT INTO results (job_id, idx, succeeded, status, attempts, work_units, output, finished_at_ms)
                     VALUES (7, ?1, 1, ?2, 2, 10, ?3, ?4)",
                    rusqlite::params![chunk, status, output, finished_at_ms],
                )
                .unwrap();
        }
    }
    let store = Store::open(directory.path()).unwrap();
    let completed = store.read(|connection| queries::results_completed_between(connection, 7, 0, 10)).await.unwrap();
    let order: Vec<(u64, u32)> = completed.iter().map(|(seq, result)| (*seq, result.index)).collect();
    assert_eq!(order, [(1, 2), (2, 0)], "chunk 2 finished first");
    // New results continue the order.
    store_result(&store, result(7, 1, RunStatus::Exited { code: 0 }, vec![])).unwrap();
    let span = store.read(|connection| queries::completed_span(connection, 7, 2, 10, 1 << 20)).await.unwrap();
    assert_eq!(span.map(|(last, _)| last), Some(3));
}

/// The query plan of `sql`, one line per step.
fn query_plan(connection: &rusqlite::Connection, sql: &str) -> String {
    let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let parameters = vec![rusqlite::types::Null; statement.parameter_count()];
    let steps = statement.query_map(rusqlite::params_from_iter(parameters), |row| row.get::<_, String>(3)).unwrap();
    steps.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn the_web_apps_pages_are_read_by_index_not_by_scanning_history() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let plans = store
        .read(|connection| {
            Ok([
                ("jobs", query_plan(connection, &queries::list_jobs_sql()), "jobs_by_owner_without_rounds"),
                ("ledger", query_plan(connection, accounts::ENTRIES_SQL), "ledger_by_account"),
                ("programs", query_plan(connection, queries::UPLOADED_PROGRAMS_SQL), "module_uploads_by_user"),
                ("volunteering", query_plan(connection, accounts::VOLUNTEERING_SQL), "volunteers_by_user"),
                ("leaderboard", query_plan(connection, accounts::LEADERBOARD_SQL), "reputation_by_work_units"),
            ])
        })
        .await
        .unwrap();
    for (page, plan, index) in plans {
        assert!(plan.contains(index), "{page} does not use {index}:\n{plan}");
        assert!(!plan.contains("ORDER BY"), "{page} sorts its rows instead of reading them in order:\n{plan}");
    }
}

#[tokio::test]
async fn the_ad_view_path_and_campaign_pages_are_read_by_index_not_by_scanning_history() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let plans = store
        .read(|connection| {
            Ok([
                ("open views", query_plan(connection, ads::OPEN_VIEWS_SQL), "ad_views_open_by_viewer"),
                ("a view by token", query_plan(connection, ads::VIEW_BY_TOKEN_SQL), "sqlite_autoindex_ad_views_1"),
                ("the day's views", query_plan(connection, ads::COMPLETED_ON_SQL), "PRIMARY KEY"),
                ("campaigns to show", query_plan(connection, ads::CANDIDATES_SQL), "campaigns_running"),
                ("a sponsor's campaigns", query_plan(connection, &ads::campaigns_of_sql()), "campaigns_by_sponsor"),
                ("pending campaigns", query_plan(connection, &ads::pending_sql()), "campaigns_pending"),
            ])
        })
        .await
        .unwrap();
    for (query, plan, index) in plans {
        assert!(plan.contains(index), "{query} does not use {index}:\n{plan}");
        assert!(!plan.contains("ORDER BY"), "{query} sorts its rows instead of reading them in order:\n{plan}");
        // Reading the running campaigns' partial index in order, up to its LIMIT, is what it is for.
        let scans_a_table = plan.lines().any(|step| step.starts_with("SCAN") && !step.contains("INDEX"));
        assert!(!scans_a_table, "{query} scans a table:\n{plan}");
    }
}

#[tokio::test]
async fn a_claimed_identitys_ad_rewards_and_daily_cap_are_its_accounts() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let sponsor = user(&store, "sponsor", 10_000).await;
    let owner = user(&store, "owner", 0).await;
    store.transact(|connection| writes::register_volunteer(connection, "anon", "hash", 1)).await.unwrap();
    store.transact(move |connection| writes::claim_volunteer(connection, "anon", owner, 1)).await.unwrap();
    let new = ads::NewCampaign {
        sponsor,
        name: "c".to_owned(),
        source: "image".to_owned(),
        mime: "image/png".to_owned(),
        upload: Some(bytes::Bytes::from_static(b"png")),
        media_url: None,
        vast_duration_ms: None,
        impression_urls: vec![],
        vast: None,
        budget: 5_000,
        reward: 1_000,
        min_view_ms: 1_000,
        daily_cap_per_viewer: 1,
        created_at_ms: 1,
        max_open_per_sponsor: 4,
    };
    let admitted = store.transact(move |connection| ads::insert_campaign(connection, &new)).await.unwrap();
    let ads::CampaignAdmission::Accepted { id } = admitted else { panic!("{admitted:?}") };
    store.transact(move |connection| ads::approve(connection, id, 1)).await.unwrap();
    let view = |hash: &str, viewer: &str, now_ms: u64| ads::NewView {
        token_hash: hash.to_owned(),
        viewer: viewer.to_owned(),
        campaign: Some(id),
        now_ms,
        ttl_ms: 60_000,
        max_open_per_viewer: 4,
    };
    let (anonymous, own) = (view("a", "volunteer:anon", 10), view("b", &ledger::user(owner), 10));
    for new in [anonymous, own] {
        let started = store.transact(move |connection| ads::start_view(connection, &new)).await.unwrap();
        assert!(matches!(started, ads::ViewStart::Started { .. }), "{started:?}");
    }
    let paid = store.transact(|connection| ads::complete_view(connection, "a", "volunteer:anon", 2_000)).await.unwrap();
    assert_eq!(
        paid,
        ads::Completion::Credited { campaign: id, amount: 1_000, account: ledger::user(owner), exhausted: false }
    );
    // The account's own view of the same campaign is over the cap the identity's view used.
    let capped = store.transact(move |connection| ads::complete_view(connection, "b", &ledger::user(owner), 2_000));
    assert_eq!(capped.await.unwrap(), ads::Completion::Refused(ads::ViewRefusal::OverCap { campaign: id, cap: 1 }));
    let balances = store
        .read(move |connection| {
            Ok((ledger::balance(connection, &ledger::user(owner))?, ledger::balance(connection, "volunteer:anon")?))
        })
        .await
        .unwrap();
    assert_eq!(balances, (1_000, 0));
}

#[tokio::test]
async fn a_result_keeps_its_volunteers_work_and_earnings_and_its_days_totals() {
    let (_directory, store, owner, id) = one_job(1_000_000, 3, 100_000).await;
    store.transact(|connection| writes::register_volunteer(connection, "anon", "hash", 1)).await.unwrap();
    let (me, anonymous) = (ledger::user(owner), ledger::volunteer("anon"));
    let day = 19_675;
    let at = day * writes::MS_PER_DAY + 5;
    let mut first = result(id, 0, RunStatus::Exited { code: 0 }, vec![pay(&me, 1, 2_000), pay(&anonymous, 2, 2_000)]);
    first.finished_at_ms = at;
    store_result(&store, first).unwrap();
    let mut second = result(id, 1, RunStatus::Exited { code: 1 }, vec![pay(&anonymous, 3, 3_000)]);
    second.finished_at_ms = at + writes::MS_PER_DAY;
    store_result(&store, second).unwrap();
    // An identity the owner claims counts toward the owner's volunteering, its earnings included.
    store.transact(move |connection| writes::claim_volunteer(connection, "anon", owner, 9)).await.unwrap();
    let (volunteering, days) = store
        .read(move |connection| {
            Ok((accounts::volunteering(connection, owner)?, accounts::daily_totals(connection, day - 1, day + 5)?))
        })
        .await
        .unwrap();
    let share = |work_units: u64| (PRICING.cost(work_units) * 90 + 99) / 100;
    assert_eq!(volunteering.work_units, 7_000);
    assert_eq!(volunteering.validated, 3);
    assert_eq!(volunteering.earned, 2 * share(2_000) + share(3_000));
    assert_eq!(volunteering.consecutive_valid, 1, "the owner's own key's run");
    let days: Vec<(u64, u64, u64)> = days.iter().map(|day| (day.day, day.chunks, day.work_units)).collect();
    assert_eq!(days, [(day, 1, 4_000), (day + 1, 1, 3_000)]);
    let leaders = store.read(|connection| accounts::leaderboard(connection, 10)).await.unwrap();
    let leaders: Vec<(&str, Option<&str>, u64)> = leaders
        .iter()
        .map(|leader| (leader.volunteer.as_str(), leader.username.as_deref(), leader.work_units))
        .collect();
    assert_eq!(leaders, [("volunteer:anon", Some("owner"), 5_000), ("user:1", Some("owner"), 2_000)]);
}

#[tokio::test]
async fn a_database_from_before_the_web_app_gets_its_volunteers_work_and_days_from_history() {
    let directory = tempfile::tempdir().unwrap();
    {
        // Schema version 5: a paid result two days ago, a program uploaded before names were kept.
        let connection = rusqlite::Connection::open(directory.path().join(DATABASE_FILE)).unwrap();
        schema::configure(&connection).unwrap();
        schema::migrate_to(&connection, 5).unwrap();
        connection
            .execute_batch(
                "INSERT INTO users (id, username, password_hash, created_at_ms) VALUES (1, 'old', 'h', 1);
                 INSERT INTO modules VALUES ('m', 1, '[]', x'00', 'mi', 1, x'00', 1234);
                 INSERT INTO module_uploads (sha256, user_id) VALUES ('m', 1);
                 INSERT INTO volunteers (id, secret_hash, user_id, created_at_ms) VALUES ('v', 'h', NULL, 1);
                 INSERT INTO reputation VALUES ('volunteer:v', 1, 1, 0);
                 INSERT INTO jobs (id, module, program_name, env, limits, max_retries, chunk_count, created_at_ms,
                                   owner_id, budget, replicas, quorum, results_stored, results_succeeded, spent)
                     VALUES (7, 'm', 'p.wasm', '{}', '{}', 2, 2, 1, 1, 500, 2, 2, 2, 2, 30);
                 INSERT INTO results VALUES (7, 0, 1, '{}', 2, 10, x'80', 172800005, 1);
                 INSERT INTO results VALUES (7, 1, 1, '{}', 2, 20, x'80', 259200005, 2);
                 INSERT INTO ledger (txn, account, amount, kind, job_id, chunk, created_at_ms) VALUES
                     (1, 'mint', -1000, 'grant', NULL, NULL, 1), (1, 'user:1', 1000, 'grant', NULL, NULL, 1),
                     (2, 'user:1', -500, 'escrow', 7, NULL, 2), (2, 'escrow:job:7', 500, 'escrow', 7, NULL, 2),
                     (3, 'escrow:job:7', -10, 'payment', 7, 0, 172800005),
                     (3, 'volunteer:v', 9, 'payment', 7, 0, 172800005), (3, 'burn', 1, 'payment', 7, 0, 172800005),
                     (4, 'escrow:job:7', -20, 'payment', 7, 1, 259200005),
                     (4, 'volunteer:v', 9, 'payment', 7, 1, 259200005),
                     (4, 'user:1', 9, 'payment', 7, 1, 259200005), (4, 'burn', 2, 'payment', 7, 1, 259200005);",
            )
            .unwrap();
    }
    let store = Store::open(directory.path()).unwrap();
    let (old, anonymous, days, programs) = store
        .read(|connection| {
            let reputation = |key: &str| -> Result<(i64, i64, i64), StoreError> {
                Ok(connection.query_row(
                    "SELECT validated, work_units, earned FROM reputation WHERE volunteer = ?1",
                    [key],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?)
            };
            Ok((
                reputation("user:1")?,
                reputation("volunteer:v")?,
                accounts::daily_totals(connection, 0, 10)?,
                queries::uploaded_programs(connection, 1, 10)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(anonymous, (1, 30, 18), "its reputation row keeps its counts and gains its work and earnings");
    assert_eq!(old, (0, 20, 9), "a key paid before it had a reputation row gets one");
    let days: Vec<(u64, u64, u64)> = days.iter().map(|day| (day.day, day.chunks, day.work_units)).collect();
    assert_eq!(days, [(2, 1, 10), (3, 1, 40)]);
    assert_eq!(programs[0].uploaded_at_ms, 1234, "an upload from before is dated by its module");
    assert_eq!(programs[0].name, None);
}

#[tokio::test]
async fn a_result_records_each_validation_once_whether_or_not_its_volunteer_is_paid() {
    let (_directory, store, _, id) = one_job(1_000_000, 2, 100_000).await;
    let reputation = |volunteer: &'static str| {
        let volunteer = volunteer.to_owned();
        store.read(move |connection| {
            Ok(connection.query_row(
                "SELECT consecutive_valid, validated, invalid, work_units, earned FROM reputation WHERE volunteer = ?1",
                [volunteer],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get::<_, i64>(4)? > 0)),
            )?)
        })
    };

    // "a" and "b" agree and are paid; "c" was contradicted and is not.
    let mut first =
        result(id, 0, RunStatus::Exited { code: 0 }, vec![pay("volunteer:a", 1, 10), pay("volunteer:b", 2, 20)]);
    first.reputation = vec![
        ReputationChange { volunteer: "volunteer:c".into(), valid: false, run: 0 },
        ReputationChange { volunteer: "volunteer:b".into(), valid: true, run: 4 },
        ReputationChange { volunteer: "volunteer:a".into(), valid: true, run: 7 },
    ];
    store_result(&store, first).unwrap();
    // Then "a" is paid again, and its run moves on.
    let mut second = result(id, 1, RunStatus::Exited { code: 0 }, vec![pay("volunteer:a", 3, 5)]);
    second.reputation = vec![ReputationChange { volunteer: "volunteer:a".into(), valid: true, run: 8 }];
    store_result(&store, second).unwrap();

    let rows: (u32, u32, u32, u64, bool) = reputation("volunteer:a").await.unwrap();
    assert_eq!(rows, (8, 2, 0, 15, true));
    let rows: (u32, u32, u32, u64, bool) = reputation("volunteer:b").await.unwrap();
    assert_eq!(rows, (4, 1, 0, 20, true));
    let rows: (u32, u32, u32, u64, bool) = reputation("volunteer:c").await.unwrap();
    assert_eq!(rows, (0, 0, 1, 0, false));
}

/// Two jobs of one owner: "a" (3 chunks, budget enough) and "b" (4 chunks, a budget that runs out).
async fn two_jobs(directory: &std::path::Path) -> (Store, u64, u64) {
    let store = Store::open(directory).unwrap();
    let owner = user(&store, "owner", 1_000_000).await;
    let sha = ONE_JOB_PROGRAM.repeat(64);
    store.put_module(module(&sha, owner)).await.unwrap();
    let a = accepted(&store, job(&sha, owner, 3, Some(50_000))).await;
    let b = accepted(&store, job(&sha, owner, 4, Some(2_500))).await;
    (store, a, b)
}

/// Results of both jobs, interleaved: volunteers paid more than once, a contradicted volunteer, a budget
/// running out, a job completing (and refunding) mid-way, and a day boundary.
fn interleaved_results(a: u64, b: u64) -> Vec<NewResult> {
    let ok = RunStatus::Exited { code: 0 };
    let mut results = vec![
        result(a, 0, ok.clone(), vec![pay("volunteer:v1", 1, 1_000_000), pay("volunteer:v2", 2, 1_000_000)]),
        result(b, 0, ok.clone(), vec![pay("volunteer:v1", 3, 1_000_000)]),
        result(a, 1, RunStatus::Exited { code: 1 }, vec![pay("volunteer:v2", 4, 500_000)]),
        result(b, 1, ok.clone(), vec![pay("volunteer:v3", 5, 1_000_000), pay("volunteer:v1", 6, 1_000_000)]),
        result(a, 2, ok.clone(), vec![pay("volunteer:v1", 7, 2_000_000)]),
        result(b, 2, ok.clone(), vec![pay("volunteer:v2", 8, 1_000_000)]),
    ];
    results[1].reputation.push(ReputationChange { volunteer: "volunteer:v4".into(), valid: false, run: 0 });
    results[3].reputation[0].run = 9;
    results[4].finished_at_ms = writes::MS_PER_DAY + 5;
    results
}

/// Every row the results path writes, as text, table by table.
fn rows_written(directory: &std::path::Path) -> Vec<Vec<String>> {
    let connection = rusqlite::Connection::open(directory.join(DATABASE_FILE)).unwrap();
    [
        "SELECT * FROM ledger ORDER BY id",
        "SELECT * FROM ledger_accounts ORDER BY account",
        "SELECT * FROM jobs ORDER BY id",
        "SELECT * FROM results ORDER BY job_id, idx",
        "SELECT * FROM reputation ORDER BY volunteer",
        "SELECT * FROM daily_totals ORDER BY day",
    ]
    .iter()
    .map(|sql| {
        let mut statement = connection.prepare(sql).unwrap();
        let columns = statement.column_count();
        statement
            .query_map([], |row| {
                Ok((0..columns).map(|index| format!("{:?}", row.get_ref(index).unwrap())).collect::<Vec<_>>().join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    })
    .collect()
}

#[tokio::test]
async fn results_stored_together_write_the_rows_they_write_one_by_one() {
    let (one_by_one, together) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, a, b) = two_jobs(one_by_one.path()).await;
    let mut expected = Vec::new();
    for result in interleaved_results(a, b) {
        expected.push(store.transact(move |connection| writes::insert_result(connection, &result)).await.unwrap());
    }
    drop(store);
    let (store, a, b) = two_jobs(together.path()).await;
    let results = interleaved_results(a, b);
    let settled = store
        .transact(move |connection| writes::insert_results(connection, &results.iter().collect::<Vec<_>>()))
        .await
        .unwrap();
    assert_eq!(settled, expected);
    // The budget of "b" ran out on the way, and "a" completed and refunded its escrow.
    assert!(expected.iter().any(|settled| settled.budget_spent), "{expected:?}");
    assert_eq!(balance(&store, ledger::escrow(a)).await, 0);
    assert!(store.read(ledger::audit).await.unwrap().is_empty());
    drop(store);
    assert_eq!(rows_written(together.path()), rows_written(one_by_one.path()));
}

#[tokio::test]
async fn results_queued_together_share_a_write_and_keep_their_order() {
    let (reference, gathered) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // What the writes below do one at a time, in the order they are queued: results, a cancel of "b",
    // more results (those of "b" now find its escrow empty; the last of "a" completes it).
    let (store, a, b) = two_jobs(reference.path()).await;
    let mut results = interleaved_results(a, b).into_iter();
    let mut expected = Vec::new();
    for result in results.by_ref().take(3) {
        expected.push(store_result(&store, result).unwrap());
    }
    store.cancel_job(b, "stopped".into(), 150).await.unwrap();
    for result in results {
        expected.push(store_result(&store, result).unwrap());
    }
    drop(store);

    let (store, a, b) = two_jobs(gathered.path()).await;
    // Hold the writer inside a write, so that everything below waits in its queue.
    let (entered, writer_held) = std_mpsc::channel::<()>();
    let (release, held) = std_mpsc::channel::<()>();
    let held = Mutex::new(Some((entered, held)));
    store.transact_then(
        move |_| {
            if let Some((entered, held)) = held.lock().unwrap().take() {
                entered.send(()).unwrap();
                let _ = held.recv();
            }
            Ok(())
        },
        |_: Result<(), StoreError>| {},
    );
    writer_held.recv().unwrap();
    let writes_before = store.gathering.writes.load(std::sync::atomic::Ordering::Relaxed);
    let (done, answers) = std_mpsc::channel();
    let queue = |result: NewResult, index: usize| {
        let done = done.clone();
        store.insert_result(result, move |settled| done.send((index, settled.unwrap())).unwrap());
    };
    let mut results = interleaved_results(a, b).into_iter().enumerate();
    for (index, result) in results.by_ref().take(3) {
        queue(result, index);
    }
    let (cancelled, cancel) = std_mpsc::channel();
    store.transact_then(
        move |connection| writes::cancel_job(connection, b, "stopped", 150),
        move |outcome| cancelled.send(outcome.is_ok()).unwrap(),
    );
    for (index, result) in results {
        queue(result, index);
    }
    // Three results in one write, the cancel, three more in another.
    let writes = store.gathering.writes.load(std::sync::atomic::Ordering::Relaxed) - writes_before;
    assert_eq!(writes, 2);
    release.send(()).unwrap();
    let mut answered: Vec<_> = (0..6).map(|_| answers.recv().unwrap()).collect();
    answered.sort_by_key(|(index, _)| *index);
    assert!(cancel.recv().unwrap());
    assert_eq!(answered.into_iter().map(|(_, settled)| settled).collect::<Vec<_>>(), expected);
    assert!(store.read(ledger::audit).await.unwrap().is_empty());
    drop(store);
    assert_eq!(rows_written(gathered.path()), rows_written(reference.path()));
}

/// A session of two shards with its first two rounds admitted (round 2 pipelined behind round 1).
async fn session_with_two_rounds(directory: &std::path::Path) -> (Store, u64, [u64; 2]) {
    let store = Store::open(directory).unwrap();
    let owner = user(&store, "owner", 1_000_000).await;
    let sha = ONE_JOB_PROGRAM.repeat(64);
    store.put_module(module(&sha, owner)).await.unwrap();
    let session = sessions::NewSession {
        owner,
        name: None,
        module: sha.clone(),
        program_name: "p.wasm".to_owned(),
        env: BTreeMap::new(),
        limits: limits(),
        max_retries: 2,
        replicas: 1,
        quorum: 1,
        shards: vec![ChunkRequest::default(); 2].into(),
        budget: 100_000,
        backups: true,
        created_at_ms: 1,
    };
    let session = match store.transact(move |connection| sessions::insert(connection, &session)).await.unwrap() {
        sessions::SessionAdmission::Accepted { id } => id,
        refused => panic!("the session was refused: {refused:?}"),
    };
    let mut rounds = [0; 2];
    for (round, id) in (1..).zip(&mut rounds) {
        let mut request = job(&sha, owner, 2, Some(20_000));
        request.round = Some(sessions::Round { session, round, broadcast: Bytes::from("weights") });
        *id = accepted(&store, request).await;
    }
    (store, session, rounds)
}

#[tokio::test]
async fn rounds_completing_inside_one_write_refund_their_session_as_one_by_one() {
    let (one_by_one, together) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let results = |rounds: [u64; 2]| -> Vec<NewResult> {
        rounds
            .iter()
            .flat_map(|round| {
                (0..2).map(|shard| {
                    result(
                        *round,
                        shard,
                        RunStatus::Exited { code: 0 },
                        vec![pay("user:1", 10 + shard as u64, 1_000_000)],
                    )
                })
            })
            .collect()
    };
    let (store, session, rounds) = session_with_two_rounds(one_by_one.path()).await;
    let mut expected = Vec::new();
    for result in results(rounds) {
        expected.push(store.transact(move |connection| writes::insert_result(connection, &result)).await.unwrap());
    }
    let escrow_one_by_one = balance(&store, sessions::escrow(session)).await;
    drop(store);
    let (store, session, rounds) = session_with_two_rounds(together.path()).await;
    let all = results(rounds);
    let settled = store
        .transact(move |connection| writes::insert_results(connection, &all.iter().collect::<Vec<_>>()))
        .await
        .unwrap();
    assert_eq!(settled, expected);
    // Both rounds completed and gave their rest back to the session, which holds it until it closes.
    for round in rounds {
        assert_eq!(balance(&store, ledger::escrow(round)).await, 0);
    }
    assert_eq!(balance(&store, sessions::escrow(session)).await, escrow_one_by_one);
    assert_eq!(escrow_one_by_one, 100_000 - 4 * 1_000);
    assert!(store.read(ledger::audit).await.unwrap().is_empty());
    drop(store);
    assert_eq!(rows_written(together.path()), rows_written(one_by_one.path()));
}
