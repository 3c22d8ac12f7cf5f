//! The courier Web Worker's edge: it performs the outputs of [`Volunteer`] with `web-sys` (the
//! WebSocket, executor workers, timers, messages to the page) and feeds it what happens.
//!
//! The courier runs in a worker of its own rather than in the page, so its heartbeats and
//! supervision timers keep their pace when the tab is in the background and the page's timers are
//! throttled, and a busy page never delays them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use distributivecom_protocol::worker::{ReplicaReport, ServerMessage, WorkerMessage};
use distributivecom_protocol::{decode, encode};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, DedicatedWorkerGlobalScope, MessageEvent, WebSocket, Worker, WorkerOptions, WorkerType};

use crate::messages::{CourierEvent, PageCommand};
use crate::volunteer::{ExecutorId, Input, Output, Volunteer};

type Handler = Closure<dyn FnMut(MessageEvent)>;
type EventHandler = Closure<dyn FnMut(web_sys::Event)>;

/// An open WebSocket and the closures that handle its events.
struct Socket {
    socket: WebSocket,
    _handlers: (EventHandler, Handler, EventHandler),
}

struct Edge {
    scope: DedicatedWorkerGlobalScope,
    volunteer: RefCell<Volunteer>,
    socket: RefCell<Option<Socket>>,
    executors: RefCell<HashMap<ExecutorId, (Worker, Handler)>>,
    /// Closures that may be running right now (a socket's or executor's own handler) are dropped on the
    /// next event instead of inside themselves.
    graveyard: RefCell<Vec<Box<dyn std::any::Any>>>,
    /// Results waiting to go out together: executors finish short chunks in quick succession, and one
    /// frame for several results saves a trip through the browser's network process for each.
    pending_results: RefCell<Vec<ReplicaReport>>,
    /// The URL of `volunteer-worker.js`, which executors run too.
    script_url: String,
}

/// Starts the courier: handles `early` messages from the page, then every message that follows.
#[wasm_bindgen]
pub fn start_courier(early: Array) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let agent = format!(
        "distributivecom-browser/{} ({})",
        env!("CARGO_PKG_VERSION"),
        scope.navigator().user_agent().unwrap_or_default()
    );
    let edge = Rc::new(Edge {
        script_url: scope.location().href(),
        scope: scope.clone(),
        volunteer: RefCell::new(Volunteer::new(agent)),
        socket: RefCell::new(None),
        executors: RefCell::new(HashMap::new()),
        graveyard: RefCell::new(Vec::new()),
        pending_results: RefCell::new(Vec::new()),
    });
    let handler = {
        let edge = edge.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| edge.page_message(&event))
    };
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
    for event in early.iter() {
        edge.page_message(event.unchecked_ref());
    }
}

impl Edge {
    fn now_ms(&self) -> u64 {
        self.scope.performance().map(|performance| performance.now() as u64).unwrap_or(0)
    }

    fn page_message(self: &Rc<Self>, event: &MessageEvent) {
        match decode::<PageCommand>(&Uint8Array::new(&event.data()).to_vec()) {
            Ok(command) => self.input(Input::Command(command)),
            Err(error) => web_sys::console::error_1(&format!("courier: {error}").into()),
        }
    }

    /// Feeds the volunteer and performs what it asks for. Callbacks never run synchronously inside
    /// `perform`, so the volunteer is never borrowed twice.
    fn input(self: &Rc<Self>, input: Input) {
        let outputs = self.volunteer.borrow_mut().handle(self.now_ms(), input);
        for output in outputs {
            self.perform(output);
        }
    }

    /// Keeps something alive until the next turn of the event loop: for closures that may be running now.
    fn bury(self: &Rc<Self>, item: Box<dyn std::any::Any>) {
        let mut graveyard = self.graveyard.borrow_mut();
        if graveyard.is_empty() {
            let edge = self.clone();
            let callback = Closure::once_into_js(move || edge.graveyard.borrow_mut().clear());
            let _ = self.scope.set_timeout_with_callback_and_timeout_and_arguments_0(callback.unchecked_ref(), 0);
        }
        graveyard.push(item);
    }

    /// Closes a socket without reporting the close to the volunteer (which asked for it or moved on).
    fn retire_socket(self: &Rc<Self>, socket: Socket) {
        socket.socket.set_onopen(None);
        socket.socket.set_onmessage(None);
        socket.socket.set_onclose(None);
        let _ = socket.socket.close();
        self.bury(Box::new(socket));
    }

    /// Feeds an input on the next turn of the event loop (used where it would otherwise be reentrant).
    fn input_later(self: &Rc<Self>, input: Input) {
        self.set_timeout(0, input);
    }

    fn set_timeout(self: &Rc<Self>, after_ms: u64, input: Input) {
        let edge = self.clone();
        let callback = Closure::once_into_js(move || edge.input(input));
        let delay = i32::try_from(after_ms).unwrap_or(i32::MAX);
        if let Err(error) =
            self.scope.set_timeout_with_callback_and_timeout_and_arguments_0(callback.unchecked_ref(), delay)
        {
            web_sys::console::error_2(&"courier: could not set a timer".into(), &error);
        }
    }

    fn post_to_page(&self, event: &CourierEvent) {
        let _ = self.scope.post_message(&Uint8Array::from(&encode(event)[..]));
    }

    fn perform(self: &Rc<Self>, output: Output) {
        match output {
            Output::Connect { url } => self.connect(&url),
            Output::Send(WorkerMessage::Results(reports)) => {
                let mut pending = self.pending_results.borrow_mut();
                if pending.is_empty() {
                    // Flush on the next turn of the event loop, after the events already queued.
                    let edge = self.clone();
                    let flush = Closure::once_into_js(move || edge.flush_results());
                    let _ = self.scope.set_timeout_with_callback_and_timeout_and_arguments_0(flush.unchecked_ref(), 0);
                }
                pending.extend(reports);
            }
            Output::Send(message) => {
                // Keep the order: results queued earlier go first.
                self.flush_results();
                self.send(&message);
            }
            Output::CloseSocket => {
                let socket = self.socket.borrow_mut().take();
                if let Some(socket) = socket {
                    self.retire_socket(socket);
                }
            }
            Output::SpawnExecutor(executor) => self.spawn_executor(executor),
            Output::TerminateExecutor(executor) => {
                let removed = self.executors.borrow_mut().remove(&executor);
                if let Some((worker, handler)) = removed {
                    worker.terminate();
                    self.bury(Box::new(handler));
                }
            }
            Output::Run { executor, command } => {
                if let Some((worker, _)) = self.executors.borrow().get(&executor) {
                    let _ = worker.post_message(&Uint8Array::from(&encode(&command)[..]));
                }
            }
            Output::SetTimer { timer, after_ms } => self.set_timeout(after_ms, Input::TimerFired(timer)),
            Output::Stats(stats) => self.post_to_page(&CourierEvent::Stats(stats)),
            Output::Notice(notice) => self.post_to_page(&CourierEvent::Notice(notice)),
        }
    }

    fn send(&self, message: &WorkerMessage) {
        if let Some(socket) = self.socket.borrow().as_ref() {
            // A send on a closing socket fails; its close event follows and handles it.
            let _ = socket.socket.send_with_u8_array(&encode(message));
        }
    }

    fn flush_results(&self) {
        let reports = std::mem::take(&mut *self.pending_results.borrow_mut());
        if !reports.is_empty() {
            self.send(&WorkerMessage::Results(reports));
        }
    }

    fn connect(self: &Rc<Self>, url: &str) {
        let old = self.socket.borrow_mut().take();
        if let Some(old) = old {
            self.retire_socket(old);
        }

        let socket = match WebSocket::new(url) {
            Ok(socket) => socket,
            Err(error) => {
                web_sys::console::error_2(&format!("courier: cannot open {url}").into(), &error);
                self.input_later(Input::SocketClosed);
                return;
            }
        };
        socket.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let edge = self.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| edge.input(Input::SocketOpened))
        };
        let on_message = {
            let edge = self.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                match decode::<ServerMessage>(&Uint8Array::new(&event.data()).to_vec()) {
                    Ok(message) => edge.input(Input::SocketMessage(message)),
                    Err(error) => {
                        web_sys::console::error_1(&format!("courier: the server sent {error}").into());
                        if let Some(socket) = edge.socket.borrow().as_ref() {
                            let _ = socket.socket.close();
                        }
                    }
                }
            })
        };
        let on_close = {
            let edge = self.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                let closed = edge.socket.borrow_mut().take();
                if let Some(closed) = closed {
                    edge.bury(Box::new(closed));
                }
                edge.input(Input::SocketClosed);
            })
        };
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *self.socket.borrow_mut() = Some(Socket { socket, _handlers: (on_open, on_message, on_close) });
    }

    fn spawn_executor(self: &Rc<Self>, executor: ExecutorId) {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        options.set_name("executor");
        let worker = match Worker::new_with_options(&self.script_url, &options) {
            Ok(worker) => worker,
            Err(error) => {
                web_sys::console::error_2(&"courier: cannot start an executor".into(), &error);
                return;
            }
        };
        let handler = {
            let edge = self.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                match decode(&Uint8Array::new(&event.data()).to_vec()) {
                    Ok(event) => edge.input(Input::Executor(executor, event)),
                    Err(error) => web_sys::console::error_1(&format!("courier: an executor sent {error}").into()),
                }
            })
        };
        worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        self.executors.borrow_mut().insert(executor, (worker, handler));
    }
}
