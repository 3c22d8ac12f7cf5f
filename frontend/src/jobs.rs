//! The consumer's jobs: the list (`/jobs`, newest first, a page at a time) and one job live
//! (`/jobs/{id}`): its status pushed by the server as server-sent events (`GET /api/jobs/{id}/events`,
//! no polling), its pace and time left, cancelling with the refund shown, and its results with output
//! previews, image thumbnails, per-file downloads and the whole lot as one zip.

use distributivecom_protocol::api::{ChunkResult, JobState, JobStatus, ResultsPage};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use leptos_router::hooks::{use_location, use_params_map};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api;
use crate::format;
use crate::image;
use crate::progress::Pace;
use crate::session::{Session, require_sign_in};

/// Jobs per page of the list.
const JOBS_PER_PAGE: u32 = 20;
/// Results per page of a job's results table.
const RESULTS_PER_PAGE: u32 = 20;
/// The most bytes of stdout or stderr shown in the table (the whole is a download away).
const PREVIEW_BYTES: usize = 400;

pub fn state_word(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn progress_bar(status: &JobStatus) -> impl IntoView + use<> {
    let label = format!(
        "{} of {} chunks finished",
        format::count(status.finished_chunks().into()),
        format::count(status.chunks.into())
    );
    view! {
        <progress class="job-progress" max=status.chunks.max(1) value=status.finished_chunks() aria-label=label.clone()></progress>
        <span class="progress-text">{label}</span>
    }
}

#[component]
pub fn JobsPage() -> impl IntoView {
    let session = Session::get();
    require_sign_in(session, "/jobs");
    view! {
        <main class="wide">
            <div class="title-row">
                <h1>"Jobs"</h1>
                <a class="button primary" href="/submit">"New job"</a>
            </div>
            <Show when=move || session.user().is_some() fallback=|| view! { <p class="lead">"Loading…"</p> }>
                <JobList />
            </Show>
        </main>
    }
}

#[component]
fn JobList() -> impl IntoView {
    let session = Session::get();
    // The page shown is the one before `before` (None: the newest); `earlier` are the pages to go back to.
    let before = RwSignal::new(None::<u64>);
    let earlier = RwSignal::new(Vec::<Option<u64>>::new());
    let jobs = RwSignal::new(None::<Vec<JobStatus>>);
    let error = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        let path = match before.get() {
            Some(id) => format!("/api/jobs?limit={JOBS_PER_PAGE}&before={id}"),
            None => format!("/api/jobs?limit={JOBS_PER_PAGE}"),
        };
        spawn_local_scoped_with_cancellation(async move {
            match api::get_json::<Vec<JobStatus>>(&path).await {
                Ok(page) => {
                    error.set(None);
                    jobs.set(Some(page));
                }
                Err(failure) => {
                    if failure.is_unauthorized() {
                        session.signed_out();
                    }
                    error.set(Some(failure.message));
                }
            }
        });
    });
    let older = move |_| {
        let last = jobs.with_untracked(|jobs| jobs.as_ref().and_then(|jobs| jobs.last().map(|job| job.id)));
        if let Some(last) = last {
            earlier.update(|pages| pages.push(before.get_untracked()));
            before.set(Some(last));
        }
    };
    let newer = move |_| {
        if let Some(page) = earlier.try_update(Vec::pop).flatten() {
            before.set(page);
        }
    };
    let rows = move || {
        jobs.get()
            .unwrap_or_default()
            .into_iter()
            .map(|job| {
                let href = format!("/jobs/{}", job.id);
                let state = state_word(job.state);
                view! {
                    <tr>
                        <td><a href=href>{format!("#{} {}", job.id, job.name)}</a></td>
                        <td><span class=format!("badge {state}")>{state}</span></td>
                        <td class="progress-cell">{progress_bar(&job)}</td>
                        <td class="amount">{format::credits(job.spent_millicredits)}</td>
                        <td>{format::date_time_utc(job.created_at_ms)}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    let full_page = move || jobs.with(|jobs| jobs.as_ref().is_some_and(|jobs| jobs.len() as u32 == JOBS_PER_PAGE));
    view! {
        <Show when=move || error.get().is_some()>
            <p id="error" class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
        </Show>
        <Show when=move || jobs.with(|jobs| jobs.as_ref().is_some_and(Vec::is_empty) && earlier.with(Vec::is_empty))>
            <p id="no-jobs" class="lead">"You have no jobs yet. " <a href="/submit">"Submit your first job"</a> "."</p>
        </Show>
        <div class="table-scroll">
            <table id="jobs" class="data">
                <caption class="visually-hidden">"Your jobs, newest first"</caption>
                <thead>
                    <tr><th scope="col">"Job"</th><th scope="col">"State"</th><th scope="col">"Progress"</th><th scope="col" class="amount">"Cost"</th><th scope="col">"Submitted"</th></tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
        <nav class="pager" aria-label="Pages of jobs">
            <button id="newer-jobs" prop:disabled=move || earlier.with(Vec::is_empty) on:click=newer>"← Newer"</button>
            <button id="older-jobs" prop:disabled=move || !full_page() on:click=older>"Older →"</button>
        </nav>
    }
}

#[component]
pub fn JobPage() -> impl IntoView {
    let session = Session::get();
    require_sign_in(session, &use_location().pathname.get_untracked());
    let params = use_params_map();
    let id = move || params.with(|params| params.get("id").and_then(|id| id.parse::<u64>().ok()));
    view! {
        <main class="wide">
            <Show when=move || session.user().is_some() fallback=|| view! { <p class="lead">"Loading…"</p> }>
                {move || match id() {
                    Some(id) => view! { <LiveJob id /> }.into_any(),
                    None => view! { <NoSuchJob message="There is no job with this number.".to_owned() /> }.into_any(),
                }}
            </Show>
        </main>
    }
}

#[component]
fn NoSuchJob(message: String) -> impl IntoView {
    view! {
        <h1>"Job not found"</h1>
        <p id="not-found" class="lead">{message}</p>
        <p><a href="/jobs">"Your jobs"</a></p>
    }
}

/// What the server last said about the job, and how the stream is doing.
#[derive(Clone, Copy)]
struct Live {
    status: RwSignal<Option<JobStatus>>,
    /// The job is not the caller's, or does not exist: the server's words.
    missing: RwSignal<Option<String>>,
    /// Whether the event stream is connected (false while the browser reconnects).
    connected: RwSignal<bool>,
    pace: RwSignal<Pace>,
    error: RwSignal<Option<String>>,
}

impl Live {
    fn show(self, status: JobStatus) {
        let now = js_sys::Date::now();
        self.pace.update(|pace| pace.record(now, status.finished_chunks()));
        self.status.set(Some(status));
    }

    /// Asks once with a plain request, to learn why the stream failed (not found, signed out) or to
    /// show the status when the stream cannot be used.
    fn ask(self, id: u64, session: Session) {
        spawn_local_scoped_with_cancellation(async move {
            match api::get_json::<JobStatus>(&format!("/api/jobs/{id}")).await {
                Ok(status) => self.show(status),
                Err(failure) if failure.status == 404 => self.missing.set(Some(failure.message)),
                Err(failure) => {
                    if failure.is_unauthorized() {
                        session.signed_out();
                    }
                    self.error.set(Some(failure.message));
                }
            }
        });
    }
}

/// Follows the job's events until it is over or the page closes.
fn follow(id: u64, live: Live, session: Session) {
    let Ok(source) = EventSource::new(&format!("/api/jobs/{id}/events")) else {
        live.ask(id, session);
        return;
    };
    let on_status = {
        let source = source.clone();
        Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
            let Some(text) = event.data().as_string() else { return };
            match serde_json::from_str::<JobStatus>(&text) {
                Ok(status) => {
                    let over = status.state.is_finished();
                    live.connected.set(true);
                    live.show(status);
                    if over {
                        // The server ends the stream after the final status; closing keeps the browser
                        // from reconnecting to it.
                        source.close();
                        live.connected.set(false);
                    }
                }
                Err(_) => live.error.set(Some("The server sent a status this page cannot read.".to_owned())),
            }
        })
    };
    let on_error = {
        let source = source.clone();
        Closure::<dyn Fn()>::new(move || {
            live.connected.set(false);
            // CLOSED: the browser gave up (the answer was an error such as 404); CONNECTING: it retries.
            if source.ready_state() == EventSource::CLOSED
                && live
                    .status
                    .with_untracked(|status| !status.as_ref().is_some_and(|status| status.state.is_finished()))
            {
                live.ask(id, session);
            }
        })
    };
    let _ = source.add_event_listener_with_callback("status", on_status.as_ref().unchecked_ref());
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let source = send_wrapper::SendWrapper::new((source, on_status, on_error));
    on_cleanup(move || source.0.close());
}

#[component]
fn LiveJob(id: u64) -> impl IntoView {
    let session = Session::get();
    let live = Live {
        status: RwSignal::new(None),
        missing: RwSignal::new(None),
        connected: RwSignal::new(false),
        pace: RwSignal::new(Pace::default()),
        error: RwSignal::new(None),
    };
    follow(id, live, session);

    view! {
        {move || live.missing.get().map(|message| view! { <NoSuchJob message /> })}
        <Show when=move || live.missing.with(Option::is_none)>
            <Show when=move || live.error.get().is_some()>
                <p id="error" class="error" role="alert">{move || live.error.get().unwrap_or_default()}</p>
            </Show>
            <Show when=move || live.status.with(Option::is_some) fallback=|| view! { <p class="lead">"Loading…"</p> }>
                <JobSummary id live />
                <JobResults id live />
            </Show>
        </Show>
    }
}

#[component]
fn JobSummary(id: u64, live: Live) -> impl IntoView {
    let session = Session::get();
    let field = move |pick: fn(&JobStatus) -> String| {
        move || live.status.with(|status| status.as_ref().map(pick).unwrap_or_default())
    };
    let running = move || live.status.with(|status| status.as_ref().is_some_and(|status| !status.state.is_finished()));
    let confirming = RwSignal::new(false);
    let cancelling = RwSignal::new(false);
    let cancel = move |_| {
        cancelling.set(true);
        let csrf_token = session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            match api::post_for_json::<JobStatus>(&format!("/api/jobs/{id}/cancel"), csrf_token.as_deref()).await {
                Ok(status) => live.show(status),
                Err(failure) => live.error.set(Some(failure.message)),
            }
            cancelling.set(false);
            confirming.set(false);
        });
    };
    let state = move || live.status.with(|status| status.as_ref().map_or("", |status| state_word(status.state)));
    let segments = move || {
        live.status.with(|status| {
            let Some(status) = status else { return Vec::new() };
            let total = f64::from(status.chunks.max(1));
            [
                ("succeeded", status.succeeded),
                ("failed", status.failed),
                ("running", status.running),
                ("pending", status.pending),
            ]
            .into_iter()
            .map(|(class, count)| (class, count, f64::from(count) / total * 100.0))
            .collect()
        })
    };
    view! {
        <div class="title-row">
            <h1 id="job-title">{field(|status| format!("Job #{} {}", status.id, status.name))}</h1>
            <span id="job-state" class=move || format!("badge large {}", state()) aria-live="polite">{state}</span>
        </div>
        <p class="aside">
            {move || if live.connected.get() { "Live: this page updates by itself." } else if running() { "Reconnecting…" } else { "This job is over." }}
        </p>
        <section class="panel">
            <h2>"Chunks"</h2>
            <div class="stack" role="img" aria-label=move || {
                segments().iter().map(|(class, count, _)| format!("{count} {class}")).collect::<Vec<_>>().join(", ")
            }>
                {move || segments().into_iter().map(|(class, _, percent)| view! {
                    <span class=format!("segment {class}") style=format!("width: {percent:.2}%")></span>
                }).collect_view()}
            </div>
            <dl class="figures">
                <dt>"Succeeded"</dt><dd id="count-succeeded">{field(|s| format::count(s.succeeded.into()))}</dd>
                <dt>"Failed"</dt><dd id="count-failed">{field(|s| format::count(s.failed.into()))}</dd>
                <dt>"Running"</dt><dd id="count-running">{field(|s| format::count(s.running.into()))}</dd>
                <dt>"Waiting"</dt><dd id="count-pending">{field(|s| format::count(s.pending.into()))}</dd>
                <dt>"Of"</dt><dd id="count-chunks">{field(|s| format::count(s.chunks.into()))}</dd>
                <dt>"Volunteers on it"</dt><dd id="volunteers">{field(|s| format::count(s.volunteers.into()))}</dd>
                <dt>"Throughput"</dt>
                <dd id="throughput">{move || live.pace.with(|pace| pace.chunks_per_second()).map_or_else(|| "—".to_owned(), |rate| format!("{rate:.1} chunks/s"))}</dd>
                <dt>"Time left"</dt>
                <dd id="eta">{move || {
                    let remaining = live.status.with(|s| s.as_ref().map_or(0, |s| s.chunks - s.finished_chunks()));
                    if !running() { "—".to_owned() } else {
                        live.pace.with(|pace| pace.eta_ms(remaining)).map_or_else(|| "estimating…".to_owned(), |ms| format!("about {}", format::duration_ms(ms)))
                    }
                }}</dd>
            </dl>
            <Show when=move || live.status.with(|s| s.as_ref().is_some_and(|s| s.waiting_reason.is_some()))>
                <p id="waiting-reason" class="notice">{field(|s| format!("Waiting: {}.", s.waiting_reason.clone().unwrap_or_default()))}</p>
            </Show>
            <Show when=move || live.status.with(|s| s.as_ref().is_some_and(|s| s.stop_reason.is_some()))>
                <p id="stop-reason" class="notice">{field(|s| format!("Stopped: {}.", s.stop_reason.clone().unwrap_or_default()))}</p>
            </Show>
        </section>
        <section class="panel">
            <h2>"Credits"</h2>
            <dl class="figures">
                <dt>"Budget"</dt><dd id="budget">{field(|s| format::credits(s.budget_millicredits))}</dd>
                <dt>"Spent"</dt><dd id="spent">{field(|s| format::credits(s.spent_millicredits))}</dd>
                <dt>"In escrow"</dt><dd id="escrowed">{field(|s| format::credits(s.escrowed_millicredits))}</dd>
                <Show when=move || !running()>
                    <dt>"Refunded"</dt>
                    <dd id="refunded">{field(|s| format::credits(s.budget_millicredits.saturating_sub(s.spent_millicredits)))}</dd>
                </Show>
            </dl>
            <Show when=running>
                <Show
                    when=move || confirming.get()
                    fallback=move || view! { <button id="cancel-job" class="danger" on:click=move |_| confirming.set(true)>"Cancel the job…"</button> }
                >
                    <div id="cancel-confirm" class="confirm" role="alertdialog" aria-labelledby="cancel-question">
                        <p id="cancel-question">
                            {field(|s| format!(
                                "Cancel this job? Chunks without a result will not run; finished results stay. The {} still in escrow will be refunded.",
                                format::credits(s.escrowed_millicredits)
                            ))}
                        </p>
                        <button id="cancel-yes" class="danger" prop:disabled=move || cancelling.get() on:click=cancel>"Yes, cancel the job"</button>
                        <button id="cancel-no" on:click=move |_| confirming.set(false)>"Keep it running"</button>
                    </div>
                </Show>
            </Show>
        </section>
    }
}

#[component]
fn JobResults(id: u64, live: Live) -> impl IntoView {
    let offset = RwSignal::new(0u32);
    let page = RwSignal::new(None::<ResultsPage>);
    let error = RwSignal::new(None::<String>);
    let finished = Memo::new(move |_| live.status.with(|status| status.as_ref().map_or(0, JobStatus::finished_chunks)));
    // Reload the shown page when more chunks finish (while it is not full) or another page is chosen.
    Effect::new(move |_| {
        let (offset, finished) = (offset.get(), finished.get());
        let full = page.with_untracked(|page| {
            page.as_ref().is_some_and(|page| {
                page.results.len() as u32 == RESULTS_PER_PAGE && page.results.first().is_some_and(|r| r.index >= offset)
            })
        });
        if finished == 0 || full {
            return;
        }
        spawn_local_scoped_with_cancellation(async move {
            let path = format!("/api/jobs/{id}/results?offset={offset}&limit={RESULTS_PER_PAGE}");
            match api::get_json::<ResultsPage>(&path).await {
                Ok(answer) => page.set(Some(answer)),
                Err(failure) => error.set(Some(failure.message)),
            }
        });
    });
    let rows = move || {
        page.get()
            .map(|page| page.results)
            .unwrap_or_default()
            .into_iter()
            .map(|result| view! { <ResultRow result /> })
            .collect_view()
    };
    let has_next = move || page.with(|page| page.as_ref().is_some_and(|page| page.next_offset.is_some()));
    view! {
        <section class="panel">
            <div class="title-row">
                <h2>"Results"</h2>
                <Show when=move || { finished.get() > 0 }>
                    <a id="download-zip" class="button" href=format!("/api/jobs/{id}/results.zip") download=format!("job-{id}-results.zip") rel="external">
                        "Download all results (.zip)"
                    </a>
                </Show>
            </div>
            <Show when=move || error.get().is_some()>
                <p class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            </Show>
            <Show when=move || { finished.get() == 0 }>
                <p class="aside">"No chunk has finished yet; results appear here as they are validated."</p>
            </Show>
            <div class="table-scroll">
                <table id="results" class="data results">
                    <caption class="visually-hidden">"Each chunk's result"</caption>
                    <thead>
                        <tr><th scope="col">"Chunk"</th><th scope="col">"Status"</th><th scope="col" class="amount">"Work units"</th><th scope="col">"Output"</th><th scope="col">"Files"</th></tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            <nav class="pager" aria-label="Pages of results">
                <button id="previous-results" prop:disabled=move || offset.get() == 0 on:click=move |_| {
                    page.set(None);
                    offset.update(|offset| *offset = offset.saturating_sub(RESULTS_PER_PAGE));
                }>"← Previous"</button>
                <button id="next-results" prop:disabled=move || !has_next() on:click=move |_| {
                    if let Some(next) = page.with_untracked(|page| page.as_ref().and_then(|page| page.next_offset)) {
                        page.set(None);
                        offset.set(next);
                    }
                }>"Next →"</button>
            </nav>
        </section>
    }
}

/// A blob URL for `bytes`, revoked when the row that shows it goes away.
fn object_url(bytes: &[u8], mime: &str) -> Option<String> {
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).ok()?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).ok()?;
    let revoked = url.clone();
    on_cleanup(move || {
        let _ = web_sys::Url::revoke_object_url(&revoked);
    });
    Some(url)
}

/// The start of an output as text, with a note when there is more.
fn preview_text(bytes: &[u8], truncated_by_limit: bool) -> String {
    let shown = &bytes[..bytes.len().min(PREVIEW_BYTES)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if bytes.len() > PREVIEW_BYTES {
        text.push_str(&format!("… ({} in all)", format::bytes(bytes.len() as u64)));
    }
    if truncated_by_limit {
        text.push_str(" [cut at the job's limit]");
    }
    text
}

#[component]
fn ResultRow(result: ChunkResult) -> impl IntoView {
    let index = result.index;
    let output = result.output;
    let stdout_url = object_url(&output.stdout, "text/plain;charset=utf-8");
    let stdout = preview_text(&output.stdout, output.stdout_truncated);
    let stderr = (!output.stderr.is_empty()).then(|| preview_text(&output.stderr, output.stderr_truncated));
    let files = output
        .files
        .iter()
        .map(|(name, bytes)| {
            let url = object_url(bytes, "application/octet-stream");
            let thumbnail = image::preview(bytes).and_then(|preview| object_url(&preview.bytes, preview.mime));
            let download_name = name.rsplit('/').next().unwrap_or(name).to_owned();
            view! {
                <li>
                    {thumbnail.map(|src| view! { <img class="thumbnail" src=src alt=format!("Preview of {name}") loading="lazy" /> })}
                    <a class="file" href=url download=download_name rel="external">{format!("{name} ({})", format::bytes(bytes.len() as u64))}</a>
                </li>
            }
        })
        .collect_view();
    let status_class = if result.succeeded { "badge succeeded" } else { "badge failed" };
    view! {
        <tr id=format!("result-{index}")>
            <th scope="row">{index}</th>
            <td><span class=status_class>{result.reason}</span></td>
            <td class="amount">{format::count(result.work_units)}</td>
            <td class="output">
                <pre class="stdout" aria-label=format!("stdout of chunk {index}")>{stdout}</pre>
                {stderr.map(|stderr| view! { <pre class="stderr" aria-label=format!("stderr of chunk {index}")>{stderr}</pre> })}
                {stdout_url.map(|url| view! { <a class="full-stdout" href=url target="_blank" rel="external noopener">"Open stdout"</a> })}
            </td>
            <td><ul class="files">{files}</ul></td>
        </tr>
    }
}
