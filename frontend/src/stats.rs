//! The public statistics page (`/stats`): who is online now, the last 30 days' validated work as bar
//! charts, and the leaderboard of volunteers by validated work units. Readable without an account.

use distributivecom_protocol::api::{CommunityStats, DayTotals};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;

use crate::api;
use crate::chart;
use crate::format;

/// The charts' box, in SVG units (they scale to the page's width).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;

#[component]
pub fn StatsPage() -> impl IntoView {
    let stats = RwSignal::new(None::<CommunityStats>);
    let error = RwSignal::new(None::<String>);
    spawn_local_scoped_with_cancellation(async move {
        match api::get_json::<CommunityStats>("/api/stats/history").await {
            Ok(answer) => stats.set(Some(answer)),
            Err(failure) => error.set(Some(failure.message)),
        }
    });
    let figure = move |pick: fn(&CommunityStats) -> u64| {
        move || stats.with(|stats| stats.as_ref().map_or_else(|| "—".to_owned(), |stats| format::count(pick(stats))))
    };
    let leaderboard = move || {
        stats
            .get()
            .map(|stats| stats.leaderboard)
            .unwrap_or_default()
            .into_iter()
            .map(|entry| {
                view! {
                    <tr>
                        <td>{entry.rank}</td>
                        <td>{entry.name}</td>
                        <td class="amount">{format::count(entry.work_units)}</td>
                        <td class="amount">{format::count(entry.validated_replicas)}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <main class="wide stats-page">
            <h1>"Statistics"</h1>
            <p class="lead">"What the volunteers of this server are doing, and have done. Work counts once its result is validated."</p>
            <Show when=move || error.get().is_some()>
                <p id="error" class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            </Show>
            <section class="tiles" aria-label="Now">
                <div class="tile"><span class="tile-figure" id="volunteers-online">{figure(|s| s.volunteers_online.into())}</span><span>"volunteers online"</span></div>
                <div class="tile"><span class="tile-figure" id="slots">{figure(|s| s.slots.into())}</span><span>"slots to run chunks"</span></div>
                <div class="tile"><span class="tile-figure" id="running-jobs">{figure(|s| s.running_jobs.into())}</span><span>"jobs running"</span></div>
            </section>
            <section class="panel">
                <h2 id="chunks-heading">"Chunks finished per day"</h2>
                {move || stats.with(|stats| stats.as_ref().map(|stats| day_chart("chunks-chart", "chunks-heading", &stats.days, |day| day.chunks)))}
            </section>
            <section class="panel">
                <h2 id="work-heading">"Work units validated per day"</h2>
                {move || stats.with(|stats| stats.as_ref().map(|stats| day_chart("work-chart", "work-heading", &stats.days, |day| day.work_units)))}
            </section>
            <section class="panel">
                <h2>"Leaderboard"</h2>
                <div class="table-scroll">
                    <table id="leaderboard" class="data">
                        <caption class="visually-hidden">"Volunteers by validated work units"</caption>
                        <thead>
                            <tr><th scope="col">"#"</th><th scope="col">"Volunteer"</th><th scope="col" class="amount">"Work units"</th><th scope="col" class="amount">"Validated replicas"</th></tr>
                        </thead>
                        <tbody>{leaderboard}</tbody>
                    </table>
                </div>
                <Show when=move || stats.with(|stats| stats.as_ref().is_some_and(|stats| stats.leaderboard.is_empty()))>
                    <p class="aside">"No validated work yet. " <a href="/donate">"Be the first"</a> "."</p>
                </Show>
            </section>
        </main>
    }
}

/// A bar chart of one figure per day, with the first and last day under it and the largest value
/// beside it; the table under the chart says the same for screen readers.
fn day_chart(
    id: &'static str,
    labelled_by: &'static str,
    days: &[DayTotals],
    pick: fn(&DayTotals) -> u64,
) -> impl IntoView + use<> {
    let values: Vec<u64> = days.iter().map(pick).collect();
    let largest = values.iter().copied().max().unwrap_or(0);
    let bars = chart::bars(&values, WIDTH, HEIGHT)
        .into_iter()
        .zip(days.iter().map(|day| format!("{}: {}", day.day, format::count(pick(day)))))
        .map(|(bar, title)| {
            view! {
                <rect class="bar" x=format!("{:.1}", bar.x) y=format!("{:.1}", bar.y) width=format!("{:.1}", bar.width) height=format!("{:.1}", bar.height)>
                    <title>{title}</title>
                </rect>
            }
        })
        .collect_view();
    let first = days.first().map(|day| day.day.clone()).unwrap_or_default();
    let last = days.last().map(|day| day.day.clone()).unwrap_or_default();
    let total: u64 = values.iter().sum();
    view! {
        <figure class="chart" id=id>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-labelledby=labelled_by preserveAspectRatio="none">
                <line class="axis" x1="0" y1=HEIGHT x2=WIDTH y2=HEIGHT />
                {bars}
            </svg>
            <figcaption class="chart-caption">
                <span>{first}</span>
                <span>{format!("largest day: {}; 30 days: {}", format::count(largest), format::count(total))}</span>
                <span>{last}</span>
            </figcaption>
        </figure>
    }
}
