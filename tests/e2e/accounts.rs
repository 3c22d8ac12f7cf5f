//! Accounts and access over real HTTP: nothing is written without authentication, nobody reads another
//! account's jobs, revoked tokens stop working at once, passwords are stored only as argon2id hashes,
//! cookie writes need the CSRF token, log-in is rate-limited, and a new account gets its starter grant.

use distributivecom_client::{Client, ClientError};
use distributivecom_protocol::api::{JobRequest, JobState, TokenCreated, TokenInfo, WebSessionInfo};
use distributivecom_protocol::worker::{Credential, Hello, ServerMessage, WorkerKind, WorkerMessage};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// A browser-like session: the cookie the server set and the CSRF token it answered with.
struct WebSession {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf_token: String,
}

impl WebSession {
    /// Signs up (or logs in) through the JSON API, as the web app does, and checks the cookie's flags.
    async fn open(server: &TestServer, path: &str, username: &str, password: &str) -> (StatusCode, WebSession) {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}{path}", server.url))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set_cookie.contains(flag), "the session cookie has {flag}: {set_cookie}");
        }
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let info: WebSessionInfo = response.json().await.unwrap();
        assert_eq!(info.user.username, username);
        (status, WebSession { http, url: server.url.clone(), cookie, csrf_token: info.csrf_token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).header("cookie", &self.cookie)
    }

    /// Creates an API token from the account page's endpoint, with the CSRF header.
    async fn create_token(&self, name: &str) -> TokenCreated {
        let response = self
            .request(reqwest::Method::POST, "/api/account/tokens")
            .header("x-csrf-token", &self.csrf_token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }
}

fn api_status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_written_without_authentication_and_nobody_reads_another_accounts_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--starter-millicredits", "50000"]);
    let http = reqwest::Client::new();
    // The administrator's token, written on first start, is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data.join("admin-token")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(server.admin_token.starts_with("dc_"));

    // Every write, and every read of an account's data, refuses an anonymous caller with 401.
    let anonymous = [
        (reqwest::Method::POST, "/api/modules"),
        (reqwest::Method::POST, "/api/jobs"),
        (reqwest::Method::GET, "/api/jobs"),
        (reqwest::Method::GET, "/api/jobs/1"),
        (reqwest::Method::GET, "/api/jobs/1/results"),
        (reqwest::Method::POST, "/api/jobs/1/cancel"),
        (reqwest::Method::GET, "/api/account"),
        (reqwest::Method::GET, "/api/account/ledger"),
        (reqwest::Method::GET, "/api/account/tokens"),
        (reqwest::Method::POST, "/api/account/tokens"),
        (reqwest::Method::DELETE, "/api/account/tokens/1"),
        (reqwest::Method::POST, "/api/auth/logout"),
    ];
    for (method, path) in &anonymous {
        let response = http.request(method.clone(), format!("{}{path}", server.url)).body("{}").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].as_str().is_some_and(|message| !message.is_empty()), "{method} {path}: {body}");
        let forged = http
            .request(method.clone(), format!("{}{path}", server.url))
            .bearer_auth("dc_forged-token")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED, "{method} {path} with a made-up token");
    }

    // Two people sign up on the web; each makes an API token on the account page.
    let (status, alice) = WebSession::open(&server, "/api/auth/signup", "alice", "correct horse battery").await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, bob) = WebSession::open(&server, "/api/auth/signup", "bob", "bobs own passphrase").await;
    let taken = http
        .post(format!("{}/api/auth/signup", server.url))
        .json(&json!({ "username": "Alice", "password": "another long one" }))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let weak = http
        .post(format!("{}/api/auth/signup", server.url))
        .json(&json!({ "username": "carol", "password": "short" }))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);

    // A cookie alone does not write: the CSRF token must come along.
    let no_csrf = alice
        .request(reqwest::Method::POST, "/api/account/tokens")
        .json(&json!({ "name": "laptop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let wrong_csrf = alice
        .request(reqwest::Method::POST, "/api/account/tokens")
        .header("x-csrf-token", &bob.csrf_token)
        .json(&json!({ "name": "laptop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_csrf.status(), StatusCode::FORBIDDEN);
    let alice_token = alice.create_token("laptop").await;
    assert!(alice_token.token.starts_with("dc_"));
    let bob_token = bob.create_token("ci").await;
    let alice_api = server.anonymous_client().with_token(alice_token.token.clone());
    let bob_api = server.anonymous_client().with_token(bob_token.token.clone());

    // The starter grant, from the ledger.
    assert_eq!(alice_api.account().await.unwrap().balance_millicredits, 50_000);

    // Alice runs a job on volunteers; Bob sees none of it.
    let _workers = [server.worker(1), server.worker(1)];
    let job = submit(&alice_api, "echo-args", vec![chunk(&["mine"])]).await;
    let (status, results) = finish(&alice_api, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"mine\n");
    let not_yours = format!("you have no job {job}");
    assert_eq!(api_status(bob_api.status(job).await), (404, not_yours.clone()));
    assert_eq!(api_status(bob_api.results_page(job, 0, 10).await), (404, not_yours.clone()));
    assert_eq!(api_status(bob_api.cancel(job).await), (404, not_yours.clone()));
    assert_eq!(api_status(server.client().status(job).await).0, 404, "not even the administrator reads it");
    let listed = |session: &WebSession| session.request(reqwest::Method::GET, "/api/jobs").send();
    let bobs: Vec<serde_json::Value> = listed(&bob).await.unwrap().json().await.unwrap();
    assert!(bobs.is_empty(), "{bobs:?}");
    let alices: Vec<serde_json::Value> = listed(&alice).await.unwrap().json().await.unwrap();
    assert_eq!(alices.iter().map(|job| job["id"].as_u64()).collect::<Vec<_>>(), [Some(job)]);
    // Nor may Bob run Alice's program by its hash: he must upload it himself.
    let module = alice_api.upload_module(program("echo-args")).await.unwrap();
    let borrowed = JobRequest { module, chunks: vec![chunk(&["x"])], ..JobRequest::default() };
    let (status, message) = api_status(bob_api.submit(&borrowed).await);
    assert_eq!(status, 422, "{message}");

    // Alice paid from escrow; what was not spent came back.
    let account = alice_api.account().await.unwrap();
    assert_eq!(account.escrowed_millicredits, 0);
    assert!(account.balance_millicredits < 50_000 && account.balance_millicredits > 0, "{account:?}");

    // Revoking a token takes effect at once, for the API and for workers, connected ones included.
    let hello = |agent: &str| Hello {
        protocol_version: distributivecom_protocol::PROTOCOL_VERSION,
        kind: WorkerKind::Native,
        slots: 1,
        agent: agent.into(),
        max_memory_bytes: None,
        prefetch_per_slot: None,
        credential: Some(Credential::Token(alice_token.token.clone())),
        blobs: Vec::new(),
    };
    let mut connected = connect(&server).await;
    send(&mut connected, &WorkerMessage::Hello(hello("alice's worker"))).await;
    assert!(matches!(receive(&mut connected).await, Some(ServerMessage::Welcome(_))));
    let tokens: Vec<TokenInfo> =
        alice.request(reqwest::Method::GET, "/api/account/tokens").send().await.unwrap().json().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(alice_token.token.starts_with(&tokens[0].prefix) && tokens[0].prefix.len() < 20);
    let revoked = alice
        .request(reqwest::Method::DELETE, &format!("/api/account/tokens/{}", alice_token.id))
        .header("x-csrf-token", &alice.csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(api_status(alice_api.account().await).0, 401);
    assert_eq!(api_status(alice_api.upload_module(program("echo-args")).await).0, 401);
    let closed = receive(&mut connected).await;
    assert!(matches!(&closed, Some(ServerMessage::Error { message }) if message.contains("revoked")), "{closed:?}");
    assert!(receive(&mut connected).await.is_none(), "the connection is closed");
    let mut socket = connect(&server).await;
    send(&mut socket, &WorkerMessage::Hello(hello("a new worker"))).await;
    let refused = receive(&mut socket).await;
    assert!(matches!(&refused, Some(ServerMessage::Error { message }) if message.contains("revoked")), "{refused:?}");
    // Bob cannot revoke Alice's tokens, nor see them.
    let other = bob
        .request(reqwest::Method::DELETE, &format!("/api/account/tokens/{}", alice_token.id))
        .header("x-csrf-token", &bob.csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // Logging out ends the session.
    let out = alice
        .request(reqwest::Method::POST, "/api/auth/logout")
        .header("x-csrf-token", &alice.csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(alice.request(reqwest::Method::GET, "/api/account").send().await.unwrap().status(), 401);
    let (status, _) = WebSession::open(&server, "/api/auth/login", "alice", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK);

    // Passwords are stored as argon2id hashes, and neither passwords nor tokens appear in the database.
    let connection = read_only(&server.database());
    let hash: String =
        connection.query_row("SELECT password_hash FROM users WHERE username = 'alice'", [], |row| row.get(0)).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    drop(connection);
    let mut stored = std::fs::read(server.database()).unwrap();
    stored.extend(std::fs::read(server.data.join("distributivecom.sqlite3-wal")).unwrap_or_default());
    for secret in ["correct horse battery", "bobs own passphrase", &alice_token.token, &bob_token.token] {
        assert!(!contains(&stored, secret.as_bytes()), "{secret:?} is stored in the clear");
    }
    assert!(contains(&stored, hash.as_bytes()), "the search would have found what is there");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn log_in_and_sign_up_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--auth-attempts-per-minute", "3"]);
    let http = reqwest::Client::new();
    let attempt = |password: &'static str| {
        http.post(format!("{}/api/auth/login", server.url))
            .json(&json!({ "username": "admin", "password": password }))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(attempt("a wrong password").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let limited = attempt("another wrong password").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let signup = http
        .post(format!("{}/api/auth/signup", server.url))
        .json(&json!({ "username": "mallory", "password": "a long enough password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::TOO_MANY_REQUESTS, "sign-up shares the limit");
    // The rest of the API is not affected.
    let client: Client = server.client();
    assert!(client.account().await.is_ok());
}
