//! Browser volunteers in real headless Chromium (Debian's `chromium` driven through `chromedriver` with
//! fantoccini): tabs on the donate page press Start and run jobs with no native worker at all, results
//! are byte-identical to native runs, closed tabs lose nothing, and loops and memory hogs are reported
//! while the tab keeps working.

use std::process::Command;
use std::time::Duration;

use distributivecom_cli::chromium::Chromium;
use distributivecom_client::Client as Api;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, JobRequest, JobState, LimitsRequest};
use distributivecom_protocol::worker::RunStatus;
use fantoccini::wd::WindowHandle;

use crate::support::*;

fn screenshot_path(name: &str) -> std::path::PathBuf {
    workspace_root().join("docs/screenshots").join(name)
}

/// A Chromium with `count` tabs on the donate page, each volunteering one thread at full speed, all
/// connected to the server.
async fn volunteering_tabs(server: &TestServer, count: u32) -> (Chromium, Vec<WindowHandle>) {
    let browser = Chromium::start().await.unwrap();
    let mut tabs = Vec::new();
    for _ in 0..count {
        let tab = browser.open_donate_page(&server.url).await.unwrap();
        browser.start_volunteering(&tab, 1, 100).await.unwrap();
        tabs.push(tab);
    }
    wait_for_workers(&server.client(), count).await;
    (browser, tabs)
}

/// Waits until `count` workers (tabs) are connected to the server.
async fn wait_for_workers(api: &Api, count: u32) {
    eventually("the tabs to connect", Duration::from_secs(60), || async {
        api.stats().await.is_ok_and(|stats| stats.workers == count)
    })
    .await;
}

fn file_chunk(args: &[&str], stdin: &[u8], files: &[(&str, &[u8])]) -> ChunkRequest {
    ChunkRequest {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: Bytes(stdin.to_vec()),
        files: files.iter().map(|(name, contents)| (name.to_string(), Bytes(contents.to_vec()))).collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_tabs_alone_finish_jobs_with_results_identical_to_native_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let api = server.client();
    let browser = Chromium::start().await.unwrap();
    let first = browser.open_donate_page(&server.url).await.unwrap();
    browser.screenshot(&first, &screenshot_path("donate-idle.png")).await.unwrap();
    assert_eq!(browser.text(&first, "connection").await.unwrap(), "Stopped");
    let second = browser.open_donate_page(&server.url).await.unwrap();
    browser.start_volunteering(&first, 1, 100).await.unwrap();
    browser.start_volunteering(&second, 1, 100).await.unwrap();
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
    // The pages counted what their tabs did (their statistics arrive a few times a second).
    eventually("the two tabs to count every chunk", Duration::from_secs(5), || async {
        let done = browser.text(&first, "chunks-done").await.unwrap().replace(',', "").parse::<u64>().unwrap();
        let other = browser.text(&second, "chunks-done").await.unwrap().replace(',', "").parse::<u64>().unwrap();
        done + other == 2 + 1 + 2 + 1 + 1
    })
    .await;
    assert_ne!(browser.text(&first, "work-units").await.unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tab_closed_mid_job_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let api = server.client();
    let (browser, tabs) = volunteering_tabs(&server, 2).await;
    let (staying, leaving) = (&tabs[0], &tabs[1]);
    let chunks: Vec<ChunkRequest> = (0..24u64)
        .map(|index| chunk(&[&(index * 60_000_000).to_string(), &((index + 1) * 60_000_000).to_string()]))
        .collect();
    let job = submit(&api, "primes", chunks.clone()).await;
    eventually("the first results", Duration::from_secs(60), || async {
        api.status(job).await.unwrap().finished_chunks() >= 2
    })
    .await;
    browser.close_tab(&leaving, &staying).await.unwrap();
    // Mid-job, with chunks running: the page as a volunteer sees it.
    browser.screenshot(&staying, &screenshot_path("donate-running.png")).await.unwrap();
    let (status, results) = finish(&api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_results_match_native_runs(&status, "primes", &chunks, &results);
    assert!(results.iter().any(|result| result.attempts >= 2), "the closed tab's chunks were reassigned");
    assert_eq!(api.stats().await.unwrap().workers, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_and_memory_hogs_are_reported_and_the_tab_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let api = server.client();
    let (browser, tabs) = volunteering_tabs(&server, 1).await;
    let tab = &tabs[0];
    let limits = LimitsRequest {
        time_limit_ms: Some(1_000),
        memory_limit_bytes: Some(160 * 1024 * 1024),
        ..LimitsRequest::default()
    };
    let request = || JobRequest { chunks: vec![chunk(&[])], limits, max_retries: Some(0), ..JobRequest::default() };

    let spin = submit_request(&api, "spin", request()).await;
    let (_, results) = finish(&api, spin).await;
    assert_eq!(results[0].status, RunStatus::TimedOut);

    let hog = submit_request(&api, "hog", request()).await;
    let (_, results) = finish(&api, hog).await;
    assert_eq!(results[0].status, RunStatus::MemoryLimit);
    assert!(String::from_utf8_lossy(&results[0].output.stderr).contains("allocation failed"));

    // The same tab, with a fresh executor after the timeout, runs the next job.
    let job = submit(&api, "primes", vec![chunk(&["0", "1000000"])]).await;
    let (status, results) = finish(&api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"primes in [0, 1000000): 78498\n");
    assert_eq!(browser.text(&tab, "connection").await.unwrap(), "Connected");
    // The page's statistics arrive a few times a second.
    eventually("the page to count three chunks", Duration::from_secs(5), || async {
        browser.text(&tab, "chunks-done").await.unwrap() == "3"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn native_and_browser_workers_on_one_job_give_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let api = server.client();
    let (browser, tabs) = volunteering_tabs(&server, 1).await;
    let tab = &tabs[0];
    let _native = server.worker(1);
    wait_for_workers(&api, 2).await;
    let chunks: Vec<ChunkRequest> = (0..12).map(|index| file_chunk(&[&format!("chunk-{index}")], b"", &[])).collect();
    let job = submit(&api, "entropy", chunks.clone()).await;
    let (status, results) = finish(&api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_results_match_native_runs(&status, "entropy", &chunks, &results);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_browser: u64 = browser.text(&tab, "chunks-done").await.unwrap().parse().unwrap();
    assert!(in_browser > 0 && in_browser < 12, "both kinds of worker took part ({in_browser} chunks in the browser)");
}
