//! Identity, with nothing of HTTP in it: argon2id password hashes; API tokens, web-session cookies and
//! anonymous volunteer secrets (the last three stored only as SHA-256 hashes); who a request's
//! credentials or a worker's hello name; per-address rate limits; and the administrator created on first
//! start. The HTTP extractors (`http::extract`) and the worker socket ask this module; it asks only the
//! store.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use distributivecom_protocol::api::VolunteerCredential;
use distributivecom_protocol::worker::Credential;
use sha2::{Digest, Sha256};

use crate::clock::unix_ms;
use crate::config::ServerConfig;
use crate::store::accounts::{self, UserRow, VolunteerRow};
use crate::store::{Store, StoreError, ledger, sites, writes};

/// Every API token starts with this, so that a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "dc_";
/// The file in the data directory that receives the administrator's API token on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// What a site's visitor whose site key is unknown or revoked is told, by the widget and the worker socket
/// alike: neutral, since the visitor did nothing wrong.
pub const SITE_UNAVAILABLE: &str = "This site's donation widget is not available.";
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
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
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

/// The group a client address counts in for per-address limits: the address itself for IPv4, its /64
/// network for IPv6 (one subscriber usually holds a whole /64, so single IPv6 addresses cost nothing).
pub fn address_group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Too many attempts from one address: what to tell the client, and when it may try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    pub message: String,
    pub retry_after_secs: u64,
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
    pub fn check(&self, address: IpAddr, what: &str) -> Result<(), RateLimited> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES {
            // Forget addresses whose buckets have refilled: they would start full anyway.
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_second < capacity);
        }
        let (tokens, at) = buckets.entry(address_group(address)).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let retry_after_secs = ((1.0 - *tokens) / per_second).ceil().max(1.0) as u64;
        Err(RateLimited {
            message: format!(
                "too many {what} from your address (at most {} a minute); try again in {retry_after_secs} s",
                self.per_minute
            ),
            retry_after_secs,
        })
    }
}

/// A web session just started: the cookie's value (shown once, stored only hashed), its CSRF token, and
/// what became of the volunteer identity sent along.
#[derive(Clone, Debug)]
pub struct StartedSession {
    pub user: UserRow,
    pub cookie: String,
    pub csrf_token: String,
    pub claim: Option<Claim>,
}

/// What signing up or logging in did with the anonymous volunteer identity it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub volunteer: String,
    /// The millicredits moved to the account; `None` if nothing was claimed (an unknown identity, a wrong
    /// secret, or another account's).
    pub moved: Option<i64>,
}

/// Why a sign-up was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    /// The username or password breaks the rules.
    #[error("{0}")]
    Invalid(String),
    #[error("the username {0} is taken")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who a worker's hello proved it volunteers for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerIdentity {
    /// The ledger account and volunteer key: `user:<id>` or `volunteer:<id>`.
    pub volunteer: String,
    /// Its current run of validated replicas.
    pub trust: u32,
    /// The API token it connected with, if any: revoking the token closes the connection.
    pub token: Option<u64>,
    /// The site whose visitor it is, if any: revoking the site's key closes the connection.
    pub site: Option<u64>,
}

/// Answers who is asking, for the HTTP edge and the worker socket: rate limiters, API tokens seen lately,
/// and when each token last had its "last used" time written.
#[derive(Debug)]
pub struct Identity {
    store: Store,
    pub logins: RateLimiter,
    pub volunteer_registrations: RateLimiter,
    touched: Mutex<HashMap<u64, u64>>,
    tokens: Mutex<TokenCache>,
    /// Password hashes computed at once at most (each takes 19 MiB and tens of milliseconds), so that a
    /// flood of log-ins waits instead of taking every thread and much memory.
    password_work: tokio::sync::Semaphore,
    session_lifetime_ms: u64,
    starter_grant_millicredits: i64,
}

/// Valid API tokens seen lately, by hash, so that a busy client's requests skip the database. A token
/// revoked through this server is forgotten at once and never remembered again.
#[derive(Debug, Default)]
struct TokenCache {
    valid: HashMap<String, (UserRow, u64, Instant)>,
    revoked: HashSet<u64>,
}

/// A token's "last used" time is written at most this often, so that API calls do not all become writes.
const TOUCH_INTERVAL_MS: u64 = 60_000;
/// How long a token found valid is believed without asking the database again.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);
/// Tokens remembered at most; past that the cache starts over.
const MAX_CACHED_TOKENS: usize = 10_000;

impl Identity {
    pub fn new(store: Store, config: &ServerConfig) -> Identity {
        Identity {
            store,
            logins: RateLimiter::new(config.auth_attempts_per_minute),
            volunteer_registrations: RateLimiter::new(config.volunteer_registrations_per_minute),
            touched: Mutex::new(HashMap::new()),
            tokens: Mutex::new(TokenCache::default()),
            password_work: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |cores| cores.get()).max(2),
            ),
            session_lifetime_ms: config.session_lifetime_ms,
            starter_grant_millicredits: config.starter_grant_millicredits,
        }
    }

    /// Runs slow password work (argon2id) off the async threads, a few at a time.
    async fn password_work<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        // The semaphore is never closed.
        let _turn = self.password_work.acquire().await.ok();
        match tokio::task::spawn_blocking(work).await {
            Ok(done) => done,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// Creates an account with the starter grant and starts its web session; the volunteer identity sent
    /// along, if it holds, becomes the account's with what it earned.
    pub async fn sign_up(
        &self,
        username: &str,
        password: &str,
        volunteer: Option<VolunteerCredential>,
    ) -> Result<StartedSession, SignUpError> {
        if let Some(problem) = credentials_problem(username, password) {
            return Err(SignUpError::Invalid(problem));
        }
        let password = password.to_owned();
        let password_hash = self.password_work(move || hash_password(&password)).await;
        let (name, grant, now) = (username.to_owned(), self.starter_grant_millicredits, unix_ms());
        let created = self
            .store
            .transact(move |connection| writes::create_user(connection, &name, &password_hash, false, grant, now))
            .await?;
        let Some(id) = created else {
            return Err(SignUpError::Taken(username.to_owned()));
        };
        let user = UserRow { id, username: username.to_owned(), password_hash: String::new(), is_admin: false };
        Ok(self.start_web_session(user, volunteer).await?)
    }

    /// Checks a username and password and starts a web session; `None` for a wrong pair (which takes as
    /// long whether or not the account exists).
    pub async fn log_in(
        &self,
        username: &str,
        password: &str,
        volunteer: Option<VolunteerCredential>,
    ) -> Result<Option<StartedSession>, StoreError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        let name = username.to_owned();
        let user = self.store.read(move |connection| accounts::user_by_name(connection, &name)).await?;
        let (password, hash) = (password.to_owned(), user.as_ref().map(|user| user.password_hash.clone()));
        let verified = self.password_work(move || verify_login(&password, hash.as_deref())).await;
        match user {
            Some(user) if verified => Ok(Some(self.start_web_session(user, volunteer).await?)),
            _ => Ok(None),
        }
    }

    /// Claims the volunteer identity (if it holds) and stores a new web session.
    async fn start_web_session(
        &self,
        user: UserRow,
        volunteer: Option<VolunteerCredential>,
    ) -> Result<StartedSession, StoreError> {
        // An identity with a wrong secret, or that belongs to another account, is left alone (signing in
        // must not fail because of what an old browser remembers); the answer says nothing was claimed.
        let sent = volunteer.as_ref().map(|credential| credential.id.clone());
        let verified = match volunteer {
            Some(credential) => self.volunteer(credential).await?.map(|volunteer| volunteer.id),
            None => None,
        };
        let (cookie, csrf_token) = (random_secret(), random_secret());
        let (cookie_hash, csrf, id) = (sha256_hex(&cookie), csrf_token.clone(), user.id);
        let (now, expires) = (unix_ms(), unix_ms().saturating_add(self.session_lifetime_ms));
        let moved = self
            .store
            .transact(move |connection| {
                let moved = match &verified {
                    Some(volunteer) => writes::claim_volunteer(connection, volunteer, id, now)?,
                    None => None,
                };
                writes::create_web_session(connection, &cookie_hash, id, &csrf, now, expires)?;
                Ok(moved)
            })
            .await?;
        let claim = sent.map(|volunteer| Claim { volunteer, moved });
        Ok(StartedSession { user, cookie, csrf_token, claim })
    }

    /// Ends a web session.
    pub async fn end_web_session(&self, cookie_hash: String) -> Result<(), StoreError> {
        self.store.transact(move |connection| writes::delete_web_session(connection, &cookie_hash)).await
    }

    /// Issues an anonymous volunteer identity, the caller's own at once if `owner` is signed in.
    pub async fn register_volunteer(&self, owner: Option<u64>) -> Result<VolunteerCredential, StoreError> {
        let credential = VolunteerCredential { id: format!("v-{}", &random_secret()[..22]), secret: random_secret() };
        let (id, hash, now) = (credential.id.clone(), sha256_hex(&credential.secret), unix_ms());
        self.store
            .transact(move |connection| {
                writes::register_volunteer(connection, &id, &hash, now)?;
                if let Some(owner) = owner {
                    writes::claim_volunteer(connection, &id, owner, now)?;
                }
                Ok(())
            })
            .await?;
        Ok(credential)
    }

    /// Issues an anonymous volunteer identity for a visitor of the site of `key`, who opted in in the
    /// embed widget: what it earns goes to the site's owner, and nobody can claim it. `None` (and nothing
    /// stored) for an unknown or revoked key.
    pub async fn register_site_volunteer(&self, key: &str) -> Result<Option<VolunteerCredential>, StoreError> {
        let credential = VolunteerCredential { id: format!("v-{}", &random_secret()[..22]), secret: random_secret() };
        let (key, id, hash, now) = (key.to_owned(), credential.id.clone(), sha256_hex(&credential.secret), unix_ms());
        let registered =
            self.store.transact(move |connection| sites::register_volunteer(connection, &key, &id, &hash, now)).await?;
        Ok(registered.map(|_| credential))
    }

    /// The user and id of a valid API token, from memory or from the store; its "last used" time is
    /// written now and then.
    pub async fn api_token(&self, token: &str) -> Result<Option<(UserRow, u64)>, StoreError> {
        let hash = sha256_hex(token);
        let cached = {
            let cache = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            cache
                .valid
                .get(&hash)
                .filter(|(_, _, seen)| seen.elapsed() < TOKEN_CACHE_TTL)
                .map(|(user, id, _)| (user.clone(), *id))
        };
        let found = match cached {
            Some(found) => Some(found),
            None => {
                let lookup = hash.clone();
                let found = self.store.read(move |connection| accounts::token(connection, &lookup)).await?;
                if let Some((user, id)) = &found {
                    let mut cache = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if !cache.revoked.contains(id) {
                        if cache.valid.len() >= MAX_CACHED_TOKENS {
                            cache.valid.clear();
                        }
                        cache.valid.insert(hash, (user.clone(), *id, Instant::now()));
                    }
                }
                found
            }
        };
        if let Some((_, id)) = &found {
            self.touch_token(*id);
        }
        Ok(found)
    }

    /// Creates an API token for `user`; the token itself is in the answer only (the store keeps its hash).
    pub async fn create_api_token(&self, user: u64, name: &str) -> Result<(u64, String), StoreError> {
        let token = new_api_token();
        let (name, prefix, hash, now) = (name.to_owned(), shown_prefix(&token), sha256_hex(&token), unix_ms());
        let id = self
            .store
            .transact(move |connection| writes::create_token(connection, user, &name, &prefix, &hash, now))
            .await?;
        Ok((id, token))
    }

    /// Revokes one of `user`'s tokens, at once for every request; false if the user has no such active
    /// token.
    pub async fn revoke_api_token(&self, user: u64, id: u64) -> Result<bool, StoreError> {
        let now = unix_ms();
        let revoked = self.store.transact(move |connection| writes::revoke_token(connection, user, id, now)).await?;
        if revoked {
            self.forget_token(id);
        }
        Ok(revoked)
    }

    /// A token was revoked: it is not valid from now on, whatever a request in flight read before.
    fn forget_token(&self, id: u64) {
        let mut cache = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.revoked.insert(id);
        cache.valid.retain(|_, (_, cached, _)| *cached != id);
    }

    fn touch_token(&self, id: u64) {
        let now = unix_ms();
        let mut touched = self.touched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = touched.entry(id).or_insert(0);
        if now.saturating_sub(*last) < TOUCH_INTERVAL_MS {
            return;
        }
        *last = now;
        self.store.transact_then(move |connection| writes::touch_token(connection, id, now), |_| {});
    }

    /// The user of a web session's cookie value, and the session's CSRF token and cookie hash; `None` for
    /// an unknown, expired or logged-out session.
    pub async fn web_session(&self, cookie: &str) -> Result<Option<(UserRow, String, String)>, StoreError> {
        let cookie_hash = sha256_hex(cookie);
        let (lookup, now) = (cookie_hash.clone(), unix_ms());
        let found = self.store.read(move |connection| accounts::web_session(connection, &lookup, now)).await?;
        Ok(found.map(|(user, csrf_token)| (user, csrf_token, cookie_hash)))
    }

    /// The anonymous volunteer a credential names, if its secret is right.
    pub async fn volunteer(&self, credential: VolunteerCredential) -> Result<Option<VolunteerRow>, StoreError> {
        let id = credential.id.clone();
        let found = self.store.read(move |connection| accounts::volunteer(connection, &id)).await?;
        let secret_hash = sha256_hex(&credential.secret);
        Ok(found.filter(|volunteer| constant_time_eq(volunteer.secret_hash.as_bytes(), secret_hash.as_bytes())))
    }

    /// Who a worker's hello says it volunteers for, or the refusal to send it.
    pub async fn worker(&self, credential: Option<Credential>) -> Result<WorkerIdentity, String> {
        let internal = |error: StoreError| {
            tracing::error!(%error, "could not check a worker's credential");
            "the server could not check your credential; try again later".to_owned()
        };
        let (mut token_id, mut site) = (None, None);
        let volunteer = match credential {
            None => {
                return Err("say who you volunteer for: send an API token (`--token`) or an anonymous volunteer \
                            identity from POST /api/volunteers in hello's credential"
                    .to_owned());
            }
            Some(Credential::Token(token)) => match self.api_token(&token).await.map_err(internal)? {
                Some((user, id)) => {
                    token_id = Some(id);
                    ledger::user(user.id)
                }
                None => return Err("this API token is not valid: it was revoked or mistyped".to_owned()),
            },
            Some(Credential::Volunteer { id, secret }) => {
                match self.volunteer(VolunteerCredential { id, secret }).await.map_err(internal)? {
                    Some(volunteer) if volunteer.site.is_some_and(|site| !site.active) => {
                        return Err(SITE_UNAVAILABLE.to_owned());
                    }
                    Some(volunteer) => {
                        site = volunteer.site.map(|site| site.id);
                        match volunteer.user_id {
                            Some(user) => ledger::user(user),
                            None => ledger::volunteer(&volunteer.id),
                        }
                    }
                    None => return Err("unknown volunteer identity or wrong secret".to_owned()),
                }
            }
        };
        let key = volunteer.clone();
        let reputation = self.store.read(move |connection| accounts::reputation(connection, &key)).await;
        let trust = reputation.map_err(internal)?.consecutive_valid;
        Ok(WorkerIdentity { volunteer, trust, token: token_id, site })
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
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // `mode` applies only to a new file: tighten one that existed.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
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
    fn ipv6_clients_count_by_their_64_network() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_group(one), address_group(same));
        assert_ne!(address_group(one), address_group(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_group(mapped), IpAddr::from([192, 0, 2, 7]));
        let limiter = RateLimiter::new(1);
        limiter.check(one, "attempts").unwrap();
        assert!(limiter.check(same, "attempts").is_err(), "the same /64 shares one bucket");
        limiter.check(other, "attempts").unwrap();
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new(3);
        let address = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..3 {
            limiter.check(address, "attempts").unwrap();
        }
        match limiter.check(address, "attempts") {
            Err(RateLimited { retry_after_secs, .. }) => assert!(retry_after_secs >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another address has its own bucket.
        limiter.check(IpAddr::from([192, 0, 2, 2]), "attempts").unwrap();
    }
}
