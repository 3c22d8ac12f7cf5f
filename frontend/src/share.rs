//! The page where a site's visitor, signed in here, takes their share of what their browser computes for
//! that site (`/share`). The embed widget opens it in a new tab with a single-use code in the URL's
//! fragment (never sent to a server); the page keeps it in `sessionStorage` across a sign-in and takes it
//! out of the URL at once. The server names the site (`POST /api/embed/shares/preview`) before the
//! visitor confirms. See `docs/embed.md`.

use distributivecom_protocol::embed::{ShareRequest, ShareTaken, VISITOR_SHARE_PERCENT, is_share_code};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use serde::{Deserialize, Serialize};

use crate::api;
use crate::session::{Session, require_sign_in};

/// Where the code waits while the visitor signs in.
const PENDING_KEY: &str = "distributivecom.share";

/// What the widget handed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Handed {
    code: String,
}

/// The code in the URL's fragment (moved to `sessionStorage`, and the fragment cleared), or the one kept
/// there before a sign-in.
fn handed_over() -> Option<Handed> {
    let window = web_sys::window()?;
    let storage = window.session_storage().ok().flatten();
    let fragment = window.location().hash().unwrap_or_default();
    let from_fragment = web_sys::UrlSearchParams::new_with_str(fragment.trim_start_matches('#'))
        .ok()
        .and_then(|params| params.get("code").filter(|code| is_share_code(code)).map(|code| Handed { code }));
    if let Some(handed) = &from_fragment {
        if let (Some(storage), Ok(json)) = (&storage, serde_json::to_string(handed)) {
            let _ = storage.set_item(PENDING_KEY, &json);
        }
    }
    if !fragment.is_empty() {
        if let Ok(history) = window.history() {
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some("/share"));
        }
    }
    from_fragment.or_else(|| {
        let json = storage?.get_item(PENDING_KEY).ok()??;
        serde_json::from_str::<Handed>(&json).ok().filter(|handed| is_share_code(&handed.code))
    })
}

fn forget_handed_over() {
    if let Some(storage) = web_sys::window().and_then(|window| window.session_storage().ok().flatten()) {
        let _ = storage.remove_item(PENDING_KEY);
    }
}

/// Where the page stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Asking the server what the code would give.
    Checking,
    /// The code is live: the visitor may take the share of this site.
    Offer(ShareTaken),
    Taken(ShareTaken),
    /// The server said no (the code is spent by then, or was never live): nothing more to do here.
    Refused(String),
}

#[component]
pub fn SharePage() -> impl IntoView {
    let session = Session::get();
    let handed = handed_over();
    require_sign_in(session, "/share");
    let step = RwSignal::new(Step::Checking);
    let pending = RwSignal::new(false);
    let network_error = RwSignal::new(None::<String>);

    // Once signed in, the server names the site (the link's name is only the link's word).
    let checked = RwSignal::new(false);
    Effect::new({
        let handed = handed.clone();
        move |_| {
            let Some(handed) = handed.clone() else { return };
            if checked.get_untracked() || !session.checked() || session.user().is_none() {
                return;
            }
            checked.set(true);
            let csrf_token = session.csrf_token();
            spawn_local_scoped_with_cancellation(async move {
                let body = ShareRequest { code: handed.code };
                match api::post_json::<_, ShareTaken>("/api/embed/shares/preview", &body, csrf_token.as_deref()).await {
                    Ok(offer) => step.set(Step::Offer(offer)),
                    Err(error) if error.status == 0 => network_error.set(Some(error.message)),
                    Err(error) => {
                        forget_handed_over();
                        step.set(Step::Refused(error.message));
                    }
                }
            });
        }
    });

    let take = {
        let handed = handed.clone();
        move |_| {
            let Some(handed) = handed.clone() else { return };
            if pending.get_untracked() {
                return;
            }
            pending.set(true);
            network_error.set(None);
            let csrf_token = session.csrf_token();
            spawn_local_scoped_with_cancellation(async move {
                let body = ShareRequest { code: handed.code };
                match api::post_json::<_, ShareTaken>("/api/embed/shares", &body, csrf_token.as_deref()).await {
                    Ok(taken) => {
                        forget_handed_over();
                        step.set(Step::Taken(taken));
                    }
                    // No answer: the code may still be live; the visitor may try again.
                    Err(error) if error.status == 0 => network_error.set(Some(error.message)),
                    // Any answer used the code up.
                    Err(error) => {
                        forget_handed_over();
                        step.set(Step::Refused(error.message));
                    }
                }
                pending.set(false);
            });
        }
    };

    let has_code = handed.is_some();
    let body = move || {
        let username = session.user().map(|user| user.username).unwrap_or_default();
        if !has_code {
            return view! {
                <p id="share-missing" class="error" role="alert">
                    "This page needs the link from a site's donation widget: click “Take "
                    {VISITOR_SHARE_PERCENT} "% of the credits” in the widget while it is donating."
                </p>
            }
            .into_any();
        }
        match step.get() {
            Step::Checking => view! { <p class="lead">"Checking the link…"</p> }.into_any(),
            Step::Offer(offer) => {
                let take = take.clone();
                view! {
                    <p class="lead">
                        "From now on, " {offer.share_percent} "% of the credits your browser earns while donating to "
                        <strong>{offer.site_name}</strong> " would go to your account, " <strong>{username}</strong>
                        ". The site's owner keeps the rest. Nothing else changes: the widget on that site still runs only while you let it."
                    </p>
                    <p><button id="take-share" class="primary" disabled=move || pending.get() on:click=take>
                        {move || if pending.get() { "Taking your share…" } else { "Take my share" }}
                    </button></p>
                }
                .into_any()
            }
            Step::Taken(taken) => view! {
                <p id="share-done" class="new-token" role="status">
                    "Done: from now on, " {taken.share_percent} "% of the credits your browser earns for "
                    <strong>{taken.site_name}</strong> " go to your account, " <strong>{username}</strong>
                    ". You can close this tab and go back to the site."
                </p>
                <p><a href="/account">"See your credits"</a></p>
            }
            .into_any(),
            Step::Refused(message) => view! {
                <p id="share-error" class="error" role="alert">{message}</p>
                <p>"To try again, click the link in the site's widget once more."</p>
            }
            .into_any(),
        }
    };
    view! {
        <main class="auth share-page">
            <h1>"Take your share"</h1>
            <Show when=move || session.checked() && session.user().is_some()>
                {body.clone()}
            </Show>
            <Show when=move || network_error.get().is_some()>
                <p id="share-network-error" class="error" role="alert">{move || network_error.get().unwrap_or_default()}</p>
            </Show>
        </main>
    }
}
