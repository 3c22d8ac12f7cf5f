//! The wall clock, read only at the edges (the scheduler's own clock is the monotonic one the coordinator
//! feeds it), and [`Clock`], a wall clock that tests can hold still and move by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

/// The wall clock of a part of the server whose rules are about elapsed time (a rewarded ad's minimum
/// view time, a view token's expiry, the UTC day of a daily cap): the system's, or, in tests, one that
/// stands still until it is moved, so that those rules are tested without sleeping.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that reads `start_ms` until [`Clock::advance`] moves it; its clones move with it.
    pub fn manual(start_ms: u64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicU64::new(start_ms))) }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => unix_ms(),
        }
    }

    /// Moves a manual clock forward; the system clock moves by itself, so this does nothing to it.
    pub fn advance(&self, ms: u64) {
        if let Some(now) = &self.manual {
            now.fetch_add(ms, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved_and_its_clones_move_with_it() {
        let clock = Clock::manual(1_000);
        let clone = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        clone.advance(250);
        assert_eq!(clock.now_ms(), 1_250);
        assert!(Clock::system().now_ms() > 1_700_000_000_000, "the system clock reads the time");
    }
}
