//! The consumer's web app in headless Chromium, used as a person would: sign up, upload a real program
//! (and see a refused one explained), submit a job of several uploaded files, watch it finish live on
//! browser volunteers in other tabs, open an output, download the zip and compare it byte for byte with
//! local runs, cancel a second job and find the refund in the ledger, and see the statistics. Every page
//! is photographed at a desktop's and a phone's width into `docs/screenshots/`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use distributivecom_cli::chromium::Chromium;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, JobState, JobStatus, ResultsPage};
use distributivecom_protocol::layout::result_files;
use fantoccini::wd::WindowHandle;

use crate::browser::{volunteering_tabs, wait_for_workers};
use crate::support::*;

/// Every chunk runs on both tabs, so the test sees real validation.
const ALWAYS_REPLICATE: &[&str] = &["--trust-after", "1000000"];

/// A phone's viewport, the narrowest the app promises to work at.
const DESKTOP: (u32, u32) = (1100, 900);

/// A small binary PPM whose pixels depend on `seed`.
fn test_image(width: usize, height: usize, seed: u8) -> Vec<u8> {
    let mut ppm = format!("P6\n{width} {height}\n255\n").into_bytes();
    for y in 0..height {
        for x in 0..width {
            ppm.extend_from_slice(&[
                (x * 9) as u8 ^ seed,
                (y * 13) as u8,
                seed.wrapping_mul(31).wrapping_add((x + y) as u8),
            ]);
        }
    }
    ppm
}

/// Runs a script that ends by calling `done(value)`, and answers the value.
async fn run_async(browser: &Chromium, tab: &WindowHandle, body: &str) -> serde_json::Value {
    let script = format!("const done = arguments[arguments.length - 1]; {body}");
    browser.run_async_script(tab, &script).await.unwrap()
}

/// `GET path` from the page, with its session cookie, as bytes.
async fn fetch_bytes(browser: &Chromium, tab: &WindowHandle, path: &str) -> Vec<u8> {
    let body = format!(
        "fetch({path:?}).then(r => r.ok ? r.arrayBuffer() : Promise.reject(r.status)).then(buffer => {{ \
           let text = ''; const bytes = new Uint8Array(buffer); \
           for (let i = 0; i < bytes.length; i += 1) text += String.fromCharCode(bytes[i]); done(btoa(text)); \
         }}, status => done('failed: ' + status));"
    );
    let answer = run_async(browser, tab, &body).await;
    let text = answer.as_str().unwrap();
    assert!(!text.starts_with("failed"), "GET {path}: {text}");
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

/// `GET path` from the page as JSON.
async fn fetch_json<T: serde::de::DeserializeOwned>(browser: &Chromium, tab: &WindowHandle, path: &str) -> T {
    serde_json::from_slice(&fetch_bytes(browser, tab, path).await).unwrap()
}

async fn text_of(browser: &Chromium, tab: &WindowHandle, id: &str) -> String {
    browser.text(tab, id).await.unwrap_or_default()
}

/// Waits until the element with this id shows `expected`.
async fn wait_for_text(browser: &Chromium, tab: &WindowHandle, id: &str, expected: &str, patience: Duration) {
    eventually(&format!("#{id} to show {expected:?}"), patience, || async {
        text_of(browser, tab, id).await == expected
    })
    .await;
}

/// Screenshots of the page at a desktop's and at a phone's width.
async fn photograph(browser: &Chromium, tab: &WindowHandle, name: &str) {
    let directory = workspace_root().join("docs/screenshots");
    browser.run_script(tab, "window.scrollTo(0, 0);").await.unwrap();
    browser.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
    browser.screenshot(tab, &directory.join(format!("{name}.png"))).await.unwrap();
    browser.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    browser.run_script(tab, "window.scrollTo(0, 0);").await.unwrap();
    browser.screenshot(tab, &directory.join(format!("{name}-phone.png"))).await.unwrap();
    browser.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_submits_on_the_web_watches_it_live_downloads_the_results_and_cancels_for_a_refund() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    // Two visitors' browsers volunteer on the donate page.
    let (volunteers, volunteer_tabs) = volunteering_tabs(&server, 2).await;

    // The consumer signs up in their own browser.
    let browser = Chromium::start().await.unwrap();
    let tab = browser.open_donate_page(&server.url).await.unwrap();
    browser.visit(&tab, &format!("{}/submit", server.url), "username").await.unwrap();
    assert!(browser.run_script(&tab, "return location.search;").await.unwrap().as_str().unwrap().contains("next="));
    browser.click(&tab, "signup-instead").await.unwrap();
    browser.wait_for(&tab, "rules").await.unwrap();
    browser.type_into(&tab, "username", "erin").await.unwrap();
    browser.type_into(&tab, "password", "erin's long passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    // Signing up brings them back to the page that sent them.
    browser.wait_for(&tab, "program-file").await.unwrap();

    // A program with a forbidden import is refused, in the server's words, on the page.
    let forbidden = dir.path().join("forbidden.wasm");
    let wat = r#"(module (import "env" "steal" (func)) (memory (export "memory") 1) (func (export "_start")))"#;
    std::fs::write(&forbidden, wat::parse_str(wat).unwrap()).unwrap();
    browser.choose_files(&tab, "program-file", &[&forbidden]).await.unwrap();
    browser.wait_for(&tab, "program-error").await.unwrap();
    let refusal = text_of(&browser, &tab, "program-error").await;
    assert!(refusal.contains("env.steal") && refusal.contains("not allowed"), "{refusal}");

    // The real program, and three images to filter, one chunk each.
    browser.choose_files(&tab, "program-file", &[&program_path("imgfilter")]).await.unwrap();
    eventually("the program to be checked", Duration::from_secs(30), || async {
        text_of(&browser, &tab, "program-chosen").await.starts_with("Ready: imgfilter.wasm")
    })
    .await;
    assert_eq!(
        browser.run_script(&tab, "return document.getElementById('program-error');").await.unwrap(),
        serde_json::Value::Null
    );
    let images: Vec<(String, Vec<u8>)> =
        (0..3u8).map(|seed| (format!("photo-{seed}.ppm"), test_image(24 + usize::from(seed) * 4, 16, seed))).collect();
    let paths: Vec<std::path::PathBuf> = images
        .iter()
        .map(|(name, bytes)| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let path_refs: Vec<&Path> = paths.iter().map(|path| path.as_path()).collect();
    browser.choose_files(&tab, "input-files", &path_refs).await.unwrap();
    browser.type_into(&tab, "data-name", "in.ppm").await.unwrap();
    browser.type_into(&tab, "files-template", "-i {path} -o /data/out.ppm -f invert").await.unwrap();
    wait_for_text(&browser, &tab, "chunk-count", "This makes 3 chunks.", Duration::from_secs(10)).await;
    let preview = text_of(&browser, &tab, "chunk-preview").await;
    assert!(
        preview.contains("0: -i /data/in.ppm -o /data/out.ppm -f invert [photo-0.ppm → /data/in.ppm]"),
        "{preview}"
    );
    let estimate = text_of(&browser, &tab, "estimate").await;
    assert!(estimate.starts_with("at most "), "no earlier jobs, so only the maximum: {estimate}");
    assert_labelled_and_narrow(&browser, &tab, "/submit").await;
    photograph(&browser, &tab, "submit").await;

    // Submitting leads to the job's page, which follows the job to its end without reloading.
    browser.click(&tab, "submit-job").await.unwrap();
    browser.wait_for(&tab, "job-state").await.unwrap();
    let path = browser.run_script(&tab, "window.stillTheSamePage = true; return location.pathname;").await.unwrap();
    let job: u64 = path.as_str().unwrap().strip_prefix("/jobs/").unwrap().parse().unwrap();
    wait_for_text(&browser, &tab, "job-state", "succeeded", Duration::from_secs(120)).await;
    assert_eq!(
        browser.run_script(&tab, "return window.stillTheSamePage === true;").await.unwrap(),
        true,
        "the page was reloaded"
    );
    assert_eq!(text_of(&browser, &tab, "count-succeeded").await, "3");
    browser.wait_for(&tab, "result-2").await.unwrap();

    // The results equal local runs of the same chunks.
    let status: JobStatus = fetch_json(&browser, &tab, &format!("/api/jobs/{job}")).await;
    assert_eq!((status.state, status.escrowed_millicredits), (JobState::Succeeded, 0));
    let page: ResultsPage = fetch_json(&browser, &tab, &format!("/api/jobs/{job}/results")).await;
    let chunks: Vec<ChunkRequest> = images
        .iter()
        .map(|(_, bytes)| ChunkRequest {
            args: ["-i", "/data/in.ppm", "-o", "/data/out.ppm", "-f", "invert"].map(String::from).to_vec(),
            stdin: Bytes::default(),
            files: [("in.ppm".to_owned(), Bytes(bytes.clone()).into())].into(),
        })
        .collect();
    assert_results_match_native_runs(&status, "imgfilter", &chunks, &page.results);

    // A chunk's output opens from the page, and its image has a preview.
    let first = &page.results[0];
    let link = browser.run_script(&tab, "return document.querySelector('#result-0 a.file').href;").await.unwrap();
    let opened = fetch_bytes(&browser, &tab, link.as_str().unwrap()).await;
    assert_eq!(opened, first.output.files["out.ppm"].0);
    let shown = text_of(&browser, &tab, "result-0").await;
    let stdout = String::from_utf8_lossy(&first.output.stdout);
    assert!(shown.lines().any(|line| line.trim() == stdout.trim()), "{shown:?} does not show {stdout:?}");
    eventually("the preview to decode", Duration::from_secs(10), || async {
        let width =
            browser.run_script(&tab, "return document.querySelector('#result-0 img.thumbnail').naturalWidth;").await;
        width.is_ok_and(|width| width == 24)
    })
    .await;

    // The zip the page offers holds exactly the CLI's layout of those results, byte for byte.
    let href =
        browser.run_script(&tab, "return document.getElementById('download-zip').getAttribute('href');").await.unwrap();
    assert_eq!(href.as_str().unwrap(), format!("/api/jobs/{job}/results.zip"));
    let zip_bytes = fetch_bytes(&browser, &tab, href.as_str().unwrap()).await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let expected: Vec<(String, Vec<u8>)> = page
        .results
        .iter()
        .flat_map(|result| result_files(result).files.into_iter().map(|file| (file.path, file.contents.into_owned())))
        .collect();
    assert_eq!(archive.len(), expected.len(), "{:?}", archive.file_names().collect::<Vec<_>>());
    for (path, contents) in &expected {
        let mut entry = archive.by_name(path).unwrap_or_else(|_| panic!("the zip has no {path}"));
        let mut unzipped = Vec::new();
        entry.read_to_end(&mut unzipped).unwrap();
        assert_eq!(&unzipped, contents, "{path}");
    }
    assert_labelled_and_narrow(&browser, &tab, "/jobs/{id}").await;
    photograph(&browser, &tab, "job").await;

    // Statistics: both volunteers online and on the leaderboard; the chart has a bar per day.
    browser.visit(&tab, &format!("{}/stats", server.url), "leaderboard").await.unwrap();
    wait_for_text(&browser, &tab, "volunteers-online", "2", Duration::from_secs(10)).await;
    eventually("the leaderboard", Duration::from_secs(10), || async {
        let names = browser.run_script(&tab, "return Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(row => row.cells[1].textContent);").await;
        names.is_ok_and(|names| {
            names.as_array().is_some_and(|names| names.len() == 2 && names.iter().all(|name| name.as_str().unwrap_or("").starts_with("anonymous ")))
        })
    })
    .await;
    let bars =
        browser.run_script(&tab, "return document.querySelectorAll('#chunks-chart rect.bar').length;").await.unwrap();
    assert_eq!(bars, 30);
    assert_labelled_and_narrow(&browser, &tab, "/stats").await;
    photograph(&browser, &tab, "stats").await;

    // With the volunteers gone, a second job waits; cancelling it refunds its whole escrow.
    for volunteer in &volunteer_tabs {
        volunteers.click(volunteer, "stop").await.unwrap();
    }
    wait_for_workers(&server.client(), 0).await;
    browser.visit(&tab, &format!("{}/submit", server.url), "program-select").await.unwrap();
    eventually("the earlier program to be listed", Duration::from_secs(10), || async {
        browser
            .run_script(&tab, "return document.querySelectorAll('#program-select option').length;")
            .await
            .is_ok_and(|count| count == 2)
    })
    .await;
    browser
        .run_script(&tab, "const select = document.getElementById('program-select'); select.selectedIndex = 1; select.dispatchEvent(new Event('change', { bubbles: true }));")
        .await
        .unwrap();
    eventually("the earlier program to be chosen", Duration::from_secs(10), || async {
        text_of(&browser, &tab, "program-chosen").await.starts_with("Ready: imgfilter.wasm")
    })
    .await;
    browser.click(&tab, "mode-lines").await.unwrap();
    browser.type_into(&tab, "lines", "1\n2\n3\n4").await.unwrap();
    browser.type_into(&tab, "lines-template", "--make-test-image 32 32 {line} -o /data/out.ppm").await.unwrap();
    browser.type_into(&tab, "budget", "5").await.unwrap();
    wait_for_text(&browser, &tab, "chunk-count", "This makes 4 chunks.", Duration::from_secs(10)).await;
    let estimate = text_of(&browser, &tab, "estimate").await;
    assert!(estimate.starts_with("about "), "the first job makes an expected cost: {estimate}");
    assert_eq!(text_of(&browser, &tab, "escrow").await, "5.000 credits");
    browser.click(&tab, "submit-job").await.unwrap();
    browser.wait_for(&tab, "cancel-job").await.unwrap();
    let second: u64 = browser
        .run_script(&tab, "return location.pathname.split('/')[2];")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_for_text(&browser, &tab, "escrowed", "5.000 credits", Duration::from_secs(10)).await;
    browser.click(&tab, "cancel-job").await.unwrap();
    browser.wait_for(&tab, "cancel-confirm").await.unwrap();
    browser.click(&tab, "cancel-yes").await.unwrap();
    wait_for_text(&browser, &tab, "job-state", "cancelled", Duration::from_secs(10)).await;
    assert_eq!(text_of(&browser, &tab, "refunded").await, "5.000 credits");

    // The jobs list shows both; the ledger has the refund, linked to its job.
    browser.visit(&tab, &format!("{}/jobs", server.url), "jobs").await.unwrap();
    eventually("both jobs to be listed", Duration::from_secs(10), || async {
        browser
            .run_script(&tab, "return document.querySelectorAll('#jobs tbody tr').length;")
            .await
            .is_ok_and(|rows| rows == 2)
    })
    .await;
    let first_row =
        browser.run_script(&tab, "return document.querySelector('#jobs tbody tr').textContent;").await.unwrap();
    assert!(first_row.as_str().unwrap().contains("cancelled"), "newest first: {first_row}");
    assert_labelled_and_narrow(&browser, &tab, "/jobs").await;
    photograph(&browser, &tab, "jobs").await;

    browser.visit(&tab, &format!("{}/account", server.url), "ledger").await.unwrap();
    eventually("the refund in the ledger", Duration::from_secs(10), || async {
        let rows = browser
            .run_script(
                &tab,
                "return Array.from(document.querySelectorAll('#ledger tbody tr')).map(row => row.textContent);",
            )
            .await;
        rows.is_ok_and(|rows| {
            rows.as_array().is_some_and(|rows| {
                rows.iter().any(|row| {
                    let row = row.as_str().unwrap_or("");
                    row.contains("refund") && row.contains("+5.000") && row.contains(&format!("job {second}"))
                })
            })
        })
    })
    .await;
    let link = browser
        .run_script(&tab, &format!("return document.querySelector('#ledger a[href=\"/jobs/{second}\"]') !== null;"))
        .await
        .unwrap();
    assert_eq!(link, true, "the refund links its job");
    assert_labelled_and_narrow(&browser, &tab, "/account").await;
    photograph(&browser, &tab, "account-ledger").await;

    // Another account sees neither job: the same "not found" as a job that does not exist.
    browser.click(&tab, "logout").await.unwrap();
    browser.wait_for(&tab, "login-link").await.unwrap();
    browser.visit(&tab, &format!("{}/signup", server.url), "username").await.unwrap();
    browser.type_into(&tab, "username", "frank").await.unwrap();
    browser.type_into(&tab, "password", "frank's long passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    browser.wait_for(&tab, "account-username").await.unwrap();
    for id in [job, 999_999] {
        browser.visit(&tab, &format!("{}/jobs/{id}", server.url), "not-found").await.unwrap();
        assert_eq!(text_of(&browser, &tab, "not-found").await, format!("you have no job {id}"));
    }
}
