//! A circuit breaker in front of the report source. After repeated failed
//! fetches it stops calling for a cool-down, so evaluations get the fail mode
//! at once instead of each waiting out the deadline; then one probe is let
//! through, and its outcome closes or re-opens the circuit.
//!
//! Its state is per process on purpose: it protects this process's latency,
//! and guarantees nothing that replicas would need to agree on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{FetchError, FetchedReport, ReportSource};
use crate::domain::SessionId;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// As exported in metrics: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else gets the fail mode. A probe
    /// that never reports (its request was cancelled) is replaced after the
    /// cool-down, so the circuit cannot stay half-open for good.
    HalfOpen {
        since: Instant,
    },
}

/// Wraps a [`ReportSource`] with a circuit breaker.
pub struct CircuitBreaker<S> {
    inner: S,
    state: Mutex<State>,
    failure_threshold: u32,
    cool_down: Duration,
    metrics: Arc<Metrics>,
}

impl<S> CircuitBreaker<S> {
    pub fn new(
        inner: S,
        failure_threshold: u32,
        cool_down: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.circuit_state.set(CircuitState::Closed.as_gauge());
        Self {
            inner,
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
            failure_threshold: failure_threshold.max(1),
            cool_down,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding this lock leaves a valid state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go upstream now.
    fn admit(&self) -> bool {
        let mut state = self.lock();
        let admitted = match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen {
                    since: Instant::now(),
                };
                true
            }
            State::HalfOpen { since } if since.elapsed() >= self.cool_down => {
                *state = State::HalfOpen {
                    since: Instant::now(),
                };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        };
        self.publish(&state);
        admitted
    }

    fn record(&self, healthy: bool) {
        let mut state = self.lock();
        *state = match (&*state, healthy) {
            (_, true) => State::Closed {
                consecutive_failures: 0,
            },
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) if consecutive_failures + 1 < self.failure_threshold => State::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            (_, false) => {
                tracing::warn!(cool_down = ?self.cool_down, "roundtable circuit opened");
                State::Open {
                    until: Instant::now() + self.cool_down,
                }
            }
        };
        self.publish(&state);
    }

    fn publish(&self, state: &State) {
        let gauge = match state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        };
        self.metrics.circuit_state.set(gauge.as_gauge());
    }
}

/// Failures that say upstream is unwell. A 404 or a refused key is an
/// answer, not an outage.
fn is_outage(error: &FetchError) -> bool {
    !matches!(
        error,
        FetchError::NotFound | FetchError::Unauthorized(_) | FetchError::CircuitOpen
    ) && !matches!(error, FetchError::Status(s) if *s < 500)
}

#[async_trait]
impl<S: ReportSource> ReportSource for CircuitBreaker<S> {
    async fn fetch(
        &self,
        session_id: &SessionId,
        deadline: Instant,
    ) -> Result<FetchedReport, FetchError> {
        if !self.admit() {
            return Err(FetchError::CircuitOpen);
        }
        let result = self.inner.fetch(session_id, deadline).await;
        self.record(!matches!(&result, Err(error) if is_outage(error)));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails while `failing` is set, counting calls.
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl ReportSource for Arc<Flaky> {
        async fn fetch(&self, _: &SessionId, _: Instant) -> Result<FetchedReport, FetchError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                Err(FetchError::Timeout)
            } else {
                Err(FetchError::NotFound)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_then_probes_and_closes() {
        let flaky = Arc::new(Flaky {
            failing: true.into(),
            calls: AtomicU32::new(0),
        });
        let breaker = CircuitBreaker::new(
            flaky.clone(),
            3,
            Duration::from_secs(10),
            Arc::new(Metrics::new()),
        );
        let id = SessionId::parse("s").expect("id");
        for _ in 0..3 {
            assert!(matches!(
                breaker.fetch(&id, Instant::now()).await,
                Err(FetchError::Timeout)
            ));
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        // Open: answers at once without calling upstream.
        assert!(matches!(
            breaker.fetch(&id, Instant::now()).await,
            Err(FetchError::CircuitOpen)
        ));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);

        // After the cool-down one probe goes through; it fails, so the circuit re-opens.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(
            breaker.fetch(&id, Instant::now()).await,
            Err(FetchError::Timeout)
        ));
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);

        // A probe that never reports (cancelled) does not wedge the circuit.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(breaker.admit(), "a probe is let through");
        assert!(!breaker.admit(), "only one at a time");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            breaker.admit(),
            "the lost probe is replaced after the cool-down"
        );
        breaker.record(false);

        // Upstream heals: the next probe closes it (a 404 is a healthy answer).
        flaky.failing.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(
            breaker.fetch(&id, Instant::now()).await,
            Err(FetchError::NotFound)
        ));
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn only_outages_count() {
        assert!(is_outage(&FetchError::Timeout));
        assert!(is_outage(&FetchError::Status(503)));
        assert!(is_outage(&FetchError::RateLimited));
        assert!(!is_outage(&FetchError::Status(400)));
        assert!(!is_outage(&FetchError::NotFound));
        assert!(!is_outage(&FetchError::Unauthorized(401)));
    }
}
