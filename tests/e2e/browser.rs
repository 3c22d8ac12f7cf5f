//! Browser volunteers in real headless Chromium (Debian's `chromium` driven through `chromedriver` with
//! fantoccini): tabs on the donate page press Start and run jobs with no native worker at all, results
//! are byte-identical to native runs, closed tabs lose nothing, and loops and memory hogs are reported
//! while the tab keeps working.

use std::process::Command;
use std::time::Duration;

use distributivecom_cli::chromium::Chromium;
use distributivecom_client::Client as Api;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{
    ChunkRequest, JobRequest, JobState, LimitsRequest, ReplicationRequest, VolunteerCredential,
};
use distributivecom_protocol::worker::RunStatus;
use fantoccini::wd::WindowHandle;

use crate::support::*;

fn screenshot_path(name: &str) -> std::path::PathBuf {
    workspace_root().join("docs/screenshots").join(name)
}

/// A Chromium with `count` tabs on the donate page, each volunteering one thread at full speed as its
/// own anonymous volunteer (as `count` visitors' browsers would), all connected to the server.
pub(crate) async fn volunteering_tabs(server: &TestServer, count: u32) -> (Chromium, Vec<WindowHandle>) {
    let mut identities = Vec::new();
    for _ in 0..count {
        identities.push(server.anonymous_client().register_volunteer().await.unwrap());
    }
    start_tabs(server, &identities).await
}

/// Tabs volunteering as these identities.
async fn start_tabs(server: &TestServer, identities: &[VolunteerCredential]) -> (Chromium, Vec<WindowHandle>) {
    let browser = Chromium::start().await.unwrap();
    let mut tabs = Vec::new();
    for identity in identities {
        let tab = browser.open_donate_page(&server.url).await.unwrap();
        browser.start_volunteering_as(&tab, identity, 1, 100).await.unwrap();
        tabs.push(tab);
    }
    wait_for_workers(&server.client(), identities.len() as u32).await;
    (browser, tabs)
}

/// Every chunk runs on two volunteers (none is trusted to run one alone), so the counts are exact.
const ALWAYS_REPLICATE: &[&str] = &["--trust-after", "1000000"];

/// One replica, run only by the owner's own volunteers.
fn owner_only() -> Option<ReplicationRequest> {
    Some(ReplicationRequest { replicas: 1, quorum: 1 })
}

fn chunks_done(text: String) -> u64 {
    text.replace(',', "").parse().expect("the page shows a number")
}

/// Waits until `count` workers (tabs) are connected to the server.
pub(crate) async fn wait_for_workers(api: &Api, count: u32) {
    eventually("the tabs to connect", Duration::from_secs(60), || async {
        api.stats().await.is_ok_and(|stats| stats.workers == count)
    })
    .await;
}

fn file_chunk(args: &[&str], stdin: &[u8], files: &[(&str, &[u8])]) -> ChunkRequest {
    ChunkRequest {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: Bytes(stdin.to_vec()),
        files: files.iter().map(|(name, contents)| (name.to_string(), Bytes(contents.to_vec()).into())).collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_tabs_alone_finish_jobs_with_results_identical_to_native_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let api = server.client();
    let browser = Chromium::start().await.unwrap();
    let first = browser.open_donate_page(&server.url).await.unwrap();
    browser.screenshot(&first, &screenshot_path("donate-idle.png")).await.unwrap();
    assert_eq!(browser.text(&first, "connection").await.unwrap(), "Stopped");
    let second = browser.open_donate_page(&server.url).await.unwrap();
    // The first tab registers this browser's anonymous identity itself, as a visitor's does; the second
    // stands for another visitor's browser, so that two distinct volunteers validate each chunk.
    browser.start_volunteering(&first, 1, 100).await.unwrap();
    let other_visitor = server.anonymous_client().register_volunteer().await.unwrap();
    browser.start_volunteering_as(&second, &other_visitor, 1, 100).await.unwrap();
    wait_for_workers(&api, 2).await;

    // A job submitted with the CLI, with input files and binary output files.
    std::fs::write(
        dir.path().join("images.jsonl"),
        concat!(
            r#"{"args": ["--make-test-image", "64", "48", "3", "-o", "/data/out.ppm", "-f", "blur", "-f", "sepia"]}"#,
            "\n",
            r#"{"args": ["--make-test-image", "32", "32", "4", "-o", "/data/out.ppm", "-f", "invert"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["submit", program_path("imgfilter").to_str().unwrap(), "--chunks"])
        .arg(dir.path().join("images.jsonl"))
        .args(["--wait", "--out"])
        .arg(dir.path().join("images"))
        .env("DISTRIBUTIVECOM_SERVER", &server.url)
        .env("DISTRIBUTIVECOM_TOKEN", &server.admin_token)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let job: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    let status = api.status(job).await.unwrap();
    let images = [
        file_chunk(
            &["--make-test-image", "64", "48", "3", "-o", "/data/out.ppm", "-f", "blur", "-f", "sepia"],
            b"",
            &[],
        ),
        file_chunk(&["--make-test-image", "32", "32", "4", "-o", "/data/out.ppm", "-f", "invert"], b"", &[]),
    ];
    let results = api.all_results(job).await.unwrap();
    assert_results_match_native_runs(&status, "imgfilter", &images, &results);
    let written = std::fs::read(dir.path().join("images/0/files/out.ppm")).unwrap();
    assert_eq!(written, results[0].output.files["out.ppm"].0);

    // Programs that use the file system, stdin, random bytes and clocks.
    let cases: Vec<(&str, Vec<ChunkRequest>)> = vec![
        ("fsops", vec![file_chunk(&["alpha", "beta"], b"stdin bytes \x00\x01", &[("input.txt", b"hello input")])]),
        ("entropy", vec![file_chunk(&[], b"", &[]), file_chunk(&["second"], b"", &[])]),
        ("wordfreq", vec![file_chunk(&["-n", "3", "-o", "/data/freq.json"], b"b a b c b a", &[])]),
        ("fail", vec![file_chunk(&[], b"", &[])]),
    ];
    for (program_name, chunks) in cases {
        let job = submit_request(
            &api,
            program_name,
            JobRequest { chunks: chunks.clone(), max_retries: Some(0), ..JobRequest::default() },
        )
        .await;
        let (status, results) = finish(&api, job).await;
        assert_results_match_native_runs(&status, program_name, &chunks, &results);
    }
    // The pages counted what their tabs did (their statistics arrive a few times a second): both tabs
    // ran every chunk, since each chunk needs two agreeing volunteers.
    eventually("each tab to count every chunk", Duration::from_secs(5), || async {
        let done = chunks_done(browser.text(&first, "chunks-done").await.unwrap());
        let other = chunks_done(browser.text(&second, "chunks-done").await.unwrap());
        (done, other) == (7, 7)
    })
    .await;
    assert_ne!(browser.text(&first, "work-units").await.unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tab_closed_mid_job_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let api = server.client();
    // Three visitors: after one leaves, two distinct volunteers remain to validate every chunk.
    let (browser, tabs) = volunteering_tabs(&server, 3).await;
    let (staying, leaving) = (&tabs[0], &tabs[1]);
    let chunks: Vec<ChunkRequest> = (0..16u64)
        .map(|index| chunk(&[&(index * 40_000_000).to_string(), &((index + 1) * 40_000_000).to_string()]))
        .collect();
    let job = submit(&api, "primes", chunks.clone()).await;
    eventually("the first results", Duration::from_secs(60), || async {
        api.status(job).await.unwrap().finished_chunks() >= 2
    })
    .await;
    browser.close_tab(leaving, staying).await.unwrap();
    // Mid-job, with chunks running: the page as a volunteer sees it.
    browser.screenshot(staying, &screenshot_path("donate-running.png")).await.unwrap();
    let (status, results) = finish(&api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_results_match_native_runs(&status, "primes", &chunks, &results);
    assert!(results.iter().any(|result| result.attempts >= 3), "the closed tab's replicas were reassigned");
    assert_eq!(api.stats().await.unwrap().workers, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_and_memory_hogs_are_reported_and_the_tab_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let api = server.client();
    // The tab volunteers for the jobs' owner, so it alone may run their single replicas.
    let (browser, tabs) = start_tabs(&server, &[api.register_volunteer().await.unwrap()]).await;
    let tab = &tabs[0];
    let limits = LimitsRequest {
        time_limit_ms: Some(1_000),
        memory_limit_bytes: Some(160 * 1024 * 1024),
        ..LimitsRequest::default()
    };
    let request = || JobRequest {
        chunks: vec![chunk(&[])],
        limits,
        max_retries: Some(0),
        replication: owner_only(),
        ..JobRequest::default()
    };

    let spin = submit_request(&api, "spin", request()).await;
    let (_, results) = finish(&api, spin).await;
    assert_eq!(results[0].status, RunStatus::TimedOut);

    let hog = submit_request(&api, "hog", request()).await;
    let (_, results) = finish(&api, hog).await;
    assert_eq!(results[0].status, RunStatus::MemoryLimit);
    assert!(String::from_utf8_lossy(&results[0].output.stderr).contains("allocation failed"));

    // The same tab, with a fresh executor after the timeout, runs the next job.
    let primes =
        JobRequest { chunks: vec![chunk(&["0", "1000000"])], replication: owner_only(), ..JobRequest::default() };
    let job = submit_request(&api, "primes", primes).await;
    let (status, results) = finish(&api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"primes in [0, 1000000): 78498\n");
    assert_eq!(browser.text(tab, "connection").await.unwrap(), "Connected");
    // The page's statistics arrive a few times a second.
    eventually("the page to count three chunks", Duration::from_secs(5), || async {
        browser.text(tab, "chunks-done").await.unwrap() == "3"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn native_and_browser_workers_on_one_job_give_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let api = server.client();
    let (browser, tabs) = volunteering_tabs(&server, 1).await;
    let tab = &tabs[0];
    let _native = server.worker(1);
    wait_for_workers(&api, 2).await;
    let chunks: Vec<ChunkRequest> = (0..12).map(|index| file_chunk(&[&format!("chunk-{index}")], b"", &[])).collect();
    // Two replicas per chunk and two volunteers: every chunk runs in the tab and in the native worker,
    // and is accepted only if both return the same digest of status, output and work units.
    let job = submit(&api, "entropy", chunks.clone()).await;
    let (status, results) = finish(&api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_results_match_native_runs(&status, "entropy", &chunks, &results);
    assert!(results.iter().all(|result| result.attempts == 2), "no replica disagreed or was lost");

    // Metering: an endless loop stops at the work-unit limit in both, at the same count, long before the
    // wall-clock backstop.
    let limits =
        LimitsRequest { max_work_units: Some(200_000_000), time_limit_ms: Some(600_000), ..Default::default() };
    let spin = JobRequest { chunks: vec![chunk(&[])], limits, max_retries: Some(0), ..JobRequest::default() };
    let spin = submit_request(&api, "spin", spin).await;
    let (status, results) = finish(&api, spin).await;
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(results[0].status, RunStatus::WorkLimit, "{}", results[0].reason);
    assert_eq!(results[0].attempts, 2, "both volunteers reported the same count");
    assert!(results[0].work_units >= 200_000_000, "{} work units", results[0].work_units);
    let native = distributivecom_worker::runtime::Runtime::new(1).unwrap();
    let module = native.compile(&instrumented("spin")).unwrap();
    let mut assignment = server_assignment(&status, "spin", 0, &chunk(&[]));
    assignment.limits.max_work_units = 200_000_000;
    assignment.limits.time_limit_ms = 600_000;
    let local = native.run(&module, assignment);
    assert_eq!((&local.status, local.work_units), (&results[0].status, results[0].work_units));

    eventually("the tab to count every chunk", Duration::from_secs(5), || async {
        chunks_done(browser.text(tab, "chunks-done").await.unwrap()) == 13
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visitor_earns_anonymously_then_signs_up_keeps_the_credits_and_manages_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let api = server.client();
    // The visitor presses Start with no account: the page registers an anonymous identity.
    let browser = Chromium::start().await.unwrap();
    let tab = browser.open_donate_page(&server.url).await.unwrap();
    browser.start_volunteering(&tab, 1, 100).await.unwrap();
    let _native = server.worker(1);
    wait_for_workers(&api, 2).await;
    let saved = browser.run_script(&tab, "return localStorage.getItem('distributivecom.volunteer');").await.unwrap();
    let identity: VolunteerCredential = serde_json::from_str(saved.as_str().expect("an identity is kept")).unwrap();

    // It earns credits for validated work.
    let chunks: Vec<ChunkRequest> = (0..4u64)
        .map(|index| chunk(&[&(index * 2_000_000).to_string(), &((index + 1) * 2_000_000).to_string()]))
        .collect();
    let job = submit(&api, "primes", chunks).await;
    assert_eq!(finish(&api, job).await.0.state, JobState::Succeeded);
    let earned = server.anonymous_client().volunteer_info(&identity).await.unwrap();
    assert_eq!(earned.validated_replicas, 4);
    assert!(earned.balance_millicredits > 0, "{earned:?}");
    browser.click(&tab, "stop").await.unwrap();

    // Signing up from that browser claims them.
    browser.visit(&tab, &format!("{}/signup", server.url), "username").await.unwrap();
    browser.type_into(&tab, "username", "dana").await.unwrap();
    browser.type_into(&tab, "password", "dana's long passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    browser.wait_for(&tab, "account-username").await.unwrap();
    assert_eq!(browser.text(&tab, "account-username").await.unwrap(), "dana");
    assert_eq!(browser.text(&tab, "header-username").await.unwrap(), "dana");
    let starter = distributivecom_server::ServerConfig::default().starter_grant_millicredits;
    let expected = format!(
        "{}.{:03} credits",
        (starter + earned.balance_millicredits) / 1000,
        (starter + earned.balance_millicredits) % 1000
    );
    eventually("the balance to show the claimed credits", Duration::from_secs(10), || async {
        browser.text(&tab, "balance").await.is_ok_and(|text| text == expected)
    })
    .await;
    assert!(browser.text(&tab, "pricing").await.unwrap().contains("per million work units"));
    let claimed = server.anonymous_client().volunteer_info(&identity).await.unwrap();
    assert_eq!((claimed.balance_millicredits, claimed.claimed_by.as_deref()), (0, Some("dana")));

    // A token made on the account page works for the API, once; revoking it on the page ends it.
    browser.type_into(&tab, "token-name", "laptop").await.unwrap();
    browser.click(&tab, "create-token").await.unwrap();
    eventually("the new token to show", Duration::from_secs(10), || async {
        browser.text(&tab, "new-token").await.is_ok_and(|text| text.starts_with("dc_"))
    })
    .await;
    let token = browser.text(&tab, "new-token").await.unwrap();
    let dana = server.anonymous_client().with_token(token.clone());
    let account = dana.account().await.unwrap();
    assert_eq!(account.user.username, "dana");
    assert_eq!(account.balance_millicredits, starter + earned.balance_millicredits);
    browser.screenshot(&tab, &screenshot_path("account.png")).await.unwrap();
    let revoke = browser
        .run_script(&tab, "return document.querySelector('button.revoke').id;")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    browser.click(&tab, &revoke).await.unwrap();
    eventually("the revoked token to stop working", Duration::from_secs(10), || async {
        matches!(dana.account().await, Err(distributivecom_client::ClientError::Api { status: 401, .. }))
    })
    .await;

    // Logging out shows the log-in link again, and the account page is gone with the session.
    browser.click(&tab, "logout").await.unwrap();
    browser.wait_for(&tab, "login-link").await.unwrap();
    let session =
        browser.run_script(&tab, "return fetch('/api/auth/session').then(response => response.status);").await.unwrap();
    assert_eq!(session.as_u64(), Some(401));
}
