//! The review queue: `review` verdicts worked by analysts, and the labels
//! that tell how good the policy is.
//!
//! Claims are leases. Who may do what to an item is decided here, in pure
//! functions both storage backends call inside their transactions.

mod service;
mod stats;
mod timeline;

pub use service::{ReviewDetail, Reviews};
pub use stats::{percentile, Percentiles, Stats};
pub use timeline::{timeline, TimelineEntry};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Where an item stands. A claim whose lease ran out reads as `Open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Open,
    Claimed,
    Resolved,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Claimed => "claimed",
            ReviewStatus::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(ReviewStatus::Open),
            "claimed" => Some(ReviewStatus::Claimed),
            "resolved" => Some(ReviewStatus::Resolved),
            _ => None,
        }
    }
}

/// What the analyst decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewOutcome {
    Approve,
    Reject,
}

impl ReviewOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Approve => "approve",
            ReviewOutcome::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approve" => Some(ReviewOutcome::Approve),
            "reject" => Some(ReviewOutcome::Reject),
            _ => None,
        }
    }

    /// The label a review outcome records: a rejected session was fraud.
    pub fn label(self) -> Label {
        match self {
            ReviewOutcome::Approve => Label::Legit,
            ReviewOutcome::Reject => Label::Fraud,
        }
    }
}

/// Ground truth learned later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Fraud,
    Legit,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Fraud => "fraud",
            Label::Legit => "legit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fraud" => Some(Label::Fraud),
            "legit" => Some(Label::Legit),
            _ => None,
        }
    }
}

/// One item of the queue.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReviewItem {
    pub id: Uuid,
    pub evaluation_id: Uuid,
    pub status: ReviewStatus,
    pub score: f64,
    pub event: String,
    pub user_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    pub outcome: Option<ReviewOutcome>,
    pub note: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// One state change of an item.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub from: Option<ReviewStatus>,
    pub to: ReviewStatus,
    pub note: Option<String>,
}

/// A label as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LabelRecord {
    pub id: Uuid,
    pub evaluation_id: Uuid,
    pub label: Label,
    pub source: String,
    pub note: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// Filters for listing the queue: highest score first, then oldest.
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub min_score: Option<f64>,
    /// Items created before this.
    pub created_before: Option<DateTime<Utc>>,
    /// Continue after this (score, created_at, id), exclusive.
    pub after: Option<(f64, DateTime<Utc>, Uuid)>,
    pub limit: u32,
}

/// Why a claim or resolve was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewConflict {
    #[error("no such review item")]
    NotFound,
    #[error("the item is already resolved")]
    AlreadyResolved,
    #[error("the item is claimed by someone else")]
    ClaimedByOther,
    #[error("only the claimant may resolve; claim the item first")]
    NotClaimant,
    #[error("your claim expired; claim the item again")]
    ClaimExpired,
}

/// The stored state that decides what an actor may do.
#[derive(Debug, Clone)]
pub struct ClaimState {
    pub status: ReviewStatus,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
}

impl ClaimState {
    fn lease_live(&self, now: DateTime<Utc>) -> bool {
        self.status == ReviewStatus::Claimed && self.claim_expires_at.is_some_and(|t| t > now)
    }

    /// The status a reader sees: an expired claim is open again.
    pub fn effective(&self, now: DateTime<Utc>) -> ReviewStatus {
        match self.status {
            ReviewStatus::Claimed if !self.lease_live(now) => ReviewStatus::Open,
            other => other,
        }
    }

    /// May `actor` claim (or renew its claim on) the item now?
    pub fn check_claim(&self, actor: &str, now: DateTime<Utc>) -> Result<(), ReviewConflict> {
        match self.effective(now) {
            ReviewStatus::Resolved => Err(ReviewConflict::AlreadyResolved),
            ReviewStatus::Claimed if self.claimed_by.as_deref() != Some(actor) => {
                Err(ReviewConflict::ClaimedByOther)
            }
            _ => Ok(()),
        }
    }

    /// May `actor` resolve the item now? Only its live claimant, once.
    pub fn check_resolve(&self, actor: &str, now: DateTime<Utc>) -> Result<(), ReviewConflict> {
        let mine = self.claimed_by.as_deref() == Some(actor);
        match self.status {
            ReviewStatus::Resolved => Err(ReviewConflict::AlreadyResolved),
            ReviewStatus::Claimed if mine && self.lease_live(now) => Ok(()),
            ReviewStatus::Claimed if mine => Err(ReviewConflict::ClaimExpired),
            ReviewStatus::Claimed if self.lease_live(now) => Err(ReviewConflict::ClaimedByOther),
            _ => Err(ReviewConflict::NotClaimant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: ReviewStatus, by: Option<&str>, expires_in_secs: i64) -> ClaimState {
        ClaimState {
            status,
            claimed_by: by.map(str::to_owned),
            claim_expires_at: by.map(|_| Utc::now() + chrono::Duration::seconds(expires_in_secs)),
        }
    }

    #[test]
    fn who_may_claim_and_resolve() {
        let now = Utc::now();
        let open = state(ReviewStatus::Open, None, 0);
        let alice_live = state(ReviewStatus::Claimed, Some("alice"), 60);
        let alice_expired = state(ReviewStatus::Claimed, Some("alice"), -1);
        let resolved = state(ReviewStatus::Resolved, Some("alice"), 60);

        assert_eq!(open.check_claim("bob", now), Ok(()));
        assert_eq!(alice_live.check_claim("alice", now), Ok(()), "renewal");
        assert_eq!(
            alice_live.check_claim("bob", now),
            Err(ReviewConflict::ClaimedByOther)
        );
        assert_eq!(
            alice_expired.check_claim("bob", now),
            Ok(()),
            "an expired claim is open"
        );
        assert_eq!(
            resolved.check_claim("bob", now),
            Err(ReviewConflict::AlreadyResolved)
        );

        assert_eq!(alice_live.check_resolve("alice", now), Ok(()));
        assert_eq!(
            alice_live.check_resolve("bob", now),
            Err(ReviewConflict::ClaimedByOther)
        );
        assert_eq!(
            alice_expired.check_resolve("alice", now),
            Err(ReviewConflict::ClaimExpired)
        );
        assert_eq!(
            alice_expired.check_resolve("bob", now),
            Err(ReviewConflict::NotClaimant)
        );
        assert_eq!(
            open.check_resolve("bob", now),
            Err(ReviewConflict::NotClaimant)
        );
        assert_eq!(
            resolved.check_resolve("alice", now),
            Err(ReviewConflict::AlreadyResolved)
        );

        assert_eq!(alice_expired.effective(now), ReviewStatus::Open);
        assert_eq!(alice_live.effective(now), ReviewStatus::Claimed);
    }

    #[test]
    fn outcomes_record_labels() {
        assert_eq!(ReviewOutcome::Reject.label(), Label::Fraud);
        assert_eq!(ReviewOutcome::Approve.label(), Label::Legit);
        for s in ["open", "claimed", "resolved"] {
            assert_eq!(ReviewStatus::parse(s).map(ReviewStatus::as_str), Some(s));
        }
    }
}
