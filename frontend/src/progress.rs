//! A running job's pace, from the statuses the job page receives: chunks per second over the last
//! half-minute and the time left at that pace. Pure, so the host tests check the arithmetic.

/// How far back the pace looks.
const WINDOW_MS: f64 = 30_000.0;

/// Finished-chunk counts as they arrived, by the page's clock.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pace {
    samples: Vec<(f64, u32)>,
}

impl Pace {
    /// Records that `finished` chunks were finished at `now_ms`; older samples than the window are
    /// dropped, except the newest of them, which anchors the window's start.
    pub fn record(&mut self, now_ms: f64, finished: u32) {
        if self.samples.last().is_some_and(|(_, last)| *last == finished) {
            // No progress: the pace falls as time passes, but only a new count is a new sample.
            if self.samples.len() > 1 {
                self.samples.last_mut().expect("checked").0 = now_ms;
            } else {
                self.samples.push((now_ms, finished));
            }
            return;
        }
        self.samples.push((now_ms, finished));
        let cutoff = now_ms - WINDOW_MS;
        let old = self.samples.iter().take_while(|(at, _)| *at < cutoff).count();
        if old > 1 {
            self.samples.drain(..old - 1);
        }
    }

    /// Chunks per second over the window; `None` until two samples span some time.
    pub fn chunks_per_second(&self) -> Option<f64> {
        let (first, last) = (self.samples.first()?, self.samples.last()?);
        let elapsed_ms = last.0 - first.0;
        (elapsed_ms > 0.0).then(|| f64::from(last.1.saturating_sub(first.1)) * 1000.0 / elapsed_ms)
    }

    /// Milliseconds until `remaining` chunks finish at the current pace; `None` without a pace.
    pub fn eta_ms(&self, remaining: u32) -> Option<u64> {
        let pace = self.chunks_per_second().filter(|pace| *pace > 0.0)?;
        Some((f64::from(remaining) / pace * 1000.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_is_chunks_over_the_window_and_the_eta_follows_it() {
        let mut pace = Pace::default();
        assert_eq!(pace.chunks_per_second(), None);
        pace.record(0.0, 0);
        assert_eq!(pace.chunks_per_second(), None);
        pace.record(1000.0, 10);
        pace.record(2000.0, 20);
        assert_eq!(pace.chunks_per_second(), Some(10.0));
        assert_eq!(pace.eta_ms(50), Some(5000));
        // A stall lowers the pace as time passes.
        pace.record(4000.0, 20);
        assert_eq!(pace.chunks_per_second(), Some(5.0));
        assert_eq!(pace.eta_ms(0), Some(0));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut pace = Pace::default();
        pace.record(0.0, 0);
        pace.record(10_000.0, 1000);
        pace.record(50_000.0, 1010);
        pace.record(60_000.0, 1020);
        // The window starts at the sample at 10 s, the newest one older than 30 s.
        assert_eq!(pace.chunks_per_second(), Some(0.4));
        let mut stalled = Pace::default();
        stalled.record(0.0, 5);
        stalled.record(1000.0, 5);
        assert_eq!(stalled.chunks_per_second(), Some(0.0));
        assert_eq!(stalled.eta_ms(3), None);
    }
}
