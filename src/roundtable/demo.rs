//! A built-in report source for `riskgate serve --demo`: a handful of
//! sessions compiled into the binary, read by the same reader as live
//! reports, so the demo exercises the real decision path without a
//! Roundtable account.

use async_trait::async_trait;
use tokio::time::Instant;

use super::{FetchError, FetchedReport, ReportSource};
use crate::domain::SessionId;
use crate::report::read_report;

/// Session id, the event it is meant to be evaluated as, and its report.
pub const DEMO_SESSIONS: &[(&str, &str, &str)] = &[
    (
        "abc123def456",
        "account_change",
        include_str!("../../demo/v0.0-seed.json"),
    ),
    (
        "f3b9c2d17a",
        "checkout",
        include_str!("../../demo/v1-report.json"),
    ),
    (
        "demo-clean-checkout",
        "checkout",
        include_str!("../../demo/clean-checkout.json"),
    ),
    (
        "demo-account-takeover",
        "account_change",
        include_str!("../../demo/account-takeover.json"),
    ),
    (
        "demo-bot-checkout",
        "checkout",
        include_str!("../../demo/bot-checkout.json"),
    ),
];

/// Serves [`DEMO_SESSIONS`]; any other id is "not found", as upstream would say.
#[derive(Debug, Default, Clone)]
pub struct DemoReportSource;

#[async_trait]
impl ReportSource for DemoReportSource {
    async fn fetch(
        &self,
        session_id: &SessionId,
        _deadline: Instant,
    ) -> Result<FetchedReport, FetchError> {
        let (_, _, body) = DEMO_SESSIONS
            .iter()
            .find(|(id, _, _)| *id == session_id.as_str())
            .ok_or(FetchError::NotFound)?;
        Ok(FetchedReport {
            report: read_report(body.as_bytes())?,
            raw: (*body).to_owned(),
            attempts: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Decision, Event};
    use crate::engine::evaluate;
    use crate::policy::Policy;

    #[tokio::test]
    async fn demo_sessions_give_allow_review_and_block_under_the_default_policy() {
        let policy = Policy::bundled().expect("bundled policy");
        let mut seen = Vec::new();
        for (id, event, _) in DEMO_SESSIONS {
            let fetched = DemoReportSource
                .fetch(&SessionId::parse(id).expect("id"), Instant::now())
                .await
                .expect("demo session");
            assert_eq!(fetched.report.session_id.as_deref(), Some(*id));
            let verdict = evaluate(
                &policy,
                &fetched.report,
                &Event::parse(event).expect("event"),
            );
            seen.push((*id, verdict.decision));
        }
        assert_eq!(
            seen,
            [
                ("abc123def456", Decision::Review),
                ("f3b9c2d17a", Decision::Block),
                ("demo-clean-checkout", Decision::Allow),
                ("demo-account-takeover", Decision::Block),
                ("demo-bot-checkout", Decision::Block),
            ]
        );
    }

    #[tokio::test]
    async fn unknown_demo_session_is_not_found() {
        let result = DemoReportSource
            .fetch(&SessionId::parse("nope").expect("id"), Instant::now())
            .await;
        assert!(matches!(result, Err(FetchError::NotFound)));
    }
}
