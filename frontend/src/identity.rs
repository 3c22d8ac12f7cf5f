//! The browser's anonymous volunteer identity: issued by `POST /api/volunteers` the first time the
//! visitor presses Start, kept in `localStorage` so the credits this browser earns stay attributable
//! across reloads, and handed to the account at sign-up or log-in.

use distributivecom_protocol::api::VolunteerCredential;
use distributivecom_protocol::worker::Credential;

/// The `localStorage` key; the value is the `VolunteerCredential` as JSON.
pub const STORAGE_KEY: &str = "distributivecom.volunteer";

/// The saved identity, or `None` where nothing (or something unusable) was saved. A damaged entry is
/// treated as absent so that Start registers a fresh identity instead of failing forever.
pub fn from_saved(saved: Option<&str>) -> Option<VolunteerCredential> {
    let credential = serde_json::from_str::<VolunteerCredential>(saved?).ok()?;
    (!credential.id.is_empty() && !credential.secret.is_empty()).then_some(credential)
}

pub fn to_saved(credential: &VolunteerCredential) -> String {
    serde_json::to_string(credential).unwrap_or_default()
}

/// The `Authorization` header value for `GET /api/volunteers/me`.
pub fn authorization(credential: &VolunteerCredential) -> String {
    format!("Volunteer {}:{}", credential.id, credential.secret)
}

/// How the volunteer's Web Worker introduces itself to the coordinator.
pub fn worker_credential(credential: &VolunteerCredential) -> Credential {
    Credential::Volunteer { id: credential.id.clone(), secret: credential.secret.clone() }
}

/// The identity saved in this browser, if any.
#[cfg(target_arch = "wasm32")]
pub fn load() -> Option<VolunteerCredential> {
    let storage = web_sys::window()?.local_storage().ok()??;
    from_saved(storage.get_item(STORAGE_KEY).ok()?.as_deref())
}

/// Saves the identity; false where the browser refuses storage (private modes, quotas).
#[cfg(target_arch = "wasm32")]
pub fn save(credential: &VolunteerCredential) -> bool {
    let storage = web_sys::window().and_then(|window| window.local_storage().ok().flatten());
    storage.is_some_and(|storage| storage.set_item(STORAGE_KEY, &to_saved(credential)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> VolunteerCredential {
        VolunteerCredential { id: "v-123".to_owned(), secret: "s3cret".to_owned() }
    }

    #[test]
    fn saved_identities_round_trip() {
        assert_eq!(to_saved(&alice()), r#"{"id":"v-123","secret":"s3cret"}"#);
        assert_eq!(from_saved(Some(&to_saved(&alice()))), Some(alice()));
    }

    #[test]
    fn damaged_or_missing_identities_count_as_none() {
        assert_eq!(from_saved(None), None);
        assert_eq!(from_saved(Some("{not json")), None);
        assert_eq!(from_saved(Some(r#"{"id": "v-1"}"#)), None);
        assert_eq!(from_saved(Some(r#"{"id": "", "secret": "x"}"#)), None);
        assert_eq!(from_saved(Some("null")), None);
    }

    #[test]
    fn the_identity_becomes_a_header_and_a_worker_credential() {
        assert_eq!(authorization(&alice()), "Volunteer v-123:s3cret");
        assert_eq!(
            worker_credential(&alice()),
            Credential::Volunteer { id: "v-123".to_owned(), secret: "s3cret".to_owned() }
        );
    }
}
