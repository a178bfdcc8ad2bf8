//! Where session reports come from: Roundtable's API in production, a
//! built-in set of sessions in demo mode. Both hand back the same [`Report`].

mod breaker;
mod client;
mod demo;

pub use breaker::{CircuitBreaker, CircuitState};
pub use client::{ApiVersion, RoundtableClient, RoundtableSettings};
pub use demo::{DemoReportSource, DEMO_SESSIONS};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::SessionId;
use crate::engine::UpstreamFailure;
use crate::report::{ReadError, Report};

/// A report as fetched, with the body kept verbatim for the record.
#[derive(Debug, Clone)]
pub struct FetchedReport {
    pub report: Report,
    /// The upstream body as served (valid JSON).
    pub raw: String,
    /// How many upstream calls it took.
    pub attempts: u32,
}

/// Why no report could be fetched. Every variant becomes a degraded verdict,
/// never an error answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("session not found upstream")]
    NotFound,
    #[error("upstream refused our API key (HTTP {0})")]
    Unauthorized(u16),
    #[error("upstream rate-limited us (HTTP 429)")]
    RateLimited,
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream body is not a report: {0}")]
    InvalidBody(#[from] ReadError),
    #[error("circuit open after repeated upstream failures; not calling")]
    CircuitOpen,
}

impl FetchError {
    /// A short, stable code stored as the degraded reason.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::NotFound => "upstream_session_not_found",
            FetchError::Unauthorized(_) => "upstream_unauthorized",
            FetchError::RateLimited => "upstream_rate_limited",
            FetchError::Status(_) => "upstream_error_status",
            FetchError::Timeout => "upstream_timeout",
            FetchError::Connect(_) => "upstream_unreachable",
            FetchError::InvalidBody(_) => "upstream_invalid_report",
            FetchError::CircuitOpen => "upstream_circuit_open",
        }
    }

    /// Which fail mode of the policy applies.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            FetchError::NotFound => UpstreamFailure::SessionNotFound,
            _ => UpstreamFailure::Unavailable,
        }
    }
}

/// A source of session reports.
#[async_trait]
pub trait ReportSource: Send + Sync {
    /// Fetches one session's report, giving up by `deadline`.
    async fn fetch(
        &self,
        session_id: &SessionId,
        deadline: Instant,
    ) -> Result<FetchedReport, FetchError>;
}
