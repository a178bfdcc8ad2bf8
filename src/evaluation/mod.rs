//! An evaluation: the request, the verdict, and how it was reached, as stored
//! and as returned by the API.

mod service;

pub use service::{EvaluateCall, EvaluateError, Evaluator, EvaluatorLimits, Outcome};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::Decision;
use crate::engine::Reason;

/// One stored decision.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub session_id: String,
    pub event: String,
    pub user_id: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub decision: Decision,
    pub score: f64,
    pub reasons: Vec<Reason>,
    pub policy_version: String,
    pub degraded: bool,
    pub degraded_reason: Option<String>,
    pub session_replay_url: Option<String>,
    pub timings: Timings,
    /// `v0.0` or `v1`; `None` when no report was read.
    pub report_shape: Option<String>,
    /// The upstream body as served, for audit and replay. Not part of the
    /// default API representation (it can be large).
    #[serde(skip)]
    pub report_snapshot: Option<String>,
    /// The `X-Request-Id` of the call that made it.
    pub request_id: Option<String>,
}

/// How long the evaluation took, and what the upstream cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Timings {
    pub upstream_attempts: u32,
    pub upstream_ms: u32,
    pub total_ms: u32,
}

/// Filters for listing evaluations, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvaluationFilter {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub decision: Option<Decision>,
    pub event: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Continue after this (created_at, id), exclusive.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
}
