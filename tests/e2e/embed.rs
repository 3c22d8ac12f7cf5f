//! The embed script on a third party's site, in real headless Chromium: a host page served from a second
//! origin (`http://localhost:<port>`, another site than the coordinator's `http://127.0.0.1:<port>`) pastes
//! the snippet. Nothing loads and nothing computes before the visitor's real click on the widget's consent;
//! a script on the host page that posts forged messages, reaches into the frame, hides it, covers it or
//! shrinks it achieves nothing; after a real click the tab computes and the credits of its validated work
//! land on the site owner's account; the host may pause and stop it; the visitor's opt-out is remembered
//! across reloads, and so is consent (the widget resumes by itself once in view); a key used on another
//! origin or revoked shows the neutral message and computes nothing, and revoking a key stops a running
//! widget. The account page creates, lists and revokes keys. A visitor with an account on the coordinator
//! takes a share from the running widget, through a page of ours in a new tab (logging in on the way), and
//! is paid their part of each validated replica.

use std::time::Duration;

use distributivecom_cli::chromium::Chromium;
use distributivecom_client::Client;
use distributivecom_protocol::api::JobState;
use fantoccini::wd::WindowHandle;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::browser::wait_for_workers;
use crate::support::*;

const UNAVAILABLE: &str = "This site's donation widget is not available.";

fn screenshot_path(name: &str) -> std::path::PathBuf {
    workspace_root().join("docs/screenshots").join(name)
}

/// A third party's site on its own loopback port: `/?site=KEY` is a blog page with the snippet (asking
/// for more than the bounds allow: the throttle and threads are clamped), `/forged?site=KEY&origin=O` a
/// page that builds the frame itself and claims to be origin O.
struct HostSite {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the host page's own script records: the widget's states as posted to the window and as the
/// iframe's events, which `embed.js` re-sends.
const HOST_SCRIPT: &str = r#"<script>
window.states = []; window.events = [];
window.addEventListener('message', function (event) {
  if (event.data && event.data.type === 'distributivecom:state') { window.states.push(event.data.state); }
});
document.addEventListener('distributivecom:state', function (event) { window.events.push(event.detail.state); });
</script>"#;

impl HostSite {
    async fn start(server: &str) -> HostSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = server.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let server = server.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (status, page) = HostSite::page(&server, &target);
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
                         Cache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        HostSite { port, task }
    }

    fn page(server: &str, target: &str) -> (&'static str, String) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let parameter = |name: &str| {
            query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}="))).unwrap_or("").to_owned()
        };
        let site = parameter("site");
        let widget = match path {
            "/" => format!(
                r#"<script src="{server}/embed.js" data-site="{site}" data-throttle="90" data-threads="8" async></script>"#
            ),
            // A page that lies about its origin to the server: the browser still enforces frame-ancestors.
            "/forged" => format!(
                r#"<iframe src="{server}/embed/frame?site={site}&origin={}" sandbox="allow-scripts allow-same-origin"
                   style="width:320px;height:200px"></iframe>"#,
                parameter("origin")
            ),
            _ => return ("404 Not Found", "nothing here".to_owned()),
        };
        let page = format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A small blog</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ font-family: Georgia, serif; max-width: 40rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }}</style>
</head><body>
<h1 id="ready">Notes from a small blog</h1>
<p>Today's post is about bread. This blog lets readers lend it their computer's spare time instead of
showing ads: the widget below asks first, and nothing runs unless you agree.</p>
<aside id="slot">{widget}</aside>
<p>The rest of the post goes on here.</p>
{HOST_SCRIPT}
</body></html>"#
        );
        ("200 OK", page)
    }

    fn origin(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    fn url(&self, site: &str) -> String {
        format!("{}/?site={site}", self.origin())
    }
}

/// An account of a site's owner: signs up and returns an API token for it.
async fn owner_token(server: &TestServer, username: &str) -> String {
    let http = reqwest::Client::new();
    let body = json!({ "username": username, "password": "a long enough passphrase" });
    let signed_up = http.post(format!("{}/api/auth/signup", server.url)).json(&body).send().await.unwrap();
    assert_eq!(signed_up.status(), 201);
    let cookie = signed_up.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let session: Value = signed_up.json().await.unwrap();
    let token: Value = http
        .post(format!("{}/api/account/tokens", server.url))
        .header("cookie", cookie)
        .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
        .json(&json!({ "name": "site" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["token"].as_str().unwrap().to_owned()
}

/// Calls the API with a token; answers the status and the JSON body (if any).
async fn api(server: &TestServer, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, format!("{}{path}", server.url)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn create_site(server: &TestServer, token: &str, name: &str, origins: &[String]) -> String {
    let (status, site) =
        api(server, token, "POST", "/api/sites", Some(json!({ "name": name, "origins": origins }))).await;
    assert_eq!(status, 201, "{site}");
    site["key"].as_str().unwrap().to_owned()
}

async fn site_stats(server: &TestServer, token: &str, key: &str) -> Value {
    let (_, sites) = api(server, token, "GET", "/api/sites", None).await;
    sites.as_array().unwrap().iter().find(|site| site["key"] == key).cloned().expect("the owner lists the key")
}

/// What the widget's frame loaded so far (resource timing, inside the frame).
async fn frame_resources(browser: &Chromium, tab: &WindowHandle) -> Vec<String> {
    let names = browser
        .run_script_in_frame(tab, 0, "return performance.getEntriesByType('resource').map(e => e.name);")
        .await
        .unwrap();
    names.as_array().unwrap().iter().map(|name| name.as_str().unwrap().to_owned()).collect()
}

/// Before consent the frame loads its page's own script and style, nothing else.
fn assert_nothing_but_the_consent_page(resources: &[String], moment: &str) {
    for resource in resources {
        assert!(
            resource.ends_with("/assets/embed-frame.js") || resource.ends_with("/assets/embed.css"),
            "{moment}: the frame loaded {resource} (all: {resources:?})"
        );
    }
}

async fn frame_state(browser: &Chromium, tab: &WindowHandle) -> String {
    let state = browser.run_script_in_frame(tab, 0, "return document.body.dataset.state;").await.unwrap();
    state.as_str().unwrap_or_default().to_owned()
}

/// The widget's Start button's centre, in the host page's viewport.
async fn start_button_centre(browser: &Chromium, tab: &WindowHandle) -> (f64, f64) {
    let frame = browser
        .run_script(
            tab,
            "const f = document.querySelector('#slot iframe'); const r = f.getBoundingClientRect(); \
             return [r.left + f.clientLeft, r.top + f.clientTop];",
        )
        .await
        .unwrap();
    let button = browser
        .run_script_in_frame(
            tab,
            0,
            "const b = document.getElementById('start').getBoundingClientRect(); \
             return [b.left + b.width / 2, b.top + b.height / 2];",
        )
        .await
        .unwrap();
    let at = |value: &Value, index: usize| value[index].as_f64().unwrap();
    (at(&frame, 0) + at(&button, 0), at(&frame, 1) + at(&button, 1))
}

/// A lured click: a real, trusted mouse click at the Start button's place, after the host page's `setup`.
/// The widget must refuse it; what it says is returned.
async fn lured_click_is_refused(
    browser: &Chromium,
    tab: &WindowHandle,
    api: &distributivecom_client::Client,
    setup: &str,
) -> String {
    browser.run_script(tab, &format!("{SAVE}{setup}")).await.unwrap();
    // IntersectionObserver v2 reports visibility at most every 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (x, y) = start_button_centre(browser, tab).await;
    browser.click_at(tab, x, y).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let message = browser.text_in_frame(tab, 0, "message").await.unwrap();
    assert_eq!(frame_state(browser, tab).await, "consent", "{setup}: {message}");
    assert_nothing_but_the_consent_page(&frame_resources(browser, tab).await, setup);
    assert_eq!(api.stats().await.unwrap().workers, 0, "{setup}: nothing connected");
    message
}

/// Keeps the frame's style as embed.js set it, once.
const SAVE: &str = "window.savedStyle = window.savedStyle || document.querySelector('#slot iframe').style.cssText;";
/// Puts the host page back as it was.
const RESTORE: &str = "document.querySelector('#slot iframe').style.cssText = window.savedStyle; \
                       document.querySelectorAll('.cover').forEach(c => c.remove());";

#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_widget_computes_only_after_a_real_click_on_its_visible_consent_and_pays_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    let api = server.client();
    let host = HostSite::start(&server.url).await;
    let owner = owner_token(&server, "olivia").await;
    let key = create_site(&server, &owner, "Olivia's bread blog", &[host.origin()]).await;
    let (_, account) = api_account(&server, &owner).await;
    let starting_balance = account;

    let browser = Chromium::start().await.unwrap();
    let tab = browser.open_tab(&host.url(&key), "ready").await.unwrap();
    browser.wait_for_in_frame(&tab, 0, "start").await.unwrap();
    // The host page asked for 90% and 8 threads: the widget says, and will use, 50% of 2 cores.
    let consent = browser.text_in_frame(&tab, 0, "consent").await.unwrap();
    assert!(consent.contains("Olivia's bread blog") && consent.contains("at most 50% of 2 CPU cores"), "{consent}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_nothing_but_the_consent_page(&frame_resources(&browser, &tab).await, "before anything");
    assert_eq!(api.stats().await.unwrap().workers, 0);
    assert_eq!(frame_state(&browser, &tab).await, "consent");
    browser.set_window_size(1100, 520).await.unwrap();
    browser.screenshot(&tab, &screenshot_path("embed-consent.png")).await.unwrap();
    browser.set_window_size(360, 720).await.unwrap();
    browser.screenshot(&tab, &screenshot_path("embed-consent-360.png")).await.unwrap();
    browser.set_window_size(1100, 900).await.unwrap();

    // A script on the host page posts forged messages and reaches into the frame: nothing happens.
    let attempts = browser
        .run_script(
            &tab,
            "const frame = document.querySelector('#slot iframe'); const outcomes = [];
             for (const message of [{type: 'distributivecom:start'}, {type: 'distributivecom:resume'},
                                    {type: 'distributivecom:consent'}, 'start', {type: 'distributivecom:state', state: 'running'}]) {
               frame.contentWindow.postMessage(message, '*');
             }
             try { frame.contentWindow.document.getElementById('start').click(); outcomes.push('clicked'); }
             catch (error) { outcomes.push(error.name); }
             outcomes.push(frame.contentDocument === null ? 'no document' : 'a document');
             frame.click();
             frame.dispatchEvent(new MouseEvent('click', {bubbles: true}));
             return outcomes;",
        )
        .await
        .unwrap();
    assert_eq!(attempts, json!(["SecurityError", "no document"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(frame_state(&browser, &tab).await, "consent");
    assert_nothing_but_the_consent_page(&frame_resources(&browser, &tab).await, "forged messages");
    assert_eq!(api.stats().await.unwrap().workers, 0);

    // Lured real clicks on a frame made see-through, covered, or too small are refused.
    let transparent = "document.querySelector('#slot iframe').style.opacity = '0';";
    let message = lured_click_is_refused(&browser, &tab, &api, transparent).await;
    assert!(message.contains("covered or see-through"), "{message}");
    browser.run_script(&tab, RESTORE).await.unwrap();
    let cover = "const r = document.querySelector('#slot iframe').getBoundingClientRect();
                 const cover = document.createElement('div'); cover.className = 'cover';
                 cover.style.cssText = 'position:fixed;pointer-events:none;z-index:10;background:rgba(255,255,255,0.02);' +
                   'left:' + r.left + 'px;top:' + r.top + 'px;width:' + r.width + 'px;height:' + r.height + 'px';
                 document.body.appendChild(cover);";
    let message = lured_click_is_refused(&browser, &tab, &api, cover).await;
    assert!(message.contains("covered or see-through"), "{message}");
    browser.run_script(&tab, RESTORE).await.unwrap();
    // Narrower than the widget's minimum, the Start button still in the frame.
    let shrunk = "const f = document.querySelector('#slot iframe'); f.style.minWidth = '0'; f.style.width = '290px';";
    let message = lured_click_is_refused(&browser, &tab, &api, shrunk).await;
    assert!(message.contains("too small"), "{message}");
    browser.run_script(&tab, RESTORE).await.unwrap();
    assert_eq!(site_stats(&server, &owner, &key).await["visitors"], 0, "nobody registered");

    // The visitor's own click on the plainly visible widget starts it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    browser.click_in_frame(&tab, 0, "start").await.unwrap();
    wait_for_workers(&api, 1).await;
    eventually("the widget to run", Duration::from_secs(30), || async {
        frame_state(&browser, &tab).await == "running"
    })
    .await;
    let resources = frame_resources(&browser, &tab).await;
    assert!(resources.iter().any(|name| name.ends_with("/assets/distributivecom_web_worker.js")), "{resources:?}");
    assert!(resources.iter().any(|name| name.contains(&format!("/api/sites/{key}/volunteers"))), "{resources:?}");
    assert_eq!(site_stats(&server, &owner, &key).await["visitors"], 1);

    // With a native volunteer beside it, every chunk runs in the widget and natively, and validates.
    let _native = four_chunks_beside_a_native_worker(&server, &api).await;
    let site = site_stats(&server, &owner, &key).await;
    assert_eq!(site["validated_replicas"], 4, "{site}");
    let earned = site["earned_millicredits"].as_i64().unwrap();
    assert!(earned > 0 && site["work_units"].as_u64().unwrap() > 0, "{site}");
    let (_, balance) = api_account(&server, &owner).await;
    assert_eq!(balance, starting_balance + earned, "the site's owner was paid for the visitor's work");
    assert_ledger_conserved(&server.database());
    eventually("the widget to count its chunks", Duration::from_secs(10), || async {
        browser
            .text_in_frame(&tab, 0, "progress")
            .await
            .unwrap()
            .starts_with("Using at most 50% of 2 CPU cores. 4 tasks")
    })
    .await;
    browser.set_window_size(1100, 520).await.unwrap();
    browser.screenshot(&tab, &screenshot_path("embed-running.png")).await.unwrap();
    browser.set_window_size(1100, 900).await.unwrap();

    // The host page may pause the widget, never start it; the visitor resumes it.
    browser
        .run_script(
            &tab,
            "document.querySelector('#slot iframe').contentWindow.postMessage({type: 'distributivecom:pause'}, '*');",
        )
        .await
        .unwrap();
    eventually("the host's pause", Duration::from_secs(10), || async { frame_state(&browser, &tab).await == "paused" })
        .await;
    browser
        .run_script(
            &tab,
            "document.querySelector('#slot iframe').contentWindow.postMessage({type: 'distributivecom:resume'}, '*');",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(frame_state(&browser, &tab).await, "paused", "a host page cannot resume");
    browser.click_in_frame(&tab, 0, "pause").await.unwrap();
    eventually("the visitor's resume", Duration::from_secs(10), || async {
        frame_state(&browser, &tab).await == "running"
    })
    .await;

    // The visitor stops: the widget leaves, and says so after a reload without asking or loading anything.
    browser.click_in_frame(&tab, 0, "stop").await.unwrap();
    wait_for_workers(&api, 1).await;
    assert_eq!(frame_state(&browser, &tab).await, "stopped");
    let states = browser.run_script(&tab, "return [window.states, window.events];").await.unwrap();
    assert_eq!(states[0], json!(["consent", "running", "paused", "running", "stopped"]), "{states}");
    assert_eq!(states[0], states[1], "embed.js re-sends each state as an event on the iframe");
    browser.visit(&tab, &host.url(&key), "ready").await.unwrap();
    browser.wait_for_in_frame(&tab, 0, "stopped").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(frame_state(&browser, &tab).await, "stopped");
    let reason = browser.text_in_frame(&tab, 0, "stopped-reason").await.unwrap();
    assert!(reason.contains("You chose not to donate on this site"), "{reason}");
    assert_nothing_but_the_consent_page(&frame_resources(&browser, &tab).await, "after the opt-out");
    assert_eq!(api.stats().await.unwrap().workers, 1, "only the native worker");
}

/// Starts a native worker beside the running widget and runs a job of four `primes` chunks, each on both
/// (replicated and validated); returns the worker, which stops when dropped.
async fn four_chunks_beside_a_native_worker(server: &TestServer, api: &Client) -> Process {
    let native = server.worker(1);
    wait_for_workers(api, 2).await;
    let chunks: Vec<_> = (0..4u64)
        .map(|index| chunk(&[&(index * 1_000_000).to_string(), &((index + 1) * 1_000_000).to_string()]))
        .collect();
    let job = submit(api, "primes", chunks).await;
    let (status, _) = finish(api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    native
}

/// The owner's balance.
async fn api_account(server: &TestServer, token: &str) -> (u16, i64) {
    let (status, account) = api(server, token, "GET", "/api/account", None).await;
    (status, account["balance_millicredits"].as_i64().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_on_another_origin_or_revoked_computes_nothing_and_revoking_stops_a_remembered_widget() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let api = server.client();
    let host = HostSite::start(&server.url).await;
    let owner = owner_token(&server, "olivia").await;
    let elsewhere = create_site(&server, &owner, "Another site", &["https://another.example".to_owned()]).await;
    let browser = Chromium::start().await.unwrap();

    // The snippet copied onto a page whose origin is not on the key's list: the neutral message.
    let tab = browser.open_tab(&host.url(&elsewhere), "ready").await.unwrap();
    browser.wait_for_in_frame(&tab, 0, "unavailable").await.unwrap();
    assert_eq!(browser.text_in_frame(&tab, 0, "unavailable").await.unwrap(), UNAVAILABLE);
    let states = browser.run_script(&tab, "return window.states;").await.unwrap();
    assert_eq!(states, json!(["unavailable"]));
    // A page that lies to the server about its origin gets a frame the browser refuses to show
    // (frame-ancestors): nothing of ours runs there.
    let forged = format!("{}/forged?site={elsewhere}&origin=https%3A%2F%2Fanother.example", host.origin());
    browser.visit(&tab, &forged, "ready").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let widget = browser.run_script_in_frame(&tab, 0, "return document.getElementById('start') !== null;").await;
    assert!(!matches!(widget, Ok(Value::Bool(true))), "the widget showed on a page not on the list");
    assert_eq!(site_stats(&server, &owner, &elsewhere).await["visitors"], 0);
    assert_eq!(api.stats().await.unwrap().workers, 0);

    // A revoked key: the neutral message.
    let revoked = create_site(&server, &owner, "Revoked", &[host.origin()]).await;
    assert_eq!(api_delete(&server, &owner, &revoked).await, 204);
    browser.visit(&tab, &host.url(&revoked), "ready").await.unwrap();
    browser.wait_for_in_frame(&tab, 0, "unavailable").await.unwrap();
    assert_eq!(browser.text_in_frame(&tab, 0, "unavailable").await.unwrap(), UNAVAILABLE);

    // A running widget whose key is revoked stops computing and says so.
    let live = create_site(&server, &owner, "Live", &[host.origin()]).await;
    browser.visit(&tab, &host.url(&live), "ready").await.unwrap();
    browser.wait_for_in_frame(&tab, 0, "start").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    browser.click_in_frame(&tab, 0, "start").await.unwrap();
    wait_for_workers(&api, 1).await;
    // Consent is remembered: on the site's next page the widget resumes by itself once it is in view.
    browser.visit(&tab, &host.url(&live), "ready").await.unwrap();
    eventually("the remembered consent to resume", Duration::from_secs(30), || async {
        frame_state(&browser, &tab).await == "running"
    })
    .await;
    wait_for_workers(&api, 1).await;
    assert_eq!(site_stats(&server, &owner, &live).await["visitors"], 1, "the same identity, kept by the frame");
    assert_eq!(api_delete(&server, &owner, &live).await, 204);
    wait_for_workers(&api, 0).await;
    eventually("the widget to give up", Duration::from_secs(10), || async {
        frame_state(&browser, &tab).await == "unavailable"
    })
    .await;
    assert_eq!(browser.text_in_frame(&tab, 0, "message").await.unwrap(), UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.stats().await.unwrap().workers, 0, "and does not reconnect");
}

async fn api_delete(server: &TestServer, token: &str, key: &str) -> u16 {
    api(server, token, "DELETE", &format!("/api/sites/{key}"), None).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_page_creates_lists_and_revokes_site_keys_at_desktop_and_phone_widths() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let browser = Chromium::start().await.unwrap();
    let tab = browser.open_tab(&format!("{}/signup", server.url), "username").await.unwrap();
    browser.type_into(&tab, "username", "olivia").await.unwrap();
    browser.type_into(&tab, "password", "a long enough passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    browser.wait_for(&tab, "site-name").await.unwrap();

    // A bad origin is refused with the server's own words, before anything is sent.
    browser.type_into(&tab, "site-name", "Olivia's bread blog").await.unwrap();
    browser.type_into(&tab, "site-origins", "https://blog.example/posts").await.unwrap();
    browser.click(&tab, "create-site").await.unwrap();
    eventually("the refusal", Duration::from_secs(10), || async {
        browser.text(&tab, "error").await.is_ok_and(|text| text.contains("an origin has no path"))
    })
    .await;
    browser.type_into(&tab, "site-origins", "https://blog.example\nhttps://www.blog.example").await.unwrap();
    browser.click(&tab, "create-site").await.unwrap();
    eventually("the snippet", Duration::from_secs(10), || async {
        browser.text(&tab, "new-snippet").await.is_ok_and(|text| text.contains("/embed.js\" data-site=\"site_"))
    })
    .await;
    let snippet = browser.text(&tab, "new-snippet").await.unwrap();
    assert!(snippet.starts_with(&format!("<script src=\"{}/embed.js\"", server.url)), "{snippet}");
    browser.type_into(&tab, "site-name", "Olivia's shop").await.unwrap();
    browser.type_into(&tab, "site-origins", "https://shop.example").await.unwrap();
    browser.click(&tab, "create-site").await.unwrap();
    eventually("both keys listed", Duration::from_secs(10), || async {
        browser.run_script(&tab, "return document.querySelectorAll('article.site').length;").await.unwrap() == json!(2)
    })
    .await;
    let labels = browser
        .run_script(
            &tab,
            "return [...document.querySelectorAll('#site-keys input, #site-keys textarea, #site-keys button')]
                .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
                .map(c => c.id || c.outerHTML);",
        )
        .await
        .unwrap();
    assert_eq!(labels, json!([]), "every control is labelled");
    browser.set_window_size(1100, 1500).await.unwrap();
    browser.run_script(&tab, "document.getElementById('site-keys').scrollIntoView();").await.unwrap();
    browser.screenshot(&tab, &screenshot_path("account-site-keys.png")).await.unwrap();
    browser.set_window_size(360, 900).await.unwrap();
    let overflow = browser
        .run_script(&tab, "document.getElementById('sites').scrollIntoView(); return document.documentElement.scrollWidth <= window.innerWidth;")
        .await
        .unwrap();
    assert_eq!(overflow, json!(true), "nothing wider than a phone");
    browser.screenshot(&tab, &screenshot_path("account-site-keys-360.png")).await.unwrap();
    browser.set_window_size(1100, 900).await.unwrap();

    // Revoking the shop's key (the newest, listed first) marks it revoked and leaves the blog's.
    browser.run_script(&tab, "document.querySelector('article.site button.revoke-site').click();").await.unwrap();
    eventually("the revocation", Duration::from_secs(10), || async {
        browser.run_script(&tab, "return document.querySelectorAll('article.site.revoked').length;").await.unwrap()
            == json!(1)
    })
    .await;
    let revoked =
        browser.run_script(&tab, "return document.querySelector('article.site.revoked h3').textContent;").await;
    assert_eq!(revoked.unwrap(), json!("Olivia's shop"));
}

/// A web session's cookie and the account's id, by logging in over the API.
async fn log_in(server: &TestServer, username: &str, password: &str) -> (String, u64) {
    let http = reqwest::Client::new();
    let body = json!({ "username": username, "password": password });
    let answer = http.post(format!("{}/api/auth/login", server.url)).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let session: Value = answer.json().await.unwrap();
    (cookie, session["user"]["id"].as_u64().unwrap())
}

async fn balance_with_cookie(server: &TestServer, cookie: &str) -> i64 {
    let http = reqwest::Client::new();
    let account: Value = http
        .get(format!("{}/api/account", server.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    account["balance_millicredits"].as_i64().unwrap()
}

/// The tab that `opener` opened since the browser had the tabs `before`; panics after ten seconds.
async fn new_tab(browser: &Chromium, before: &[WindowHandle], opener: &str) -> WindowHandle {
    for _ in 0..100 {
        let tabs = browser.tabs().await.unwrap();
        if let Some(opened) = tabs.into_iter().find(|handle| !before.contains(handle)) {
            return opened;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{opener} opened no tab");
}

#[tokio::test]
async fn a_visitor_with_an_account_here_takes_a_share_from_the_widget_and_is_paid_their_part_of_each_replica() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    let api = server.client();
    let host = HostSite::start(&server.url).await;
    let owner = owner_token(&server, "olivia").await;
    let key = create_site(&server, &owner, "Olivia's bread blog", &[host.origin()]).await;

    // The visitor has an account on the coordinator, but is not signed in in this browser.
    let signed_up = reqwest::Client::new()
        .post(format!("{}/api/auth/signup", server.url))
        .json(&json!({ "username": "vera", "password": "vera's long passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let browser = Chromium::start().await.unwrap();
    let (cookie, vera) = log_in(&server, "vera", "vera's long passphrase").await;
    let vera_before = balance_with_cookie(&server, &cookie).await;
    let (_, owner_before) = api_account(&server, &owner).await;

    // On the blog, the visitor opts in; the running widget offers the share.
    let tab = browser.open_tab(&host.url(&key), "ready").await.unwrap();
    browser.wait_for_in_frame(&tab, 0, "start").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    browser.click_in_frame(&tab, 0, "start").await.unwrap();
    wait_for_workers(&api, 1).await;
    eventually("the widget to run", Duration::from_secs(30), || async {
        frame_state(&browser, &tab).await == "running"
    })
    .await;
    let offer = browser.text_in_frame(&tab, 0, "share").await.unwrap();
    assert_eq!(offer, "Have an account with us? Take 50% of the credits");

    // Reaching the link asks for a single-use code; the click then opens a page of ours in a new tab at
    // once (signed in, the code out of its URL). A host page's script cannot click it (untrusted).
    browser.hover_in_frame(&tab, 0, "share").await.unwrap();
    eventually("the share code", Duration::from_secs(10), || async {
        browser
            .run_script_in_frame(&tab, 0, "return document.getElementById('share').dataset.ready || '';")
            .await
            .unwrap()
            == json!("true")
    })
    .await;
    let before: Vec<WindowHandle> = browser.tabs().await.unwrap();
    browser
        .run_script(
            &tab,
            "const frame = document.querySelector('#slot iframe');
             try { frame.contentWindow.document.getElementById('share').click(); } catch (error) {}",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.tabs().await.unwrap().len(), before.len(), "the host page opened nothing");
    browser.click_in_frame(&tab, 0, "share").await.unwrap();
    let share = new_tab(&browser, &before, "the widget").await;
    // Signed out, the page sends the visitor to log in and back, the code kept meanwhile.
    browser.wait_for(&share, "password").await.unwrap();
    let login = browser.run_script(&share, "return location.pathname + location.search;").await.unwrap();
    assert_eq!(login, json!("/login?next=%2Fshare"));
    browser.type_into(&share, "username", "vera").await.unwrap();
    browser.type_into(&share, "password", "vera's long passphrase").await.unwrap();
    browser.click(&share, "submit").await.unwrap();
    browser.wait_for(&share, "take-share").await.unwrap();
    let url = browser.run_script(&share, "return location.href;").await.unwrap();
    assert_eq!(url, json!(format!("{}/share", server.url)), "the code left the address bar");
    let opener = browser.run_script(&share, "return window.opener === null;").await.unwrap();
    assert_eq!(opener, json!(true), "opened without an opener");
    let offer = browser.run_script(&share, "return document.querySelector('main').innerText;").await.unwrap();
    let offer = offer.as_str().unwrap();
    assert!(
        offer.contains("50% of the credits") && offer.contains("Olivia's bread blog") && offer.contains("vera"),
        "{offer}"
    );
    browser.set_window_size(1100, 700).await.unwrap();
    browser.screenshot(&share, &screenshot_path("embed-share.png")).await.unwrap();
    assert_labelled_and_narrow(&browser, &share, "/share").await;
    browser.screenshot(&share, &screenshot_path("embed-share-360.png")).await.unwrap();
    browser.set_window_size(1100, 700).await.unwrap();
    browser.click(&share, "take-share").await.unwrap();
    browser.wait_for(&share, "share-done").await.unwrap();
    let done = browser.text(&share, "share-done").await.unwrap();
    assert!(
        done.starts_with("Done: from now on, 50% of the credits your browser earns for Olivia's bread blog"),
        "{done}"
    );
    // The code worked once: the same page again has nothing to hand in.
    browser.visit(&share, &format!("{}/share", server.url), "share-missing").await.unwrap();
    browser.close_tab(&share, &tab).await.unwrap();
    browser.set_window_size(1100, 900).await.unwrap();

    // With no code ready at the click (a touch screen has no hover to ask for one ahead, or the network is
    // slow), the widget waits for the code and then offers a plain link rather than a tab the browser
    // might block; the link opens the same page. The blog is loaded again, so that the widget (resumed by
    // the remembered consent) has no code yet, and its network made slow, a second per request, so that
    // the code asked for as the pointer arrives is still on its way at the click. An identity gets a code
    // at most every 5 s.
    browser.visit(&tab, &host.url(&key), "ready").await.unwrap();
    eventually("the widget to run again", Duration::from_secs(30), || async {
        frame_state(&browser, &tab).await == "running"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let slow = "const fetch = window.fetch;
                window.fetch = (...args) => new Promise(done => setTimeout(done, 1000)).then(() => fetch(...args));";
    browser.run_script_in_frame(&tab, 0, slow).await.unwrap();
    browser.click_in_frame(&tab, 0, "share").await.unwrap();
    let link = "const link = document.getElementById('share-link'); return link.hidden ? '' : link.href;";
    eventually("the fallback link", Duration::from_secs(10), || async {
        browser.run_script_in_frame(&tab, 0, link).await.unwrap() != json!("")
    })
    .await;
    let href = browser.run_script_in_frame(&tab, 0, link).await.unwrap();
    assert!(href.as_str().unwrap().starts_with(&format!("{}/share#", server.url)), "{href}");
    let before: Vec<WindowHandle> = browser.tabs().await.unwrap();
    browser.click_in_frame(&tab, 0, "share-link").await.unwrap();
    let again = new_tab(&browser, &before, "the fallback link").await;
    browser.wait_for(&again, "take-share").await.unwrap();
    browser.click(&again, "take-share").await.unwrap();
    browser.wait_for(&again, "share-done").await.unwrap();
    let hidden = browser.run_script_in_frame(&tab, 0, link).await.unwrap();
    assert_eq!(hidden, json!(""), "a used link is taken away");
    browser.close_tab(&again, &tab).await.unwrap();

    // The widget's validated work now pays the visitor half of each replica's volunteer side (rounded
    // down) and the site's owner the rest, in the same ledger transaction.
    let _native = four_chunks_beside_a_native_worker(&server, &api).await;
    let site = site_stats(&server, &owner, &key).await;
    assert_eq!(site["validated_replicas"], 4, "{site}");
    let connection = rusqlite::Connection::open(server.database()).unwrap();
    let owner_id: u64 = reqwest::Client::new()
        .get(format!("{}/api/account", server.url))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["user"]["id"]
        .as_u64()
        .unwrap();
    let mut statement = connection
        .prepare(
            "SELECT visitor.amount, owner.amount FROM ledger AS visitor
             JOIN ledger AS owner ON owner.txn = visitor.txn AND owner.account = ?2
             WHERE visitor.account = ?1 AND visitor.kind = 'payment'",
        )
        .unwrap();
    let parts: Vec<(i64, i64)> = statement
        .query_map([format!("user:{vera}"), format!("user:{owner_id}")], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(parts.len(), 4, "one payment per validated replica of the widget: {parts:?}");
    for (visitor, owner) in &parts {
        assert_eq!(*visitor, (visitor + owner) / 2, "{parts:?}");
    }
    let visitor_total: i64 = parts.iter().map(|(visitor, _)| visitor).sum();
    let owner_total: i64 = parts.iter().map(|(_, owner)| owner).sum();
    assert!(visitor_total > 0);
    assert_eq!(balance_with_cookie(&server, &cookie).await, vera_before + visitor_total);
    let (_, owner_after) = api_account(&server, &owner).await;
    assert_eq!(owner_after, owner_before + owner_total);
    assert_eq!(site["earned_millicredits"], owner_total, "the site's figures count what its owner earned");
    assert_ledger_conserved(&server.database());
}
