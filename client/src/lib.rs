//! Rust SDK for Distributivecom: upload programs, submit jobs, follow them and fetch results (or stream
//! them as they complete), and run sessions of rounds over kept shards.
//!
//! ```no_run
//! # async fn demo() -> Result<(), distributivecom_client::ClientError> {
//! use distributivecom_client::Client;
//! use distributivecom_protocol::api::{ChunkRequest, JobRequest};
//!
//! // An API token from the account page (or `DATA_DIR/admin-token` on a fresh local install).
//! let client = Client::new("http://127.0.0.1:8080")?.with_token("dc_...");
//! let module = client.upload_module(std::fs::read("primes.wasm").unwrap()).await?;
//! let chunks = (0..4)
//!     .map(|i| ChunkRequest { args: vec![(i * 1000).to_string(), ((i + 1) * 1000).to_string()], ..Default::default() })
//!     .collect();
//! let job = client.submit(&JobRequest { module, chunks, ..Default::default() }).await?;
//! let status = client.wait(job.id, |_| {}).await?;
//! let results = client.all_results(job.id).await?;
//! # Ok(()) }
//! ```
//!
//! Or as a stream of results in the order chunks complete (each says which input it was):
//!
//! ```no_run
//! # async fn demo() -> Result<(), distributivecom_client::ClientError> {
//! use distributivecom_client::Client;
//! use distributivecom_protocol::api::ChunkRequest;
//! use futures_util::StreamExt;
//!
//! let client = Client::new("http://127.0.0.1:8080")?.with_token("dc_...");
//! let inputs = (0..100).map(|i| ChunkRequest { args: vec![i.to_string()], ..Default::default() }).collect();
//! let mut results = std::pin::pin!(client.map(std::fs::read("program.wasm").unwrap(), inputs));
//! while let Some(result) = results.next().await {
//!     let result = result?;
//!     println!("input {} finished: {}", result.index, result.reason);
//! }
//! # Ok(()) }
//! ```
//!
//! Iterative work goes through sessions: see [`Session`]. Rewarded ads (campaigns and views) have their
//! methods too: [`Client::create_campaign`], [`Client::start_ad_view`] and the rest.

use std::time::Duration;

mod session;
pub use session::{Session, SessionEvent};

use distributivecom_protocol::api::{
    AccountInfo, AdViewCompleted, AdViewRequest, AdViewStarted, BlobInfo, CampaignInfo, CampaignRequest,
    CampaignsQuery, ChunkRequest, ChunkResult, ErrorBody, JobCreated, JobRequest, JobStatus, JobsQuery, LedgerPage,
    LedgerQuery, ModuleInfo, Pricing, ResultsPage, ResultsQuery, ServerStats, StatusQuery, VolunteerCredential,
    VolunteerInfo,
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The environment variable that names the default server.
pub const SERVER_ENV: &str = "DISTRIBUTIVECOM_SERVER";
/// The environment variable that holds the API token.
pub const TOKEN_ENV: &str = "DISTRIBUTIVECOM_TOKEN";
/// The server used when nothing else is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("the server URL {0:?} must start with http:// or https://")]
    BadUrl(String),
    #[error("could not reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The server answered with an error; `message` is its explanation.
    #[error("the server refused the request ({status}): {message}")]
    Api { status: u16, message: String },
    #[error("could not understand the server's answer from {url}: {message}")]
    Decode { url: String, message: String },
    /// A session's socket refused a message or could not be kept open.
    #[error("session {session}: {message}")]
    Session { session: u64, message: String },
}

/// The server's refusal: its `{"error": ...}` message, or the body as text.
fn api_error(status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|error| error.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned());
    ClientError::Api { status: status.as_u16(), message }
}

impl ClientError {
    /// The HTTP status of an error answer, if the server gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A connection to one coordinator.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Sent as `Authorization: Bearer <token>`; every write and every read of jobs needs it.
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str) -> Result<Client, ClientError> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(server.to_owned()));
        }
        Ok(Client { http: reqwest::Client::new(), base, token: None })
    }

    /// Acts as the account whose API token this is.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into().trim().to_owned());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, url: String) -> Result<T, ClientError> {
        let request = self.authorized(request);
        let response = request.send().await.map_err(|source| ClientError::Unreachable { url: url.clone(), source })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|source| ClientError::Unreachable { url: url.clone(), source })?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|error| ClientError::Decode { url, message: error.to_string() })
    }

    /// Uploads a program and returns its hash. Uploading one the server has is cheap and harmless, and
    /// needed: a job may only run a program its owner uploaded.
    pub async fn upload_module(&self, bytes: Vec<u8>) -> Result<String, ClientError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let info = self.upload_module_info(bytes).await?;
        if info.sha256 != sha256 {
            return Err(ClientError::Decode {
                url: self.url("/api/modules"),
                message: format!("the server stored the program as {}, but its hash is {sha256}", info.sha256),
            });
        }
        Ok(sha256)
    }

    /// Uploads a program and returns what the server learned about it.
    pub async fn upload_module_info(&self, bytes: Vec<u8>) -> Result<ModuleInfo, ClientError> {
        let url = self.url("/api/modules");
        let request = self.http.post(&url).header("content-type", "application/wasm").body(bytes);
        self.send(request, url).await
    }

    /// Uploads a blob (a file that chunks name as `{"blob": "<sha256>"}`), unless this account already
    /// holds the same bytes, and returns its hash.
    pub async fn upload_blob(&self, bytes: Vec<u8>) -> Result<BlobInfo, ClientError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if self.has_blob(&sha256).await? {
            return Ok(BlobInfo { sha256, size: bytes.len() as u64 });
        }
        let url = self.url("/api/blobs");
        let request = self.http.post(&url).header("content-type", "application/octet-stream").body(bytes);
        let info: BlobInfo = self.send(request, url.clone()).await?;
        if info.sha256 != sha256 {
            return Err(ClientError::Decode {
                url,
                message: format!("the server stored the blob as {}, but its hash is {sha256}", info.sha256),
            });
        }
        Ok(info)
    }

    /// Whether this account holds blob `sha256` (`HEAD /api/blobs/{sha256}`).
    pub async fn has_blob(&self, sha256: &str) -> Result<bool, ClientError> {
        let url = self.url(&format!("/api/blobs/{sha256}"));
        let request = self.authorized(self.http.head(&url));
        let response = request.send().await.map_err(|source| ClientError::Unreachable { url, source })?;
        match response.status() {
            status if status.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            status => Err(ClientError::Api { status: status.as_u16(), message: format!("HEAD answered {status}") }),
        }
    }

    /// Downloads a blob this account uploaded.
    pub async fn download_blob(&self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        self.download(self.url(&format!("/api/blobs/{sha256}"))).await
    }

    /// The bytes of a `GET` that answers something other than JSON.
    async fn download(&self, url: String) -> Result<Vec<u8>, ClientError> {
        let response = self
            .authorized(self.http.get(&url))
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url: url.clone(), source })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|source| ClientError::Unreachable { url, source })?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(body.to_vec())
    }

    pub async fn submit(&self, job: &JobRequest) -> Result<JobCreated, ClientError> {
        let url = self.url("/api/jobs");
        self.send(self.http.post(&url).json(job), url).await
    }

    pub async fn status(&self, job: u64) -> Result<JobStatus, ClientError> {
        let url = self.url(&format!("/api/jobs/{job}"));
        self.send(self.http.get(&url), url).await
    }

    /// Waits (up to `wait`) until the job has more than `known_finished` finished chunks or is over.
    pub async fn wait_for_progress(
        &self,
        job: u64,
        known_finished: u32,
        wait: Duration,
    ) -> Result<JobStatus, ClientError> {
        let url = self.url(&format!("/api/jobs/{job}"));
        let query = StatusQuery { wait_ms: Some(wait.as_millis() as u64), known_finished: Some(known_finished) };
        self.send(self.http.get(&url).query(&query), url).await
    }

    /// Follows the job until it is over, calling `on_progress` at every change.
    pub async fn wait(&self, job: u64, mut on_progress: impl FnMut(&JobStatus)) -> Result<JobStatus, ClientError> {
        let mut status = self.status(job).await?;
        on_progress(&status);
        while !status.state.is_finished() {
            status = self.wait_for_progress(job, status.finished_chunks(), Duration::from_secs(30)).await?;
            on_progress(&status);
        }
        Ok(status)
    }

    /// Waits until the job is over without reporting progress: one long-polling request per 30 s at most,
    /// answered as soon as the job ends.
    pub async fn wait_until_finished(&self, job: u64) -> Result<JobStatus, ClientError> {
        loop {
            // No count of finished chunks exceeds u32::MAX: the server answers when the job is over (or
            // after the wait).
            let status = self.wait_for_progress(job, u32::MAX, Duration::from_secs(30)).await?;
            if status.state.is_finished() {
                return Ok(status);
            }
        }
    }

    pub async fn results_page(&self, job: u64, offset: u32, limit: u32) -> Result<ResultsPage, ClientError> {
        let url = self.url(&format!("/api/jobs/{job}/results"));
        let query = ResultsQuery { offset: Some(offset), limit: Some(limit), completed_after: None };
        self.send(self.http.get(&url).query(&query), url).await
    }

    /// The job's results that completed after the `after`-th to complete, in the order they completed;
    /// `completed_through` of the answer is where the next call starts.
    pub async fn results_completed_after(&self, job: u64, after: u64, limit: u32) -> Result<ResultsPage, ClientError> {
        let url = self.url(&format!("/api/jobs/{job}/results"));
        let query = ResultsQuery { offset: None, limit: Some(limit), completed_after: Some(after) };
        self.send(self.http.get(&url).query(&query), url).await
    }

    /// Runs `program` over `inputs` (one chunk each) as a job with the server's defaults, and hands out
    /// each chunk's result as soon as it is stored, in completion order (`ChunkResult::index` says
    /// which input it belongs to). See [`Client::map_job`] to set limits, replication or a budget.
    pub fn map(
        &self,
        program: Vec<u8>,
        inputs: Vec<ChunkRequest>,
    ) -> impl futures_util::Stream<Item = Result<ChunkResult, ClientError>> + '_ {
        let client = self.clone();
        futures_util::stream::once(async move {
            let module = client.upload_module(program).await?;
            Ok::<_, ClientError>(JobRequest { module, chunks: inputs, ..JobRequest::default() })
        })
        .map(move |request| match request {
            Ok(request) => self.map_job(request).left_stream(),
            Err(error) => futures_util::stream::once(async move { Err(error) }).right_stream(),
        })
        .flatten()
    }

    /// Submits `request` and hands out each chunk's result as soon as it is stored, in completion order.
    /// The stream ends when the job is over (a cancelled job's unfinished chunks give no result).
    pub fn map_job(
        &self,
        request: JobRequest,
    ) -> impl futures_util::Stream<Item = Result<ChunkResult, ClientError>> + '_ {
        enum State {
            Submit(Box<JobRequest>),
            Follow { job: u64, through: u64, page: std::collections::VecDeque<ChunkResult>, over: bool },
            Done,
        }
        futures_util::stream::unfold(State::Submit(Box::new(request)), move |mut state| async move {
            loop {
                state = match state {
                    State::Done => return None,
                    State::Submit(request) => match self.submit(&request).await {
                        Ok(created) => {
                            State::Follow { job: created.id, through: 0, page: Default::default(), over: false }
                        }
                        Err(error) => return Some((Err(error), State::Done)),
                    },
                    State::Follow { job, through, mut page, over } => {
                        if let Some(result) = page.pop_front() {
                            return Some((Ok(result), State::Follow { job, through, page, over }));
                        }
                        let fetched = match self.results_completed_after(job, through, 1000).await {
                            Ok(fetched) => fetched,
                            Err(error) => return Some((Err(error), State::Done)),
                        };
                        if let Some(next) = fetched.completed_through {
                            page.extend(fetched.results);
                            State::Follow { job, through: next, page, over }
                        } else if over {
                            return None;
                        } else {
                            // Nothing new: wait until more chunks finish (or the job ends), then look again.
                            let known = u32::try_from(through).unwrap_or(u32::MAX);
                            match self.wait_for_progress(job, known, Duration::from_secs(30)).await {
                                Ok(status) => State::Follow { job, through, page, over: status.state.is_finished() },
                                Err(error) => return Some((Err(error), State::Done)),
                            }
                        }
                    }
                };
            }
        })
    }

    /// A page of the account's jobs, newest first: at most `limit` (the server gives at most 100), older
    /// than job `before` (the last id of the previous page; `None` for the newest). Empty at the end.
    pub async fn jobs_page(&self, before: Option<u64>, limit: u32) -> Result<Vec<JobStatus>, ClientError> {
        let url = self.url("/api/jobs");
        self.send(self.http.get(&url).query(&JobsQuery { before, limit: Some(limit) }), url).await
    }

    /// The job's finished results as one ZIP archive, laid out as the CLI's `--out` directory (see
    /// `distributivecom_protocol::layout`). Held in memory whole: for a large job, stream
    /// `GET /api/jobs/{id}/results.zip` to a file instead.
    pub async fn results_zip(&self, job: u64) -> Result<Vec<u8>, ClientError> {
        self.download(self.url(&format!("/api/jobs/{job}/results.zip"))).await
    }

    /// Every finished chunk's result, in chunk order.
    pub async fn all_results(&self, job: u64) -> Result<Vec<ChunkResult>, ClientError> {
        let mut results = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.results_page(job, offset, 1000).await?;
            results.extend(page.results);
            match page.next_offset {
                Some(next) => offset = next,
                None => return Ok(results),
            }
        }
    }

    pub async fn cancel(&self, job: u64) -> Result<JobStatus, ClientError> {
        let url = self.url(&format!("/api/jobs/{job}/cancel"));
        self.send(self.http.post(&url), url).await
    }

    pub async fn stats(&self) -> Result<ServerStats, ClientError> {
        let url = self.url("/api/stats");
        self.send(self.http.get(&url), url).await
    }

    /// The token's account: balance and escrow.
    pub async fn account(&self) -> Result<AccountInfo, ClientError> {
        let url = self.url("/api/account");
        self.send(self.http.get(&url), url).await
    }

    /// The account's newest ledger entries.
    pub async fn ledger(&self, limit: u32) -> Result<LedgerPage, ClientError> {
        self.ledger_page(None, limit).await
    }

    /// A page of the account's ledger entries, newest first, older than entry `before` (a page's
    /// `next_before`; `None` for the newest).
    pub async fn ledger_page(&self, before: Option<u64>, limit: u32) -> Result<LedgerPage, ClientError> {
        let url = self.url("/api/account/ledger");
        self.send(self.http.get(&url).query(&LedgerQuery { limit: Some(limit), before }), url).await
    }

    pub async fn pricing(&self) -> Result<Pricing, ClientError> {
        let url = self.url("/api/pricing");
        self.send(self.http.get(&url), url).await
    }

    /// Registers an anonymous volunteer identity (the account's own, with a token).
    pub async fn register_volunteer(&self) -> Result<VolunteerCredential, ClientError> {
        let url = self.url("/api/volunteers");
        self.send(self.http.post(&url), url).await
    }

    /// What an anonymous volunteer identity has earned.
    pub async fn volunteer_info(&self, credential: &VolunteerCredential) -> Result<VolunteerInfo, ClientError> {
        let url = self.url("/api/volunteers/me");
        // Sent without the token: the identity speaks for itself.
        let response = self.http.get(&url).header("authorization", volunteer_authorization(credential));
        Client { token: None, ..self.clone() }.send(response, url).await
    }

    /// Creates a rewarded-ad campaign (pending until an administrator approves it); its budget moves into
    /// escrow at once.
    pub async fn create_campaign(&self, campaign: &CampaignRequest) -> Result<CampaignInfo, ClientError> {
        let url = self.url("/api/campaigns");
        self.send(self.http.post(&url).json(campaign), url).await
    }

    /// The account's campaigns, newest first, with their impressions, completed views and spending (an
    /// administrator's `pending: Some(true)`: every campaign waiting for approval).
    pub async fn campaigns(&self, query: CampaignsQuery) -> Result<Vec<CampaignInfo>, ClientError> {
        let url = self.url("/api/campaigns");
        self.send(self.http.get(&url).query(&query), url).await
    }

    /// Approves a pending campaign (administrators only).
    pub async fn approve_campaign(&self, campaign: u64) -> Result<CampaignInfo, ClientError> {
        let url = self.url(&format!("/api/campaigns/{campaign}/approve"));
        self.send(self.http.post(&url), url).await
    }

    /// Ends one of the account's campaigns; the rest of its escrow is refunded.
    pub async fn end_campaign(&self, campaign: u64) -> Result<CampaignInfo, ClientError> {
        let url = self.url(&format!("/api/campaigns/{campaign}/end"));
        self.send(self.http.post(&url), url).await
    }

    /// Starts watching an ad as the token's account: of `campaign`, or of any the account may watch.
    pub async fn start_ad_view(&self, campaign: Option<u64>) -> Result<AdViewStarted, ClientError> {
        let url = self.url("/api/ad-views");
        self.send(self.http.post(&url).json(&AdViewRequest { campaign }), url).await
    }

    /// Completes a view started with [`Client::start_ad_view`], once its `min_view_ms` passed.
    pub async fn complete_ad_view(&self, token: &str) -> Result<AdViewCompleted, ClientError> {
        let url = self.url(&format!("/api/ad-views/{token}/complete"));
        self.send(self.http.post(&url), url).await
    }

    /// Starts watching an ad as an anonymous volunteer identity (what it earns is the identity's).
    pub async fn start_ad_view_as(
        &self,
        volunteer: &VolunteerCredential,
        campaign: Option<u64>,
    ) -> Result<AdViewStarted, ClientError> {
        let url = self.url("/api/ad-views");
        let request = self.http.post(&url).header("authorization", volunteer_authorization(volunteer));
        Client { token: None, ..self.clone() }.send(request.json(&AdViewRequest { campaign }), url).await
    }

    /// Completes a view the identity started with [`Client::start_ad_view_as`].
    pub async fn complete_ad_view_as(
        &self,
        volunteer: &VolunteerCredential,
        token: &str,
    ) -> Result<AdViewCompleted, ClientError> {
        let url = self.url(&format!("/api/ad-views/{token}/complete"));
        let request = self.http.post(&url).header("authorization", volunteer_authorization(volunteer));
        Client { token: None, ..self.clone() }.send(request, url).await
    }
}

/// `Authorization: Volunteer <id>:<secret>`, how an anonymous volunteer identity speaks for itself.
fn volunteer_authorization(volunteer: &VolunteerCredential) -> String {
    format!("Volunteer {}:{}", volunteer.id, volunteer.secret)
}
