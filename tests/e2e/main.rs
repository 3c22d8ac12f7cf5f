//! End-to-end tests: real `distributivecom` server and worker processes on loopback ports, with SQLite
//! files in temporary directories, driven through the REST API, the CLI and raw WebSockets.
//!
//! They need the wasm32-wasip1 programs built (`cargo xtask build-programs`; `cargo xtask test` does it)
//! and Node.js for the independent WASI reference (installed by `.ci/run`).

// The harness: processes, ports, programs.
mod support;

// Results equal a local run and an independent WASI implementation.
mod results;
// Loops, memory hogs and bad exits are reported with their reason.
mod failures;
// Bad uploads and bad job requests get clear 4xx answers.
mod uploads;
// Worker and coordinator crashes lose nothing.
mod crashes;
// Malformed worker frames are refused and the server keeps running.
mod protocol;
// The command line and the benchmark command.
mod cli;
// Browser volunteers in headless Chromium.
mod browser;
// Accounts, tokens, sessions and who may see what.
mod accounts;
// Validation by replication against scripted cheaters; what volunteers are paid.
mod cheaters;
// What an attacker who read the docs tried: hostile volunteers, connections and requests.
mod hostile;
// Blobs: input files uploaded once, fetched once by each worker and kept.
mod blobs;
// Sessions: training over volunteers equals a local run, and survives crashes.
mod sessions;
// A job's status as Server-Sent Events, followed over a raw connection while a real worker runs it.
mod events;
// The consumer's web app: submitting, following and downloading jobs, the ledger and statistics.
mod web_app;
// Rewarded ads: a campaign made on the web, watched in a browser, paid from its escrow.
mod ads;
// The embed script on a third party's site: consent first, hostile host pages, credits to the site's owner.
mod embed;
