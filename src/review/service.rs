//! What the review routes do: thin over the store, with every call bounded
//! and the timeline built from the stored report snapshot.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::{
    timeline, AuditEntry, Label, LabelRecord, ReviewConflict, ReviewFilter, ReviewItem,
    ReviewOutcome, Stats, TimelineEntry,
};
use crate::evaluation::Evaluation;
use crate::policy::Policy;
use crate::report::read_report;
use crate::store::{bounded, StatsWindow, Store, StoreError};
use crate::webhooks::Outbox;

/// An item with everything an analyst needs to decide.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewDetail {
    pub item: ReviewItem,
    pub evaluation: Evaluation,
    /// Actions and failed checks in time order; empty when no report was kept.
    pub timeline: Vec<TimelineEntry>,
    pub session_replay_url: Option<String>,
    pub audit: Vec<AuditEntry>,
}

pub struct Reviews {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    outbox: Arc<Outbox>,
    lease: Duration,
    database_timeout: Duration,
}

impl Reviews {
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        outbox: Arc<Outbox>,
        lease: Duration,
        database_timeout: Duration,
    ) -> Self {
        Self {
            store,
            policy,
            outbox,
            lease,
            database_timeout,
        }
    }

    pub async fn list(&self, filter: &ReviewFilter) -> Result<Vec<ReviewItem>, StoreError> {
        bounded(
            self.database_timeout,
            self.store.list_reviews(filter, Utc::now()),
        )
        .await
    }

    pub async fn detail(&self, id: Uuid) -> Result<Option<ReviewDetail>, StoreError> {
        let found = bounded(self.database_timeout, self.store.get_review(id, Utc::now())).await?;
        let Some((item, audit)) = found else {
            return Ok(None);
        };
        let evaluation = bounded(
            self.database_timeout,
            self.store.get_evaluation(item.evaluation_id),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("review {id} names missing evaluation")))?;
        // The snapshot was read when it was stored; re-reading it cannot fail
        // unless the row was tampered with, and then there is simply no timeline.
        let timeline = evaluation
            .report_snapshot
            .as_deref()
            .and_then(|raw| read_report(raw.as_bytes()).ok())
            .map(|report| timeline(&report, &self.policy, &evaluation.reasons))
            .unwrap_or_default();
        Ok(Some(ReviewDetail {
            session_replay_url: evaluation.session_replay_url.clone(),
            item,
            evaluation,
            timeline,
            audit,
        }))
    }

    pub async fn claim_next(
        &self,
        actor: &str,
        event: Option<&str>,
    ) -> Result<Option<ReviewItem>, StoreError> {
        let claim = self
            .store
            .claim_next_review(actor, event, Utc::now(), self.lease);
        bounded(self.database_timeout, claim).await
    }

    pub async fn claim(
        &self,
        id: Uuid,
        actor: &str,
    ) -> Result<Result<ReviewItem, ReviewConflict>, StoreError> {
        bounded(
            self.database_timeout,
            self.store.claim_review(id, actor, Utc::now(), self.lease),
        )
        .await
    }

    pub async fn resolve(
        &self,
        id: Uuid,
        actor: &str,
        outcome: ReviewOutcome,
        note: Option<&str>,
    ) -> Result<Result<ReviewItem, ReviewConflict>, StoreError> {
        let announce = |item: &ReviewItem| self.outbox.for_review(item);
        let resolve = self
            .store
            .resolve_review(id, actor, outcome, note, Utc::now(), &announce);
        bounded(self.database_timeout, resolve).await
    }

    /// Labels an evaluation; `None` when there is no such evaluation.
    pub async fn label(
        &self,
        evaluation_id: Uuid,
        label: Label,
        source: String,
        note: Option<String>,
        actor: &str,
    ) -> Result<Option<LabelRecord>, StoreError> {
        let record = LabelRecord {
            id: Uuid::now_v7(),
            evaluation_id,
            label,
            source,
            note,
            created_by: actor.to_owned(),
            created_at: Utc::now(),
        };
        let stored = bounded(self.database_timeout, self.store.add_label(&record)).await?;
        Ok(stored.then_some(record))
    }

    pub async fn stats(&self, window: &StatsWindow) -> Result<Stats, StoreError> {
        bounded(self.database_timeout, self.store.stats(window, Utc::now())).await
    }
}
