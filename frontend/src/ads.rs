//! Rewarded ads, the viewer's side (on the donate and account pages): "Watch an ad to earn credits" asks
//! the server for a single-use view (`POST /api/ad-views`), shows the creative, and counts only the time
//! it is seen: the page visible (Page Visibility) and at least half of the creative's pixels in view (an
//! IntersectionObserver; the IAB rule), a video only while it plays. Once that reaches the campaign's
//! minimum the page sends the completion; the server checks the elapsed time on its own clock, the token,
//! the caps and the budget, and only then pays from the campaign's escrow.

use distributivecom_protocol::api::{AdViewCompleted, AdViewRequest, AdViewStarted, VolunteerCredential};
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{IntersectionObserver, IntersectionObserverEntry, IntersectionObserverInit, VisibilityState};

use crate::api::{self, ApiError};
use crate::donate::Donation;
use crate::format;
use crate::session::Session;

/// How often the seen time is counted.
const TICK_MS: i32 = 100;
/// Sent a little after the minimum, so that the server's clock (which started first) agrees.
const MARGIN_MS: f64 = 200.0;

/// Who watches: the signed-in account, or this browser's anonymous volunteer identity.
#[derive(Clone)]
enum Viewer {
    Account(Option<String>),
    Volunteer(VolunteerCredential),
}

impl Viewer {
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        match self {
            Viewer::Account(csrf_token) => api::post_json(path, body, csrf_token.as_deref()).await,
            Viewer::Volunteer(credential) => api::post_json_as_volunteer(path, body, credential).await,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Idle,
    Asking,
    Watching(AdViewStarted),
    Completing,
    Credited(i64),
}

/// The button, the creative while it is watched, and the outcome. `credited` is told the amount paid.
#[component]
pub fn WatchAd(#[prop(optional, into)] credited: Option<Callback<i64>>) -> impl IntoView {
    let session = Session::get();
    let stage = RwSignal::new(Stage::Idle);
    let error = RwSignal::new(None::<String>);
    let seen_ms = RwSignal::new(0.0f64);
    let viewer = StoredValue::new_local(None::<Viewer>);

    let finish = move |token: String| {
        stage.set(Stage::Completing);
        spawn_local_scoped_with_cancellation(async move {
            let Some(viewer) = viewer.get_value() else { return };
            let path = format!("/api/ad-views/{token}/complete");
            match viewer.post::<_, AdViewCompleted>(&path, &serde_json::json!({})).await {
                Ok(done) => {
                    stage.set(Stage::Credited(done.credited_millicredits));
                    if let Some(credited) = credited {
                        credited.run(done.credited_millicredits);
                    }
                }
                Err(failure) => {
                    error.set(Some(failure.message));
                    stage.set(Stage::Idle);
                }
            }
        });
    };

    let watch = move |event: web_sys::MouseEvent| {
        if !event.is_trusted()
            || matches!(stage.get_untracked(), Stage::Asking | Stage::Watching(_) | Stage::Completing)
        {
            return;
        }
        error.set(None);
        seen_ms.set(0.0);
        stage.set(Stage::Asking);
        spawn_local_scoped_with_cancellation(async move {
            let who = if session.user().is_some() {
                Viewer::Account(session.csrf_token())
            } else {
                match Donation::get().ensure_identity().await {
                    Ok(credential) => Viewer::Volunteer(credential),
                    Err(message) => {
                        error.set(Some(message));
                        stage.set(Stage::Idle);
                        return;
                    }
                }
            };
            viewer.set_value(Some(who.clone()));
            match who.post::<_, AdViewStarted>("/api/ad-views", &AdViewRequest::default()).await {
                Ok(view) => {
                    for url in view
                        .impression_urls
                        .iter()
                        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
                    {
                        // A VAST impression is a pixel the sponsor's server counts; its answer does not matter.
                        if let Ok(pixel) = web_sys::HtmlImageElement::new() {
                            pixel.set_src(url);
                        }
                    }
                    stage.set(Stage::Watching(view));
                }
                Err(failure) => {
                    error.set(Some(failure.message));
                    stage.set(Stage::Idle);
                }
            }
        });
    };

    let watching = move || match stage.get() {
        Stage::Watching(view) => Some(view),
        _ => None,
    };
    view! {
        <div class="watch-ad">
            <Show when=move || !matches!(stage.get(), Stage::Watching(_))>
                <button id="watch-ad" type="button" prop:disabled=move || matches!(stage.get(), Stage::Asking | Stage::Completing) on:click=watch>
                    "Watch an ad to earn credits"
                </button>
            </Show>
            {move || watching().map(|view| view! { <Creative view seen_ms finish /> })}
            <Show when=move || matches!(stage.get(), Stage::Credited(_))>
                <p id="ad-credited" class="new-token" role="status">
                    {move || match stage.get() {
                        Stage::Credited(amount) => format!("Thank you: {} credited.", format::credits(amount)),
                        _ => String::new(),
                    }}
                </p>
            </Show>
            <Show when=move || error.get().is_some()>
                <p id="ad-error" class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            </Show>
        </div>
    }
}

/// The creative being watched, and the time it has been seen so far.
#[component]
fn Creative(view: AdViewStarted, seen_ms: RwSignal<f64>, finish: impl Fn(String) + Copy + 'static) -> impl IntoView {
    let frame = NodeRef::<html::Div>::new();
    let video = NodeRef::<html::Video>::new();
    let in_view = RwSignal::new(false);
    let is_video = view.creative_mime.starts_with("video/");
    let min_view_ms = view.min_view_ms as f64;
    let token = view.token.clone();

    // At least half of the creative's pixels in the viewport.
    Effect::new(move |_| {
        let Some(element) = frame.get() else { return };
        // The ad appears where the button was, perhaps at the bottom of the window: bring it into view.
        element.scroll_into_view();
        let on_change = Closure::<dyn Fn(js_sys::Array)>::new(move |entries: js_sys::Array| {
            if let Some(entry) =
                entries.iter().last().and_then(|entry| entry.dyn_into::<IntersectionObserverEntry>().ok())
            {
                in_view.set(entry.intersection_ratio() >= 0.5);
            }
        });
        let options = IntersectionObserverInit::new();
        options.set_threshold(&js_sys::Array::of3(&0.0.into(), &0.5.into(), &1.0.into()));
        if let Ok(observer) = IntersectionObserver::new_with_options(on_change.as_ref().unchecked_ref(), &options) {
            observer.observe(&element);
            let kept = send_wrapper::SendWrapper::new((observer, on_change));
            on_cleanup(move || kept.0.disconnect());
        }
    });

    // Count the seen time; complete once it reaches the minimum.
    let last = StoredValue::new(js_sys::Date::now());
    let done = StoredValue::new(false);
    let tick = Closure::<dyn Fn()>::new(move || {
        let now = js_sys::Date::now();
        let elapsed = now - last.get_value();
        last.set_value(now);
        let page_visible =
            crate::window().document().is_some_and(|document| document.visibility_state() == VisibilityState::Visible);
        let playing = !is_video || video.get_untracked().is_some_and(|video| !video.paused());
        if page_visible && in_view.get_untracked() && playing && !done.get_value() {
            seen_ms.update(|seen| *seen += elapsed);
            if seen_ms.get_untracked() >= min_view_ms + MARGIN_MS {
                done.set_value(true);
                finish(token.clone());
            }
        }
    });
    let interval = crate::window()
        .set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), TICK_MS)
        .ok();
    let kept = send_wrapper::SendWrapper::new(tick);
    on_cleanup(move || {
        if let Some(interval) = interval {
            crate::window().clear_interval_with_handle(interval);
        }
        drop(kept);
    });

    let reward = format::credits(view.reward_millicredits);
    let seconds = (view.min_view_ms as f64 / 1000.0).ceil();
    let creative = if is_video {
        view! { <video node_ref=video id="ad-creative" src=view.creative_url.clone() autoplay=true muted=true playsinline=true loop=true aria-label="The sponsor's video"></video> }.into_any()
    } else {
        view! { <img id="ad-creative" src=view.creative_url.clone() alt="The sponsor's advertisement" /> }.into_any()
    };
    view! {
        <div class="ad-frame" node_ref=frame>
            <p class="aside">{format!("Keep this ad in view for {seconds} s to earn {reward}.")}</p>
            {creative}
            <label class="progress">
                <span id="ad-seen">{move || format!("Seen for {:.1} s of {seconds} s", (seen_ms.get() / 1000.0).min(seconds))}</span>
                <progress id="ad-progress" max="1" value=move || (seen_ms.get() / min_view_ms.max(1.0)).min(1.0)></progress>
            </label>
            <Show when=move || !in_view.get()>
                <p class="hint">"Scroll so that the ad is in view: time counts only while at least half of it is visible."</p>
            </Show>
        </div>
    }
}
