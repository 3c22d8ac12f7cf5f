//! The sign-up and log-in pages. Both send the browser's volunteer identity along, so that what this
//! browser earned anonymously moves to the account, and both end on the account page, or on the page that sent the visitor to log in (`?next=`).

use distributivecom_protocol::api::{Credentials, WebSessionInfo};
use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api;
use crate::donate::Donation;
use crate::session::Session;
use crate::validate::{self, after_sign_in};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    SignUp,
    LogIn,
}

impl AuthMode {
    fn endpoint(self) -> &'static str {
        match self {
            AuthMode::SignUp => "/api/auth/signup",
            AuthMode::LogIn => "/api/auth/login",
        }
    }

    fn problem(self, username: &str, password: &str) -> Option<&'static str> {
        match self {
            AuthMode::SignUp => validate::signup_problem(username, password),
            AuthMode::LogIn => validate::login_problem(username, password),
        }
    }
}

#[component]
pub fn SignUpPage() -> impl IntoView {
    view! { <AuthForm mode=AuthMode::SignUp /> }
}

#[component]
pub fn LogInPage() -> impl IntoView {
    view! { <AuthForm mode=AuthMode::LogIn /> }
}

/// `page` keeping the page to come back to after signing in.
fn with_next(page: &str, next: Option<String>) -> String {
    match next {
        Some(next) => format!("{page}?next={}", js_sys::encode_uri_component(&next)),
        None => page.to_owned(),
    }
}

#[component]
fn AuthForm(mode: AuthMode) -> impl IntoView {
    let session = Session::get();
    let donation = Donation::get();
    let navigate = use_navigate();
    let query = use_query_map();
    let next = Memo::new(move |_| query.with(|query| query.get("next")));
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);

    let submit = move |event: web_sys::SubmitEvent| {
        // The form is handled here; the browser must not post it and reload the page.
        event.prevent_default();
        if pending.get_untracked() {
            return;
        }
        let (name, secret) = (username.get_untracked().trim().to_owned(), password.get_untracked());
        if let Some(problem) = mode.problem(&name, &secret) {
            error.set(Some(problem.to_owned()));
            return;
        }
        error.set(None);
        pending.set(true);
        let credentials = Credentials { username: name, password: secret, volunteer: donation.identity() };
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            // A visitor may sign up while signed in as someone else; the server then wants that session's
            // token like on any other write.
            let csrf_token = session.csrf_token();
            let answer =
                api::post_json::<_, WebSessionInfo>(mode.endpoint(), &credentials, csrf_token.as_deref()).await;
            pending.set(false);
            match answer {
                Ok(info) => {
                    session.signed_in(info);
                    navigate(&after_sign_in(next.get_untracked()), NavigateOptions::default());
                }
                Err(failure) => error.set(Some(failure.message)),
            }
        });
    };

    let (title, button, other) = match mode {
        AuthMode::SignUp => (
            "Create an account",
            "Sign up",
            view! {
                <p class="aside">"Already have an account? " <a id="login-instead" href=move || with_next("/login", next.get())>"Log in"</a></p>
            }
            .into_any(),
        ),
        AuthMode::LogIn => (
            "Log in",
            "Log in",
            view! {
                <p class="aside">"No account yet? " <a id="signup-instead" href=move || with_next("/signup", next.get())>"Sign up"</a></p>
            }
            .into_any(),
        ),
    };
    view! {
        <main class="auth">
            <h1>{title}</h1>
            {(mode == AuthMode::SignUp).then(|| view! { <p class="lead" id="rules">{validate::SIGNUP_RULES}</p> })}
            <p class="lead">
                "The credits this browser has earned as a volunteer move to the account, and what it earns from "
                "now on goes there too."
            </p>
            <form class="form" on:submit=submit>
                <label>
                    "Username"
                    <input
                        id="username"
                        type="text"
                        name="username"
                        autocomplete="username"
                        prop:value=move || username.get()
                        on:input=move |event| username.set(event_target_value(&event))
                    />
                </label>
                <label>
                    "Password"
                    <input
                        id="password"
                        type="password"
                        name="password"
                        autocomplete=if mode == AuthMode::SignUp { "new-password" } else { "current-password" }
                        prop:value=move || password.get()
                        on:input=move |event| password.set(event_target_value(&event))
                    />
                </label>
                <button id="submit" class="primary" type="submit" prop:disabled=move || pending.get()>
                    {button}
                </button>
            </form>
            <Show when=move || error.get().is_some()>
                <p id="error" class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            </Show>
            {other}
        </main>
    }
}
