//! The live page of a session (`/sessions/{id}`): its rounds as they run, the figures its consumer notes
//! (a loss curve for `distributivecom train`), each round's time, the shards and the volunteers working
//! on it. It follows the session by long polling `GET /api/sessions/{id}/rounds` with the version of its
//! last answer, so the server answers as soon as something changes.

use distributivecom_protocol::session::{RoundInfo, SessionRounds};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use leptos_router::hooks::{use_location, use_params_map};

use crate::api;
use crate::chart;
use crate::format;
use crate::session::{Session, require_sign_in};

/// The chart's box, in SVG units (it scales to the page's width).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Rows of the table: the newest rounds.
const TABLE_ROUNDS: usize = 20;

#[component]
pub fn SessionPage() -> impl IntoView {
    let session = Session::get();
    require_sign_in(session, &use_location().pathname.get_untracked());
    let params = use_params_map();
    let id = move || params.with(|params| params.get("id").and_then(|id| id.parse::<u64>().ok()));
    view! {
        <main class="account live">
            <Show when=move || session.user().is_some() fallback=|| view! { <p class="lead">"Loading…"</p> }>
                {move || match id() {
                    Some(id) => view! { <LiveSession id /> }.into_any(),
                    None => view! { <NoSuchSession /> }.into_any(),
                }}
            </Show>
        </main>
    }
}

#[component]
fn NoSuchSession() -> impl IntoView {
    view! {
        <h1>"Session not found"</h1>
        <p id="not-found" class="lead">"You have no session with this number."</p>
    }
}

#[component]
fn LiveSession(id: u64) -> impl IntoView {
    let session = Session::get();
    let view_data = RwSignal::new(None::<SessionRounds>);
    let error = RwSignal::new(None::<String>);
    let missing = RwSignal::new(false);
    spawn_local_scoped_with_cancellation(async move {
        let mut version: Option<u64> = None;
        loop {
            let wait = version.map_or(String::new(), |version| format!("&version={version}&wait_ms=20000"));
            match api::get_json::<SessionRounds>(&format!("/api/sessions/{id}/rounds?from=1{wait}")).await {
                Ok(answer) => {
                    let closed = answer.session.state == "closed";
                    version = Some(answer.version);
                    error.set(None);
                    view_data.set(Some(answer));
                    if closed {
                        return;
                    }
                }
                Err(failure) if failure.status == 404 => {
                    missing.set(true);
                    return;
                }
                Err(failure) => {
                    if failure.is_unauthorized() {
                        session.signed_out();
                        return;
                    }
                    error.set(Some(failure.message));
                    // Try again in a while; the page keeps what it showed.
                    sleep_ms(2_000).await;
                }
            }
        }
    });

    let status = move |pick: fn(&SessionRounds) -> String| {
        move || view_data.with(|data| data.as_ref().map(pick).unwrap_or_default())
    };
    view! {
        <Show when=move || !missing.get() fallback=|| view! { <NoSuchSession /> }>
            <h1>"Session " <span id="session-name">{status(|data| data.session.name.clone())}</span></h1>
            <p class="lead">
                <span id="session-state">{status(|data| data.session.state.clone())}</span>
                " · " <span id="session-shards">{status(|data| data.session.shards.to_string())}</span> " shards · "
                <span id="rounds-done">{status(|data| rounds_done(&data.rounds).to_string())}</span> " rounds done · "
                <span id="volunteers-working">{status(|data| data.volunteers_working.to_string())}</span>
                " volunteers working now"
            </p>
            <Show when=move || error.get().is_some()>
                <p id="error" class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            </Show>
            <section class="panel">
                <h2>{move || view_data.with(|data| data.as_ref().and_then(|data| metric_name(&data.rounds))).unwrap_or_else(|| "Figures".to_owned())}</h2>
                {move || view_data.with(|data| {
                    let rounds = data.as_ref().map(|data| data.rounds.as_slice()).unwrap_or_default();
                    let name = metric_name(rounds);
                    let series: Vec<(f64, f64)> = name
                        .as_ref()
                        .map(|name| rounds.iter().filter_map(|round| round.metrics.get(name).map(|value| (round.round as f64, *value))).collect())
                        .unwrap_or_default();
                    let latest = series.last().map(|(_, value)| format!("{value:.4}")).unwrap_or_else(|| "–".to_owned());
                    view! {
                        <Chart id="metric-chart" label="the figure the consumer noted, by round" series />
                        <p class="aside">"Latest: " <strong id="latest-metric">{latest}</strong></p>
                    }
                })}
            </section>
            <section class="panel">
                <h2>"Round time"</h2>
                {move || view_data.with(|data| {
                    let rounds = data.as_ref().map(|data| data.rounds.as_slice()).unwrap_or_default();
                    let series: Vec<(f64, f64)> =
                        rounds.iter().filter_map(|round| round_ms(round).map(|ms| (round.round as f64, ms as f64))).collect();
                    let median = median_ms(rounds).map(format::duration_ms).unwrap_or_else(|| "–".to_owned());
                    view! {
                        <Chart id="time-chart" label="each round's time, from start to its last shard's result" series milliseconds=true />
                        <p class="aside">"Median: " <strong id="median-round">{median}</strong></p>
                    }
                })}
            </section>
            <section class="panel">
                <h2>"Latest rounds"</h2>
                <table class="data" id="rounds">
                    <thead><tr><th scope="col">"Round"</th><th scope="col">"State"</th><th scope="col">"Shards done"</th><th scope="col" class="amount">"Time"</th><th scope="col">"Figures"</th><th scope="col" class="amount">"Cost"</th></tr></thead>
                    <tbody>
                        {move || view_data.with(|data| {
                            let rounds = data.as_ref().map(|data| data.rounds.as_slice()).unwrap_or_default();
                            rounds.iter().rev().take(TABLE_ROUNDS).map(|round| {
                                let figures = round.metrics.iter().map(|(name, value)| format!("{name} {value:.4}")).collect::<Vec<_>>().join(", ");
                                view! {
                                    <tr>
                                        <td>{round.round}</td>
                                        <td>{round.state.clone()}</td>
                                        <td>{round.shards_done}</td>
                                        <td class="amount">{round_ms(round).map(format::duration_ms).unwrap_or_else(|| "–".to_owned())}</td>
                                        <td>{figures}</td>
                                        <td class="amount">{format::credits(round.spent_millicredits)}</td>
                                    </tr>
                                }
                            }).collect_view()
                        })}
                    </tbody>
                </table>
            </section>
        </Show>
    }
}

/// A line chart of `series`, or a line saying there is nothing yet.
#[component]
fn Chart(
    id: &'static str,
    label: &'static str,
    series: Vec<(f64, f64)>,
    /// Values are milliseconds (ticks say "56 ms"), or plain figures.
    #[prop(optional)]
    milliseconds: bool,
) -> impl IntoView {
    let tick = move |value: f64| if milliseconds { format!("{value:.0} ms") } else { format!("{value:.3}") };
    match chart::line(&series, WIDTH, HEIGHT) {
        Some(line) => view! {
            <figure class="chart">
                <svg id=id viewBox=format!("-70 -10 {} {}", WIDTH + 80.0, HEIGHT + 30.0) role="img" aria-label=label>
                    <line class="axis" x1="0" y1=HEIGHT x2=WIDTH y2=HEIGHT />
                    <line class="axis" x1="0" y1="0" x2="0" y2=HEIGHT />
                    <text class="tick" x="-6" y="4" text-anchor="end">{tick(line.max)}</text>
                    <text class="tick" x="-6" y=HEIGHT text-anchor="end">{tick(line.min)}</text>
                    <polyline class="series" points=line.points fill="none" />
                </svg>
            </figure>
        }
        .into_any(),
        None => view! { <p class="muted">"Nothing yet."</p> }.into_any(),
    }
}

fn rounds_done(rounds: &[RoundInfo]) -> usize {
    rounds.iter().filter(|round| round.state == "done").count()
}

/// The figure to chart: `loss` if the consumer notes one, else the first name it noted.
fn metric_name(rounds: &[RoundInfo]) -> Option<String> {
    let mut names = rounds.iter().flat_map(|round| round.metrics.keys());
    if rounds.iter().any(|round| round.metrics.contains_key("loss")) {
        return Some("loss".to_owned());
    }
    names.next().cloned()
}

fn round_ms(round: &RoundInfo) -> Option<u64> {
    round.finished_at_ms.map(|finished| finished.saturating_sub(round.started_at_ms))
}

fn median_ms(rounds: &[RoundInfo]) -> Option<u64> {
    let mut times: Vec<u64> = rounds.iter().filter_map(round_ms).collect();
    times.sort_unstable();
    times.get(times.len().checked_sub(1)? / 2).copied()
}

/// Waits `milliseconds` (a `setTimeout` behind a promise).
async fn sleep_ms(milliseconds: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = crate::window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, milliseconds);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
