//! The Distributivecom web app: a Leptos app rendered in the browser (CSR) and served by
//! `distributivecom serve`. Today it is the donate page; the volunteer itself runs in Web Workers
//! (`distributivecom-web-worker`), which the page starts and talks to.
//!
//! - [`format`]: numbers and durations for people (tested on the host);
//! - [`settings`]: the donate page's settings, kept in `localStorage`;
//! - `volunteer` (wasm32): the handle on the coordinator Web Worker;
//! - `donate` (wasm32): the page itself.

pub mod format;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod donate;
#[cfg(target_arch = "wasm32")]
mod volunteer;

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn main() {
    leptos::mount::mount_to_body(donate::App);
}
