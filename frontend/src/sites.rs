//! The account page's site keys: create one (a name and the origins whose pages may show the widget),
//! copy its snippet, see each key's statistics (visitors who opted in, compute time, work units, credits
//! earned) and revoke it. The rules on names and origins are the server's own (`protocol::embed`), so the
//! form refuses what the server would, with the same words.

use distributivecom_protocol::embed::{SiteInfo, SiteRequest, normalize_origins, site_name_problem};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;

use crate::account::AccountData;
use crate::api;
use crate::format;
use crate::validate::typed_origins;

/// Puts `text` on the clipboard, where the browser allows it; false where it does not.
fn copy_to_clipboard(text: &str) -> bool {
    let Some(window) = web_sys::window() else { return false };
    let clipboard =
        js_sys::Reflect::get(&window.navigator(), &"clipboard".into()).ok().filter(|value| value.is_object());
    let write = clipboard
        .as_ref()
        .and_then(|clipboard| js_sys::Reflect::get(clipboard, &"writeText".into()).ok())
        .and_then(|write| wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(write).ok());
    match (clipboard, write) {
        (Some(clipboard), Some(write)) => write.call1(&clipboard, &text.into()).is_ok(),
        _ => false,
    }
}

#[component]
pub fn SiteKeys(data: AccountData) -> impl IntoView {
    let sites = RwSignal::new(None::<Vec<SiteInfo>>);
    let name = RwSignal::new(String::new());
    let origins = RwSignal::new(String::new());
    let created = RwSignal::new(None::<SiteInfo>);
    let pending = RwSignal::new(false);
    let copied = RwSignal::new(None::<String>);
    let reload = move || data.load("/api/sites", sites);
    reload();

    let create = move |event: web_sys::SubmitEvent| {
        event.prevent_default();
        let site_name = name.get_untracked().trim().to_owned();
        let typed = typed_origins(&origins.get_untracked());
        let problem = site_name_problem(&site_name).or_else(|| normalize_origins(&typed).err());
        if let Some(problem) = problem {
            data.error.set(Some(problem));
            return;
        }
        if pending.get_untracked() {
            return;
        }
        pending.set(true);
        data.error.set(None);
        let csrf_token = data.session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            let body = SiteRequest { name: site_name, origins: typed };
            match api::post_json::<_, SiteInfo>("/api/sites", &body, csrf_token.as_deref()).await {
                Ok(site) => {
                    created.set(Some(site));
                    name.set(String::new());
                    origins.set(String::new());
                    reload();
                }
                Err(error) => data.fail(error),
            }
            pending.set(false);
        });
    };
    let revoke = move |key: String| {
        data.error.set(None);
        let csrf_token = data.session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            match api::delete(&format!("/api/sites/{key}"), csrf_token.as_deref()).await {
                Ok(()) => {
                    if created.with_untracked(|site| site.as_ref().is_some_and(|site| site.key == key)) {
                        created.set(None);
                    }
                    reload();
                }
                Err(error) => data.fail(error),
            }
        });
    };
    let copy = move |key: String, snippet: String| {
        if copy_to_clipboard(&snippet) {
            copied.set(Some(key));
        } else {
            data.error.set(Some("This browser did not let the page copy; select the snippet and copy it.".into()));
        }
    };

    let cards = move || {
        sites
            .get()
            .unwrap_or_default()
            .into_iter()
            .map(|site| {
                let (key, snippet, name) = (site.key.clone(), site.snippet.clone(), site.name.clone());
                let revoked = site.revoked_at_ms.is_some();
                let actions = if revoked {
                    view! { <p class="muted">"Revoked: its widget shows a neutral message and computes nothing."</p> }
                        .into_any()
                } else {
                    let (copy_key, revoke_key, copied_key) = (key.clone(), key.clone(), key.clone());
                    view! {
                        <div class="site-actions">
                            <button
                                type="button"
                                class="copy-snippet"
                                aria-label=format!("Copy the snippet of {name}")
                                on:click=move |_| copy(copy_key.clone(), snippet.clone())
                            >
                                {move || {
                                    if copied.get().as_deref() == Some(copied_key.as_str()) { "Copied" } else { "Copy snippet" }
                                }}
                            </button>
                            <button
                                type="button"
                                class="revoke revoke-site"
                                aria-label=format!("Revoke the site key of {name}")
                                on:click=move |_| revoke(revoke_key.clone())
                            >
                                "Revoke"
                            </button>
                        </div>
                    }
                    .into_any()
                };
                view! {
                    <article class="site" class:revoked=revoked data-key=key.clone()>
                        <h3>{site.name.clone()}</h3>
                        <p class="aside">
                            "Key " <code class="site-key">{key.clone()}</code> " · created "
                            {format::date_time_utc(site.created_at_ms)}
                        </p>
                        <p class="aside">"Origins: " {site.origins.join(", ")}</p>
                        <code class="snippet">{site.snippet.clone()}</code>
                        <dl class="site-figures">
                            <dt>"Visitors who opted in"</dt>
                            <dd class="site-visitors">{format::count(site.visitors)}</dd>
                            <dt>"Compute time"</dt>
                            <dd class="site-compute">{format::duration_ms(site.compute_ms)}</dd>
                            <dt>"Work units"</dt>
                            <dd class="site-work-units">{format::count(site.work_units)}</dd>
                            <dt>"Credits earned"</dt>
                            <dd class="site-earned">{format::credits(site.earned_millicredits)}</dd>
                        </dl>
                        {actions}
                    </article>
                }
            })
            .collect_view()
    };
    view! {
        <section class="panel" id="site-keys">
            <h2>"Embed on your site"</h2>
            <p class="aside">
                "Put a small widget on your own site: visitors who agree lend their browser's spare computing time, "
                "and the credits it earns come to this account. Nothing runs until a visitor presses Start in the "
                "widget, and only on the origins you list (scheme, host and port, such as https://blog.example)."
            </p>
            <Show when=move || created.get().is_some()>
                <div class="new-token" id="new-site">
                    <p>
                        "Paste this into the pages of " <strong>{move || created.get().map(|site| site.name)}</strong>
                        ", where the widget should appear:"
                    </p>
                    <code id="new-snippet">{move || created.get().map(|site| site.snippet)}</code>
                </div>
            </Show>
            <form class="form site-form" on:submit=create>
                <label>
                    "Site name (visitors see it as who earns)"
                    <input
                        id="site-name"
                        type="text"
                        maxlength="100"
                        placeholder="My blog"
                        prop:value=move || name.get()
                        on:input=move |event| name.set(event_target_value(&event))
                    />
                </label>
                <label>
                    "Origins allowed to show the widget (one per line, up to 16)"
                    <textarea
                        id="site-origins"
                        rows="2"
                        placeholder="https://blog.example"
                        prop:value=move || origins.get()
                        on:input=move |event| origins.set(event_target_value(&event))
                    ></textarea>
                </label>
                <button id="create-site" type="submit" class="primary" prop:disabled=move || pending.get()>
                    "Create site key"
                </button>
            </form>
            <div id="sites" class="sites">{cards}</div>
            <Show when=move || sites.with(|sites| sites.as_ref().is_some_and(Vec::is_empty))>
                <p class="aside">"No site keys yet."</p>
            </Show>
        </section>
    }
}
