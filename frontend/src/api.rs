//! Talking to the REST API from the page: `fetch` with the session cookie (`credentials: same-origin`),
//! JSON bodies, the `X-CSRF-Token` header on every write, and the server's `{"error": "..."}` bodies turned
//! into [`ApiError`] messages a person can read.
//!
//! Writes take the CSRF token as an argument rather than finding it themselves: the server refuses a
//! cookie-authenticated write without it, so every caller must decide where it comes from (the session
//! context), and forgetting it is a compile error rather than a puzzling 403.

use std::fmt;

use distributivecom_protocol::api::ErrorBody;

/// A request that did not give the expected answer. `message` is what to show the visitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, or 0 when no answer arrived at all.
    pub status: u16,
    pub message: String,
}

impl ApiError {
    /// The session cookie is missing or expired: the page should treat the visitor as signed out.
    pub fn is_unauthorized(&self) -> bool {
        self.status == 401
    }

    /// The error for a non-2xx answer with `body`.
    pub fn from_answer(status: u16, body: &str) -> ApiError {
        ApiError { status, message: error_message(status, body) }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// The message of an error answer: the server's own words from its `ErrorBody`, or, where a proxy or a
/// crash left no such body, a sentence that still says what happened.
pub fn error_message(status: u16, body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error }) if !error.trim().is_empty() => error,
        _ => match status {
            401 => "You are not signed in, or your session has expired.".to_owned(),
            403 => "The server refused this request.".to_owned(),
            404 => "The server does not know this address.".to_owned(),
            429 => "Too many requests; wait a moment and try again.".to_owned(),
            500..=599 => format!("The server failed to answer (status {status}); try again later."),
            _ => format!("The server refused the request (status {status})."),
        },
    }
}

#[cfg(target_arch = "wasm32")]
pub use fetch::{
    UploadBody, delete, get_json, get_json_as_volunteer, post, post_for_json, post_json, post_json_as_volunteer, upload,
};

#[cfg(target_arch = "wasm32")]
mod fetch {
    use distributivecom_protocol::api::VolunteerCredential;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    use web_sys::{Headers, Request, RequestCredentials, RequestInit, Response};

    use super::ApiError;
    use crate::identity;

    /// The header the server compares with the session's token on cookie-authenticated writes.
    const CSRF_HEADER: &str = "X-CSRF-Token";

    /// `GET path` with the session cookie, answering JSON.
    pub async fn get_json<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
        decode(send("GET", path, None, &[]).await?)
    }

    /// `GET path` as the browser's anonymous volunteer rather than as the signed-in user.
    pub async fn get_json_as_volunteer<T: DeserializeOwned>(
        path: &str,
        credential: &VolunteerCredential,
    ) -> Result<T, ApiError> {
        decode(send("GET", path, None, &[("Authorization", &identity::authorization(credential))]).await?)
    }

    /// `POST path` with a JSON body as the browser's anonymous volunteer, answering JSON.
    pub async fn post_json_as_volunteer<B: Serialize, T: DeserializeOwned>(
        path: &str,
        body: &B,
        credential: &VolunteerCredential,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_string(body)
            .map_err(|_| ApiError { status: 0, message: "This page could not encode the request.".to_owned() })?;
        let authorization = identity::authorization(credential);
        decode(send("POST", path, Some(body), &[("Authorization", &authorization)]).await?)
    }

    /// `POST path` with a JSON body, answering JSON.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        path: &str,
        body: &B,
        csrf_token: Option<&str>,
    ) -> Result<T, ApiError> {
        // Serializing our own request types cannot fail in practice; if it ever did, nothing was sent.
        let body = serde_json::to_string(body)
            .map_err(|_| ApiError { status: 0, message: "This page could not encode the request.".to_owned() })?;
        decode(send("POST", path, Some(body), &csrf_header(csrf_token)).await?)
    }

    /// `POST path` without a body, answering JSON.
    pub async fn post_for_json<T: DeserializeOwned>(path: &str, csrf_token: Option<&str>) -> Result<T, ApiError> {
        decode(send("POST", path, None, &csrf_header(csrf_token)).await?)
    }

    /// `POST path` without a body, when only success matters.
    pub async fn post(path: &str, csrf_token: Option<&str>) -> Result<(), ApiError> {
        send("POST", path, None, &csrf_header(csrf_token)).await.map(drop)
    }

    /// `DELETE path`, when only success matters.
    pub async fn delete(path: &str, csrf_token: Option<&str>) -> Result<(), ApiError> {
        send("DELETE", path, None, &csrf_header(csrf_token)).await.map(drop)
    }

    /// What [`upload`] sends.
    pub enum UploadBody<'a> {
        /// A file the visitor chose (a `File` is a `Blob`), streamed by the browser.
        Blob(&'a web_sys::Blob),
        Text(&'a str),
    }

    /// Sends `body` (a file or a string) with `XMLHttpRequest`, which, unlike `fetch`, reports
    /// upload progress: `progress(sent, total)` is called as the bytes go. Answers the body of a 2xx answer.
    pub async fn upload(
        path: &str,
        body: UploadBody<'_>,
        content_type: &str,
        csrf_token: Option<&str>,
        progress: impl Fn(f64, f64) + 'static,
    ) -> Result<String, ApiError> {
        use wasm_bindgen::closure::Closure;
        use web_sys::{ProgressEvent, XmlHttpRequest};

        let request = XmlHttpRequest::new().map_err(|_| no_answer())?;
        request.open("POST", path).map_err(|_| no_answer())?;
        request.set_request_header("Content-Type", content_type).map_err(|_| no_answer())?;
        request.set_request_header("Accept", "application/json").map_err(|_| no_answer())?;
        for (name, value) in csrf_header(csrf_token) {
            request.set_request_header(name, value).map_err(|_| no_answer())?;
        }
        let on_progress = Closure::<dyn Fn(ProgressEvent)>::new(move |event: ProgressEvent| {
            if event.length_computable() {
                progress(event.loaded(), event.total());
            }
        });
        request.upload().map_err(|_| no_answer())?.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));

        // The request ends in `load` (any answer) or in `error`/`abort` (none): a promise resolved by either.
        let done = js_sys::Promise::new(&mut |resolve, _reject| {
            let finish = Closure::<dyn Fn()>::new(move || {
                let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            });
            request.set_onloadend(Some(finish.as_ref().unchecked_ref()));
            finish.forget();
        });
        match body {
            UploadBody::Blob(blob) => request.send_with_opt_blob(Some(blob)),
            UploadBody::Text(text) => request.send_with_opt_str(Some(text)),
        }
        .map_err(|_| no_answer())?;
        let _ = JsFuture::from(done).await;
        drop(on_progress);

        let status = request.status().map_err(|_| no_answer())?;
        if status == 0 {
            return Err(no_answer());
        }
        let text = request.response_text().ok().flatten().unwrap_or_default();
        if (200..300).contains(&status) { Ok(text) } else { Err(ApiError::from_answer(status, &text)) }
    }

    /// No answer arrived: the network, or the browser refused the request.
    fn no_answer() -> ApiError {
        ApiError { status: 0, message: "Could not reach the server. Check your connection and try again.".to_owned() }
    }

    /// An answer arrived but was not what this page expects.
    fn unreadable(status: u16) -> ApiError {
        ApiError { status, message: "The server sent an answer this page cannot read.".to_owned() }
    }

    fn csrf_header(csrf_token: Option<&str>) -> Vec<(&'static str, &str)> {
        csrf_token.map(|token| (CSRF_HEADER, token)).into_iter().collect()
    }

    fn decode<T: DeserializeOwned>((status, body): (u16, String)) -> Result<T, ApiError> {
        serde_json::from_str(&body).map_err(|_| unreadable(status))
    }

    /// Sends one request and answers the status and body of a 2xx answer; anything else becomes an
    /// [`ApiError`] carrying the server's message.
    async fn send(
        method: &str,
        path: &str,
        json_body: Option<String>,
        extra_headers: &[(&str, &str)],
    ) -> Result<(u16, String), ApiError> {
        let headers = Headers::new().map_err(|_| no_answer())?;
        let set = |name: &str, value: &str| headers.set(name, value).map_err(|_| no_answer());
        set("Accept", "application/json")?;
        if json_body.is_some() {
            set("Content-Type", "application/json")?;
        }
        for (name, value) in extra_headers {
            set(name, value)?;
        }

        let init = RequestInit::new();
        init.set_method(method);
        // The session cookie goes with every request to our own origin and nowhere else.
        init.set_credentials(RequestCredentials::SameOrigin);
        init.set_headers(&headers);
        if let Some(body) = &json_body {
            init.set_body(&body.into());
        }
        let request = Request::new_with_str_and_init(path, &init).map_err(|_| no_answer())?;

        let window = web_sys::window().ok_or_else(no_answer)?;
        let response = JsFuture::from(window.fetch_with_request(&request)).await.map_err(|_| no_answer())?;
        let response: Response = response.dyn_into().map_err(|_| no_answer())?;
        let status = response.status();
        let text = match response.text() {
            Ok(promise) => JsFuture::from(promise).await.ok().and_then(|text| text.as_string()).unwrap_or_default(),
            Err(_) => String::new(),
        };
        if response.ok() { Ok((status, text)) } else { Err(ApiError::from_answer(status, &text)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_message_is_shown() {
        let error = ApiError::from_answer(409, r#"{"error": "that username is taken"}"#);
        assert_eq!(error.message, "that username is taken");
        assert_eq!(error.to_string(), "that username is taken");
        assert!(!error.is_unauthorized());
    }

    #[test]
    fn answers_without_an_error_body_still_explain_themselves() {
        assert_eq!(
            error_message(502, "<html>Bad Gateway</html>"),
            "The server failed to answer (status 502); try again later."
        );
        assert_eq!(error_message(401, ""), "You are not signed in, or your session has expired.");
        assert_eq!(error_message(400, r#"{"error": "  "}"#), "The server refused the request (status 400).");
        assert!(ApiError::from_answer(401, "").is_unauthorized());
    }
}
