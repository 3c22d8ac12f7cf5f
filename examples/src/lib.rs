//! Pure logic behind the example programs, kept apart from their thin `main`s so it is tested on the host.
//!
//! Each module serves one binary in `src/bin/`:
//! - [`primes`]: counting primes in a `u64` range (the `primes` binary, also our CPU benchmark).
//! - [`words`]: splitting text into words and tabulating them (the `wordfreq` binary).
//! - [`ppm`]: reading, filtering, writing and synthesising binary PPM images (the `imgfilter` binary).
//! - [`train`]: softmax regression on handwritten digits, one shard's gradient per round (the `gradient`
//!   binary, and the loop of `distributivecom train`).
//!
//! Nothing here does I/O, so the binaries decide how errors reach stderr and which exit status they use.

pub mod ppm;
pub mod primes;
pub mod train;
pub mod words;
