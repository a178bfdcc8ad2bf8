//! A session's story for an analyst: actions and failed checks merged in time
//! order, sensitive actions and scored checks marked, seconds between them.

use serde::Serialize;

use crate::engine::{Reason, ReasonCode};
use crate::policy::Policy;
use crate::report::{CheckStatus, Report};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// Unix epoch milliseconds; `None` for v1 flags, listed last.
    pub at_ms: Option<i64>,
    /// `action` or `check`.
    pub kind: &'static str,
    pub text: String,
    /// The policy's name for a sensitive action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive_action: Option<String>,
    /// Points the check added to the score (checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<f64>,
    /// Seconds since the previous timed entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_since_previous: Option<f64>,
}

/// Builds the timeline of a report, marking what the verdict's reasons scored.
pub fn timeline(report: &Report, policy: &Policy, reasons: &[Reason]) -> Vec<TimelineEntry> {
    let mut entries: Vec<TimelineEntry> = report
        .actions
        .iter()
        .map(|action| TimelineEntry {
            at_ms: action.at_ms,
            kind: "action",
            text: action.text.clone(),
            sensitive_action: policy
                .sensitive_actions()
                .iter()
                .find(|s| s.matcher.matches(&action.text))
                .map(|s| s.name.clone()),
            points: None,
            seconds_since_previous: None,
        })
        .collect();

    // Reasons list failed checks in report order: pair them up in turn.
    let mut scored = reasons.iter().filter(|r| r.code == ReasonCode::FailedCheck);
    for check in report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
    {
        let points = scored
            .next()
            .filter(|r| r.check.as_deref() == Some(check.name.as_str()))
            .map(|r| r.points);
        entries.push(TimelineEntry {
            at_ms: check.at_ms,
            kind: "check",
            text: check.name.clone(),
            sensitive_action: None,
            points,
            seconds_since_previous: None,
        });
    }

    // Timed entries in order (actions first on a tie), untimed ones last.
    entries.sort_by_key(|e| (e.at_ms.is_none(), e.at_ms, e.kind != "action"));
    let mut previous: Option<i64> = None;
    for entry in &mut entries {
        if let Some(at) = entry.at_ms {
            entry.seconds_since_previous = previous.map(|p| (at - p) as f64 / 1000.0);
            previous = Some(at);
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Event;
    use crate::engine::evaluate;
    use crate::report::read_report;

    #[test]
    fn the_seed_reads_as_a_story() {
        let policy = Policy::bundled().expect("policy");
        let seed = read_report(include_bytes!("../../demo/v0.0-seed.json")).expect("seed");
        let verdict = evaluate(
            &policy,
            &seed,
            &Event::parse("account_change").expect("event"),
        );
        let lines = timeline(&seed, &policy, &verdict.reasons);
        let summary: Vec<(&str, &str, Option<f64>)> = lines
            .iter()
            .map(|e| (e.kind, e.text.as_str(), e.seconds_since_previous))
            .collect();
        assert_eq!(
            summary,
            [
                ("action", "Signed in", None),
                ("action", "Navigated to /dashboard", Some(5.0)),
                ("check", "Unnatural mouse movement", Some(15.0)),
                ("check", "Suspicious copy-paste activity", Some(25.0)),
                ("action", "Updated credit card", Some(45.0)),
            ]
        );
        assert_eq!(
            lines[4].sensitive_action.as_deref(),
            Some("payment method change")
        );
        assert_eq!(lines[2].points, Some(26.5));
        assert_eq!(lines[3].points, Some(27.75));
    }

    #[test]
    fn untimed_v1_flags_come_last() {
        let policy = Policy::bundled().expect("policy");
        let v1 = read_report(include_bytes!("../../demo/v1-report.json")).expect("v1");
        let verdict = evaluate(&policy, &v1, &Event::parse("checkout").expect("event"));
        let lines = timeline(&v1, &policy, &verdict.reasons);
        assert_eq!(lines.len(), 3 + 5);
        assert!(lines[..3]
            .iter()
            .all(|e| e.kind == "action" && e.at_ms.is_some()));
        assert!(lines[3..]
            .iter()
            .all(|e| e.kind == "check" && e.at_ms.is_none() && e.points.is_some()));
        assert_eq!(
            lines[2].sensitive_action.as_deref(),
            Some("payment submitted")
        );
    }
}
