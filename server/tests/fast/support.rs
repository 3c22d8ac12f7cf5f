//! The fast tier's harness: a [`TestApp`] (the real router, coordinator, store and identity over a fresh
//! data directory) and a small request builder over `oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use distributivecom_server::clock::{Clock, unix_ms};
use distributivecom_server::config::ServerConfig;
use distributivecom_server::coordinator::Coordinator;
use distributivecom_server::http::{AppState, router};
use distributivecom_server::identity::{self, Identity};
use distributivecom_server::store::Store;
use tower::ServiceExt;

/// A running app, without a listening socket.
pub struct TestApp {
    /// Kept so that the data directory lives as long as the app.
    _dir: tempfile::TempDir,
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub coordinator: Arc<Coordinator>,
    pub identity: Arc<Identity>,
    pub router: Router,
    /// The administrator's API token, as the first start wrote it.
    pub admin_token: String,
    /// The clock of rewarded ads: it stands still until a test moves it.
    pub clock: Clock,
}

/// Builds a [`TestApp`]: `TestApp::new().with(|config| ...).start().await`.
pub struct Builder {
    config: ServerConfig,
}

impl TestApp {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Builder {
        Builder { config: ServerConfig::default() }
    }

    /// Starts building a request to `path`.
    pub fn request(&self, method: &str, path: &str) -> Call {
        Call {
            router: self.router.clone(),
            request: Request::builder().method(method).uri(path),
            body: Vec::new(),
            from: SocketAddr::from(([192, 0, 2, 1], 4000)),
        }
    }

    pub fn get(&self, path: &str) -> Call {
        self.request("GET", path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.request("POST", path)
    }

    /// A request as the administrator.
    pub fn admin(&self, method: &str, path: &str) -> Call {
        self.request(method, path).token(&self.admin_token)
    }

    pub fn database(&self) -> std::path::PathBuf {
        self.config.data_dir.join(distributivecom_server::store::DATABASE_FILE)
    }
}

impl Builder {
    /// Changes the configuration the app starts with.
    pub fn with(mut self, edit: impl FnOnce(&mut ServerConfig)) -> Builder {
        edit(&mut self.config);
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = self.config;
        config.data_dir = dir.path().join("data");
        let data_dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir)).await.unwrap().unwrap();
        identity::bootstrap(&store, &config).await.unwrap().expect("a fresh store gets an administrator");
        let admin_token = std::fs::read_to_string(config.data_dir.join("admin-token")).unwrap().trim().to_owned();
        let config = Arc::new(config);
        let (starting, shared) = (store.clone(), config.clone());
        let coordinator =
            tokio::task::spawn_blocking(move || Coordinator::start(starting, shared, 1 << 32)).await.unwrap().unwrap();
        let clock = Clock::manual(unix_ms());
        let state = AppState::new(store.clone(), config.clone(), coordinator.clone()).with_clock(clock.clone());
        let identity = state.identity.clone();
        TestApp { _dir: dir, store, config, coordinator, identity, router: router(state), admin_token, clock }
    }
}

/// A request being built.
pub struct Call {
    router: Router,
    request: axum::http::request::Builder,
    body: Vec<u8>,
    from: SocketAddr,
}

impl Call {
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.request = self.request.header(name, value);
        self
    }

    pub fn token(self, token: &str) -> Call {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A JSON body, with its content type and length.
    pub fn json(mut self, value: serde_json::Value) -> Call {
        self.body = serde_json::to_vec(&value).unwrap();
        self.header("content-type", "application/json")
    }

    pub fn body(mut self, bytes: Vec<u8>) -> Call {
        self.body = bytes;
        self
    }

    /// The client address the server sees.
    pub fn from(mut self, address: [u8; 4]) -> Call {
        self.from = SocketAddr::from((address, 4000));
        self
    }

    pub async fn send(mut self) -> Answer {
        let length = self.body.len();
        let body = Body::from(std::mem::take(&mut self.body));
        self.send_body(body, length).await
    }

    /// Sends `body` as it streams (see [`streamed_body`]), declaring `length` bytes unless a
    /// Content-Length header was set.
    pub async fn send_body(self, body: Body, length: usize) -> Answer {
        let mut request = self.request.body(body).unwrap();
        if !request.headers().contains_key("content-length") && !request.headers().contains_key("transfer-encoding") {
            request.headers_mut().insert("content-length", length.into());
        }
        request.extensions_mut().insert(ConnectInfo(self.from));
        let response = self.router.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        Answer { status, headers, body }
    }
}

/// A request body that sends what is pushed into the returned sender, and ends when the sender is
/// dropped: for uploads still in progress.
pub fn streamed_body() -> (tokio::sync::mpsc::Sender<Vec<u8>>, Body) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let piece = receiver.recv().await?;
        Some((Ok::<_, std::io::Error>(piece), receiver))
    });
    (sender, Body::from_stream(stream))
}

/// What the app answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error answer, checking that it is one.
    pub fn error(&self) -> String {
        let content_type = self.headers.get("content-type").map(|value| value.to_str().unwrap()).unwrap_or("");
        assert!(content_type.starts_with("application/json"), "{} answered {content_type:?}", self.status);
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.json())).to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|value| value.to_str().unwrap().to_owned())
    }
}

/// The smallest WASI command module: `(module (memory (export "memory") 1) (func (export "_start")))`.
pub const NOOP_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x05,
    0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, 0x06, b'_', b's',
    b't', b'a', b'r', b't', 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
];

impl TestApp {
    /// Uploads the no-op program as the token's account and returns its hash.
    pub async fn upload_noop(&self, token: &str) -> String {
        let answer = self
            .post("/api/modules")
            .token(token)
            .header("content-type", "application/wasm")
            .body(NOOP_MODULE.to_vec())
            .send()
            .await;
        assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
        answer.json()["sha256"].as_str().unwrap().to_owned()
    }

    /// Submits a job of `chunks` no-op chunks as the token's account; returns its id.
    pub async fn submit_noop(&self, token: &str, chunks: usize, extra: serde_json::Value) -> u64 {
        let module = self.upload_noop(token).await;
        let mut request = serde_json::json!({ "module": module, "chunks": vec![serde_json::json!({}); chunks] });
        if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
            request.extend(extra.clone());
        }
        let answer = self.post("/api/jobs").token(token).json(request).send().await;
        assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
        answer.json()["id"].as_u64().unwrap()
    }

    /// Signs up on the JSON API and returns (cookie, CSRF token).
    pub async fn sign_up(&self, username: &str) -> (String, String) {
        let body = serde_json::json!({ "username": username, "password": "correct horse battery" });
        let answer = self.post("/api/auth/signup").json(body).send().await;
        assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
        let cookie = answer.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
        (cookie, answer.json()["csrf_token"].as_str().unwrap().to_owned())
    }

    /// Creates an API token on the account page's endpoint, as the web session's owner; returns its id
    /// and the token.
    pub async fn create_token(&self, cookie: &str, csrf: &str, name: &str) -> (u64, String) {
        let answer = self
            .post("/api/account/tokens")
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .json(serde_json::json!({ "name": name }))
            .send()
            .await;
        assert_eq!(answer.status, 201);
        let created = answer.json();
        (created["id"].as_u64().unwrap(), created["token"].as_str().unwrap().to_owned())
    }

    /// Signs up and creates an API token; returns the token.
    pub async fn user_token(&self, username: &str) -> String {
        let (cookie, csrf) = self.sign_up(username).await;
        self.create_token(&cookie, &csrf, "tests").await.1
    }
}

impl TestApp {
    /// Serves the app on a loopback port, as `serve` does (its own accept loop over hyper), for what needs
    /// a real connection: streams that stay open. Returns the address.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = distributivecom_server::http::listener::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_millis(self.config.header_read_timeout_ms),
            max_connections: 1024,
            max_connections_per_address: 1024,
        };
        tokio::spawn(distributivecom_server::http::listener::serve(listener, self.router.clone(), limits));
        address
    }
}

/// What a Server-Sent Events stream delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sse {
    Event { name: String, data: String },
    Comment(String),
}

/// A GET read over a raw HTTP/1.1 connection on loopback, as a browser's EventSource reads it: the head
/// first, then the body (chunked, or of a declared length) piece by piece as it arrives.
pub struct RawResponse {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    chunked: bool,
    /// Body bytes received and not yet parsed into events.
    text: String,
    ended: bool,
}

impl RawResponse {
    pub async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        let mut response_headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else { break };
            response_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let chunked = response_headers.iter().any(|(name, value)| name == "transfer-encoding" && value == "chunked");
        RawResponse { reader, status, headers: response_headers, chunked, text: String::new(), ended: false }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(found, _)| found == name).map(|(_, value)| value.as_str())
    }

    /// The whole body of an answer with a declared length (an error's JSON).
    pub async fn body(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let length: usize = self.header("content-length").expect("a declared length").parse().unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    /// Reads the next piece of a chunked body; false at its end.
    async fn read_chunk(&mut self) -> bool {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        assert!(self.chunked, "a stream's body is chunked");
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.unwrap() == 0 {
            return false;
        }
        let size = usize::from_str_radix(line.trim_end(), 16).unwrap_or_else(|_| panic!("chunk size {line:?}"));
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.unwrap();
        self.text.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        size > 0
    }

    /// The next event or comment of a Server-Sent Events stream, or `None` once the server ended it.
    pub async fn next_event(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let (mut name, mut data, mut comment) = (String::new(), Vec::new(), None);
                for line in block.lines() {
                    if let Some(text) = line.strip_prefix(':') {
                        comment = Some(text.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => name = value.to_owned(),
                            "data" => data.push(value.to_owned()),
                            _ => {}
                        }
                    }
                }
                return Some(match comment {
                    Some(comment) if name.is_empty() && data.is_empty() => Sse::Comment(comment),
                    _ => Sse::Event { name, data: data.join("\n") },
                });
            }
            if self.ended || !self.read_chunk().await {
                self.ended = true;
                assert!(self.text.trim().is_empty(), "the stream ended inside an event: {:?}", self.text);
                return None;
            }
        }
    }
}
