//! A circuit breaker per remote backend: closed → (N consecutive failures) → open (reject at
//! once) → (cool-down elapsed) → half-open (one probe) → closed on success, open on failure.
//!
//! Owns: the state machine, with time passed in so tests control the clock.
//! Must not: perform requests.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: BreakerState,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// For the `aisle:remote_circuit_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn code(&self) -> i64 {
        match self.state {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        }
    }

    /// May a request go out now? While open, no; after the cool-down, exactly one probe.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
        }
    }

    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            _ => BreakerState::Open {
                until: now + self.cooldown,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_rejects_then_probes_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.on_failure(t0);
        }
        assert_eq!(b.code(), 0, "two failures keep it closed");
        assert!(b.allow(t0));
        b.on_failure(t0);
        assert_eq!(b.code(), 1, "third consecutive failure opens it");
        assert!(!b.allow(t0 + Duration::from_secs(5)), "rejects fast while open");
        assert!(b.allow(t0 + Duration::from_secs(10)), "one probe after the cool-down");
        assert!(!b.allow(t0 + Duration::from_secs(10)), "only one probe at a time");
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn failed_probe_reopens_and_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.code(), 0, "failures must be consecutive");
        b.on_failure(t0);
        assert!(b.allow(t0 + Duration::from_secs(1)));
        b.on_failure(t0 + Duration::from_secs(1));
        assert_eq!(b.code(), 1);
        assert!(!b.allow(t0 + Duration::from_millis(1500)));
    }
}
