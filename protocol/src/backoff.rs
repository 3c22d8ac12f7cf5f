//! How every worker waits before reconnecting: from 250 ms, doubling up to 10 s, with up to a quarter more
//! as jitter so that many workers do not come back in lockstep after a restart. Native and browser
//! workers use this one policy; the caller supplies the jitter, so the policy itself reads no clock and no
//! randomness.

/// The reconnect delays of one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next_ms: u64,
}

impl Backoff {
    pub const FIRST_MS: u64 = 250;
    pub const MAX_MS: u64 = 10_000;

    pub fn new() -> Backoff {
        Backoff { next_ms: Self::FIRST_MS }
    }

    /// After a healthy connection: the next delay is the first again.
    pub fn reset(&mut self) {
        self.next_ms = Self::FIRST_MS;
    }

    /// The delay the next failure waits, before jitter.
    pub fn next_ms(&self) -> u64 {
        self.next_ms
    }

    /// The delay to wait now, in milliseconds, and doubles the next one. `jitter` (any number; its value
    /// modulo 1000 is used) adds up to a quarter of the delay.
    pub fn next_delay_ms(&mut self, jitter: u64) -> u64 {
        let delay = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(Self::MAX_MS);
        delay + delay * (jitter % 1000) / 4000
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_at_most_a_quarter_of_jitter() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay_ms(0)).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        backoff.reset();
        assert_eq!(backoff.next_ms(), 250);
        assert_eq!(backoff.next_delay_ms(999), 250 + 62);
        assert_eq!(backoff.next_delay_ms(u64::MAX), 500 + 500 * (u64::MAX % 1000) / 4000);
    }
}
