//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::evaluation::Evaluation;
use crate::policy::Policy;

/// Media type of the `/metrics` body.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    event: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: String,
}

/// Every metric riskgate exports, registered once at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    evaluations: Family<EvaluationLabels, Counter>,
    degraded: Family<ReasonLabels, Counter>,
    evaluation_seconds: Histogram,
    upstream_seconds: Histogram,
    upstream_responses: Family<OutcomeLabels, Counter>,
    /// 0 closed, 1 half-open, 2 open.
    pub circuit_state: Gauge,
    pub idempotent_replays: Counter,
    database_connections: Family<PoolLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("riskgate");
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        registry.register(
            "evaluations",
            "Evaluations answered, by event (events without their own policy table count as \"other\") and decision",
            evaluations.clone(),
        );
        let degraded = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "evaluations_degraded",
            "Evaluations decided without a report, by reason",
            degraded.clone(),
        );
        // 1 ms to ~16 s.
        let evaluation_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "evaluation_duration_seconds",
            "Time to evaluate, upstream and storage included",
            evaluation_seconds.clone(),
        );
        let upstream_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "upstream_request_duration_seconds",
            "Time per Roundtable call (each attempt)",
            upstream_seconds.clone(),
        );
        let upstream_responses = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Roundtable calls by outcome: the HTTP status, or timeout / connect_error",
            upstream_responses.clone(),
        );
        let circuit_state = Gauge::default();
        registry.register(
            "upstream_circuit_state",
            "Roundtable circuit breaker: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let idempotent_replays = Counter::default();
        registry.register(
            "idempotent_replays",
            "Evaluations answered from a stored verdict for a repeated Idempotency-Key",
            idempotent_replays.clone(),
        );
        let database_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "database_connections",
            "Database pool connections by state (in_use, idle, max)",
            database_connections.clone(),
        );
        Self {
            registry,
            evaluations,
            degraded,
            evaluation_seconds,
            upstream_seconds,
            upstream_responses,
            circuit_state,
            idempotent_replays,
            database_connections,
        }
    }

    pub fn record_evaluation(&self, policy: &Policy, evaluation: &Evaluation, took: Duration) {
        let event = if policy.knows_event(&evaluation.event) {
            evaluation.event.clone()
        } else {
            "other".to_owned()
        };
        self.evaluations
            .get_or_create(&EvaluationLabels {
                event,
                decision: evaluation.decision.as_str().to_owned(),
            })
            .inc();
        if let Some(reason) = &evaluation.degraded_reason {
            self.degraded
                .get_or_create(&ReasonLabels {
                    reason: reason.clone(),
                })
                .inc();
        }
        self.evaluation_seconds.observe(took.as_secs_f64());
    }

    /// One upstream call: `outcome` is the status code or a failure kind.
    pub fn record_upstream(&self, outcome: &str, took: Duration) {
        self.upstream_responses
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.upstream_seconds.observe(took.as_secs_f64());
    }

    pub fn set_pool(&self, in_use: u32, idle: u32, max: u32) {
        for (state, value) in [("in_use", in_use), ("idle", idle), ("max", max)] {
            self.database_connections
                .get_or_create(&PoolLabels {
                    state: state.to_owned(),
                })
                .set(i64::from(value));
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
