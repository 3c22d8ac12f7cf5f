//! The database schema and its migrations, tracked with SQLite's `user_version`.

use rusqlite::Connection;

use super::StoreError;

/// Each entry migrates from version `index` to `index + 1`. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: modules, jobs, their chunks and results.
    r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    -- A program as uploaded, and the instrumented module workers run (see program::instrument).
    CREATE TABLE modules (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        imports TEXT NOT NULL,          -- JSON array of WASI function names
        bytes BLOB NOT NULL,
        instrumented_sha256 TEXT NOT NULL UNIQUE,
        instrumented_size INTEGER NOT NULL,
        instrumented BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    -- AUTOINCREMENT: a job id is never reused, even after the newest job is deleted.
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,                      -- NULL: shown as job-<id>
        module TEXT NOT NULL REFERENCES modules(sha256),
        program_name TEXT NOT NULL,
        env TEXT NOT NULL,              -- JSON object
        limits TEXT NOT NULL,           -- JSON of protocol::worker::Limits
        max_retries INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        cancelled_at_ms INTEGER
    );
    CREATE TABLE chunks (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        spec BLOB NOT NULL,             -- MessagePack of protocol::api::ChunkRequest
        PRIMARY KEY (job_id, idx)
    );
    -- One final result per chunk: the primary key makes a duplicate impossible.
    CREATE TABLE results (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        succeeded INTEGER NOT NULL,
        status TEXT NOT NULL,           -- JSON of protocol::worker::RunStatus
        attempts INTEGER NOT NULL,
        work_units INTEGER NOT NULL,
        output BLOB NOT NULL,           -- MessagePack of protocol::worker::Output
        finished_at_ms INTEGER NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    "#,
    // 2: accounts, sessions, API tokens, volunteers, reputation, the ledger, and job owners and budgets.
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,    -- argon2id, PHC string
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,    -- SHA-256 of the cookie's value; the value itself is never stored
        user_id INTEGER NOT NULL REFERENCES users(id),
        csrf_token TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,           -- the token's first characters, to tell tokens apart
        token_hash TEXT NOT NULL UNIQUE,-- SHA-256 of the token; the token itself is never stored
        created_at_ms INTEGER NOT NULL,
        last_used_at_ms INTEGER,
        revoked_at_ms INTEGER
    );
    CREATE TABLE volunteers (           -- anonymous volunteer identities (browsers, workers without an account)
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        user_id INTEGER REFERENCES users(id),   -- the account that claimed it
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE reputation (           -- by volunteer key: user:<id> or volunteer:<id>
        volunteer TEXT PRIMARY KEY,
        consecutive_valid INTEGER NOT NULL,
        validated INTEGER NOT NULL,
        invalid INTEGER NOT NULL
    );
    CREATE TABLE ledger (               -- double-entry: the amounts of one txn sum to zero (see store::ledger)
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        txn INTEGER NOT NULL,
        account TEXT NOT NULL,
        amount INTEGER NOT NULL,        -- millicredits
        kind TEXT NOT NULL,
        job_id INTEGER,
        chunk INTEGER,
        replica INTEGER,
        memo TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX ledger_by_account ON ledger (account, id);
    CREATE INDEX ledger_by_txn ON ledger (txn);
    CREATE TRIGGER ledger_is_append_only_update BEFORE UPDATE ON ledger
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    CREATE TRIGGER ledger_is_append_only_delete BEFORE DELETE ON ledger
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    ALTER TABLE jobs ADD COLUMN owner_id INTEGER REFERENCES users(id);
    ALTER TABLE jobs ADD COLUMN budget INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN replicas INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN quorum INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN stop_reason TEXT;  -- why it stopped early (cancelled, budget spent)
    -- Who uploaded which program: a job may only run a program its owner uploaded.
    CREATE TABLE module_uploads (
        sha256 TEXT NOT NULL REFERENCES modules(sha256),
        user_id INTEGER NOT NULL REFERENCES users(id),
        PRIMARY KEY (sha256, user_id)
    );

    CREATE INDEX jobs_by_owner ON jobs (owner_id, id);
    "#,
    // 3: constant cost per result. Balances are kept per ledger account, posted by a trigger in the same
    // statement as each entry (the entries stay the append-only audit trail), and each job keeps its
    // counts of stored results and what it paid, so that nothing on the result path sums over history.
    r#"
    CREATE TABLE ledger_accounts (
        account TEXT PRIMARY KEY,
        balance INTEGER NOT NULL,       -- millicredits: the sum of the account's entries
        entries INTEGER NOT NULL        -- how many entries the account has
    );
    INSERT INTO ledger_accounts (account, balance, entries)
        SELECT account, SUM(amount), COUNT(*) FROM ledger GROUP BY account;
    CREATE TRIGGER ledger_posts_to_its_account AFTER INSERT ON ledger
        BEGIN
            INSERT INTO ledger_accounts (account, balance, entries) VALUES (NEW.account, NEW.amount, 1)
            ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance, entries = entries + 1;
        END;
    ALTER TABLE jobs ADD COLUMN results_stored INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN results_succeeded INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN last_finished_at_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;  -- paid out of escrow, refunds excepted
    UPDATE jobs SET
        results_stored = (SELECT COUNT(*) FROM results WHERE results.job_id = jobs.id),
        results_succeeded = (SELECT COALESCE(SUM(succeeded), 0) FROM results WHERE results.job_id = jobs.id),
        last_finished_at_ms = (SELECT MAX(finished_at_ms) FROM results WHERE results.job_id = jobs.id),
        spent = -(SELECT COALESCE(SUM(amount), 0) FROM ledger
                  WHERE ledger.account = 'escrow:job:' || jobs.id AND ledger.kind = 'payment');
    -- Only open jobs hold escrow: this finds them without reading an account's whole history.
    CREATE INDEX jobs_open_by_owner ON jobs (owner_id)
        WHERE cancelled_at_ms IS NULL AND results_stored < chunk_count;
    "#,
    // 4: blobs, files stored under their SHA-256 in `DATA_DIR/blobs/` (the bytes live in files, not in
    // the database), and which accounts uploaded each: a chunk may name only a blob its job's owner uploaded.
    r#"
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE blob_owners (
        user_id INTEGER NOT NULL REFERENCES users(id),
        sha256 TEXT NOT NULL REFERENCES blobs(sha256),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (user_id, sha256)
    ) WITHOUT ROWID;
    "#,
    // 5: sessions of rounds over kept shards. Each round is a job funded from the session's escrow
    // (`escrow:session:<id>`); its chunks are the session's shards with the round's broadcast as stdin,
    // stored once on the job row rather than once per chunk.
    r#"
    CREATE TABLE compute_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT,
        module TEXT NOT NULL REFERENCES modules(sha256),
        program_name TEXT NOT NULL,
        env TEXT NOT NULL,
        limits TEXT NOT NULL,
        max_retries INTEGER NOT NULL,
        replicas INTEGER NOT NULL,
        quorum INTEGER NOT NULL,
        shard_count INTEGER NOT NULL,
        budget INTEGER NOT NULL,
        backups INTEGER NOT NULL,       -- whether rounds' slow shards get backup replicas
        next_round INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        closed_at_ms INTEGER,
        close_reason TEXT
    );
    CREATE TABLE session_shards (
        session_id INTEGER NOT NULL REFERENCES compute_sessions(id),
        idx INTEGER NOT NULL,
        spec BLOB NOT NULL,             -- as chunks.spec
        PRIMARY KEY (session_id, idx)
    ) WITHOUT ROWID;
    ALTER TABLE jobs ADD COLUMN session_id INTEGER REFERENCES compute_sessions(id);
    ALTER TABLE jobs ADD COLUMN round INTEGER;
    ALTER TABLE jobs ADD COLUMN broadcast BLOB;
    ALTER TABLE jobs ADD COLUMN metrics TEXT;          -- JSON: what a session's consumer noted about the round
    CREATE INDEX jobs_by_session ON jobs (session_id, round) WHERE session_id IS NOT NULL;
    -- Each result's place in its job's order of completion, for following a job result by result.
    ALTER TABLE results ADD COLUMN seq INTEGER;
    UPDATE results SET seq = numbered.n
        FROM (SELECT job_id, idx, ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY finished_at_ms, idx) AS n
              FROM results) AS numbered
        WHERE results.job_id = numbered.job_id AND results.idx = numbered.idx;
    CREATE INDEX results_by_completion ON results (job_id, seq);
    "#,
    // 6: the consumer's web app. Programs are listed by the name and time of their upload. A page of an
    // account's jobs leaves sessions' rounds out through its own index. Each volunteer key keeps the work
    // units and credits of its validated replicas, and each UTC day its results and validated work units,
    // in the same transaction as each result, so that statistics never sum over history; what came before
    // is summed once, here.
    r#"
    ALTER TABLE module_uploads ADD COLUMN name TEXT;
    ALTER TABLE module_uploads ADD COLUMN uploaded_at_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE module_uploads SET uploaded_at_ms =
        (SELECT created_at_ms FROM modules WHERE modules.sha256 = module_uploads.sha256);
    CREATE INDEX module_uploads_by_user ON module_uploads (user_id, uploaded_at_ms, sha256);
    CREATE INDEX jobs_by_owner_without_rounds ON jobs (owner_id, id) WHERE session_id IS NULL;
    CREATE INDEX volunteers_by_user ON volunteers (user_id) WHERE user_id IS NOT NULL;
    ALTER TABLE reputation ADD COLUMN work_units INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reputation ADD COLUMN earned INTEGER NOT NULL DEFAULT 0;  -- millicredits paid for its replicas
    CREATE INDEX reputation_by_work_units ON reputation (work_units);
    CREATE TABLE daily_totals (
        day INTEGER PRIMARY KEY,        -- days since the Unix epoch, UTC
        chunks INTEGER NOT NULL,        -- results stored that day
        work_units INTEGER NOT NULL     -- work units of the validated replicas paid that day
    );
    -- A validated replica's payment credits its volunteer's account (a claimed identity's went to the
    -- identity's account until it was claimed), and its work units are its chunk's result's.
    CREATE TEMPORARY TABLE paid AS
        SELECT ledger.account AS volunteer, ledger.amount AS earned, results.work_units AS work_units,
               ledger.created_at_ms / 86400000 AS day
        FROM ledger JOIN results ON results.job_id = ledger.job_id AND results.idx = ledger.chunk
        WHERE ledger.kind = 'payment' AND ledger.amount > 0
          AND (ledger.account LIKE 'user:%' OR ledger.account LIKE 'volunteer:%');
    INSERT INTO reputation (volunteer, consecutive_valid, validated, invalid, work_units, earned)
        SELECT volunteer, 0, 0, 0, SUM(work_units), SUM(earned) FROM paid GROUP BY volunteer
        ON CONFLICT (volunteer) DO UPDATE SET work_units = excluded.work_units, earned = excluded.earned;
    INSERT INTO daily_totals (day, chunks, work_units)
        SELECT finished_at_ms / 86400000, COUNT(*), 0 FROM results GROUP BY finished_at_ms / 86400000;
    UPDATE daily_totals SET work_units = by_day.work_units
        FROM (SELECT day, SUM(work_units) AS work_units FROM paid GROUP BY day) AS by_day
        WHERE by_day.day = daily_totals.day;
    DROP TABLE paid;
    "#,
    // 7: rewarded ads. A sponsor's campaign escrows its budget (`escrow:campaign:<id>`) and pays each
    // completed view's reward from it; its counts and spending are kept on its row. A view's token is
    // stored only as its hash, bound to its viewer and campaign with the time the server issued it. Each
    // (campaign, paid account, UTC day) keeps its completed views in a row of its own, so that the daily
    // cap is one lookup; the open views of a viewer, and the running and pending campaigns, have partial
    // indexes, so that nothing on the view path reads history.
    r#"
    CREATE TABLE campaigns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sponsor_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        status TEXT NOT NULL,           -- pending, approved, ended, exhausted
        source TEXT NOT NULL,           -- image, video (uploaded) or vast
        mime TEXT NOT NULL,             -- what the browser plays: the upload's, or the VAST MediaFile's type
        media_url TEXT,                 -- a VAST creative's MediaFile URL (never fetched by the server)
        vast_duration_ms INTEGER,
        impression_urls TEXT NOT NULL,  -- JSON array of a VAST creative's Impression URLs
        vast TEXT,                      -- the VAST document as sent
        creative_bytes INTEGER NOT NULL,-- an upload's size (its bytes are in campaign_creatives)
        budget INTEGER NOT NULL,        -- millicredits escrowed at creation
        reward INTEGER NOT NULL,
        min_view_ms INTEGER NOT NULL,
        daily_cap_per_viewer INTEGER NOT NULL,
        impressions INTEGER NOT NULL DEFAULT 0,
        completed_views INTEGER NOT NULL DEFAULT 0,
        spent INTEGER NOT NULL DEFAULT 0,       -- paid to viewers
        refunded INTEGER NOT NULL DEFAULT 0,    -- given back to the sponsor at the end
        last_shown_at_ms INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL,
        approved_at_ms INTEGER,
        ended_at_ms INTEGER
    );
    CREATE INDEX campaigns_by_sponsor ON campaigns (sponsor_id, id);
    CREATE INDEX campaigns_open_by_sponsor ON campaigns (sponsor_id) WHERE status IN ('pending', 'approved');
    CREATE INDEX campaigns_pending ON campaigns (id) WHERE status = 'pending';
    -- Running campaigns, least recently shown first: the next view's campaign is near the front.
    CREATE INDEX campaigns_running ON campaigns (last_shown_at_ms, id) WHERE status = 'approved';
    CREATE TABLE campaign_creatives (
        campaign_id INTEGER PRIMARY KEY REFERENCES campaigns(id),
        bytes BLOB NOT NULL
    );
    CREATE TABLE ad_views (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash TEXT NOT NULL UNIQUE,-- SHA-256 of the token; the token itself is never stored
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
        viewer TEXT NOT NULL,           -- user:<id> or volunteer:<id>, as the viewer authenticated
        started_at_ms INTEGER NOT NULL, -- the server's clock when it issued the token
        expires_at_ms INTEGER NOT NULL,
        completed_at_ms INTEGER,
        credited INTEGER                -- millicredits paid for it
    );
    CREATE INDEX ad_views_open_by_viewer ON ad_views (viewer, expires_at_ms) WHERE completed_at_ms IS NULL;
    CREATE TABLE ad_view_days (
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
        account TEXT NOT NULL,          -- the ledger account paid (a claimed identity's is its user's)
        day INTEGER NOT NULL,           -- days since the Unix epoch, UTC
        completed INTEGER NOT NULL,
        PRIMARY KEY (campaign_id, account, day)
    ) WITHOUT ROWID;
    "#,
    // 8: site keys for the embed script. A site's visitors volunteer under anonymous identities bound to
    // the site (`volunteers.site_id`); their validated replicas pay the site's owner, and the site keeps
    // its statistics as counters moved in the same transaction as each payment (and each registration),
    // so that listing a site never sums over history.
    r#"
    CREATE TABLE sites (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,       -- public: it is in the site's pages (`data-site`)
        owner_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        origins TEXT NOT NULL,          -- JSON array of normalised origins (protocol::embed::normalize_origin)
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER,
        visitors INTEGER NOT NULL DEFAULT 0,    -- volunteer identities registered for the site
        validated INTEGER NOT NULL DEFAULT 0,   -- their validated replicas
        compute_us INTEGER NOT NULL DEFAULT 0,  -- those replicas' run time, as reported, capped per replica
        work_units INTEGER NOT NULL DEFAULT 0,
        earned INTEGER NOT NULL DEFAULT 0       -- millicredits paid to the owner for them
    );
    CREATE INDEX sites_by_owner ON sites (owner_id, id);
    CREATE INDEX sites_active_by_owner ON sites (owner_id) WHERE revoked_at_ms IS NULL;
    ALTER TABLE volunteers ADD COLUMN site_id INTEGER REFERENCES sites(id);
    "#,
    // 9: a site's visitor may take a share of what their identity earns (`protocol::embed`): the widget
    // asks for a single-use code (its hash and expiry kept on the identity, one at a time), and the
    // visitor, signed in on a page of ours, exchanges it for `visitor_user_id`. That column is not
    // `user_id`, which would make the identity the visitor's own volunteer key and its site's owner
    // unpaid.
    r#"
    ALTER TABLE volunteers ADD COLUMN visitor_user_id INTEGER REFERENCES users(id);
    ALTER TABLE volunteers ADD COLUMN share_code_hash TEXT;
    ALTER TABLE volunteers ADD COLUMN share_code_expires_at_ms INTEGER;
    CREATE UNIQUE INDEX volunteers_by_share_code ON volunteers (share_code_hash) WHERE share_code_hash IS NOT NULL;
    "#,
    // 10: `ledger::record` posts each entry to its account itself. The trigger that did it made every
    // entry's insert a statement that writes two tables, for which SQLite keeps a statement journal (a
    // copy of each page the statement touches): a tenth of the store writer's time on the result path.
    // And a transaction is numbered past the largest entry id, not the largest transaction number, so
    // no index on `txn` is kept up on every entry (nothing else reads by it).
    r#"
    DROP TRIGGER ledger_posts_to_its_account;
    DROP INDEX ledger_by_txn;
    "#,
    // 11: an account's open sessions, whose escrows count in what the account has escrowed.
    r#"
    CREATE INDEX compute_sessions_open_by_owner ON compute_sessions (owner_id) WHERE closed_at_ms IS NULL;
    "#,
];

/// Statements each connection keeps prepared: every statement of the hot paths, so none is parsed twice.
const PREPARED_STATEMENTS: usize = 128;

/// Settings of the writing connection: WAL so readers never block the writer, and `synchronous=NORMAL`,
/// which in WAL mode keeps every commit safe from a process crash (SIGKILL) and syncs at checkpoints.
/// Savepoint and statement journals stay in memory (`temp_store=MEMORY`): a journal file would cost a
/// system call per page they copy.
pub(super) fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(())
}

pub(super) fn configure_reader(connection: &Connection) -> Result<(), StoreError> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(())
}

/// Brings the database to the newest schema version, each migration in one transaction.
pub(super) fn migrate(connection: &Connection) -> Result<(), StoreError> {
    migrate_to(connection, MIGRATIONS.len())
}

/// Brings the database to schema version `target` (tests build databases of earlier versions with it).
pub(super) fn migrate_to(connection: &Connection, target: usize) -> Result<(), StoreError> {
    let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}, newer than this program ({}); upgrade distributivecom",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        let transaction = connection.unchecked_transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
    }
    Ok(())
}
