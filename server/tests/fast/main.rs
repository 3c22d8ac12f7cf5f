//! The fast tier: the whole HTTP app called in process (`router(state)` through `tower::ServiceExt::oneshot`)
//! and the worker socket's conversation over in-memory channels, against real SQLite files. No processes,
//! no ports, no browser: `cargo test` runs it in seconds, in debug mode so that overflow checks run. The
//! slower tiers (real processes, sockets and Chromium) are the `e2e` tests of the `distributivecom`
//! package.

// The harness: a TestApp over a fresh data directory, requests and answers.
mod support;

// The server's modules form layers without cycles.
mod layers;
// Accounts over HTTP: authentication, CSRF, cookies, tokens, who may see what, rate limits.
mod accounts;
// Bad requests get clear JSON answers; declared sizes; per-account limits; pages of results.
mod requests;
// A worker's conversation: hello, assignments, reports with absurd numbers, revoked tokens, slow readers.
mod worker_socket;
// Blobs: stored by hash, read only by their owners and by workers holding a replica that needs them.
mod blobs;
// Sessions: rounds over kept shards, results by round, the escrow, reconnects, bad input.
mod sessions;
// Rewarded ads: campaigns in escrow, views verified on the server's clock, refusals that move nothing.
mod ads;
// The consumer's web app: pages of jobs and ledger entries, a job's events and results archive, programs,
// volunteering, the public statistics and limits.
mod web_app;
// Site keys of the embed script: owners only, strict origins, the widget's framing, visitors' payments.
mod sites;
