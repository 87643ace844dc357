//! The time the job queue keeps: when jobs were queued and finished, and when results expire.
//!
//! Where it sits: inside [`crate::queue`], injected through
//! [`Settings::clock`](crate::Settings::clock). The service runs on the system's monotonic
//! clock; a test holds a [`Clock::manual`] one and moves it with [`Clock::advance`], so a
//! time-to-live is checked at the exact instant it passes instead of by sleeping past it.
//! Run times (a job's own timeout, the `Server-Timing` stages) stay on the system clock:
//! they measure work, not the queue's bookkeeping.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A monotonic clock: the system's, or one that moves only when told.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<Mutex<Instant>>>,
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that starts now and stands still until [`advance`](Clock::advance)d. Clones
    /// share it.
    pub fn manual() -> Clock {
        Clock {
            manual: Some(Arc::new(Mutex::new(Instant::now()))),
        }
    }

    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(t) => *t.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Moves a manual clock forward by `by`. Answers whether it moved: the system clock
    /// cannot be moved.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.manual {
            None => false,
            Some(t) => {
                let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
                *t += by;
                true
            }
        }
    }

    /// Time from `earlier` to now on this clock (zero if `earlier` is later).
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.manual {
            None => "Clock::system",
            Some(_) => "Clock::manual",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual();
        let other = clock.clone();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        assert!(other.advance(Duration::from_secs(5)));
        assert_eq!(clock.since(t0), Duration::from_secs(5));
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}
