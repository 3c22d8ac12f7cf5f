//! The bridge for pages written in plain JavaScript (the embed widget, `static/embed-frame.js`): page
//! commands made from plain values into the MessagePack bytes the courier reads, and courier events from
//! those bytes into plain objects, so that the widget speaks the donate page's messages
//! (`protocol::browser`) without a hand-written encoder. Plain values rather than JSON: a JSON library
//! would add a tenth to the wasm every volunteer downloads.
//!
//! From JavaScript: `encode_start(server, threads, throttle_percent, volunteer_id, volunteer_secret)`,
//! `encode_command("pause" | "resume" | "stop")`, and `decode_courier_event(bytes)`, which answers
//! `{type: "stats", connection: "stopped" | "connecting" | "connected" | "reconnecting", paused, threads,
//! chunks_done, chunks_failed, compute_ms, work_units, running, queued}` or `{type: "notice", text}`.

use distributivecom_protocol::browser::{ConnectionState, CourierEvent, PageCommand, Settings};
use distributivecom_protocol::worker::Credential;
use distributivecom_protocol::{decode, encode};

/// `PageCommand::Start` for an anonymous volunteer identity.
pub fn start_command(server: &str, threads: u32, throttle_percent: u32, id: &str, secret: &str) -> Vec<u8> {
    encode(&PageCommand::Start {
        server: server.to_owned(),
        settings: Settings { threads, throttle_percent },
        credential: Credential::Volunteer { id: id.to_owned(), secret: secret.to_owned() },
    })
}

/// `Pause`, `Resume` or `Stop`, by its name in lowercase.
pub fn named_command(name: &str) -> Option<Vec<u8>> {
    let command = match name {
        "pause" => PageCommand::Pause,
        "resume" => PageCommand::Resume,
        "stop" => PageCommand::Stop,
        _ => return None,
    };
    Some(encode(&command))
}

/// A field of an event as JavaScript gets it.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Text(String),
    Number(f64),
    Flag(bool),
}

/// The fields of the courier's event in `bytes`, or why they are not one.
pub fn courier_event_fields(bytes: &[u8]) -> Result<Vec<(&'static str, Field)>, String> {
    let event: CourierEvent = decode(bytes).map_err(|error| format!("not a courier event: {error}"))?;
    let text = |value: &str| Field::Text(value.to_owned());
    // Counts are far below 2^53, where a JavaScript number stops being exact.
    let number = |value: u64| Field::Number(value as f64);
    Ok(match event {
        CourierEvent::Notice(notice) => vec![("type", text("notice")), ("text", Field::Text(notice))],
        CourierEvent::Stats(stats) => {
            let connection = match stats.connection {
                ConnectionState::Stopped => "stopped",
                ConnectionState::Connecting => "connecting",
                ConnectionState::Connected => "connected",
                ConnectionState::Reconnecting { .. } => "reconnecting",
            };
            vec![
                ("type", text("stats")),
                ("connection", text(connection)),
                ("paused", Field::Flag(stats.paused)),
                ("threads", number(stats.threads.into())),
                ("chunks_done", number(stats.chunks_done)),
                ("chunks_failed", number(stats.chunks_failed)),
                ("compute_ms", number(stats.compute_ms)),
                ("work_units", number(stats.work_units)),
                ("running", number(stats.running.into())),
                ("queued", number(stats.queued.into())),
            ]
        }
    })
}

#[cfg(target_arch = "wasm32")]
mod exports {
    use js_sys::{Object, Reflect, Uint8Array};
    use wasm_bindgen::prelude::*;

    use super::Field;

    #[wasm_bindgen]
    pub fn encode_start(
        server: &str,
        threads: u32,
        throttle_percent: u32,
        volunteer_id: &str,
        volunteer_secret: &str,
    ) -> Uint8Array {
        Uint8Array::from(&super::start_command(server, threads, throttle_percent, volunteer_id, volunteer_secret)[..])
    }

    #[wasm_bindgen]
    pub fn encode_command(name: &str) -> Result<Uint8Array, JsError> {
        let bytes = super::named_command(name).ok_or_else(|| JsError::new(&format!("no page command {name:?}")))?;
        Ok(Uint8Array::from(&bytes[..]))
    }

    #[wasm_bindgen]
    pub fn decode_courier_event(bytes: &[u8]) -> Result<Object, JsError> {
        let fields = super::courier_event_fields(bytes).map_err(|message| JsError::new(&message))?;
        let object = Object::new();
        for (name, field) in fields {
            let value = match field {
                Field::Text(text) => JsValue::from_str(&text),
                Field::Number(number) => JsValue::from_f64(number),
                Field::Flag(flag) => JsValue::from_bool(flag),
            };
            Reflect::set(&object, &name.into(), &value).map_err(|_| JsError::new("could not build the event"))?;
        }
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use distributivecom_protocol::browser::Stats;

    use super::*;

    #[test]
    fn the_widgets_commands_are_the_donate_pages() {
        let expected = PageCommand::Start {
            server: "http://127.0.0.1:8080".to_owned(),
            settings: Settings { threads: 1, throttle_percent: 30 },
            credential: Credential::Volunteer { id: "v-1".to_owned(), secret: "s".to_owned() },
        };
        assert_eq!(start_command("http://127.0.0.1:8080", 1, 30, "v-1", "s"), encode(&expected));
        for (name, command) in
            [("pause", PageCommand::Pause), ("resume", PageCommand::Resume), ("stop", PageCommand::Stop)]
        {
            assert_eq!(named_command(name), Some(encode(&command)));
        }
        assert_eq!(named_command("start"), None);
    }

    #[test]
    fn courier_events_become_plain_fields() {
        let stats = CourierEvent::Stats(Stats {
            connection: ConnectionState::Reconnecting { retry_in_ms: 5 },
            chunks_done: 3,
            paused: true,
            ..Stats::default()
        });
        let fields = courier_event_fields(&encode(&stats)).unwrap();
        assert!(fields.contains(&("type", Field::Text("stats".to_owned()))));
        assert!(fields.contains(&("connection", Field::Text("reconnecting".to_owned()))));
        assert!(fields.contains(&("chunks_done", Field::Number(3.0))));
        assert!(fields.contains(&("paused", Field::Flag(true))));
        let notice = courier_event_fields(&encode(&CourierEvent::Notice("refused".to_owned()))).unwrap();
        assert_eq!(notice, [("type", Field::Text("notice".to_owned())), ("text", Field::Text("refused".to_owned()))]);
        assert!(courier_event_fields(b"\xff").is_err());
    }
}
