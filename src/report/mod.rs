//! The one internal model of a Roundtable session report.
//!
//! Roundtable serves two shapes (v0.0, the contract, and v1, the newer one);
//! [`read_report`] turns either into a [`Report`] so that the engine applies the
//! same rules whichever API version a customer is on.

mod reader;

pub use reader::{read_report, ReadError};

use serde::Serialize;

/// Which upstream shape a report was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportShape {
    V0,
    V1,
}

impl ReportShape {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportShape::V0 => "v0.0",
            ReportShape::V1 => "v1",
        }
    }
}

/// A user action recorded by the tracker, e.g. "Updated credit card".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub text: String,
    /// Unix epoch milliseconds; `None` when the report did not carry one.
    pub at_ms: Option<i64>,
}

/// Where a check came from: v0.0 free-text checks are behavioural; v1 splits
/// its flags into biometric and device checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSource {
    Behavioural,
    Biometric,
    Device,
}

/// Whether the vendor says the check failed, or could not tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Failed,
    /// v1 `"Unknown"`: kept for the record, scores nothing.
    Unknown,
}

/// A behavioural or device check that failed (or whose result is unknown).
/// Checks that passed ("Not detected") are not kept: they carry no risk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub source: CheckSource,
    /// Unix epoch milliseconds; v1 flags have none.
    pub at_ms: Option<i64>,
}

/// A session report, whichever shape it was served in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub shape: ReportShape,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub actions: Vec<Action>,
    pub checks: Vec<Check>,
    /// v1 only: the vendor's own 0–100 score.
    pub risk_score: Option<u8>,
    pub recommended_action: Option<String>,
    pub tags: Vec<String>,
    pub replay_url: Option<String>,
    pub replay_duration_secs: Option<f64>,
}

impl Report {
    /// The checks that count against the session.
    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|check| check.status == CheckStatus::Failed)
    }
}
