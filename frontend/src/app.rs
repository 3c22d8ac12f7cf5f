//! The app's frame: the session and the volunteering (which outlive any one page), the header, and the
//! routes. The server answers `index.html` at each route's path, so every page can be loaded directly.

use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::use_navigate;
use leptos_router::path;

use crate::account::AccountPage;
use crate::api;
use crate::auth::{LogInPage, SignUpPage};
use crate::donate::{DonatePage, Donation};
use crate::jobs::{JobPage, JobsPage};
use crate::live::SessionPage;
use crate::session::Session;
use crate::share::SharePage;
use crate::stats::StatsPage;
use crate::submit::SubmitPage;

#[component]
pub fn App() -> impl IntoView {
    let session = Session::provide();
    Donation::provide(session);
    view! {
        <Router>
            <Header />
            <Routes fallback=NotFound>
                <Route path=path!("/") view=DonatePage />
                <Route path=path!("/donate") view=DonatePage />
                <Route path=path!("/signup") view=SignUpPage />
                <Route path=path!("/login") view=LogInPage />
                <Route path=path!("/account") view=AccountPage />
                <Route path=path!("/submit") view=SubmitPage />
                <Route path=path!("/jobs") view=JobsPage />
                <Route path=path!("/jobs/:id") view=JobPage />
                <Route path=path!("/stats") view=StatsPage />
                <Route path=path!("/sessions/:id") view=SessionPage />
                <Route path=path!("/share") view=SharePage />
            </Routes>
        </Router>
    }
}

#[component]
fn Header() -> impl IntoView {
    let session = Session::get();
    let navigate = use_navigate();
    let logout_error = RwSignal::new(None::<String>);

    let log_out = move |_| {
        let navigate = navigate.clone();
        let csrf_token = session.csrf_token();
        leptos::task::spawn_local(async move {
            match api::post("/api/auth/logout", csrf_token.as_deref()).await {
                // A session that had already expired is as good as ended.
                Ok(()) => {}
                Err(error) if error.is_unauthorized() => {}
                Err(error) => {
                    logout_error.set(Some(error.message));
                    return;
                }
            }
            logout_error.set(None);
            session.signed_out();
            navigate("/login", NavigateOptions::default());
        });
    };

    // Nothing is shown on the account side until the session check answers, so a signed-in visitor
    // never sees "Log in" flash by.
    let account_links = move || match (session.checked(), session.user()) {
        (false, _) => ().into_any(),
        (true, None) => view! {
            <a id="login-link" href="/login">"Log in"</a>
            <a id="signup-link" class="button" href="/signup">"Sign up"</a>
        }
        .into_any(),
        (true, Some(user)) => {
            let log_out = log_out.clone();
            view! {
                <span id="header-username" class="username">{user.username}</span>
                <a id="account-link" href="/account">"Account"</a>
                <button id="logout" class="link" on:click=log_out>"Log out"</button>
            }
            .into_any()
        }
    };
    view! {
        <header class="top">
            <a class="brand" href="/">"Distributivecom"</a>
            <nav aria-label="Main">
                <a href="/donate">"Donate"</a>
                <a id="submit-link" href="/submit">"New job"</a>
                <a id="jobs-link" href="/jobs">"Jobs"</a>
                <a id="stats-link" href="/stats">"Stats"</a>
                // `rel="external"` makes the router leave this link to the browser: the API docs are not
                // a page of this app.
                <a href="/api/docs/" rel="external">"API"</a>
                <span class="account-links">{account_links}</span>
            </nav>
            <Show when=move || logout_error.get().is_some()>
                <p id="logout-error" class="error header-error" role="alert">
                    {move || logout_error.get().unwrap_or_default()}
                </p>
            </Show>
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <main class="auth">
            <h1>"Page not found"</h1>
            <p class="lead">"There is no such page. " <a href="/">"Donate compute"</a> " instead?"</p>
        </main>
    }
}
