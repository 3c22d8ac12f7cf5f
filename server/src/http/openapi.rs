//! The OpenAPI description of the REST API, served at `/api/openapi.json` and browsable at `/api/docs`.

use distributivecom_protocol::api::{
    BlobInfo, ChunkRequest, ChunkResult, CommunityStats, DayTotals, ErrorBody, FileInput, JobCreated, JobRequest,
    JobState, JobStatus, LeaderboardEntry, LedgerEntry, LedgerPage, LimitsRequest, ModuleInfo, ModuleSummary,
    ReplicationRequest, ResultsPage, ServerLimits, ServerStats, VolunteerCredential, VolunteeringStats,
};
use distributivecom_protocol::embed::{SiteInfo, SiteRequest};
use distributivecom_protocol::session::{RoundInfo, SessionCreated, SessionRequest, SessionRounds, SessionStatus};
use distributivecom_protocol::worker::{Output, RunStatus};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Distributivecom",
        description = "Run WASI programs on volunteers' computers. Byte strings are base64 in JSON. \
                       Workers, and consumers of sessions, speak the WebSocket protocols described in docs/protocol.md."
    ),
    paths(
        super::modules::upload,
        super::modules::list,
        super::modules::download,
        super::blobs::upload,
        super::blobs::download,
        super::blobs::fetch,
        super::jobs::submit,
        super::jobs::list,
        super::jobs::status,
        super::jobs::results,
        super::results_zip::results_zip,
        super::job_events::events,
        super::jobs::cancel,
        super::sessions::open,
        super::sessions::status,
        super::sessions::rounds,
        super::sessions::close,
        super::sessions::socket,
        super::workers::socket,
        super::workers::stats,
        super::community::history,
        super::account::ledger,
        super::account::volunteering,
        super::account::limits,
        super::sites::create,
        super::sites::list,
        super::sites::revoke,
        super::sites::register_volunteer,
        super::embed::frame,
    ),
    components(schemas(
        ModuleInfo,
        BlobInfo,
        JobRequest,
        ChunkRequest,
        FileInput,
        LimitsRequest,
        JobCreated,
        JobState,
        JobStatus,
        ChunkResult,
        ResultsPage,
        ErrorBody,
        ServerStats,
        Output,
        RunStatus,
        SessionRequest,
        SessionCreated,
        SessionStatus,
        SessionRounds,
        RoundInfo,
        ReplicationRequest,
        ModuleSummary,
        LedgerPage,
        LedgerEntry,
        VolunteeringStats,
        CommunityStats,
        DayTotals,
        LeaderboardEntry,
        ServerLimits,
        SiteRequest,
        SiteInfo,
        VolunteerCredential
    ))
)]
pub struct ApiDoc;
