//! The Distributivecom web app: a Leptos app rendered in the browser (CSR) and served by
//! `distributivecom serve`. It has the donate page (the volunteer itself runs in Web Workers,
//! `distributivecom-web-worker`, which the page starts and talks to), the consumer's pages (a new job,
//! the jobs, a job live, a session live), the account pages and the public statistics.
//!
//! Pure modules, tested on the host:
//! - [`format`]: numbers, durations, credits, dates and the pricing formula for people;
//! - [`chart`]: line charts as SVG polylines, and bar charts;
//! - [`plan`]: the chunks a job made on the web becomes, and what it may cost;
//! - [`progress`]: a running job's pace and time left;
//! - [`image`]: previews of image outputs (PPM converted to BMP);
//! - [`settings`]: the donate page's settings, kept in `localStorage`;
//! - [`identity`]: the browser's anonymous volunteer identity, kept in `localStorage`;
//! - [`validate`]: checks on the sign-up, log-in, token and site-key forms before they are sent;
//! - [`api`]: requests to the REST API (the `fetch` half on wasm32 only) and the server's error bodies.
//!
//! Browser-only modules (wasm32):
//! - `app`: the router, the header and the routes;
//! - `session`: the signed-in user and CSRF token, as a context;
//! - `volunteer`: the handle on the courier Web Worker;
//! - `donate`: the volunteering state and the donate page (`/`, `/donate`);
//! - `auth`: the sign-up and log-in pages (`/signup`, `/login`);
//! - `account`: the account page (`/account`): credits, volunteering, tokens, the ledger;
//! - `ads`: watching a rewarded ad (donate and account pages), time counted only while it is seen;
//! - `campaigns`: the sponsor's campaigns and the administrator's approvals (account page);
//! - `share`: a site's visitor takes their share of what their browser computes for the site (`/share`);
//! - `sites`: the account page's site keys for the embed script: create, snippet, statistics, revoke;
//! - `submit`: the New job page (`/submit`);
//! - `jobs`: the jobs (`/jobs`) and a job live (`/jobs/{id}`), over server-sent events;
//! - `stats`: the public statistics (`/stats`);
//! - `live`: a session's live page (`/sessions/{id}`): its rounds, the consumer's figures, round times.

pub mod api;
pub mod chart;
pub mod format;
pub mod identity;
pub mod image;
pub mod plan;
pub mod progress;
pub mod settings;
pub mod validate;

#[cfg(target_arch = "wasm32")]
mod account;
#[cfg(target_arch = "wasm32")]
mod ads;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod auth;
#[cfg(target_arch = "wasm32")]
mod campaigns;
#[cfg(target_arch = "wasm32")]
mod donate;
#[cfg(target_arch = "wasm32")]
mod field;
#[cfg(target_arch = "wasm32")]
mod jobs;
#[cfg(target_arch = "wasm32")]
mod live;
#[cfg(target_arch = "wasm32")]
mod session;
#[cfg(target_arch = "wasm32")]
mod share;
#[cfg(target_arch = "wasm32")]
mod sites;
#[cfg(target_arch = "wasm32")]
mod stats;
#[cfg(target_arch = "wasm32")]
mod submit;
#[cfg(target_arch = "wasm32")]
mod volunteer;

#[cfg(target_arch = "wasm32")]
fn window() -> web_sys::Window {
    web_sys::window().expect("the app runs in a browser window")
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn main() {
    leptos::mount::mount_to_body(app::App);
}
