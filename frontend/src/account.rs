//! The account page: balance and escrow, the pricing formula, what the account's volunteers did, API
//! tokens (create, revoke), site keys for the embed script (`sites`), and the ledger history, a page at a
//! time, each entry linking its job.
//! Signed-out visitors are sent to the log-in page.

use distributivecom_protocol::api::{
    AccountInfo, LedgerEntry, LedgerPage, NewToken, Pricing, TokenCreated, TokenInfo, VolunteeringStats,
};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;

use crate::ads::WatchAd;
use crate::api::{self, ApiError};
use crate::campaigns::Campaigns;
use crate::format;
use crate::session::{Session, require_sign_in};
use crate::sites::SiteKeys;
use crate::validate;

#[component]
pub fn AccountPage() -> impl IntoView {
    let session = Session::get();
    require_sign_in(session, "/account");
    view! {
        <main class="account">
            <Show
                when=move || session.user().is_some()
                fallback=|| view! { <p class="lead">"Loading…"</p> }
            >
                <AccountDetails />
            </Show>
        </main>
    }
}

/// Everything the page loads; `None` until the first answer.
#[derive(Clone, Copy)]
pub(crate) struct AccountData {
    account: RwSignal<Option<AccountInfo>>,
    pricing: RwSignal<Option<Pricing>>,
    tokens: RwSignal<Option<Vec<TokenInfo>>>,
    volunteering: RwSignal<Option<VolunteeringStats>>,
    /// The ledger's newest page (reloaded with the balance); older pages are added by `Ledger`.
    ledger: RwSignal<Option<LedgerPage>>,
    /// The last failure's message, shown in `#error`.
    pub(crate) error: RwSignal<Option<String>>,
    pub(crate) session: Session,
}

impl AccountData {
    /// Shows a failure. An expired session signs the visitor out, which sends them to the log-in page.
    pub(crate) fn fail(self, error: ApiError) {
        if error.is_unauthorized() {
            self.session.signed_out();
        }
        self.error.set(Some(error.message));
    }

    /// Loads `path` into `target`. Tasks end with the page, so late answers touch nothing.
    pub(crate) fn load<T>(self, path: &'static str, target: RwSignal<Option<T>>)
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        spawn_local_scoped_with_cancellation(async move {
            match api::get_json::<T>(path).await {
                Ok(value) => target.set(Some(value)),
                Err(error) => self.fail(error),
            }
        });
    }

    /// The balance, the tokens and the ledger change together when tokens change or jobs run.
    fn reload(self) {
        self.load("/api/account", self.account);
        self.load("/api/account/tokens", self.tokens);
        self.load(LEDGER_FIRST_PAGE, self.ledger);
    }
}

/// Ledger entries per page.
const LEDGER_PAGE: u32 = 25;
const LEDGER_FIRST_PAGE: &str = "/api/account/ledger?limit=25";

#[component]
fn AccountDetails() -> impl IntoView {
    let session = Session::get();
    let data = AccountData {
        account: RwSignal::new(None),
        pricing: RwSignal::new(None),
        tokens: RwSignal::new(None),
        volunteering: RwSignal::new(None),
        ledger: RwSignal::new(None),
        error: RwSignal::new(None),
        session,
    };
    // Reloads run in an effect of this page, not in the task of whatever asked for them (a task that
    // has ended would cancel the loads it started), so that every change elsewhere on the page shows.
    let refresh = RwSignal::new(0u32);
    Effect::new(move |_| {
        refresh.get();
        data.reload();
    });
    let refresh_now = move || refresh.update(|count| *count += 1);
    data.load("/api/pricing", data.pricing);
    data.load("/api/account/volunteering", data.volunteering);

    let username = move || session.user().map(|user| user.username).unwrap_or_default();
    let amount = move |pick: fn(&AccountInfo) -> i64| {
        move || data.account.with(|account| account.as_ref().map(|account| format::credits(pick(account))))
    };
    view! {
        <h1>"Your account"</h1>
        <p class="lead">"Signed in as " <strong id="account-username">{username}</strong> "."</p>
        <Show when=move || data.error.get().is_some()>
            <p id="error" class="error" role="alert">{move || data.error.get().unwrap_or_default()}</p>
        </Show>
        <section class="panel">
            <h2>"Credits"</h2>
            <dl>
                <dt>"Balance"</dt>
                <dd id="balance">{amount(|account| account.balance_millicredits)}</dd>
                <dt>"Held in escrow (running jobs, open sessions, campaigns)"</dt>
                <dd id="escrowed">{amount(|account| account.escrowed_millicredits)}</dd>
            </dl>
            <p id="pricing" class="aside">{move || data.pricing.get().map(|pricing| format::pricing(&pricing))}</p>
        </section>
        <Volunteering data />
        <section class="panel">
            <h2>"Earn by watching an ad"</h2>
            <p class="aside">"A sponsor pays credits to this account for each ad watched to the end, from its campaign's escrow."</p>
            <WatchAd credited=move |_: i64| refresh_now() />
        </section>
        <Tokens data />
        <Campaigns changed=move |()| refresh_now() />
        <SiteKeys data />
        <Ledger data />
    }
}

#[component]
fn Tokens(data: AccountData) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let created = RwSignal::new(None::<TokenCreated>);
    let pending = RwSignal::new(false);

    let create = move |event: web_sys::SubmitEvent| {
        event.prevent_default();
        let token_name = name.get_untracked().trim().to_owned();
        if let Some(problem) = validate::token_name_problem(&token_name) {
            data.error.set(Some(problem.to_owned()));
            return;
        }
        if pending.get_untracked() {
            return;
        }
        pending.set(true);
        data.error.set(None);
        let csrf_token = data.session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            let body = NewToken { name: token_name };
            match api::post_json::<_, TokenCreated>("/api/account/tokens", &body, csrf_token.as_deref()).await {
                Ok(token) => {
                    created.set(Some(token));
                    name.set(String::new());
                    data.load("/api/account/tokens", data.tokens);
                }
                Err(error) => data.fail(error),
            }
            pending.set(false);
        });
    };
    let revoke = move |id: u64| {
        data.error.set(None);
        let csrf_token = data.session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            match api::delete(&format!("/api/account/tokens/{id}"), csrf_token.as_deref()).await {
                Ok(()) => {
                    // The secret shown for a token that is now revoked would only mislead.
                    if created.with_untracked(|token| token.as_ref().is_some_and(|token| token.id == id)) {
                        created.set(None);
                    }
                    data.load("/api/account/tokens", data.tokens);
                }
                Err(error) => data.fail(error),
            }
        });
    };

    let rows = move || {
        data.tokens
            .get()
            .unwrap_or_default()
            .into_iter()
            .map(|token| {
                let status = if token.revoked {
                    view! { <span class="muted">"revoked"</span> }.into_any()
                } else {
                    let id = token.id;
                    view! {
                        <button class="revoke" id=format!("revoke-{id}") on:click=move |_| revoke(id)>"Revoke"</button>
                    }
                    .into_any()
                };
                view! {
                    <tr class:revoked=token.revoked>
                        <td>{token.name}</td>
                        <td><code>{token.prefix}"…"</code></td>
                        <td>{format::date_time_utc(token.created_at_ms)}</td>
                        <td>{token.last_used_at_ms.map_or_else(|| "never".to_owned(), format::date_time_utc)}</td>
                        <td>{status}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <section class="panel">
            <h2>"API tokens"</h2>
            <p class="aside">
                "A token lets the command line, the SDK or a native worker act for this account. Treat it like "
                "a password, and revoke it when a machine no longer needs it."
            </p>
            <Show when=move || created.get().is_some()>
                <div class="new-token">
                    <p>
                        "Your new token " <strong>{move || created.get().map(|token| token.name)}</strong>
                        ". Copy it now: it will not be shown again."
                    </p>
                    <code id="new-token">{move || created.get().map(|token| token.token)}</code>
                </div>
            </Show>
            <form class="inline-form" on:submit=create>
                <label class="visually-hidden" for="token-name">"Token name"</label>
                <input
                    id="token-name"
                    type="text"
                    placeholder="Token name, e.g. build-server"
                    prop:value=move || name.get()
                    on:input=move |event| name.set(event_target_value(&event))
                />
                <button id="create-token" type="submit" prop:disabled=move || pending.get()>"Create token"</button>
            </form>
            <div class="table-scroll">
                <table id="tokens" class="data">
                    <thead>
                        <tr><th>"Name"</th><th>"Prefix"</th><th>"Created"</th><th>"Last used"</th><th></th></tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            <Show when=move || data.tokens.with(|tokens| tokens.as_ref().is_some_and(Vec::is_empty))>
                <p class="aside">"No tokens yet."</p>
            </Show>
        </section>
    }
}

#[component]
fn Volunteering(data: AccountData) -> impl IntoView {
    let figure = move |pick: fn(&VolunteeringStats) -> String| {
        move || data.volunteering.with(|stats| stats.as_ref().map_or_else(|| "—".to_owned(), pick))
    };
    view! {
        <section class="panel">
            <h2>"Volunteering"</h2>
            <p class="aside">
                "What this account's volunteers (its native workers, and the browsers it claimed) have done. "
                <a href="/donate">"Donate from this browser"</a> " to add to it."
            </p>
            <dl>
                <dt>"Validated replicas"</dt><dd id="validated-replicas">{figure(|s| format::count(s.validated_replicas))}</dd>
                <dt>"Invalid replicas"</dt><dd id="invalid-replicas">{figure(|s| format::count(s.invalid_replicas))}</dd>
                <dt>"Work units validated"</dt><dd id="work-units">{figure(|s| format::count(s.work_units))}</dd>
                <dt>"Reputation"</dt><dd id="reputation">{figure(|s| format!("{} validated in a row", format::count(s.consecutive_valid)))}</dd>
                <dt>"Earned"</dt><dd id="earned">{figure(|s| format::credits(s.earned_millicredits))}</dd>
            </dl>
        </section>
    }
}

fn ledger_row(entry: LedgerEntry) -> impl IntoView {
    let direction = if entry.amount_millicredits < 0 { "amount out" } else { "amount in" };
    let reference = match entry.job {
        Some(job) => {
            view! { <a href=format!("/jobs/{job}")>{format::job_and_chunk(entry.job, entry.chunk)}</a> }.into_any()
        }
        None => format::job_and_chunk(None, None).into_any(),
    };
    view! {
        <tr>
            <td>{format::date_time_utc(entry.created_at_ms)}</td>
            <td>{entry.kind}</td>
            <td class=direction>{format::signed_credits(entry.amount_millicredits)}</td>
            <td>{reference}</td>
            <td>{entry.memo}</td>
        </tr>
    }
}

#[component]
fn Ledger(data: AccountData) -> impl IntoView {
    // Older pages, loaded on demand; cleared whenever the newest page is reloaded.
    let older = RwSignal::new(Vec::<LedgerEntry>::new());
    let next_before = RwSignal::new(None::<u64>);
    let loading = RwSignal::new(false);
    Effect::new(move |_| {
        let first = data.ledger.with(|page| page.as_ref().map(|page| page.next_before));
        older.set(Vec::new());
        next_before.set(first.flatten());
    });
    let load_older = move |_| {
        let Some(before) = next_before.get_untracked() else { return };
        loading.set(true);
        spawn_local_scoped_with_cancellation(async move {
            let path = format!("/api/account/ledger?limit={LEDGER_PAGE}&before={before}");
            match api::get_json::<LedgerPage>(&path).await {
                Ok(page) => {
                    older.update(|entries| entries.extend(page.entries));
                    next_before.set(page.next_before);
                }
                Err(error) => data.fail(error),
            }
            loading.set(false);
        });
    };
    let rows = move || {
        let newest = data.ledger.get().map(|page| page.entries).unwrap_or_default();
        newest.into_iter().chain(older.get()).map(ledger_row).collect_view()
    };
    view! {
        <section class="panel">
            <h2>"Ledger"</h2>
            <p class="aside">"Every movement of this account's credits, newest first. Amounts are in credits."</p>
            <div class="table-scroll">
                <table id="ledger" class="data">
                    <caption class="visually-hidden">"Ledger entries, newest first"</caption>
                    <thead>
                        <tr><th scope="col">"Date"</th><th scope="col">"Kind"</th><th scope="col" class="amount">"Amount"</th><th scope="col">"Job / chunk"</th><th scope="col">"Reason"</th></tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            <Show when=move || next_before.get().is_some()>
                <button id="older-entries" prop:disabled=move || loading.get() on:click=load_older>"Show older entries"</button>
            </Show>
        </section>
    }
}
