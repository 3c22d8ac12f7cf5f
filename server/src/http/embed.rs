//! The embed script's two pages: `/embed.js`, the tiny script a site pastes into its pages (it injects the
//! frame), and `/embed/frame`, the consent widget inside the frame, served with a Content-Security-Policy
//! whose `frame-ancestors` lists the site key's origins, so that a key copied onto another site shows
//! nothing there. An unknown or revoked key, or a host page whose origin is not on the list, gets the
//! neutral message, which loads nothing that computes. See `docs/embed.md`.
//!
//! The widget's page holds no inline script or style: its behaviour is `/assets/embed-frame.js` and its
//! look `/assets/embed.css`, so the policy allows scripts and styles from this origin only.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use distributivecom_protocol::embed::{FrameQuery, VISITOR_SHARE_PERCENT};

use super::AppState;
use super::error::AppError;
use super::extract::Query;
use super::web::serve_asset;
use crate::identity::SITE_UNAVAILABLE;
use crate::sites::{self, Frame};

/// `GET /embed.js`: served to any site (it only injects the frame, which enforces everything).
pub async fn script(headers: HeaderMap) -> Response {
    let mut response = serve_asset("embed.js", &headers);
    let response_headers = response.headers_mut();
    // A host page that isolates itself (Cross-Origin-Embedder-Policy) may still load it.
    response_headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    response_headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// What the widget's page may load: its own script and style from this origin, the volunteer's script,
/// wasm and workers once the visitor opts in, requests to this origin (the API and the worker socket), and
/// nothing else; only the key's origins may frame it.
fn widget_policy(origins: &[String]) -> String {
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {}",
        origins.join(" ")
    )
}

/// The neutral page loads its style and the script that tells the host page it is unavailable, and may be
/// framed anywhere: it shows one sentence and computes nothing.
const NEUTRAL_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; base-uri 'none'; \
                              form-action 'none'; frame-ancestors *";

/// `GET /embed/frame?site=KEY&throttle=..&threads=..&origin=..`: the consent widget, or the neutral
/// message.
#[utoipa::path(
    get, path = "/embed/frame", tag = "sites",
    params(FrameQuery),
    responses((status = 200, description = "The widget's HTML page (or the neutral message), with its Content-Security-Policy", content_type = "text/html"))
)]
pub async fn frame(State(state): State<AppState>, Query(query): Query<FrameQuery>) -> Result<Response, AppError> {
    let (page, policy) = match sites::frame(&state.store, &query).await? {
        Frame::Widget { key, name, origins, settings } => {
            let policy = widget_policy(&origins);
            (widget_page(&key, &name, &origins, settings.throttle_percent, settings.threads), policy)
        }
        Frame::Unavailable => (neutral_page(), NEUTRAL_POLICY.to_owned()),
    };
    let mut response = Html(page).into_response();
    let headers = response.headers_mut();
    let policy = HeaderValue::from_str(&policy)
        .map_err(|error| AppError::Internal(format!("a site's policy is not a header value: {error}")))?;
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    // A revoked key must take effect at once: no cached copy of the widget.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    Ok(response)
}

/// Text for HTML, in element content and in quoted attributes alike.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn widget_page(key: &str, name: &str, origins: &[String], throttle: u32, threads: u32) -> String {
    let name = escape(name);
    let origins = escape(&origins.join(" "));
    let cores = if threads == 1 { "one CPU core".to_owned() } else { format!("{threads} CPU cores") };
    let share = VISITOR_SHARE_PERCENT;
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Donate computing time to {name}</title>
<link rel="stylesheet" href="/assets/embed.css">
<script src="/assets/embed-frame.js" defer></script>
</head>
<body data-state="consent" data-site="{key}" data-name="{name}" data-origins="{origins}" data-throttle="{throttle}" data-threads="{threads}">
<main id="widget" class="widget">
<section id="consent">
<p class="title"><strong>Donate computing time to {name}?</strong></p>
<p>While this page is open, your browser would run small sandboxed computing tasks (WebAssembly, no access to your files) with <strong>at most {throttle}% of {cores}</strong>. {name} earns the credits. Stop at any time.</p>
<p class="buttons"><button id="start" class="primary" type="button">Start donating</button> <button id="decline" type="button">No thanks</button></p>
</section>
<section id="running" hidden>
<p class="title"><strong id="running-title">Donating to {name}</strong></p>
<p id="progress">Starting…</p>
<p class="buttons"><button id="pause" type="button">Pause</button> <button id="stop" class="primary" type="button">Stop</button></p>
<p class="share"><button id="share" class="link" type="button" title="Opens a page of Distributivecom where you, signed in, take {share}% of what this browser earns here">Have an account with us? Take {share}% of the credits</button> <a id="share-link" href="/share" target="_blank" rel="noopener" hidden>Open the page to take your share</a></p>
</section>
<section id="stopped" hidden>
<p class="title"><strong>Not donating.</strong></p>
<p id="stopped-reason">You chose not to donate on this site; it will not ask again for 30 days.</p>
<p class="buttons"><button id="reconsider" type="button">Donate after all</button></p>
</section>
<p id="message" role="status" aria-live="polite"></p>
<p class="about"><a href="/" target="_blank" rel="noopener">Distributivecom</a>: volunteer computing in the browser.</p>
</main>
</body>
</html>
"#
    )
}

fn neutral_page() -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Distributivecom</title>
<link rel="stylesheet" href="/assets/embed.css">
<script src="/assets/embed-frame.js" defer></script>
</head>
<body data-state="unavailable">
<main class="widget unavailable"><p id="unavailable">{SITE_UNAVAILABLE}</p></main>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_out_of_the_page() {
        let page =
            widget_page("site_x", "<script>alert('x')</script> & \"co\"", &["https://a.example".to_owned()], 30, 1);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;"));
        // The only script is ours, from a file.
        assert_eq!(page.matches("<script").count(), 1);
    }

    #[test]
    fn only_the_keys_origins_may_frame_the_widget() {
        let policy = widget_policy(&["https://a.example".to_owned(), "http://localhost:8000".to_owned()]);
        assert!(policy.ends_with("frame-ancestors https://a.example http://localhost:8000"), "{policy}");
        assert!(policy.contains("default-src 'none'") && !policy.contains("unsafe-inline"));
    }
}
