//! The page's handle on the courier Web Worker, which does the volunteering.

use distributivecom_protocol::browser::{CourierEvent, PageCommand};
use distributivecom_protocol::{decode, encode};
use js_sys::Uint8Array;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

/// The script both worker kinds run; see `static/volunteer-worker.js`.
const WORKER_SCRIPT: &str = "/assets/volunteer-worker.js";

pub struct VolunteerHandle {
    worker: Worker,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl VolunteerHandle {
    /// Starts the courier worker; `on_event` receives its statistics and notices.
    pub fn spawn(on_event: impl Fn(CourierEvent) + 'static) -> Result<VolunteerHandle, JsValue> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        options.set_name("courier");
        let worker = Worker::new_with_options(WORKER_SCRIPT, &options)?;
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            match decode::<CourierEvent>(&Uint8Array::new(&event.data()).to_vec()) {
                Ok(event) => on_event(event),
                Err(error) => web_sys::console::error_1(&format!("page: the volunteer sent {error}").into()),
            }
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Ok(VolunteerHandle { worker, _on_message: on_message })
    }

    pub fn send(&self, command: &PageCommand) {
        if let Err(error) = self.worker.post_message(&Uint8Array::from(&encode(command)[..])) {
            web_sys::console::error_2(&"page: could not reach the volunteer".into(), &error);
        }
    }
}

impl Drop for VolunteerHandle {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}
