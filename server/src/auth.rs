//! Identity: argon2id password hashes, API tokens, session cookies and anonymous volunteer secrets (the
//! last three stored only as SHA-256 hashes), the [`Caller`] extractor every write endpoint takes, the
//! CSRF check on cookie-authenticated writes, per-address rate limits, and the administrator created on
//! first start.
//!
//! Architecture Invariant: a handler that changes anything takes a [`Caller`], and one that reads a
//! user's data filters by `caller.user.id`; nothing else proves who is asking.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use distributivecom_protocol::api::VolunteerCredential;
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::coordinator::unix_ms;
use crate::http::{AppError, AppState};
use crate::store::accounts::{self, UserRow};
use crate::store::{Store, StoreError, ledger, writes};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "dc_session";
/// The header a cookie-authenticated write must carry, equal to the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Every API token starts with this, so that a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "dc_";
/// The file in the data directory that receives the administrator's API token on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Passwords longer than this are refused before hashing, so that nobody can make the server hash
/// megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MIN_PASSWORD_CHARS: usize = 10;
/// The characters of a token shown in listings.
const SHOWN_PREFIX_CHARS: usize = 10;

/// 32 random bytes from the operating system, base64url without padding (43 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // Without an operating system random source nothing here can be secure: refusing to run is right.
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn new_api_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_secret())
}

/// How tokens, cookies and volunteer secrets are stored: they are long random strings, so a fast hash
/// is enough (there is nothing to brute-force), and lookups by hash need no secret comparison.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in time that depends only on their lengths.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// An argon2id hash (PHC string, with its salt and parameters). Slow on purpose: call it off the async
/// threads.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system provides random bytes");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes are a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters hashes any password up to MAX_PASSWORD_BYTES")
        .to_string()
}

/// Whether `password` matches `phc`. Slow on purpose, like [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Verifies against a fixed hash when the account does not exist, so that a wrong username takes as
/// long as a wrong password and response times do not reveal which accounts exist.
pub fn verify_login(password: &str, phc: Option<&str>) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    match phc {
        Some(phc) => verify_password(password, phc),
        None => {
            let decoy = DECOY.get_or_init(|| hash_password("a password nobody has"));
            verify_password(password, decoy);
            false
        }
    }
}

/// Why a new account's username or password is refused. The web app shows the same rules.
pub fn credentials_problem(username: &str, password: &str) -> Option<String> {
    let length = username.chars().count();
    if !(3..=64).contains(&length) {
        return Some("a username has 3 to 64 characters".to_owned());
    }
    if !username.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')) {
        return Some("a username may contain only letters, digits, '.', '_' and '-'".to_owned());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!("a password has at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    None
}

/// The first characters of a token, to tell tokens apart in listings.
pub fn shown_prefix(token: &str) -> String {
    token.chars().take(SHOWN_PREFIX_CHARS).collect()
}

/// The signed-in user behind a request, and how they proved it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserRow,
    pub via: Via,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <token>`.
    Token { id: u64 },
    /// The session cookie; `cookie_hash` identifies the session for log-out.
    Session { cookie_hash: String, csrf_token: String },
}

impl Caller {
    /// The ledger account and volunteer key of this user.
    pub fn account(&self) -> String {
        ledger::user(self.user.id)
    }
}

/// Finds the caller of a request, if it carries credentials. Credentials that are present but wrong (a
/// revoked token, a cookie write without its CSRF token) are refused rather than treated as anonymous,
/// so that a client never silently acts as nobody.
async fn identify(parts: &Parts, state: &AppState) -> Result<Option<Caller>, AppError> {
    let store = state.coordinator.store();
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        if let Some(token) = value.strip_prefix("Bearer ") {
            let found = state.auth.token(store, sha256_hex(token.trim())).await?;
            let Some((user, id)) = found else {
                return Err(AppError::Unauthorized(
                    "this API token is not valid: it was revoked or mistyped; create a new one on your account page"
                        .to_owned(),
                ));
            };
            state.auth.touch_token(store, id);
            return Ok(Some(Caller { user, via: Via::Token { id } }));
        }
        // `Volunteer id:secret` identifies an anonymous volunteer, not a user: the volunteer endpoints
        // read it themselves.
        if !value.starts_with("Volunteer ") {
            return Err(AppError::Unauthorized(
                "unsupported Authorization header: send `Authorization: Bearer <API token>`".to_owned(),
            ));
        }
    }
    let Some(cookie) = session_cookie(&parts.headers) else {
        return Ok(None);
    };
    let cookie_hash = sha256_hex(&cookie);
    let lookup = cookie_hash.clone();
    let now = unix_ms();
    let Some((user, csrf_token)) = store.read(move |connection| accounts::session(connection, &lookup, now)).await?
    else {
        // An expired or logged-out session is simply no session.
        return Ok(None);
    };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = parts.headers.get(CSRF_HEADER).map(|value| value.as_bytes()).unwrap_or_default();
        if !constant_time_eq(sent, csrf_token.as_bytes()) {
            return Err(AppError::Forbidden(
                "this write is authenticated by the session cookie but lacks the session's X-CSRF-Token header"
                    .to_owned(),
            ));
        }
    }
    Ok(Some(Caller { user, via: Via::Session { cookie_hash, csrf_token } }))
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        identify(parts, state).await?.ok_or_else(|| {
            AppError::Unauthorized(
                "sign in first, or send an API token as `Authorization: Bearer <token>` (create one on your \
                 account page; `serve` writes the administrator's to DATA_DIR/admin-token)"
                    .to_owned(),
            )
        })
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        identify(parts, state).await
    }
}

/// An anonymous volunteer proving its identity with `Authorization: Volunteer <id>:<secret>`.
#[derive(Clone, Debug)]
pub struct VolunteerCaller(pub accounts::VolunteerRow);

impl FromRequestParts<AppState> for VolunteerCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Volunteer "))
            .and_then(|value| value.split_once(':'))
            .map(|(id, secret)| VolunteerCredential { id: id.to_owned(), secret: secret.to_owned() });
        let Some(credential) = credential else {
            return Err(AppError::Unauthorized(
                "send the volunteer identity as `Authorization: Volunteer <id>:<secret>`".to_owned(),
            ));
        };
        match check_volunteer(state.coordinator.store(), credential).await? {
            Some(volunteer) => Ok(VolunteerCaller(volunteer)),
            None => Err(AppError::Unauthorized("unknown volunteer identity or wrong secret".to_owned())),
        }
    }
}

/// The volunteer a credential names, if its secret is right.
pub async fn check_volunteer(
    store: &Store,
    credential: VolunteerCredential,
) -> Result<Option<accounts::VolunteerRow>, StoreError> {
    let id = credential.id.clone();
    let found = store.read(move |connection| accounts::volunteer(connection, &id)).await?;
    let secret_hash = sha256_hex(&credential.secret);
    Ok(found.filter(|volunteer| constant_time_eq(volunteer.secret_hash.as_bytes(), secret_hash.as_bytes())))
}

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie_header(value: &str, config: &ServerConfig) -> String {
    let secure = if config.secure_cookies { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        config.session_lifetime_ms / 1000
    )
}

/// The `Set-Cookie` value that ends one.
pub fn cleared_cookie_header(config: &ServerConfig) -> String {
    let secure = if config.secure_cookies { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Per-address token buckets: each address may spend `per_minute` attempts in a burst, refilled at
/// `per_minute` a minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Buckets kept before full ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one attempt for `address`, or says how many seconds until the next is allowed.
    pub fn check(&self, address: IpAddr, what: &str) -> Result<(), AppError> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES {
            // Forget addresses whose buckets have refilled: they would start full anyway.
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_second < capacity);
        }
        let (tokens, at) = buckets.entry(address).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let retry_after_secs = ((1.0 - *tokens) / per_second).ceil().max(1.0) as u64;
        Err(AppError::TooManyRequests {
            message: format!(
                "too many {what} from your address (at most {} a minute); try again in {retry_after_secs} s",
                self.per_minute
            ),
            retry_after_secs,
        })
    }
}

/// Shared auth state: rate limiters, and when each token last had its "last used" time written.
#[derive(Debug)]
pub struct Auth {
    pub logins: RateLimiter,
    pub volunteer_registrations: RateLimiter,
    touched: Mutex<HashMap<u64, u64>>,
    tokens: Mutex<TokenCache>,
}

/// Valid API tokens seen lately, by hash, so that a busy client's requests skip the database. A token
/// revoked through this server is forgotten at once and never remembered again.
#[derive(Debug, Default)]
struct TokenCache {
    valid: HashMap<String, (UserRow, u64, Instant)>,
    revoked: std::collections::HashSet<u64>,
}

/// A token's "last used" time is written at most this often, so that API calls do not all become writes.
const TOUCH_INTERVAL_MS: u64 = 60_000;
/// How long a token found valid is believed without asking the database again.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Tokens remembered at most; past that the cache starts over.
const MAX_CACHED_TOKENS: usize = 10_000;

impl Auth {
    pub fn new(config: &ServerConfig) -> Auth {
        Auth {
            logins: RateLimiter::new(config.auth_attempts_per_minute),
            volunteer_registrations: RateLimiter::new(config.volunteer_registrations_per_minute),
            touched: Mutex::new(HashMap::new()),
            tokens: Mutex::new(TokenCache::default()),
        }
    }

    /// The user and id of a valid API token, from memory or from the store.
    async fn token(&self, store: &Store, hash: String) -> Result<Option<(UserRow, u64)>, StoreError> {
        {
            let cache = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((user, id, seen)) = cache.valid.get(&hash)
                && seen.elapsed() < TOKEN_CACHE_TTL
            {
                return Ok(Some((user.clone(), *id)));
            }
        }
        let lookup = hash.clone();
        let found = store.read(move |connection| accounts::token(connection, &lookup)).await?;
        if let Some((user, id)) = &found {
            let mut cache = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !cache.revoked.contains(id) {
                if cache.valid.len() >= MAX_CACHED_TOKENS {
                    cache.valid.clear();
                }
                cache.valid.insert(hash, (user.clone(), *id, Instant::now()));
            }
        }
        Ok(found)
    }

    /// A token was revoked: it is not valid from now on, whatever a request in flight read before.
    pub fn forget_token(&self, id: u64) {
        let mut cache = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.revoked.insert(id);
        cache.valid.retain(|_, (_, cached, _)| *cached != id);
    }

    fn touch_token(&self, store: &Store, id: u64) {
        let now = unix_ms();
        let mut touched = self.touched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = touched.entry(id).or_insert(0);
        if now.saturating_sub(*last) < TOUCH_INTERVAL_MS {
            return;
        }
        *last = now;
        store.transact_then(move |connection| writes::touch_token(connection, id, now), |_| {});
    }
}

/// On the first start (no accounts yet): creates the administrator with its grant and an API token,
/// writes the token to `DATA_DIR/admin-token` (mode 0600) and returns that path. Jobs and programs stored
/// before accounts existed become the administrator's. Later starts return `None`.
pub async fn bootstrap(store: &Store, config: &ServerConfig) -> Result<Option<PathBuf>, BootstrapError> {
    if store.read(accounts::user_count).await? > 0 {
        return Ok(None);
    }
    let token = new_api_token();
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    // The password is random and never shown: the administrator uses the token (and may sign up a web
    // account like anyone else).
    let password_hash = tokio::task::spawn_blocking(|| hash_password(&random_secret()))
        .await
        .map_err(|error| BootstrapError::Hashing(error.to_string()))?;
    let (grant, token_hash, prefix) = (config.admin_grant_millicredits, sha256_hex(&token), shown_prefix(&token));
    let now = unix_ms();
    // The file first: if writing it fails, no administrator exists yet and the next start tries again.
    write_private_file(&path, &format!("{token}\n"))
        .map_err(|source| BootstrapError::TokenFile { path: path.clone(), source })?;
    let created = store
        .transact(move |connection| {
            let Some(admin) = writes::create_user(connection, "admin", &password_hash, true, grant, now)? else {
                return Ok(None);
            };
            writes::create_token(connection, admin, "admin (created on first start)", &prefix, &token_hash, now)?;
            writes::adopt_orphans(connection, admin)?;
            Ok(Some(admin))
        })
        .await?;
    Ok(created.map(|_| path))
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not hash the administrator's password: {0}")]
    Hashing(String),
    #[error("could not write the administrator's API token to {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
}

/// Writes a file only its owner can read, replacing any earlier one.
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // `mode` applies only to a new file: tighten one that existed.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents.as_bytes())?;
        return file.sync_all();
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_argon2id_and_verify() {
        let hash = hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse battery"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        // The same password hashes differently each time (a fresh salt).
        assert_ne!(hash, hash_password("correct horse battery"));
        assert!(!verify_login("anything at all", None));
    }

    #[test]
    fn tokens_are_random_and_recognisable() {
        let (first, second) = (new_api_token(), new_api_token());
        assert!(first.starts_with(TOKEN_PREFIX) && first.len() == TOKEN_PREFIX.len() + 43, "{first}");
        assert_ne!(first, second);
        assert_eq!(sha256_hex(&first).len(), 64);
        assert_eq!(shown_prefix(&first).len(), SHOWN_PREFIX_CHARS);
    }

    #[test]
    fn sign_up_rules_match_the_web_app() {
        assert_eq!(credentials_problem("alice", "0123456789"), None);
        assert!(credentials_problem("al", "0123456789").is_some());
        assert!(credentials_problem("alice smith", "0123456789").is_some());
        assert!(credentials_problem("alice", "short").is_some());
        assert!(credentials_problem("alice", &"x".repeat(MAX_PASSWORD_BYTES + 1)).is_some());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "theme=dark; dc_session=abc; other=1".parse().unwrap());
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, "dc_sessionx=abc".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new(3);
        let address = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..3 {
            limiter.check(address, "attempts").unwrap();
        }
        match limiter.check(address, "attempts") {
            Err(AppError::TooManyRequests { retry_after_secs, .. }) => assert!(retry_after_secs >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another address has its own bucket.
        limiter.check(IpAddr::from([192, 0, 2, 2]), "attempts").unwrap();
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_by_default() {
        let config = ServerConfig::default();
        let cookie = session_cookie_header("v", &config);
        for part in ["dc_session=v", "HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        let plain = ServerConfig { secure_cookies: false, ..ServerConfig::default() };
        assert!(!session_cookie_header("v", &plain).contains("Secure"));
        assert!(cleared_cookie_header(&config).contains("Max-Age=0"));
    }
}
