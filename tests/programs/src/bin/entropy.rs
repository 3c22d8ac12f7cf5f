//! `entropy`: prints every nondeterministic input a WASI program can observe, so that running the same
//! chunk twice can be checked to give byte-identical results.
//!
//! Output, one `name: value` per line:
//! - `random: HEX` — 16 bytes from WASI `random_get` (through the `getrandom` crate), as 32 hex digits;
//! - `system_time_ns: N` — `SystemTime::now()` in nanoseconds since the UNIX epoch (`clock_time_get`, realtime);
//! - `sleep_elapsed_ns: N` — `Instant` time measured around `thread::sleep(5 ms)` (monotonic clock and
//!   `poll_oneoff`);
//! - `hashmap_order: K,K,...` — the iteration order of a `HashMap` with keys 0..20, which depends on the
//!   `RandomState` keys that std draws from `random_get`.
//!
//! It also writes 64 random bytes to `/data/random.bin`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use distributivecom_test_programs::hex;

fn main() -> anyhow::Result<()> {
    let mut random = [0u8; 16];
    fill_random(&mut random)?;
    println!("random: {}", hex(&random));

    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
    println!("system_time_ns: {}", since_epoch.as_nanos());

    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    println!("sleep_elapsed_ns: {}", started.elapsed().as_nanos());

    let map: HashMap<u32, u32> = (0..20).map(|key| (key, key * key)).collect();
    let order: Vec<String> = map.keys().map(u32::to_string).collect();
    println!("hashmap_order: {}", order.join(","));

    let mut file_bytes = [0u8; 64];
    fill_random(&mut file_bytes)?;
    std::fs::write("/data/random.bin", file_bytes).context("cannot write /data/random.bin")?;
    Ok(())
}

/// `getrandom::Error` implements `std::error::Error` only with its `std` feature, which we do not need.
fn fill_random(bytes: &mut [u8]) -> anyhow::Result<()> {
    getrandom::fill(bytes).map_err(|error| anyhow!("random_get failed: {error}"))
}
