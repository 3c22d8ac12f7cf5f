//! Site keys of the embed script over HTTP, in process: only signed-in owners create, list and revoke
//! them, with strict names and origins; another account's key is as unknown as a made-up one; a site's
//! visitors register only for an active key, cannot be claimed, and pay the site's owner for their
//! validated work, which the site's statistics count; revoking a key closes its visitors' connections and
//! turns its widget into the neutral message.

use distributivecom_protocol::worker::{Credential, Output, ReplicaReport, RunStatus, ServerMessage, WorkerMessage};
use serde_json::json;

use crate::support::*;
use crate::worker_socket::FakeWorker;

const UNAVAILABLE: &str = "This site's donation widget is not available.";

/// Creates a site key as the token's account; returns the answer's JSON.
async fn create_site(app: &TestApp, token: &str, origins: &[&str]) -> serde_json::Value {
    let body = json!({ "name": "Alice's blog", "origins": origins });
    let answer = app.post("/api/sites").token(token).header("host", "compute.example:8080").json(body).send().await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()
}

fn key_of(site: &serde_json::Value) -> String {
    site["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn site_keys_are_created_listed_and_revoked_by_their_owner_only() {
    let app = TestApp::new().start().await;
    let (alice, bob) = (app.user_token("alice").await, app.user_token("bob").await);
    let site =
        create_site(&app, &alice, &["HTTPS://Blog.Example/", "http://localhost:8000", "https://blog.example:443"])
            .await;
    let key = key_of(&site);
    assert!(key.starts_with("site_") && key.len() == 48, "{key}");
    assert_eq!(site["name"], "Alice's blog");
    assert_eq!(site["origins"], json!(["https://blog.example", "http://localhost:8000"]), "normalised, each once");
    assert_eq!(
        site["snippet"],
        format!(r#"<script src="http://compute.example:8080/embed.js" data-site="{key}" async></script>"#)
    );
    for counter in ["visitors", "validated_replicas", "compute_ms", "work_units", "earned_millicredits"] {
        assert_eq!(site[counter], 0, "{counter}");
    }
    assert_eq!(site["revoked_at_ms"], serde_json::Value::Null);
    let second = key_of(&create_site(&app, &alice, &["https://shop.example"]).await);
    assert_ne!(second, key, "keys are random");

    let listed = app.get("/api/sites").token(&alice).send().await.json();
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|site| site["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [second.as_str(), key.as_str()], "newest first");
    assert_eq!(app.get("/api/sites").token(&bob).send().await.json(), json!([]), "nobody sees another's keys");

    // Another account's key, a made-up one and a malformed one are all simply not the caller's.
    for (token, target) in
        [(&bob, key.as_str()), (&alice, "site_madeupmadeupmadeupmadeupmadeupmadeupmadeupm"), (&alice, "x")]
    {
        let refused = app.request("DELETE", &format!("/api/sites/{target}")).token(token).send().await;
        assert_eq!((refused.status, refused.error()), (404, "you have no active site key with this value".to_owned()));
    }
    assert_eq!(app.request("DELETE", &format!("/api/sites/{key}")).token(&alice).send().await.status, 204);
    assert_eq!(app.request("DELETE", &format!("/api/sites/{key}")).token(&alice).send().await.status, 404);
    let listed = app.get("/api/sites").token(&alice).send().await.json();
    assert!(listed[1]["revoked_at_ms"].as_u64().is_some(), "{listed}");
    assert_eq!(listed[0]["revoked_at_ms"], serde_json::Value::Null, "the other key is untouched");

    // Signed-in only: anonymous callers and cookie writes without the CSRF token are refused.
    assert_eq!(app.get("/api/sites").send().await.status, 401);
    let anonymous = app.post("/api/sites").json(json!({ "name": "x", "origins": ["https://x.example"] })).send().await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(app.request("DELETE", &format!("/api/sites/{second}")).send().await.status, 401);
    let (cookie, csrf) = app.sign_up("carol").await;
    let body = json!({ "name": "Carol's", "origins": ["https://carol.example"] });
    let without_csrf = app.post("/api/sites").header("cookie", &cookie).json(body.clone()).send().await;
    assert_eq!(without_csrf.status, 403);
    let with_csrf =
        app.post("/api/sites").header("cookie", &cookie).header("x-csrf-token", &csrf).json(body).send().await;
    assert_eq!(with_csrf.status, 201);
}

#[tokio::test]
async fn site_requests_are_checked_strictly_and_keys_are_bounded_per_account() {
    let app = TestApp::new().start().await;
    let alice = app.user_token("alice").await;
    let sixteen: Vec<String> = (0..16).map(|port| format!("http://localhost:{}", 8000 + port)).collect();
    let seventeen: Vec<String> = (0..17).map(|port| format!("http://localhost:{}", 8000 + port)).collect();
    let refused = [
        (json!({ "name": "", "origins": ["https://a.example"] }), "a site's name has 1 to 100 characters"),
        (json!({ "name": "x".repeat(101), "origins": ["https://a.example"] }), "a site's name has 1 to 100 characters"),
        (json!({ "name": "Blog", "origins": [] }), "a site key lists 1 to 16 origins"),
        (json!({ "name": "Blog", "origins": seventeen }), "a site key lists 1 to 16 origins"),
        (json!({ "name": "Blog", "origins": ["https://a.example/blog"] }), "an origin has no path"),
        (json!({ "name": "Blog", "origins": ["a.example"] }), "it needs a scheme"),
        (json!({ "name": "Blog", "origins": ["https://*.a.example"] }), "wildcards are not allowed"),
        (json!({ "name": "Blog", "origins": ["https://a.example; script-src *"] }), "not an origin"),
        (json!({ "name": "Blog", "origins": ["file:///etc"] }), "only http:// and https://"),
        (json!({ "name": "Blog", "origins": [format!("https://{}.example", "a".repeat(300))] }), "at most 300"),
        (json!({ "name": "Blog", "origins": ["https://a.example"], "share": 100 }), "unknown field"),
    ];
    for (body, expected) in refused {
        let answer = app.post("/api/sites").token(&alice).json(body.clone()).send().await;
        assert_eq!(answer.status, 400, "{body}");
        assert!(answer.error().contains(expected), "{body}: {}", answer.error());
    }
    let sixteen: Vec<&str> = sixteen.iter().map(String::as_str).collect();
    let first = create_site(&app, &alice, &sixteen).await;
    for _ in 1..100 {
        create_site(&app, &alice, &["https://a.example"]).await;
    }
    let body = json!({ "name": "One too many", "origins": ["https://a.example"] });
    let too_many = app.post("/api/sites").token(&alice).json(body.clone()).send().await;
    assert_eq!(too_many.status, 409);
    assert!(too_many.error().contains("100 active site keys"), "{}", too_many.error());
    // A revoked key makes room again.
    assert_eq!(app.request("DELETE", &format!("/api/sites/{}", key_of(&first))).token(&alice).send().await.status, 204);
    assert_eq!(app.post("/api/sites").token(&alice).json(body).send().await.status, 201);
}

#[tokio::test]
async fn the_widget_is_framed_only_by_the_keys_origins_and_neutral_otherwise() {
    let app = TestApp::new().start().await;
    let alice = app.user_token("alice").await;
    let key = key_of(&create_site(&app, &alice, &["https://blog.example", "http://localhost:8000"]).await);
    let frame = |query: String| app.get(&format!("/embed/frame?{query}")).send();

    let widget = frame(format!("site={key}&origin=https%3A%2F%2Fblog.example&throttle=99&threads=9")).await;
    assert_eq!(widget.status, 200);
    let policy = widget.header("content-security-policy").unwrap();
    assert!(policy.ends_with("frame-ancestors https://blog.example http://localhost:8000"), "{policy}");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self' 'wasm-unsafe-eval'"));
    assert_eq!(widget.header("cache-control").as_deref(), Some("no-store"));
    let page = String::from_utf8(widget.body.clone()).unwrap();
    assert!(page.contains(r#"data-throttle="50" data-threads="2""#), "a host page cannot ask for more: {page}");
    assert!(page.contains("Alice&#39;s blog") && page.contains(r#"id="start""#) && page.contains(r#"id="decline""#));
    assert!(!page.contains("<script>"), "no inline script");
    let defaults =
        String::from_utf8(frame(format!("site={key}&origin=http://localhost:8000&throttle=abc")).await.body).unwrap();
    assert!(defaults.contains(r#"data-throttle="30" data-threads="1""#), "{defaults}");

    let neutral = |answer: Answer| {
        assert_eq!(answer.status, 200);
        let page = String::from_utf8(answer.body.clone()).unwrap();
        assert!(page.contains(UNAVAILABLE) && !page.contains("data-site") && !page.contains(r#"id="start""#), "{page}");
        assert!(answer.header("content-security-policy").unwrap().ends_with("frame-ancestors *"));
    };
    neutral(frame(format!("site={key}&origin=https://evil.example")).await);
    neutral(frame(format!("site={key}")).await);
    neutral(
        frame("site=site_madeupmadeupmadeupmadeupmadeupmadeupmadeupm&origin=https://blog.example".to_owned()).await,
    );
    neutral(frame("site=%3Cscript%3E&origin=https://blog.example".to_owned()).await);
    neutral(frame(String::new()).await);
    assert_eq!(app.request("DELETE", &format!("/api/sites/{key}")).token(&alice).send().await.status, 204);
    neutral(frame(format!("site={key}&origin=https://blog.example")).await);
}

#[tokio::test]
async fn visitors_register_only_for_active_keys_and_nobody_claims_them() {
    let app = TestApp::new().start().await;
    let alice = app.user_token("alice").await;
    let key = key_of(&create_site(&app, &alice, &["https://blog.example"]).await);
    let registered = app.post(&format!("/api/sites/{key}/volunteers")).send().await;
    assert_eq!(registered.status, 201);
    let credential = registered.json();
    assert!(credential["id"].as_str().unwrap().starts_with("v-"));
    for unknown in ["site_madeupmadeupmadeupmadeupmadeupmadeupmadeupm", "nonsense"] {
        let refused = app.post(&format!("/api/sites/{unknown}/volunteers")).send().await;
        assert_eq!((refused.status, refused.error()), (404, UNAVAILABLE.to_owned()));
    }
    let listed = app.get("/api/sites").token(&alice).send().await.json();
    assert_eq!(listed[0]["visitors"], 1);

    // Signing up with the visitor's identity claims nothing: its earnings are the site owner's.
    let body = json!({ "username": "mallory", "password": "correct horse battery", "volunteer": credential });
    let signed_up = app.post("/api/auth/signup").json(body).send().await;
    assert_eq!(signed_up.status, 201);
    assert_eq!(signed_up.json()["volunteer_claim"]["claimed"], false);

    // Registrations share the anonymous identities' allowance per address (30 a minute by default).
    for _ in 0..30 {
        let answer = app.post(&format!("/api/sites/{key}/volunteers")).from([192, 0, 2, 9]).send().await;
        assert_eq!(answer.status, 201);
    }
    let limited = app.post("/api/volunteers").from([192, 0, 2, 9]).send().await;
    assert_eq!(limited.status, 429);
    assert_eq!(app.post(&format!("/api/sites/{key}/volunteers")).from([192, 0, 2, 9]).send().await.status, 429);

    assert_eq!(app.request("DELETE", &format!("/api/sites/{key}")).token(&alice).send().await.status, 204);
    let revoked = app.post(&format!("/api/sites/{key}/volunteers")).send().await;
    assert_eq!((revoked.status, revoked.error()), (404, UNAVAILABLE.to_owned()));
}

/// A site visitor's identity, registered as the widget does.
async fn visitor(app: &TestApp, key: &str) -> Credential {
    let credential = app.post(&format!("/api/sites/{key}/volunteers")).send().await.json();
    Credential::Volunteer {
        id: credential["id"].as_str().unwrap().to_owned(),
        secret: credential["secret"].as_str().unwrap().to_owned(),
    }
}

/// Two volunteers each run a replica of a one-chunk no-op job and report these figures; returns the job
/// once it succeeded (the replicas validated each other).
async fn both_run_one_chunk(app: &TestApp, volunteers: [Credential; 2], work_units: u64, compute_us: u64) -> u64 {
    let mut workers = Vec::new();
    for credential in volunteers {
        let mut worker = FakeWorker::connect(app, 64);
        assert!(matches!(worker.hello(credential, 1).await, Some(ServerMessage::Welcome(_))));
        workers.push(worker);
    }
    let job = app.submit_noop(&app.admin_token, 1, json!({})).await;
    for worker in &mut workers {
        let Some(ServerMessage::Assign(assigned)) = worker.receive().await else { panic!("an assignment expected") };
        let report = ReplicaReport {
            replica: assigned[0].replica,
            status: RunStatus::Exited { code: 0 },
            output: Output::default(),
            compute_us,
            work_units,
        };
        worker.send(&WorkerMessage::Results(vec![report])).await;
    }
    let status = app.admin("GET", &format!("/api/jobs/{job}?wait_ms=10000&known_finished=0")).send().await.json();
    assert_eq!(status["state"], "succeeded", "{status}");
    job
}

#[tokio::test]
async fn a_sites_visitors_validated_work_pays_the_sites_owner_and_counts_in_its_statistics() {
    let app = TestApp::new().start().await;
    let alice = app.user_token("alice").await;
    let key = key_of(&create_site(&app, &alice, &["https://blog.example"]).await);
    let balance = |token: String| {
        let call = app.get("/api/account").token(&token);
        async move { call.send().await.json()["balance_millicredits"].as_i64().unwrap() }
    };
    let before = balance(alice.clone()).await;
    // Two visitors of the site: two distinct volunteers, so they validate each other's replicas. A
    // volunteer's word on its run time is capped by the job's time limit (60 s by default).
    let work_units = 2_000_000u64;
    let visitors = [visitor(&app, &key).await, visitor(&app, &key).await];
    both_run_one_chunk(&app, visitors, work_units, u64::MAX).await;
    let share = (app.config.pricing.cost(work_units) * 90 + 99) / 100;
    assert_eq!(balance(alice.clone()).await, before + 2 * share, "both replicas paid the site's owner");
    let site = &app.get("/api/sites").token(&alice).send().await.json()[0];
    assert_eq!(site["visitors"], 2);
    assert_eq!(site["validated_replicas"], 2);
    assert_eq!(site["work_units"], 2 * work_units);
    assert_eq!(site["earned_millicredits"], 2 * share);
    assert_eq!(site["compute_ms"], 2 * app.config.default_limits.time_limit_ms);
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    assert!(distributivecom_server::store::ledger::totals(&connection).unwrap().conserved());
    assert_eq!(distributivecom_server::store::ledger::audit(&connection).unwrap(), vec![]);
}

#[tokio::test]
async fn revoking_a_key_closes_its_visitors_connections_and_refuses_new_ones() {
    let app = TestApp::new().start().await;
    let alice = app.user_token("alice").await;
    let (revoked_key, kept_key) = (
        key_of(&create_site(&app, &alice, &["https://blog.example"]).await),
        key_of(&create_site(&app, &alice, &["https://shop.example"]).await),
    );
    let credential = visitor(&app, &revoked_key).await;
    let mut connected = FakeWorker::connect(&app, 64);
    assert!(matches!(connected.hello(credential.clone(), 1).await, Some(ServerMessage::Welcome(_))));
    let mut other_site = FakeWorker::connect(&app, 64);
    assert!(matches!(other_site.hello(visitor(&app, &kept_key).await, 1).await, Some(ServerMessage::Welcome(_))));
    assert_eq!(app.coordinator.stats().workers, 2);

    assert_eq!(app.request("DELETE", &format!("/api/sites/{revoked_key}")).token(&alice).send().await.status, 204);
    let closed = connected.receive().await;
    assert!(matches!(&closed, Some(ServerMessage::Error { message }) if message == UNAVAILABLE), "{closed:?}");
    assert_eq!(connected.receive().await, None);
    let mut later = FakeWorker::connect(&app, 64);
    let refused = later.hello(credential, 1).await;
    assert!(matches!(&refused, Some(ServerMessage::Error { message }) if message == UNAVAILABLE), "{refused:?}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(app.coordinator.stats().workers, 1, "only the other site's visitor is left");
}

/// `Authorization: Volunteer <id>:<secret>` for a credential.
fn volunteer_header(credential: &Credential) -> String {
    let Credential::Volunteer { id, secret } = credential else { panic!("a volunteer identity expected") };
    format!("Volunteer {id}:{secret}")
}

/// A share code for the identity, as the widget asks for one.
async fn share_code(app: &TestApp, credential: &Credential) -> String {
    let answer = app.post("/api/embed/share-codes").header("authorization", &volunteer_header(credential)).send().await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    let code = answer.json();
    assert_eq!(code["site_name"], "Alice's blog");
    assert_eq!(code["share_percent"], 50);
    code["code"].as_str().unwrap().to_owned()
}

async fn take_share(app: &TestApp, token: &str, code: &str) -> (u16, String) {
    let answer = app.post("/api/embed/shares").token(token).json(json!({ "code": code })).send().await;
    let text =
        if answer.status == 200 { answer.json()["site_name"].as_str().unwrap().to_owned() } else { answer.error() };
    (answer.status, text)
}

/// Moves every share code's issue 6 s into the past, as if the identities had waited for their next one.
fn wait_for_next_codes(app: &TestApp) {
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    connection
        .execute(
            "UPDATE volunteers SET share_code_expires_at_ms = share_code_expires_at_ms - 6000
             WHERE share_code_expires_at_ms IS NOT NULL",
            [],
        )
        .unwrap();
}

async fn preview(app: &TestApp, token: &str, code: &str) -> (u16, String) {
    let answer = app.post("/api/embed/shares/preview").token(token).json(json!({ "code": code })).send().await;
    let text =
        if answer.status == 200 { answer.json()["site_name"].as_str().unwrap().to_owned() } else { answer.error() };
    (answer.status, text)
}

#[tokio::test]
async fn a_visitor_takes_a_share_once_with_a_single_use_code_and_nobody_else_can() {
    let app = TestApp::new().start().await;
    let (alice, mallory) = (app.user_token("alice").await, app.user_token("mallory").await);
    let (vera_cookie, vera_csrf) = app.sign_up("vera").await;
    let vera = app.create_token(&vera_cookie, &vera_csrf, "tests").await.1;
    let key = key_of(&create_site(&app, &alice, &["https://blog.example"]).await);
    let credential = visitor(&app, &key).await;

    // Only a site's visitor's identity, with its secret, gets a code.
    let plain = app.post("/api/volunteers").send().await.json();
    let plain = Credential::Volunteer {
        id: plain["id"].as_str().unwrap().to_owned(),
        secret: plain["secret"].as_str().unwrap().to_owned(),
    };
    let refused = app.post("/api/embed/share-codes").header("authorization", &volunteer_header(&plain)).send().await;
    assert_eq!(refused.status, 404, "{}", refused.error());
    assert!(refused.error().contains("only the identity of an active site's visitor"), "{}", refused.error());
    let Credential::Volunteer { id, .. } = &credential else { unreachable!() };
    let forged =
        app.post("/api/embed/share-codes").header("authorization", &format!("Volunteer {id}:wrong")).send().await;
    assert_eq!((forged.status, forged.error()), (401, "unknown volunteer identity or wrong secret".to_owned()));
    assert_eq!(app.post("/api/embed/share-codes").send().await.status, 401);

    // One code at a time, and a new one at most every 5 s (each is a write).
    let code = share_code(&app, &credential).await;
    assert!(code.starts_with("share_") && code.len() == 49, "{code}");
    let again = app.post("/api/embed/share-codes").header("authorization", &volunteer_header(&credential)).send().await;
    assert_eq!(again.status, 429, "{}", again.error());
    assert_eq!(again.header("retry-after").as_deref(), Some("5"));

    // Taking a share needs an account, and a cookie needs its CSRF header; neither uses the code up.
    let anonymous = app.post("/api/embed/shares").json(json!({ "code": code })).send().await;
    assert_eq!(anonymous.status, 401);
    let forged =
        app.post("/api/embed/shares").header("cookie", &vera_cookie).json(json!({ "code": code })).send().await;
    assert_eq!(forged.status, 403, "{}", forged.error());
    // A made-up code is unknown; a body with more than the code is refused.
    let unknown = format!("share_{}", "x".repeat(43));
    for made_up in [unknown.as_str(), "nonsense", ""] {
        let (status, message) = take_share(&app, &vera, made_up).await;
        assert_eq!(status, 404, "{made_up}: {message}");
        assert!(message.contains("unknown, used or expired"), "{message}");
        assert_eq!(preview(&app, &vera, made_up).await.0, 404);
    }
    let extra = app.post("/api/embed/shares").token(&vera).json(json!({ "code": code, "split": 100 })).send().await;
    assert_eq!(extra.status, 400, "{}", extra.error());

    // The preview names the site and uses nothing up; a newer code replaces the older one; the newer one
    // works once.
    assert_eq!(preview(&app, &vera, &code).await, (200, "Alice's blog".to_owned()));
    assert_eq!(preview(&app, &vera, &code).await.0, 200, "a preview uses nothing up");
    wait_for_next_codes(&app);
    let newer = share_code(&app, &credential).await;
    assert_eq!(take_share(&app, &vera, &code).await.0, 404, "replaced");
    let taken = app
        .post("/api/embed/shares")
        .header("cookie", &vera_cookie)
        .header("x-csrf-token", &vera_csrf)
        .json(json!({ "code": newer }))
        .send()
        .await;
    assert_eq!((taken.status, taken.json()), (200, json!({ "site_name": "Alice's blog", "share_percent": 50 })));
    assert_eq!(take_share(&app, &vera, &newer).await.0, 404, "used");
    assert_eq!(preview(&app, &vera, &newer).await.0, 404, "used");

    // The share is vera's now: another account cannot take it over (and the refusal uses the code up),
    // and the site's owner has no share to take.
    wait_for_next_codes(&app);
    let code = share_code(&app, &credential).await;
    let (status, message) = take_share(&app, &mallory, &code).await;
    assert_eq!((status, message.as_str()), (409, "this browser's share on that site already goes to another account"));
    assert_eq!(take_share(&app, &vera, &code).await.0, 404, "a refusal used the code up");
    wait_for_next_codes(&app);
    let code = share_code(&app, &credential).await;
    assert_eq!(take_share(&app, &vera, &code).await, (200, "Alice's blog".to_owned()), "the same account again");
    let second = visitor(&app, &key).await;
    let code = share_code(&app, &second).await;
    let (status, message) = take_share(&app, &alice, &code).await;
    assert_eq!((status, message.as_str()), (409, "you own this site: everything its visitors earn is yours already"));

    // An expired code is refused (its expiry moved into the past in the database file).
    wait_for_next_codes(&app);
    let code = share_code(&app, &second).await;
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    connection
        .execute("UPDATE volunteers SET share_code_expires_at_ms = 1 WHERE share_code_hash IS NOT NULL", [])
        .unwrap();
    assert_eq!(preview(&app, &mallory, &code).await.0, 404, "expired");
    assert_eq!(take_share(&app, &mallory, &code).await.0, 404, "expired");

    // A revoked key's visitors have no share to give.
    let code = share_code(&app, &second).await;
    assert_eq!(app.request("DELETE", &format!("/api/sites/{key}")).token(&alice).send().await.status, 204);
    assert_eq!(preview(&app, &mallory, &code).await.0, 404, "revoked since");
    assert_eq!(take_share(&app, &mallory, &code).await.0, 404, "revoked since");
    wait_for_next_codes(&app);
    let refused = app.post("/api/embed/share-codes").header("authorization", &volunteer_header(&second)).send().await;
    assert_eq!(refused.status, 404);
}

#[tokio::test]
async fn a_visitor_who_took_a_share_gets_half_of_the_volunteer_side_and_the_owner_the_rest() {
    let app = TestApp::new().start().await;
    let (alice, vera) = (app.user_token("alice").await, app.user_token("vera").await);
    let key = key_of(&create_site(&app, &alice, &["https://blog.example"]).await);
    let balance = |token: String| {
        let call = app.get("/api/account").token(&token);
        async move { call.send().await.json()["balance_millicredits"].as_i64().unwrap() }
    };
    let (alice_before, vera_before) = (balance(alice.clone()).await, balance(vera.clone()).await);
    let (sharing, keeping) = (visitor(&app, &key).await, visitor(&app, &key).await);
    let code = share_code(&app, &sharing).await;
    assert_eq!(take_share(&app, &vera, &code).await.0, 200);

    // An odd volunteer share, so the rounding shows.
    let work_units = 2_000_003u64;
    let job = both_run_one_chunk(&app, [sharing, keeping], work_units, 1_000).await;
    let share = (app.config.pricing.cost(work_units) * 90 + 99) / 100;
    let visitor_part = share / 2;
    assert!(visitor_part > 0);
    assert_eq!(balance(vera.clone()).await, vera_before + visitor_part, "the visitor's half, rounded down");
    assert_eq!(
        balance(alice.clone()).await,
        alice_before + share + (share - visitor_part),
        "the owner: one whole, one rest"
    );
    let site = &app.get("/api/sites").token(&alice).send().await.json()[0];
    assert_eq!(site["earned_millicredits"], share + (share - visitor_part), "what the owner earned");
    assert_eq!(site["validated_replicas"], 2);
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    assert!(distributivecom_server::store::ledger::totals(&connection).unwrap().conserved());
    assert_eq!(distributivecom_server::store::ledger::audit(&connection).unwrap(), vec![]);
    // The payment is one transaction that moves the escrow to the owner and the visitor (and the fee to
    // the burn account, when there is one).
    let vera_account = format!("user:{}", account_id(&app, &vera).await);
    let mut legs = connection
        .prepare(
            "SELECT account FROM ledger WHERE txn = (SELECT MAX(txn) FROM ledger WHERE kind = 'payment' AND account = ?1)
             ORDER BY account",
        )
        .unwrap();
    let accounts: Vec<String> =
        legs.query_map([&vera_account], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    let alice_account = format!("user:{}", account_id(&app, &alice).await);
    let expected = [format!("escrow:job:{job}"), alice_account, vera_account];
    assert!(expected.iter().all(|account| accounts.contains(account)), "{accounts:?}");
}

async fn account_id(app: &TestApp, token: &str) -> u64 {
    app.get("/api/account").token(token).send().await.json()["user"]["id"].as_u64().unwrap()
}
