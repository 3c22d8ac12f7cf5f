//! The donate page: Start, Pause and Stop, the thread count and CPU throttle, automatic pauses, live
//! statistics from the volunteer, and the credits this browser has earned.
//!
//! The volunteer itself is owned by [`Donation`], which the app creates once, not by the page: moving to
//! another page of the app (the account, say) must not stop the computation the visitor started.

use std::time::Duration;

use distributivecom_protocol::api::{VolunteerCredential, VolunteerInfo};
use distributivecom_protocol::browser::{ConnectionState, CourierEvent, PageCommand, Stats};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{BatteryManager, VisibilityState};

use crate::ads::WatchAd;
use crate::format;
use crate::identity;
use crate::session::Session;
use crate::settings::{DonateSettings, STORAGE_KEY};
use crate::volunteer::VolunteerHandle;
use crate::{api, window};

/// How often the credits of a running volunteer are refreshed.
const CREDITS_REFRESH: Duration = Duration::from_secs(5);

/// Calls `handler` on every `event` of `target`, for the page's whole life.
fn listen(target: &web_sys::EventTarget, event: &str, handler: impl FnMut() + 'static) {
    let closure = Closure::<dyn FnMut()>::new(handler);
    if target.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref()).is_ok() {
        closure.forget();
    }
}

/// The browser's volunteering, for the app's whole life: settings, state, statistics and the handle on
/// the courier Web Worker. Copy it freely: it is a handle on signals.
#[derive(Clone, Copy)]
pub struct Donation {
    cores: u32,
    settings: RwSignal<DonateSettings>,
    stats: RwSignal<Stats>,
    notice: RwSignal<Option<String>>,
    /// Between pressing Start and the volunteer starting, while an identity is being registered.
    starting: RwSignal<bool>,
    started: RwSignal<bool>,
    manual_pause: RwSignal<bool>,
    paused: Memo<bool>,
    volunteer: StoredValue<Option<VolunteerHandle>, LocalStorage>,
    /// The identity this tab volunteers as; `localStorage` holds it across reloads.
    identity: RwSignal<Option<VolunteerCredential>>,
    /// The last answer of `GET /api/volunteers/me`: the standing, or the server's message.
    browser_credits: RwSignal<Option<Result<VolunteerInfo, String>>>,
    session: Session,
}

impl Donation {
    /// Creates the volunteering state and provides it as a context.
    pub fn provide(session: Session) -> Donation {
        let cores = window().navigator().hardware_concurrency().max(1.0) as u32;
        let storage = window().local_storage().ok().flatten();
        let saved = storage.as_ref().and_then(|storage| storage.get_item(STORAGE_KEY).ok().flatten());
        let settings = RwSignal::new(DonateSettings::from_saved(saved.as_deref(), cores));
        let manual_pause = RwSignal::new(false);
        let document = window().document().expect("the page has a document");
        let hidden = RwSignal::new(document.visibility_state() == VisibilityState::Hidden);
        let on_battery = RwSignal::new(false);
        let paused = Memo::new(move |_| {
            let current = settings.get();
            manual_pause.get()
                || (current.pause_when_hidden && hidden.get())
                || (current.pause_on_battery && on_battery.get())
        });
        let donation = Donation {
            cores,
            settings,
            stats: RwSignal::new(Stats::default()),
            notice: RwSignal::new(None),
            starting: RwSignal::new(false),
            started: RwSignal::new(false),
            manual_pause,
            paused,
            volunteer: StoredValue::new_local(None),
            identity: RwSignal::new(identity::load()),
            browser_credits: RwSignal::new(None),
            session,
        };
        provide_context(donation);

        // Settings persist across reloads and reach a running volunteer at once.
        Effect::new(move |_| {
            let current = settings.get();
            if let Some(storage) = &storage {
                let _ = storage.set_item(STORAGE_KEY, &current.to_saved());
            }
            if donation.started.get_untracked() {
                donation.send(PageCommand::Settings(current.volunteer()));
            }
        });
        Effect::new(move |previous: Option<bool>| {
            let now = paused.get();
            if donation.started.get_untracked() && previous.is_some_and(|previous| previous != now) {
                donation.send(if now { PageCommand::Pause } else { PageCommand::Resume });
            }
            now
        });
        // The credits grow only while the volunteer runs, so only then are they polled.
        let refresh_timer = StoredValue::new(None::<IntervalHandle>);
        Effect::new(move |_| {
            let running = donation.started.get();
            refresh_timer.update_value(|timer| {
                if let Some(timer) = timer.take() {
                    timer.clear();
                }
            });
            if running {
                let timer = set_interval_with_handle(move || donation.refresh_credits(), CREDITS_REFRESH).ok();
                refresh_timer.set_value(timer);
            }
        });

        listen(&document.clone().into(), "visibilitychange", {
            let document = document.clone();
            move || hidden.set(document.visibility_state() == VisibilityState::Hidden)
        });
        // The Battery Status API exists in Chromium; elsewhere the option simply never pauses.
        leptos::task::spawn_local(async move {
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
        donation
    }

    pub fn get() -> Donation {
        expect_context::<Donation>()
    }

    /// The identity to hand to the account at sign-up or log-in. `localStorage` is read again because
    /// another tab may have registered one since this tab started.
    pub fn identity(self) -> Option<VolunteerCredential> {
        identity::load().or_else(|| self.identity.get_untracked())
    }

    fn send(self, command: PageCommand) {
        self.volunteer.with_value(|handle| {
            if let Some(handle) = handle {
                handle.send(&command);
            }
        })
    }

    /// This browser's anonymous volunteer identity, registered (and saved) first if it has none.
    pub async fn ensure_identity(self) -> Result<VolunteerCredential, String> {
        if let Some(credential) = self.identity() {
            self.identity.set(Some(credential.clone()));
            return Ok(credential);
        }
        let csrf_token = self.session.csrf_token();
        let credential = api::post_for_json::<VolunteerCredential>("/api/volunteers", csrf_token.as_deref())
            .await
            .map_err(|error| error.message)?;
        // Without storage the identity lasts as long as this tab; the credits it earns are still
        // counted, and signing up from this tab still claims them.
        if !identity::save(&credential) {
            web_sys::console::warn_1(&"page: this browser did not let the page save its identity".into());
        }
        self.identity.set(Some(credential.clone()));
        Ok(credential)
    }

    /// Starts volunteering, first registering an anonymous identity if this browser has none.
    fn start(self) {
        if self.starting.get_untracked() || self.started.get_untracked() {
            return;
        }
        self.notice.set(None);
        self.starting.set(true);
        leptos::task::spawn_local(async move {
            match self.ensure_identity().await {
                Ok(credential) => {
                    self.start_as(&credential);
                    self.refresh_credits();
                }
                Err(message) => self.notice.set(Some(message)),
            }
            self.starting.set(false);
        });
    }

    fn start_as(self, credential: &VolunteerCredential) {
        if self.volunteer.with_value(Option::is_none) {
            let (stats, notice) = (self.stats, self.notice);
            let handle = VolunteerHandle::spawn(move |event| match event {
                CourierEvent::Stats(update) => stats.set(update),
                CourierEvent::Notice(text) => notice.set(Some(text)),
            });
            match handle {
                Ok(handle) => self.volunteer.set_value(Some(handle)),
                Err(_) => {
                    notice.set(Some("This browser cannot start the volunteer's Web Workers.".to_owned()));
                    return;
                }
            }
        }
        let server = window().location().origin().unwrap_or_default();
        self.send(PageCommand::Start {
            server,
            settings: self.settings.get_untracked().volunteer(),
            credential: identity::worker_credential(credential),
        });
        self.started.set(true);
        if self.paused.get_untracked() {
            self.send(PageCommand::Pause);
        }
    }

    fn stop(self) {
        self.send(PageCommand::Stop);
        self.started.set(false);
        self.manual_pause.set(false);
    }

    /// Asks the server what this browser's identity has earned; nothing to ask before it has one.
    pub fn refresh_credits(self) {
        let Some(credential) = self.identity.get_untracked() else { return };
        let browser_credits = self.browser_credits;
        leptos::task::spawn_local(async move {
            let answer = api::get_json_as_volunteer::<VolunteerInfo>("/api/volunteers/me", &credential).await;
            browser_credits.set(Some(answer.map_err(|error| error.message)));
        });
    }
}

#[component]
pub fn DonatePage() -> impl IntoView {
    let donation = Donation::get();
    let session = Session::get();
    let Donation { cores, settings, stats, notice, starting, started, manual_pause, paused, .. } = donation;
    // The page may be opened long after the volunteer last ran (or in another tab): show the credits as
    // they are now.
    donation.refresh_credits();

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
    let browser_credits = move || match donation.browser_credits.get() {
        Some(Ok(info)) => format::credits(info.balance_millicredits),
        Some(Err(message)) => message,
        None => format::credits(0),
    };
    // `None` while the standing is unknown; `Some(None)` when no account has claimed this browser yet.
    let claimed_by = move || {
        donation.browser_credits.with(|answer| match answer {
            Some(Ok(info)) => Some(info.claimed_by.clone()),
            _ => None,
        })
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
                    fallback=move || {
                        view! {
                            <button
                                id="start"
                                class="primary"
                                prop:disabled=move || starting.get()
                                on:click=move |_| donation.start()
                            >
                                {move || if starting.get() { "Starting…" } else { "Start" }}
                            </button>
                        }
                    }
                >
                    <button id="pause" on:click=toggle_pause>
                        {move || if manual_pause.get() { "Resume" } else { "Pause" }}
                    </button>
                    <button id="stop" on:click=move |_| donation.stop()>"Stop"</button>
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
                    <dt>"Cached data"</dt>
                    <dd id="cached-data">
                        {move || {
                            let current = stats.get();
                            format!(
                                "{} ({} files kept for later chunks; at most 512 MiB)",
                                format::bytes(current.cached_bytes),
                                current.cached_blobs
                            )
                        }}
                    </dd>
                    <dt>"Current job"</dt>
                    <dd id="current-job">{move || stats.get().current_job.unwrap_or_else(|| "—".to_owned())}</dd>
                    <dt>"Running now"</dt>
                    <dd id="running">
                        {move || {
                            let current = stats.get();
                            format!("{} of {} threads, {} queued", current.running, current.threads, current.queued)
                        }}
                    </dd>
                    <dt>"Credits earned by this browser"</dt>
                    <dd id="browser-credits">{browser_credits}</dd>
                </dl>
                {move || match (claimed_by(), session.user()) {
                    (Some(Some(account)), _) => {
                        view! {
                            <p id="credits-owner" class="credits-note">
                                "This browser volunteers for the account " <strong>{account}</strong>
                                ": the credits it earns go there."
                            </p>
                        }
                            .into_any()
                    }
                    (_, None) if session.checked() => {
                        view! {
                            <p id="credits-owner" class="credits-note">
                                <a href="/signup">"Sign up"</a> " or " <a href="/login">"log in"</a>
                                " to move these credits to an account and spend them on your own jobs."
                            </p>
                        }
                            .into_any()
                    }
                    (Some(None), Some(_)) => {
                        view! {
                            <p id="credits-owner" class="credits-note">
                                "These credits belong to this browser, not yet to your account: log out and log in "
                                "again here to move them."
                            </p>
                        }
                            .into_any()
                    }
                    _ => ().into_any(),
                }}
            </section>
            <Show when=move || notice.get().is_some()>
                <p id="notice" class="notice">{move || notice.get().unwrap_or_default()}</p>
            </Show>
            <section class="panel">
                <h2>"Or watch an ad"</h2>
                <p class="aside">
                    "A sponsor pays credits for each ad watched to the end, from a budget it set aside. The time "
                    "counts only while the ad is in view."
                </p>
                <WatchAd credited=move |_| Donation::get().refresh_credits() />
            </section>
        </main>
    }
}
