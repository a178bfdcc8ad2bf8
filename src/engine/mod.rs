//! The rules engine: a policy, a report and an event in; a verdict out.
//!
//! Pure on purpose: no I/O, no async, no clock (time comes from the report),
//! so the same inputs always give the same verdict, and it can be tested and
//! benchmarked on its own.

use serde::{Deserialize, Serialize};

use crate::domain::{Decision, Event};
use crate::policy::{Policy, SensitiveAction, VendorScoreMode};
use crate::report::{CheckStatus, Report};

/// The highest score a verdict carries.
pub const MAX_SCORE: f64 = 100.0;

/// What the engine decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub score: f64,
    pub reasons: Vec<Reason>,
    pub policy_version: String,
    pub session_replay_url: Option<String>,
}

/// What a reason is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// A failed check added to the score.
    FailedCheck,
    /// A check whose result the vendor could not tell; it scores nothing.
    UnknownCheck,
    /// The vendor's own risk score.
    VendorRiskScore,
    /// A hard rule decided outright.
    HardRule,
    /// No report could be had; the policy's fail mode decided.
    UpstreamUnavailable,
    /// The action the caller gates was in the report (after waiting for it).
    RequiredActionSeen,
    /// The action the caller gates never appeared; decided on what was there.
    RequiredActionMissing,
}

/// One contribution to a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub code: ReasonCode,
    /// What a person reads.
    pub detail: String,
    /// Points this reason added to the score.
    pub points: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// The sensitive action the check was near (its policy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_action: Option<String>,
    /// Seconds between the check and that action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_apart: Option<f64>,
    /// `"before"` or `"after"` the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Reason {
    /// A reason that adds nothing to the score, only explains.
    pub fn note(code: ReasonCode, detail: String) -> Self {
        Self::new(code, detail, 0.0)
    }

    fn new(code: ReasonCode, detail: String, points: f64) -> Self {
        Self {
            code,
            detail,
            points: round(points),
            check: None,
            base_weight: None,
            multiplier: None,
            near_action: None,
            seconds_apart: None,
            relative: None,
            rule: None,
        }
    }
}

/// Why no report could be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Roundtable does not know the session.
    SessionNotFound,
    /// Anything else: unreachable, timed out, 5xx, not a report.
    Unavailable,
}

/// Decides on a report.
pub fn evaluate(policy: &Policy, report: &Report, event: &Event) -> Verdict {
    let occurrences = SensitiveOccurrences::find(policy.sensitive_actions(), report);
    let mut reasons = Vec::with_capacity(report.checks.len() + 2);
    let mut rule_score = 0.0;

    for check in &report.checks {
        if check.status == CheckStatus::Unknown {
            reasons.push(Reason {
                check: Some(check.name.clone()),
                ..Reason::new(
                    ReasonCode::UnknownCheck,
                    format!("{}: result unknown, not scored", check.name),
                    0.0,
                )
            });
            continue;
        }
        let (base, known) = policy.check_weight(&check.name);
        let nearest = check.at_ms.and_then(|at| occurrences.strongest(at));
        let multiplier = nearest.as_ref().map_or(1.0, |n| n.multiplier);
        let points = base * multiplier;
        rule_score += points;

        let mut detail = format!("{} failed", check.name);
        if !known {
            detail.push_str(" (not in policy: default weight)");
        }
        let mut reason = Reason {
            check: Some(check.name.clone()),
            base_weight: Some(base),
            multiplier: Some(round(multiplier)),
            ..Reason::new(ReasonCode::FailedCheck, String::new(), points)
        };
        if let Some(near) = nearest {
            detail.push_str(&format!(
                ", {:.0} s {} {}",
                near.seconds_apart,
                near.relative(),
                near.action.name
            ));
            reason.near_action = Some(near.action.name.clone());
            reason.seconds_apart = Some(round(near.seconds_apart));
            reason.relative = Some(near.relative().to_owned());
        }
        reason.detail = detail;
        reasons.push(reason);
    }

    let mut score = rule_score;
    let vendor = policy.vendor_score();
    if let (Some(risk), true) = (report.risk_score, vendor.mode != VendorScoreMode::Ignore) {
        let weighted = f64::from(risk) * vendor.weight;
        let (added, how) = match vendor.mode {
            VendorScoreMode::Add => (weighted, "added"),
            _ => (
                (weighted - rule_score).max(0.0),
                "taken as the score if higher",
            ),
        };
        score += added;
        reasons.push(Reason::new(
            ReasonCode::VendorRiskScore,
            format!("vendor risk score {risk} × {} {how}", vendor.weight),
            added,
        ));
    }
    let score = round(score.min(MAX_SCORE));

    let rules = policy.event_rules(event);
    let mut decision = if score >= rules.block {
        Decision::Block
    } else if score >= rules.review {
        Decision::Review
    } else {
        Decision::Allow
    };

    let mut hard_decision: Option<Decision> = None;
    for rule in policy.hard_rules().iter().filter(|r| r.applies_to(event)) {
        let check_holds = rule.check.as_ref().is_none_or(|name| {
            report
                .failed_checks()
                .any(|c| crate::policy::normalise_check_name(&c.name) == *name)
        });
        let score_holds = rule
            .min_risk_score
            .is_none_or(|min| report.risk_score.is_some_and(|s| s >= min));
        if check_holds && score_holds {
            hard_decision = hard_decision.max(Some(rule.decision));
            reasons.push(Reason {
                rule: Some(rule.name.clone()),
                ..Reason::new(
                    ReasonCode::HardRule,
                    format!("hard rule \"{}\" decides {}", rule.name, rule.decision),
                    0.0,
                )
            });
        }
    }
    if let Some(hard) = hard_decision {
        decision = hard;
    }

    Verdict {
        decision,
        score,
        reasons,
        policy_version: policy.version().to_owned(),
        session_replay_url: report.replay_url.clone(),
    }
}

/// Decides without a report, by the event's fail mode.
pub fn decide_without_report(
    policy: &Policy,
    event: &Event,
    failure: UpstreamFailure,
    cause: &str,
) -> Verdict {
    let rules = policy.event_rules(event);
    let (decision, what) = match failure {
        UpstreamFailure::SessionNotFound => (rules.on_session_not_found, "on_session_not_found"),
        UpstreamFailure::Unavailable => (rules.on_upstream_error, "on_upstream_error"),
    };
    Verdict {
        decision,
        score: 0.0,
        reasons: vec![Reason::new(
            ReasonCode::UpstreamUnavailable,
            format!("no session report ({cause}); decided by the policy's {what} for {event}"),
            0.0,
        )],
        policy_version: policy.version().to_owned(),
        session_replay_url: None,
    }
}

/// Two decimals: enough for a person, and stable in JSON.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Timestamps of each sensitive action's occurrences, sorted, so that the
/// nearest one to a check is a binary search away even in a long session.
struct SensitiveOccurrences<'p> {
    by_action: Vec<(&'p SensitiveAction, Vec<i64>)>,
}

struct Nearest<'p> {
    action: &'p SensitiveAction,
    multiplier: f64,
    seconds_apart: f64,
    check_before_action: bool,
}

impl Nearest<'_> {
    fn relative(&self) -> &'static str {
        if self.check_before_action {
            "before"
        } else {
            "after"
        }
    }
}

impl<'p> SensitiveOccurrences<'p> {
    fn find(actions: &'p [SensitiveAction], report: &Report) -> Self {
        let by_action = actions
            .iter()
            .filter_map(|action| {
                let mut times: Vec<i64> = report
                    .actions
                    .iter()
                    .filter_map(|a| a.at_ms.filter(|_| action.matcher.matches(&a.text)))
                    .collect();
                if times.is_empty() {
                    return None;
                }
                times.sort_unstable();
                Some((action, times))
            })
            .collect();
        Self { by_action }
    }

    /// The sensitive action whose proximity gives the check its largest
    /// multiplier, if any is within its window.
    fn strongest(&self, check_at: i64) -> Option<Nearest<'p>> {
        let mut best: Option<Nearest<'p>> = None;
        for (action, times) in &self.by_action {
            let i = times.partition_point(|&t| t < check_at);
            let candidates = [i.checked_sub(1).map(|j| times[j]), times.get(i).copied()];
            for at in candidates.into_iter().flatten() {
                let seconds = (at - check_at).unsigned_abs() as f64 / 1000.0;
                if seconds >= action.window_secs {
                    continue;
                }
                let multiplier =
                    1.0 + (action.multiplier - 1.0) * (1.0 - seconds / action.window_secs);
                if best.as_ref().is_none_or(|b| multiplier > b.multiplier) {
                    best = Some(Nearest {
                        action,
                        multiplier,
                        seconds_apart: seconds,
                        check_before_action: check_at <= at,
                    });
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests;
