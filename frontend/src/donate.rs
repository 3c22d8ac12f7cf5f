//! The donate page: Start, Pause and Stop, the thread count and CPU throttle, automatic pauses, and live
//! statistics from the volunteer.

use distributivecom_protocol::browser::{ConnectionState, CoordinatorEvent, PageCommand, Stats};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{BatteryManager, VisibilityState};

use crate::format;
use crate::settings::{DonateSettings, STORAGE_KEY};
use crate::volunteer::VolunteerHandle;

fn window() -> web_sys::Window {
    web_sys::window().expect("the app runs in a browser window")
}

/// Calls `handler` on every `event` of `target`, for the page's whole life.
fn listen(target: &web_sys::EventTarget, event: &str, handler: impl FnMut() + 'static) {
    let closure = Closure::<dyn FnMut()>::new(handler);
    if target.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref()).is_ok() {
        closure.forget();
    }
}

#[component]
pub fn App() -> impl IntoView {
    view! {
        <header class="top">
            <a class="brand" href="/">"Distributivecom"</a>
            <nav>
                <a href="/donate">"Donate"</a>
                <a href="/api/docs/">"API"</a>
            </nav>
        </header>
        <DonatePage />
    }
}

#[component]
fn DonatePage() -> impl IntoView {
    let cores = window().navigator().hardware_concurrency().max(1.0) as u32;
    let storage = window().local_storage().ok().flatten();
    let saved = storage.as_ref().and_then(|storage| storage.get_item(STORAGE_KEY).ok().flatten());
    let settings = RwSignal::new(DonateSettings::from_saved(saved.as_deref(), cores));
    let stats = RwSignal::new(Stats::default());
    let notice = RwSignal::new(None::<String>);
    let started = RwSignal::new(false);
    let manual_pause = RwSignal::new(false);
    let document = window().document().expect("the page has a document");
    let hidden = RwSignal::new(document.visibility_state() == VisibilityState::Hidden);
    let on_battery = RwSignal::new(false);
    let volunteer = StoredValue::new_local(None::<VolunteerHandle>);
    let send = move |command: PageCommand| {
        volunteer.with_value(|handle| {
            if let Some(handle) = handle {
                handle.send(&command);
            }
        })
    };

    // Settings persist across reloads and reach a running volunteer at once.
    Effect::new(move |_| {
        let current = settings.get();
        if let Some(storage) = &storage {
            let _ = storage.set_item(STORAGE_KEY, &current.to_saved());
        }
        if started.get_untracked() {
            send(PageCommand::Settings(current.volunteer()));
        }
    });

    let paused = Memo::new(move |_| {
        let current = settings.get();
        manual_pause.get()
            || (current.pause_when_hidden && hidden.get())
            || (current.pause_on_battery && on_battery.get())
    });
    Effect::new(move |previous: Option<bool>| {
        let now = paused.get();
        if started.get_untracked() && previous.is_some_and(|previous| previous != now) {
            send(if now { PageCommand::Pause } else { PageCommand::Resume });
        }
        now
    });

    listen(&document.clone().into(), "visibilitychange", {
        let document = document.clone();
        move || hidden.set(document.visibility_state() == VisibilityState::Hidden)
    });
    // The Battery Status API exists in Chromium; elsewhere the option simply never pauses.
    wasm_bindgen_futures::spawn_local(async move {
        let navigator = window().navigator();
        let get_battery = js_sys::Reflect::get(&navigator, &"getBattery".into()).ok();
        let Some(get_battery) = get_battery.and_then(|value| value.dyn_into::<js_sys::Function>().ok()) else {
            return;
        };
        let Ok(promise) = get_battery.call0(&navigator) else { return };
        let Ok(battery) = JsFuture::from(js_sys::Promise::from(promise)).await else { return };

        let battery: BatteryManager = battery.unchecked_into();
        on_battery.set(!battery.charging());
        listen(&battery.clone().into(), "chargingchange", move || on_battery.set(!battery.charging()));
    });

    let start = move |_| {
        notice.set(None);
        if volunteer.with_value(Option::is_none) {
            let handle = VolunteerHandle::spawn(move |event| match event {
                CoordinatorEvent::Stats(update) => stats.set(update),
                CoordinatorEvent::Notice(text) => notice.set(Some(text)),
            });
            match handle {
                Ok(handle) => volunteer.set_value(Some(handle)),
                Err(_) => {
                    notice.set(Some("This browser cannot start the volunteer's Web Workers.".to_owned()));
                    return;
                }
            }
        }
        let server = window().location().origin().unwrap_or_default();
        send(PageCommand::Start { server, settings: settings.get_untracked().volunteer() });
        started.set(true);
        if paused.get_untracked() {
            send(PageCommand::Pause);
        }
    };
    let stop = move |_| {
        send(PageCommand::Stop);
        started.set(false);
        manual_pause.set(false);
    };
    let toggle_pause = move |_| manual_pause.update(|paused| *paused = !*paused);

    let connection = move || {
        let current = stats.get();
        let state = match current.connection {
            ConnectionState::Stopped => "Stopped".to_owned(),
            ConnectionState::Connecting => "Connecting…".to_owned(),
            ConnectionState::Connected => "Connected".to_owned(),
            ConnectionState::Reconnecting { retry_in_ms } => {
                format!("Connection lost; retrying in {}", format::duration_ms(retry_in_ms))
            }
        };
        if started.get() && paused.get() { format!("{state} (paused)") } else { state }
    };

    view! {
        <main class="donate">
            <h1>"Donate your computer's spare time"</h1>
            <p class="lead">
                "Press Start and this tab runs chunks of other people's programs (WebAssembly, sandboxed in Web "
                "Workers, with no access to your files or network) and sends the results back. You choose how many "
                "threads and how much of the CPU they may use; close the tab to stop at any time."
            </p>
            <div class="controls">
                <Show
                    when=move || started.get()
                    fallback=move || view! { <button id="start" class="primary" on:click=start>"Start"</button> }
                >
                    <button id="pause" on:click=toggle_pause>
                        {move || if manual_pause.get() { "Resume" } else { "Pause" }}
                    </button>
                    <button id="stop" on:click=stop>"Stop"</button>
                </Show>
            </div>
            <fieldset class="settings">
                <legend>"Settings"</legend>
                <label>
                    "Threads"
                    <input
                        id="threads"
                        type="number"
                        min="1"
                        max=cores.to_string()
                        prop:value=move || settings.get().threads.to_string()
                        on:change=move |event| {
                            if let Ok(threads) = event_target_value(&event).parse::<u32>() {
                                settings.update(|current| *current = DonateSettings { threads, ..*current }.clamped());
                            }
                        }
                    />
                </label>
                <label>
                    "CPU throttle"
                    <input
                        id="throttle"
                        type="range"
                        min="10"
                        max="100"
                        step="10"
                        prop:value=move || settings.get().throttle_percent.to_string()
                        on:input=move |event| {
                            if let Ok(percent) = event_target_value(&event).parse::<u32>() {
                                settings.update(|current| {
                                    *current = DonateSettings { throttle_percent: percent, ..*current }.clamped()
                                });
                            }
                        }
                    />
                    <output id="throttle-value">{move || format!("{}%", settings.get().throttle_percent)}</output>
                </label>
                <label class="check">
                    <input
                        id="pause-hidden"
                        type="checkbox"
                        prop:checked=move || settings.get().pause_when_hidden
                        on:change=move |event| {
                            let checked = event_target_checked(&event);
                            settings.update(|current| current.pause_when_hidden = checked);
                        }
                    />
                    "Pause while this tab is hidden"
                </label>
                <label class="check">
                    <input
                        id="pause-battery"
                        type="checkbox"
                        prop:checked=move || settings.get().pause_on_battery
                        on:change=move |event| {
                            let checked = event_target_checked(&event);
                            settings.update(|current| current.pause_on_battery = checked);
                        }
                    />
                    "Pause while the device runs on battery"
                </label>
            </fieldset>
            <section class="stats">
                <h2>"This tab so far"</h2>
                <dl>
                    <dt>"Connection"</dt>
                    <dd id="connection">{connection}</dd>
                    <dt>"Chunks done"</dt>
                    <dd id="chunks-done">{move || format::count(stats.get().chunks_done)}</dd>
                    <dt>"Compute time donated"</dt>
                    <dd id="compute-time">{move || format::duration_ms(stats.get().compute_ms)}</dd>
                    <dt>"Work units"</dt>
                    <dd id="work-units">{move || format::count(stats.get().work_units)}</dd>
                    <dt>"Current job"</dt>
                    <dd id="current-job">{move || stats.get().current_job.unwrap_or_else(|| "—".to_owned())}</dd>
                    <dt>"Running now"</dt>
                    <dd id="running">
                        {move || {
                            let current = stats.get();
                            format!("{} of {} threads, {} queued", current.running, current.threads, current.queued)
                        }}
                    </dd>
                </dl>
            </section>
            <Show when=move || notice.get().is_some()>
                <p id="notice" class="notice">{move || notice.get().unwrap_or_default()}</p>
            </Show>
        </main>
    }
}
