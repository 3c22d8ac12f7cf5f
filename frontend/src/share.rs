//! The page where a site's visitor, signed in here, takes their share of what their browser computes for
//! that site (`/share`). The embed widget opens it in a new tab with a single-use code and the site's name
//! in the URL's fragment (never sent to a server); the page keeps them in `sessionStorage` across a
//! sign-in and removes them from the URL at once, so the code stays out of the history. See
//! `docs/embed.md`.

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
    site: String,
}

/// The code in the URL's fragment (moved to `sessionStorage`, and the fragment cleared), or the one kept
/// there before a sign-in.
fn handed_over() -> Option<Handed> {
    let window = web_sys::window()?;
    let storage = window.session_storage().ok().flatten();
    let fragment = window.location().hash().unwrap_or_default();
    let from_fragment =
        web_sys::UrlSearchParams::new_with_str(fragment.trim_start_matches('#')).ok().and_then(|params| {
            let code = params.get("code").filter(|code| is_share_code(code))?;
            // The name is only for display here; the server's answer names the site for certain.
            let site: String = params.get("site").unwrap_or_default().chars().take(100).collect();
            Some(Handed { code, site })
        });
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

#[component]
pub fn SharePage() -> impl IntoView {
    let session = Session::get();
    let handed = handed_over();
    require_sign_in(session, "/share");
    let outcome = RwSignal::new(None::<Result<ShareTaken, String>>);
    let pending = RwSignal::new(false);
    let site = handed.as_ref().map(|handed| handed.site.clone()).filter(|site| !site.is_empty());
    let site_words = site.clone().unwrap_or_else(|| "the site you came from".to_owned());

    let take = {
        let handed = handed.clone();
        move |_| {
            let Some(handed) = handed.clone() else { return };
            if pending.get_untracked() {
                return;
            }
            pending.set(true);
            let csrf_token = session.csrf_token();
            spawn_local_scoped_with_cancellation(async move {
                let body = ShareRequest { code: handed.code };
                let answer = api::post_json::<_, ShareTaken>("/api/embed/shares", &body, csrf_token.as_deref()).await;
                // A code works once, whatever the answer.
                forget_handed_over();
                outcome.set(Some(answer.map_err(|error| error.message)));
                pending.set(false);
            });
        }
    };

    let body = move || {
        let username = session.user().map(|user| user.username).unwrap_or_default();
        match (handed.is_some(), outcome.get()) {
            (false, _) => view! {
                <p id="share-missing" class="error" role="alert">
                    "This page needs the link from a site's donation widget: click “Take "
                    {VISITOR_SHARE_PERCENT} "% of the credits” in the widget while it is donating."
                </p>
            }
            .into_any(),
            (true, Some(Ok(taken))) => view! {
                <p id="share-done" class="new-token" role="status">
                    "Done: from now on, " {taken.share_percent} "% of the credits your browser earns for "
                    <strong>{taken.site_name}</strong> " go to your account, " <strong>{username}</strong>
                    ". You can close this tab and go back to the site."
                </p>
                <p><a href="/account">"See your credits"</a></p>
            }
            .into_any(),
            (true, failed) => {
                let take = take.clone();
                let site_words = site_words.clone();
                view! {
                    <p class="lead">
                        "From now on, " {VISITOR_SHARE_PERCENT} "% of the credits your browser earns while donating to "
                        <strong>{site_words}</strong> " would go to your account, " <strong>{username}</strong>
                        ". The site's owner keeps the rest. Nothing else changes: the widget on that site still runs only while you let it."
                    </p>
                    <p><button id="take-share" class="primary" disabled=move || pending.get() on:click=take>
                        {move || if pending.get() { "Taking your share…" } else { "Take my share" }}
                    </button></p>
                    {failed.and_then(Result::err).map(|message| view! {
                        <p id="share-error" class="error" role="alert">{message}</p>
                    })}
                }
                .into_any()
            }
        }
    };
    view! {
        <main class="auth share-page">
            <h1>"Take your share"</h1>
            <Show when=move || session.checked() && session.user().is_some()>
                {body.clone()}
            </Show>
        </main>
    }
}
