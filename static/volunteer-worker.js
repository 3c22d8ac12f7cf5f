// Entry point of the browser volunteer's Web Workers (module workers). The page starts one worker named
// "courier" per tab (the WebSocket, leases, heartbeats, supervision); the courier starts one
// "executor" per thread (runs chunks). Both run the web-worker crate's wasm.
//
// Messages that arrive while the wasm loads would be lost (nothing listens yet), so they are queued here
// first and handed to the wasm once it is ready. The import is dynamic so that this handler is installed
// before anything is fetched.
const early = [];
self.onmessage = (event) => early.push(event);
const wasm = await import('./distributivecom_web_worker.js');
await wasm.default();
if (self.name === 'courier') {
  wasm.start_courier(early);
} else {
  wasm.start_executor(early);
}
