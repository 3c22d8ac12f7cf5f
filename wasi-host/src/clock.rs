//! The virtual clock: time that depends only on the chunk's input and on the calls the program made.
//!
//! Real time would make two replicas of the same chunk disagree, so the program instead sees a clock
//! that starts at the job's submission time and moves forward by [`CLOCK_STEP_NS`] every time it is
//! read, and jumps forward when the program sleeps (see `poll_oneoff`).

use crate::abi::clockid;

/// How far the virtual clock moves forward after every `clock_time_get`, and the resolution that
/// `clock_res_get` reports for every clock. One microsecond keeps timing loops finite while making
/// measured durations look plausible.
pub const CLOCK_STEP_NS: u64 = 1_000;

/// The virtual clocks of one chunk run.
#[derive(Clone, Debug)]
pub(crate) struct VirtualClock {
    /// The realtime clock value at the start of the run, in nanoseconds since the Unix epoch.
    realtime_start_ns: u64,
    /// Nanoseconds of virtual time that have passed since the start of the run.
    elapsed_ns: u64,
}

impl VirtualClock {
    pub(crate) fn new(realtime_start_ns: u64) -> VirtualClock {
        VirtualClock { realtime_start_ns, elapsed_ns: 0 }
    }

    pub(crate) fn elapsed_ns(&self) -> u64 {
        self.elapsed_ns
    }

    /// The realtime clock now; file timestamps use this value without advancing the clock.
    pub(crate) fn realtime_ns(&self) -> u64 {
        self.realtime_start_ns.saturating_add(self.elapsed_ns)
    }

    /// The value of clock `id` now, or `None` for an unknown clock id.
    pub(crate) fn read(&self, id: u32) -> Option<u64> {
        match id {
            clockid::REALTIME => Some(self.realtime_ns()),
            clockid::MONOTONIC | clockid::PROCESS_CPUTIME_ID | clockid::THREAD_CPUTIME_ID => Some(self.elapsed_ns),
            _ => None,
        }
    }

    /// Converts an absolute time on clock `id` into the elapsed-time domain (a deadline in the past
    /// becomes 0), or `None` for an unknown clock id.
    pub(crate) fn absolute_to_elapsed(&self, id: u32, absolute_ns: u64) -> Option<u64> {
        match id {
            clockid::REALTIME => Some(absolute_ns.saturating_sub(self.realtime_start_ns)),
            clockid::MONOTONIC | clockid::PROCESS_CPUTIME_ID | clockid::THREAD_CPUTIME_ID => Some(absolute_ns),
            _ => None,
        }
    }

    /// Moves time forward by one step after a clock read.
    pub(crate) fn step(&mut self) {
        self.elapsed_ns = self.elapsed_ns.saturating_add(CLOCK_STEP_NS);
    }

    /// Moves time forward to `elapsed_ns` if that lies in the future; time never goes backwards.
    pub(crate) fn advance_to(&mut self, elapsed_ns: u64) {
        self.elapsed_ns = self.elapsed_ns.max(elapsed_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_share_one_elapsed_time() {
        let mut clock = VirtualClock::new(1_700_000_000_000_000_000);
        assert_eq!(clock.read(clockid::REALTIME), Some(1_700_000_000_000_000_000));
        assert_eq!(clock.read(clockid::MONOTONIC), Some(0));
        clock.step();
        assert_eq!(clock.read(clockid::THREAD_CPUTIME_ID), Some(CLOCK_STEP_NS));
        assert_eq!(clock.read(clockid::REALTIME), Some(1_700_000_000_000_000_000 + CLOCK_STEP_NS));
        assert_eq!(clock.read(4), None);
        clock.advance_to(10);
        assert_eq!(clock.elapsed_ns(), CLOCK_STEP_NS, "time never goes backwards");
    }

    #[test]
    fn realtime_saturates_instead_of_wrapping() {
        let mut clock = VirtualClock::new(u64::MAX - 10);
        clock.advance_to(u64::MAX);
        assert_eq!(clock.read(clockid::REALTIME), Some(u64::MAX));
        assert_eq!(clock.absolute_to_elapsed(clockid::REALTIME, 5), Some(0));
    }
}
