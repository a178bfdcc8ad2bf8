//! Storage: one interface, one implementation per backend, chosen by the
//! database URL's scheme. Queries are built at run time (no compile-time
//! macros needing a live database); each backend owns its migrations.

mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::DatabaseSettings;
use crate::evaluation::{Evaluation, EvaluationFilter};
use crate::review::{
    AuditEntry, ClaimState, LabelRecord, ReviewConflict, ReviewFilter, ReviewItem, ReviewOutcome,
    ReviewStatus, Stats,
};
use crate::webhooks::{
    AttemptResult, Delivery, DeliveryFilter, DeliveryView, InboundHook, OutboxMessage, Recorded,
};

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time; a caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A stored row could not be read back.
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database took longer than the configured bound; nothing was committed.
    #[error("database did not answer within {0:?}")]
    TimedOut(Duration),
    /// The row already exists (a repeated write of a pre-assigned id).
    #[error("already stored")]
    Duplicate,
    /// Another request took over this idempotency key (its lease had run out)
    /// and finished first; this evaluation was rolled back.
    #[error("idempotency key was taken over by another request")]
    IdempotencyLost,
}

impl StoreError {
    /// Whether a retry may cure it (answers 503 with Retry-After).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::TimedOut(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            if db.is_unique_violation() {
                return StoreError::Duplicate;
            }
        }
        if is_transient(&error) {
            StoreError::Unavailable(error)
        } else {
            StoreError::Database(error)
        }
    }
}

/// Errors a retry may cure: the database is away, overloaded, or busy.
/// These answer 503 with Retry-After; anything else is a bug and answers 500.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL SQLSTATE classes: 08 connection exception, 53
            // insufficient resources, 57 operator intervention (shutdown,
            // cannot connect now); 40001/40P01 serialization and deadlock.
            // SQLite primary codes: 5 BUSY, 6 LOCKED, 10 IOERR, 13 FULL, 14 CANTOPEN.
            ["08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
                || matches!(code.as_ref(), "40001" | "40P01")
                || matches!(
                    code.parse::<i32>().map(|c| c & 0xff),
                    Ok(5 | 6 | 10 | 13 | 14)
                ) && db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        }
        _ => false,
    }
}

/// Everything written with one evaluation, in one transaction.
pub struct NewEvaluation<'a> {
    pub evaluation: &'a Evaluation,
    pub idempotency: Option<&'a IdempotencyKey>,
    /// The inbound hook this evaluation answers, marked done with it.
    pub inbound: Option<&'a InboundHook>,
    pub outbox: &'a [OutboxMessage],
}

impl<'a> NewEvaluation<'a> {
    pub fn plain(evaluation: &'a Evaluation) -> Self {
        Self {
            evaluation,
            idempotency: None,
            inbound: None,
            outbox: &[],
        }
    }
}

/// The window and filter of `GET /v1/stats`.
#[derive(Debug, Clone, Default)]
pub struct StatsWindow {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub event: Option<String>,
}

/// An idempotency key: the caller's key, scoped to the API key's name, and a
/// hash of the request body it was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key and must evaluate.
    Acquired,
    /// An earlier request with the same body finished: replay its evaluation.
    Completed(Uuid),
    /// An earlier request with the same body is still evaluating.
    InProgress,
    /// The key was used with a different body.
    Mismatch,
    /// (From a peek) nobody holds the key: it is missing, expired, or its
    /// owner's lease ran out. Claim it.
    Vacant,
}

/// Where evaluations live.
#[async_trait]
pub trait Store: Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Stores one evaluation and, in the same transaction, opens its review
    /// item, completes its idempotency key or inbound hook, and writes its
    /// outbox messages: all or nothing.
    async fn insert_evaluation(&self, new: &NewEvaluation<'_>) -> Result<(), StoreError>;
    /// Claims a key: inserts it, or takes over one that expired or whose
    /// in-progress lease ran out; otherwise reports what holds it.
    async fn claim_idempotency_key(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Claim, StoreError>;
    /// Reads where a key stands without locking it, for requests waiting on
    /// another: polling with the claiming upsert would queue row locks in
    /// front of the owner's own completion.
    async fn peek_idempotency_key(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError>;
    /// Gives up an in-progress claim (the evaluation failed), so a retry may run.
    async fn release_idempotency_key(&self, key: &IdempotencyKey) -> Result<(), StoreError>;
    /// Deletes keys past their time to live; returns how many.
    async fn purge_expired_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn get_evaluation(&self, id: Uuid) -> Result<Option<Evaluation>, StoreError>;
    /// Newest first, at most `filter.limit` rows.
    async fn list_evaluations(
        &self,
        filter: &EvaluationFilter,
    ) -> Result<Vec<Evaluation>, StoreError>;
    /// The review queue, highest score first, then oldest.
    async fn list_reviews(
        &self,
        filter: &ReviewFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReviewItem>, StoreError>;
    /// One item and its audit trail.
    async fn get_review(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(ReviewItem, Vec<AuditEntry>)>, StoreError>;
    /// Claims the next open item (optionally of one event) atomically; `None`
    /// when the queue is empty.
    async fn claim_next_review(
        &self,
        actor: &str,
        event: Option<&str>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<ReviewItem>, StoreError>;
    /// Claims (or renews a claim on) one item.
    async fn claim_review(
        &self,
        id: Uuid,
        actor: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Result<ReviewItem, ReviewConflict>, StoreError>;
    /// Resolves an item its actor has a live claim on, recording the outcome
    /// as a label in the same transaction.
    async fn resolve_review(
        &self,
        id: Uuid,
        actor: &str,
        outcome: ReviewOutcome,
        note: Option<&str>,
        now: DateTime<Utc>,
        announce: &(dyn for<'r> Fn(&'r ReviewItem) -> Vec<OutboxMessage> + Sync),
    ) -> Result<Result<ReviewItem, ReviewConflict>, StoreError>;
    /// Labels an evaluation; `false` when there is no such evaluation.
    async fn add_label(&self, label: &LabelRecord) -> Result<bool, StoreError>;
    /// Counts for `GET /v1/stats`.
    async fn stats(&self, window: &StatsWindow, now: DateTime<Utc>) -> Result<Stats, StoreError>;
    /// Claims due outbox messages of the given subscriptions for one attempt
    /// each: per subscription only the oldest undelivered one (delivery in
    /// order of creation), leased. A replica claims only subscriptions it
    /// knows, so replicas mid-way through a configuration change do not
    /// fail each other's messages.
    async fn claim_deliveries(
        &self,
        subscriptions: &[String],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Records an attempt: delivered, retried at `retry_at`, or (no
    /// `retry_at`) failed for good.
    async fn record_delivery(
        &self,
        delivery: &Delivery,
        result: &AttemptResult,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, StoreError>;
    /// Re-queues a failed message; `None` if there is no such message,
    /// `Some(false)` if it is not failed.
    async fn retry_delivery(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, StoreError>;
    /// Records an inbound hook once per (source, webhook-id).
    async fn record_inbound_hook(&self, hook: &InboundHook) -> Result<Recorded, StoreError>;
    /// Claims pending inbound hooks of the given sources to evaluate, leased.
    async fn claim_inbound_hooks(
        &self,
        sources: &[String],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<InboundHook>, StoreError>;
    /// Gives up on a hook that cannot be evaluated (its body no longer parses).
    async fn fail_inbound_hook(&self, hook: &InboundHook, error: &str) -> Result<(), StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Connections: (in use, idle, max).
    fn pool_stats(&self) -> (u32, u32, u32);
}

/// Runs a database call within `limit`: callers on the request path cannot
/// wait for a pool timeout. A call cut short rolls back.
pub async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::TimedOut(limit)))
}

/// Opens the store the URL names. Does not migrate.
pub async fn connect(url: &str, settings: &DatabaseSettings) -> Result<Arc<dyn Store>, StoreError> {
    let acquire_timeout = Duration::from_millis(settings.acquire_timeout_ms);
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(url, settings.max_connections, acquire_timeout).await?,
        ))
    } else {
        Ok(Arc::new(
            PostgresStore::connect(url, settings.max_connections, acquire_timeout).await?,
        ))
    }
}

/// Reads the JSON columns both backends keep as text or JSON.
fn decode_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn decode_decision(text: &str) -> Result<crate::domain::Decision, StoreError> {
    crate::domain::Decision::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("decision: {text:?}")))
}

fn to_u32(column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value}")))
}

/// A row as both backends read it, before the JSON columns are decoded.
struct EvaluationRow {
    id: Uuid,
    created_at: chrono::DateTime<chrono::Utc>,
    session_id: String,
    event: String,
    user_id: Option<String>,
    amount: Option<String>,
    currency: Option<String>,
    metadata: Option<String>,
    decision: String,
    score: f64,
    reasons: String,
    policy_version: String,
    degraded: bool,
    degraded_reason: Option<String>,
    session_replay_url: Option<String>,
    upstream_attempts: i64,
    upstream_ms: i64,
    total_ms: i64,
    report_shape: Option<String>,
    report_snapshot: Option<String>,
    request_id: Option<String>,
}

impl EvaluationRow {
    fn into_evaluation(self) -> Result<Evaluation, StoreError> {
        Ok(Evaluation {
            id: self.id,
            created_at: self.created_at,
            session_id: self.session_id,
            event: self.event,
            user_id: self.user_id,
            amount: self.amount,
            currency: self.currency,
            metadata: self
                .metadata
                .as_deref()
                .map(|m| decode_json("metadata", m))
                .transpose()?,
            decision: decode_decision(&self.decision)?,
            score: self.score,
            reasons: decode_json("reasons", &self.reasons)?,
            policy_version: self.policy_version,
            degraded: self.degraded,
            degraded_reason: self.degraded_reason,
            session_replay_url: self.session_replay_url,
            timings: crate::evaluation::Timings {
                upstream_attempts: to_u32("upstream_attempts", self.upstream_attempts)?,
                upstream_ms: to_u32("upstream_ms", self.upstream_ms)?,
                total_ms: to_u32("total_ms", self.total_ms)?,
            },
            report_shape: self.report_shape,
            report_snapshot: self.report_snapshot,
            request_id: self.request_id,
        })
    }
}

/// Decides a claim from the row that holds the key.
fn claim_from(key: &IdempotencyKey, held_hash: &str, evaluation_id: Option<Uuid>) -> Claim {
    if held_hash != key.request_hash {
        Claim::Mismatch
    } else if let Some(id) = evaluation_id {
        Claim::Completed(id)
    } else {
        Claim::InProgress
    }
}

/// An idempotency key's row: request hash, evaluation, locked until, expires at.
type HeldKey = (String, Option<Uuid>, DateTime<Utc>, DateTime<Utc>);

/// Decides a peek from the row that holds the key, if any.
fn peek_from(key: &IdempotencyKey, held: Option<HeldKey>, now: DateTime<Utc>) -> Claim {
    match held {
        None => Claim::Vacant,
        Some((_, _, _, expires_at)) if expires_at <= now => Claim::Vacant,
        Some((hash, evaluation_id, locked_until, _)) => match claim_from(key, &hash, evaluation_id)
        {
            Claim::InProgress if locked_until <= now => Claim::Vacant,
            other => other,
        },
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// The JSON columns as text, encoded once for either backend.
struct EncodedJson {
    metadata: Option<String>,
    reasons: String,
}

impl EncodedJson {
    fn of(evaluation: &Evaluation) -> Result<Self, StoreError> {
        Ok(Self {
            metadata: evaluation.metadata.as_ref().map(to_json).transpose()?,
            reasons: to_json(&evaluation.reasons)?,
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A review item row as both backends read it.
struct ReviewRow {
    id: Uuid,
    evaluation_id: Uuid,
    status: String,
    score: f64,
    event: String,
    user_id: Option<String>,
    created_at: DateTime<Utc>,
    claimed_by: Option<String>,
    claim_expires_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
    note: Option<String>,
    resolved_by: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
}

impl ReviewRow {
    fn claim_state(&self) -> Result<ClaimState, StoreError> {
        Ok(ClaimState {
            status: ReviewStatus::parse(&self.status)
                .ok_or_else(|| StoreError::Corrupt(format!("review status: {:?}", self.status)))?,
            claimed_by: self.claimed_by.clone(),
            claim_expires_at: self.claim_expires_at,
        })
    }

    fn into_item(self, now: DateTime<Utc>) -> Result<ReviewItem, StoreError> {
        let state = self.claim_state()?;
        let status = state.effective(now);
        let live_claim = status == ReviewStatus::Claimed;
        Ok(ReviewItem {
            id: self.id,
            evaluation_id: self.evaluation_id,
            status,
            score: self.score,
            event: self.event,
            user_id: self.user_id,
            created_at: self.created_at,
            claimed_by: if live_claim || status == ReviewStatus::Resolved {
                self.claimed_by
            } else {
                None
            },
            claim_expires_at: if live_claim {
                self.claim_expires_at
            } else {
                None
            },
            outcome: self
                .outcome
                .as_deref()
                .map(|o| {
                    ReviewOutcome::parse(o)
                        .ok_or_else(|| StoreError::Corrupt(format!("outcome: {o:?}")))
                })
                .transpose()?,
            note: self.note,
            resolved_by: self.resolved_by,
            resolved_at: self.resolved_at,
        })
    }
}

fn decode_status(text: Option<&str>) -> Result<Option<ReviewStatus>, StoreError> {
    text.map(|s| {
        ReviewStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("review status: {s:?}")))
    })
    .transpose()
}

/// Assembles stats from the per-backend counts (same shape on both).
#[allow(clippy::too_many_arguments)]
fn assemble_stats(
    window: &StatsWindow,
    now: DateTime<Utc>,
    by_event_decision: Vec<(String, String, i64)>,
    degraded: i64,
    outcomes: Vec<(String, i64)>,
    queue: (i64, i64, Option<DateTime<Utc>>),
    resolution_secs: Vec<f64>,
    decision_labels: Vec<(String, String, i64)>,
) -> Stats {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut stats = Stats {
        since: window.since,
        until: window.until,
        event: window.event.clone(),
        ..Stats::default()
    };
    for decision in ["allow", "review", "block"] {
        stats.by_decision.insert(decision.to_owned(), 0);
    }
    for (event, decision, n) in by_event_decision {
        stats.evaluations += count(n);
        *stats.by_decision.entry(decision.clone()).or_default() += count(n);
        *stats
            .by_event
            .entry(event)
            .or_default()
            .entry(decision)
            .or_default() += count(n);
    }
    stats.degraded = count(degraded);
    stats.degraded_share = if stats.evaluations == 0 {
        0.0
    } else {
        stats.degraded as f64 / stats.evaluations as f64
    };
    for outcome in ["approve", "reject"] {
        stats.review_outcomes.insert(outcome.to_owned(), 0);
    }
    for (outcome, n) in outcomes {
        stats.review_outcomes.insert(outcome, count(n));
    }
    let (open, claimed, oldest) = queue;
    stats.queue_open = count(open);
    stats.queue_claimed = count(claimed);
    stats.oldest_open_created_at = oldest;
    stats.oldest_open_age_secs = oldest.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
    stats.time_to_resolution_secs = crate::review::Percentiles::of(resolution_secs);
    for (decision, label, n) in decision_labels {
        stats
            .decisions_vs_labels
            .entry(decision)
            .or_default()
            .insert(label, count(n));
    }
    stats
}
