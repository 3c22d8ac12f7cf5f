//! Sessions end to end, through `distributivecom train` (the SDK's sessions, the `gradient` program and
//! the bundled digits): the weights trained over volunteers are those of a local run bit for bit, shards
//! travel once per worker whatever the number of rounds, and a volunteer or the coordinator killed
//! mid-session changes nothing, pays no replica twice and loses no credit.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Starts `distributivecom train` against `server` with these arguments, printing JSON at the end.
fn start_training(server: &TestServer, args: &[&str]) -> Child {
    start_training_as(server, &server.admin_token, args)
}

fn start_training_as(server: &TestServer, token: &str, args: &[&str]) -> Child {
    Command::new(binary())
        .args(["train", "--server", &server.url, "--token", token, "--json"])
        .args(["--program", program_path("gradient").to_str().expect("UTF-8 paths")])
        .args(args)
        .env_remove("DISTRIBUTIVECOM_TOKEN")
        .env_remove("DISTRIBUTIVECOM_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the training starts")
}

/// Waits (at most three minutes) for the training to end and returns its JSON report.
fn report(training: Child) -> serde_json::Value {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(training.wait_with_output());
    });
    let output = finished.recv_timeout(Duration::from_secs(180)).expect("the training ends").expect("it ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the training failed ({}): {stdout}", output.status);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

/// The bytes of the training set's shards, as `train` uploads them.
fn shard_bytes(shards: usize) -> u64 {
    use distributivecom_examples::train;
    let samples =
        train::parse_csv(&std::fs::read_to_string(workspace_root().join("examples/data/digits.csv")).unwrap()).unwrap();
    train::split(&samples, shards).0.iter().map(|shard| train::encode_shard(shard).len() as u64).sum()
}

#[tokio::test]
async fn training_over_volunteers_gives_the_weights_of_a_local_run_and_each_worker_fetches_the_shards_once() {
    let dir = tempfile::tempdir().unwrap();
    // Every shard on both volunteers in every round (no adaptive trust), so the counts below are exact.
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    let _workers = [server.worker(2), server.worker(2)];
    let report = report(start_training(&server, &["--rounds", "6", "--shards", "4"]));
    assert_eq!(report["identical_to_local"], true, "{report}");
    assert_eq!(report["accuracy"], report["local_accuracy"]);
    assert_eq!(report["final_loss"], report["local_final_loss"]);
    assert_eq!(report["rounds"], 6);
    // Two replicas of every shard in every round, one on each worker: each worker fetched each shard
    // once, in the first round, and the later five rounds sent only the weights.
    let client = server.client();
    assert_eq!(client.stats().await.unwrap().blob_bytes_served, 2 * shard_bytes(4));
    let session = client.session_status(report["session"].as_u64().unwrap()).await.unwrap();
    assert_eq!((session.state.as_str(), session.next_round, session.escrowed_millicredits), ("closed", 7, 0));
    let connection = read_only(&server.database());
    let payments: i64 = connection
        .query_row("SELECT COUNT(*) FROM ledger WHERE kind = 'payment' AND account LIKE 'escrow:job:%'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(payments, 6 * 4 * 2, "each validated replica paid once");
    assert_ledger_conserved(&server.database());
}

#[tokio::test]
async fn a_volunteer_and_then_the_coordinator_killed_mid_session_change_nothing_and_pay_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = TestServer::start_on(port, &data, &[]);
    // Slow workers, so that rounds take long enough to be interrupted.
    let delay = ["--delay-ms", "40"];
    let _steady = [server.worker_with(1, &delay), server.worker_with(1, &delay)];
    let doomed = server.worker_with(1, &delay);
    let mut training = start_training(&server, &["--rounds", "30", "--shards", "4"]);
    let client = server.client();
    let session_at = |round: u64| {
        let client = client.clone();
        async move {
            let status = client.session_status(1).await;
            status.is_ok_and(|status| status.next_round > round)
        }
    };
    eventually("round 3 to start", Duration::from_secs(60), || session_at(3)).await;
    doomed.kill();
    eventually("round 7 to start", Duration::from_secs(60), || session_at(7)).await;
    assert!(training.try_wait().unwrap().is_none(), "the training is still under way when the server dies");
    server.process.kill();
    server = TestServer::start_on(port, &data, &[]);
    let report = report(training);
    assert_eq!(report["identical_to_local"], true, "{report}");
    assert_eq!(report["rounds"], 30);

    let connection = read_only(&server.database());
    let paid_twice: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM (SELECT replica FROM ledger WHERE kind = 'payment' AND amount < 0
             GROUP BY replica HAVING COUNT(*) > 1)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(paid_twice, 0, "no replica is paid twice");
    let rounds: i64 = connection
        .query_row("SELECT COUNT(DISTINCT round) FROM jobs WHERE session_id = 1", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rounds, 30, "each round ran as one job, the interrupted one included");
    assert_ledger_conserved(&server.database());
}

#[tokio::test]
async fn a_slow_volunteer_is_overtaken_by_backups_and_its_rounds_do_not_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    // Two quick volunteers and one that takes a minute over each replica: if a round waited for it, the
    // training would take minutes and the slow one would be paid.
    let _quick = [server.worker(1), server.worker(1)];
    let _slow = server.worker_with(1, &["--delay-ms", "60000"]);
    let report = report(start_training(&server, &["--rounds", "3", "--shards", "4"]));
    assert_eq!(report["identical_to_local"], true, "{report}");
    let stats = server.client().stats().await.unwrap();
    assert!(stats.backup_replicas > 0, "{stats:?}");
    let connection = read_only(&server.database());
    let paid = volunteers_paid(&connection);
    assert_eq!(paid, 2, "only the two quick volunteers ran replicas that counted");
    assert_ledger_conserved(&server.database());
}

#[tokio::test(flavor = "multi_thread")]
async fn training_on_a_browser_tab_and_a_native_worker_gives_the_weights_of_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    // Two volunteers, one a Chromium tab: every shard of every round runs in both, and a result counts
    // only if the tab's bytes equal the native worker's.
    let (_browser, _tabs) = crate::browser::volunteering_tabs(&server, 1).await;
    let _native = server.worker(1);
    crate::browser::wait_for_workers(&server.client(), 2).await;
    let report = report(start_training(&server, &["--rounds", "4", "--shards", "3"]));
    assert_eq!(report["identical_to_local"], true, "{report}");
    assert_eq!(report["accuracy"], report["local_accuracy"]);
    let connection = read_only(&server.database());
    let paid = volunteers_paid(&connection);
    assert_eq!(paid, 2, "the tab and the native worker both ran every round");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_page_shows_a_training_session_round_by_round_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _workers = [server.worker(1), server.worker(1)];
    let browser = distributivecom_cli::chromium::Chromium::start().await.unwrap();
    let tab = browser.open_donate_page(&server.url).await.unwrap();
    // A consumer signs up on the web and makes a token for the command line.
    browser.visit(&tab, &format!("{}/signup", server.url), "username").await.unwrap();
    browser.type_into(&tab, "username", "erin").await.unwrap();
    browser.type_into(&tab, "password", "erin's long passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    browser.wait_for(&tab, "account-username").await.unwrap();
    browser.type_into(&tab, "token-name", "train").await.unwrap();
    browser.click(&tab, "create-token").await.unwrap();
    eventually("the new token to show", Duration::from_secs(10), || async {
        browser.text(&tab, "new-token").await.is_ok_and(|text| text.starts_with("dc_"))
    })
    .await;
    let token = browser.text(&tab, "new-token").await.unwrap();

    let training = start_training_as(&server, &token, &["--rounds", "5", "--shards", "3"]);
    browser.visit(&tab, &format!("{}/sessions/1", server.url), "session-state").await.unwrap();
    let report = report(training);
    assert_eq!(report["identical_to_local"], true, "{report}");
    // The page follows the session to its end without a reload.
    eventually("the page to show the closed session", Duration::from_secs(30), || async {
        browser.text(&tab, "session-state").await.is_ok_and(|text| text == "closed")
            && browser.text(&tab, "rounds-done").await.is_ok_and(|text| text == "5")
    })
    .await;
    let loss = report["final_loss"].as_f64().unwrap();
    assert_eq!(browser.text(&tab, "latest-metric").await.unwrap(), format!("{loss:.4}"));
    assert_eq!(browser.text(&tab, "session-shards").await.unwrap(), "3");
    browser.wait_for(&tab, "metric-chart").await.unwrap();
    browser.wait_for(&tab, "time-chart").await.unwrap();
    browser.screenshot(&tab, &workspace_root().join("docs/screenshots/session-live.png")).await.unwrap();
    // Another number, or someone else's session, is simply not found.
    browser.visit(&tab, &format!("{}/sessions/99", server.url), "not-found").await.unwrap();
}

/// How many distinct anonymous volunteers the ledger paid.
fn volunteers_paid(connection: &rusqlite::Connection) -> i64 {
    connection
        .query_row(
            "SELECT COUNT(DISTINCT account) FROM ledger WHERE kind = 'payment' AND amount > 0 AND account LIKE 'volunteer:%'",
            [],
            |row| row.get(0),
        )
        .unwrap()
}
