//! Who is signed in: the answer of `GET /api/auth/session` at startup, kept in a context so that the
//! header and every page see the same user, and so that writes find the CSRF token they must send.

use distributivecom_protocol::api::{UserInfo, WebSessionInfo};
use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::use_navigate;

use crate::api;

/// Sends a signed-out visitor to the log-in page, which brings them back to `path` afterwards.
pub fn require_sign_in(session: Session, path: &str) {
    let navigate = use_navigate();
    let target = format!("/login?next={}", js_sys::encode_uri_component(path));
    Effect::new(move |_| {
        if session.checked() && session.user().is_none() {
            navigate(&target, NavigateOptions { replace: true, ..NavigateOptions::default() });
        }
    });
}

/// The session as this tab knows it. Copy it freely: it is a handle on signals.
#[derive(Clone, Copy)]
pub struct Session {
    info: RwSignal<Option<WebSessionInfo>>,
    /// Whether the startup check has answered; until then pages neither show the signed-out view nor
    /// redirect, which would flash the log-in page at a signed-in visitor.
    checked: RwSignal<bool>,
}

impl Session {
    /// Creates the session context and asks the server who is signed in.
    pub fn provide() -> Session {
        let session = Session { info: RwSignal::new(None), checked: RwSignal::new(false) };
        provide_context(session);
        leptos::task::spawn_local(async move {
            match api::get_json::<WebSessionInfo>("/api/auth/session").await {
                Ok(info) => session.info.set(Some(info)),
                // 401 simply means signed out. Any other failure leaves the visitor signed out too (every
                // page still works), and the console says why.
                Err(error) if error.is_unauthorized() => {}
                Err(error) => web_sys::console::warn_1(&format!("page: could not check the session: {error}").into()),
            }
            session.checked.set(true);
        });
        session
    }

    pub fn get() -> Session {
        expect_context::<Session>()
    }

    /// The signed-in user (tracked).
    pub fn user(self) -> Option<UserInfo> {
        self.info.with(|info| info.as_ref().map(|info| info.user.clone()))
    }

    /// Whether the startup check has answered (tracked).
    pub fn checked(self) -> bool {
        self.checked.get()
    }

    /// The token for `X-CSRF-Token`, read without tracking because writes happen in event handlers.
    pub fn csrf_token(self) -> Option<String> {
        self.info.with_untracked(|info| info.as_ref().map(|info| info.csrf_token.clone()))
    }

    /// After a successful sign-up or log-in.
    pub fn signed_in(self, info: WebSessionInfo) {
        self.info.set(Some(info));
        self.checked.set(true);
    }

    /// After log-out, or when the server says the session is gone.
    pub fn signed_out(self) {
        self.info.set(None);
        self.checked.set(true);
    }
}
