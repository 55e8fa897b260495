//! A per-provider circuit breaker.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures open it. Open: calls are
//! refused until `cooldown` has passed. Half-open: exactly one probe call passes; its success
//! closes the circuit, its failure opens it again for another cooldown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

/// Leave to make one call. Report its outcome with [`Permit::success`] or [`Permit::failure`];
/// a permit dropped without a report (the call was cancelled) frees a half-open probe slot.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State::Closed { failures: 0 }), threshold: threshold.max(1), cooldown })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A permit to call, or `None` while the circuit refuses calls.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut state = self.lock();
        let probe = match &*state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() < *until => return None,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return None,
        };
        Some(Permit { breaker: Arc::clone(self), probe, reported: false })
    }

    pub fn state(&self) -> CircuitState {
        match &*self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < *until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        match &*self.lock() {
            State::Closed { failures } => *failures,
            _ => self.threshold,
        }
    }

    fn record(&self, ok: bool) {
        let mut state = self.lock();
        *state = match (&*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            (_, false) => State::Open { until: Instant::now() + self.cooldown },
        };
    }
}

impl Permit {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(true);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(false);
    }

    /// The call ended in a way that says nothing about the provider (a 400, a cancel).
    pub fn neutral(mut self) {
        self.reported = true;
        if self.probe {
            // The probe proved the upstream answers; that is enough to close.
            self.breaker.record(true);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if let State::HalfOpen { probing: true } = *state {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // plain unit tests, no runtime to block
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens_with_one_probe() {
        // The checks of the open state must land inside the cool-down even when a loaded
        // machine holds this thread off the CPU for a while.
        let cooldown = Duration::from_millis(500);
        let b = CircuitBreaker::new(2, cooldown);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_none());
        std::thread::sleep(cooldown + Duration::from_millis(10));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        probe.failure();
        assert_eq!(b.state(), CircuitState::Open);
        std::thread::sleep(cooldown + Duration::from_millis(10));
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn success_resets_the_count_and_dropped_probe_frees_the_slot() {
        let b = CircuitBreaker::new(2, Duration::from_millis(10));
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().success();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.try_acquire().unwrap().failure();
        std::thread::sleep(Duration::from_millis(20));
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_some(), "a cancelled probe must not wedge the circuit");
    }
}
