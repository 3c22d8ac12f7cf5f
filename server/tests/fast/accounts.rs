//! Accounts over HTTP, in process: nothing is written without authentication, cookie writes need the CSRF
//! token, nobody reads another account's jobs, revoked tokens stop at once, secrets are stored only
//! hashed, and sign-up and log-in are rate-limited per address.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn nothing_is_written_or_read_without_authentication() {
    let app = TestApp::new().start().await;
    let endpoints = [
        ("POST", "/api/modules"),
        ("GET", "/api/modules"),
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/1"),
        ("GET", "/api/jobs/1/results"),
        ("GET", "/api/jobs/1/results.zip"),
        ("GET", "/api/jobs/1/events"),
        ("POST", "/api/jobs/1/cancel"),
        ("GET", "/api/account"),
        ("GET", "/api/account/ledger"),
        ("GET", "/api/account/volunteering"),
        ("GET", "/api/account/tokens"),
        ("POST", "/api/account/tokens"),
        ("DELETE", "/api/account/tokens/1"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/campaigns"),
        ("GET", "/api/campaigns"),
        ("POST", "/api/campaigns/1/approve"),
        ("POST", "/api/campaigns/1/end"),
        ("POST", "/api/ad-views"),
        ("POST", "/api/ad-views/av_x/complete"),
    ];
    for (method, path) in endpoints {
        let anonymous = app.request(method, path).body(b"{}".to_vec()).send().await;
        assert_eq!(anonymous.status, 401, "{method} {path}");
        assert!(!anonymous.error().is_empty());
        assert_eq!(anonymous.header("www-authenticate").as_deref(), Some("Bearer"));
        let forged = app.request(method, path).token("dc_forged-token").send().await;
        assert_eq!(forged.status, 401, "{method} {path} with a made-up token");
    }
}

#[tokio::test]
async fn sign_up_log_in_and_log_out_with_a_strict_cookie_and_its_csrf_token() {
    let app = TestApp::new().start().await;
    let body = json!({ "username": "alice", "password": "correct horse battery" });
    let signed_up = app.post("/api/auth/signup").json(body.clone()).send().await;
    assert_eq!(signed_up.status, 201);
    let set_cookie = signed_up.header("set-cookie").unwrap();
    for flag in ["dc_session=", "HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = signed_up.json()["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(signed_up.json()["user"]["username"], "alice");

    let taken = app.post("/api/auth/signup").json(json!({ "username": "Alice", "password": "another long one" }));
    assert_eq!(taken.send().await.status, 409, "names are taken whatever their case");
    let weak = app.post("/api/auth/signup").json(json!({ "username": "carol", "password": "short" })).send().await;
    assert_eq!((weak.status, weak.error()), (400, "a password has at least 10 characters".to_owned()));
    let wrong = app.post("/api/auth/login").json(json!({ "username": "alice", "password": "not it at all" }));
    assert_eq!(wrong.send().await.status, 401);

    // A cookie alone does not write: its CSRF token must come along, and only its own.
    let write = |csrf: Option<&str>| {
        let call = app.post("/api/account/tokens").header("cookie", &cookie).json(json!({ "name": "laptop" }));
        match csrf {
            Some(csrf) => call.header("x-csrf-token", csrf),
            None => call,
        }
    };
    assert_eq!(write(None).send().await.status, 403);
    let (_, bobs_csrf) = app.sign_up("bob").await;
    assert_eq!(write(Some(&bobs_csrf)).send().await.status, 403);
    assert_eq!(write(Some(&csrf)).send().await.status, 201);
    let session = app.get("/api/auth/session").header("cookie", &cookie).send().await;
    assert_eq!((session.status, session.json()["csrf_token"].as_str()), (200, Some(csrf.as_str())));

    let out = app.post("/api/auth/logout").header("cookie", &cookie).header("x-csrf-token", &csrf).send().await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(app.get("/api/account").header("cookie", &cookie).send().await.status, 401);
    let again = app.post("/api/auth/login").json(body).send().await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn nobody_reads_or_runs_another_accounts_jobs_and_programs() {
    let app = TestApp::new().start().await;
    let (alice, bob) = (app.user_token("alice").await, app.user_token("bob").await);
    let job = app.submit_noop(&alice, 1, json!({})).await;
    let not_yours = format!("you have no job {job}");
    for (method, path) in [
        ("GET", format!("/api/jobs/{job}")),
        ("GET", format!("/api/jobs/{job}/results")),
        ("GET", format!("/api/jobs/{job}/results.zip")),
        ("GET", format!("/api/jobs/{job}/events")),
        ("POST", format!("/api/jobs/{job}/cancel")),
    ] {
        let answer = app.request(method, &path).token(&bob).send().await;
        assert_eq!((answer.status, answer.error()), (404, not_yours.clone()), "{method} {path}");
        assert_eq!(app.admin(method, &path).send().await.status, 404, "not even the administrator: {path}");
    }
    assert_eq!(app.get("/api/jobs").token(&bob).send().await.json(), json!([]));
    let listed = app.get("/api/jobs").token(&alice).send().await.json();
    assert_eq!(listed.as_array().unwrap().iter().map(|job| job["id"].as_u64()).collect::<Vec<_>>(), [Some(job)]);
    assert_eq!(app.get(&format!("/api/jobs/{job}")).token(&alice).send().await.status, 200);

    // Bob may not run Alice's program by its hash, nor download it as uploaded; he uploads it himself.
    let module = app.upload_noop(&alice).await;
    let borrowed = json!({ "module": module, "chunks": [{}] });
    let refused = app.post("/api/jobs").token(&bob).json(borrowed).send().await;
    assert_eq!(refused.status, 422);
    assert!(refused.error().contains("has not been uploaded by this account"), "{}", refused.error());
    assert_eq!(app.get(&format!("/modules/{module}")).token(&bob).send().await.status, 404);
    assert_eq!(app.get(&format!("/modules/{module}")).token(&alice).send().await.body, NOOP_MODULE);
    assert_eq!(app.get("/api/modules").token(&bob).send().await.json(), json!([]), "nor see it listed");
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once_and_only_its_owner_can_revoke_it() {
    let app = TestApp::new().start().await;
    let (cookie, csrf) = app.sign_up("alice").await;
    let (id, token) = app.create_token(&cookie, &csrf, "ci").await;
    assert!(token.starts_with("dc_"));
    assert_eq!(app.get("/api/account").token(&token).send().await.status, 200, "the token works (and is cached)");
    let listed = app.get("/api/account/tokens").header("cookie", &cookie).send().await.json();
    let prefix = listed[0]["prefix"].as_str().unwrap();
    assert!(token.starts_with(prefix) && prefix.len() < 20, "{listed}");

    let bob = app.user_token("bob").await;
    let others = app.request("DELETE", &format!("/api/account/tokens/{id}")).token(&bob).send().await;
    assert_eq!(others.status, 404, "Bob cannot revoke Alice's token");
    let revoke = app.request("DELETE", &format!("/api/account/tokens/{id}"));
    let revoked = revoke.header("cookie", &cookie).header("x-csrf-token", &csrf).send().await;
    assert_eq!(revoked.status, 204);
    let after = app.get("/api/account").token(&token).send().await;
    assert_eq!(after.status, 401, "revoked at once, though it was remembered a moment ago");
    assert!(after.error().contains("revoked or mistyped"));
}

#[tokio::test]
async fn passwords_and_tokens_are_stored_only_as_hashes() {
    let app = TestApp::new().start().await;
    let token = app.user_token("alice").await;
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let hash: String =
        connection.query_row("SELECT password_hash FROM users WHERE username = 'alice'", [], |row| row.get(0)).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    drop(connection);
    // The WAL first: a checkpoint between the two reads moves pages from it into the database, never back.
    let mut stored = std::fs::read(app.database().with_extension("sqlite3-wal")).unwrap_or_default();
    stored.extend(std::fs::read(app.database()).unwrap());
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|window| window == needle);
    for secret in ["correct horse battery", token.as_str(), app.admin_token.as_str()] {
        assert!(!contains(secret.as_bytes()), "{secret:?} is stored in the clear");
    }
    assert!(contains(hash.as_bytes()), "the search finds what is there");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(app.config.data_dir.join("admin-token")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the administrator's token file is its owner's alone");
}

#[tokio::test]
async fn sign_up_and_log_in_are_rate_limited_per_address_before_anything_is_read() {
    let app = TestApp::new().with(|config| config.auth_attempts_per_minute = 3).start().await;
    let attempt = |password: &str| {
        app.post("/api/auth/login").from([198, 51, 100, 7]).json(json!({ "username": "admin", "password": password }))
    };
    for _ in 0..3 {
        assert_eq!(attempt("a wrong password").send().await.status, 401);
    }
    let limited = attempt("another wrong password").send().await;
    assert_eq!(limited.status, 429);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Sign-up shares the allowance, and a malformed body is not even read.
    let signup = app.post("/api/auth/signup").from([198, 51, 100, 7]).header("content-type", "application/json");
    assert_eq!(signup.body(b"{not json".to_vec()).send().await.status, 429);
    // Another address has its own; the rest of the API is not limited.
    let elsewhere = app.post("/api/auth/login").from([198, 51, 100, 8]);
    assert_eq!(elsewhere.json(json!({ "username": "admin", "password": "nope nope nope" })).send().await.status, 401);
    assert_eq!(app.admin("GET", "/api/account").from([198, 51, 100, 7]).send().await.status, 200);
}

#[tokio::test]
async fn a_sign_up_says_what_became_of_the_volunteer_identity_it_sent() {
    let app = TestApp::new().start().await;
    let identity = app.post("/api/volunteers").send().await.json();
    let wrong = json!({
        "username": "mallory",
        "password": "correct horse battery",
        "volunteer": { "id": identity["id"], "secret": "a wrong secret" },
    });
    let claim = app.post("/api/auth/signup").json(wrong).send().await.json()["volunteer_claim"].clone();
    assert_eq!((claim["claimed"].as_bool(), claim["millicredits"].as_i64()), (Some(false), Some(0)));
    assert!(claim["message"].as_str().unwrap().starts_with("nothing was claimed"));
    let right = json!({ "username": "owner", "password": "correct horse battery", "volunteer": identity });
    let claim = app.post("/api/auth/signup").json(right).send().await.json()["volunteer_claim"].clone();
    assert_eq!(claim["claimed"], true);
}
