//! SQLite: the embedded default, so trying riskgate needs no server.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::{
    assemble_stats, chrono_duration, claim_from, decode_status, peek_from, Claim, EncodedJson,
    EvaluationRow, IdempotencyKey, NewEvaluation, ReviewRow, StatsWindow, Store, StoreError,
};
use crate::domain::Decision;
use crate::evaluation::{Evaluation, EvaluationFilter};
use crate::review::{
    AuditEntry, LabelRecord, ReviewConflict, ReviewFilter, ReviewItem, ReviewOutcome, ReviewStatus,
    Stats,
};
use crate::webhooks::{
    AttemptResult, AttemptView, Delivery, DeliveryFilter, DeliveryView, InboundHook, OutboxMessage,
    Recorded,
};

const COLUMNS: &str = "id, created_at, session_id, event, user_id, amount, currency, metadata, \
    decision, score, reasons, policy_version, degraded, degraded_reason, session_replay_url, \
    upstream_attempts, upstream_ms, total_ms, report_shape, report_snapshot, request_id";

/// Evaluations in a SQLite file.
///
/// SQLite has one writer at a time. Writers waiting on its lock back off by
/// sleeping, which makes tail latency terrible under concurrency; so writes
/// go through a pool of one connection (they queue fairly in process) and
/// reads through their own pool (WAL lets them run beside the writer).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // WAL lets readers proceed during a write; the busy timeout makes
        // concurrent writers wait their turn instead of failing.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { writer, reader })
    }
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(column: &str, ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {ms}")))
}

fn parse_uuid(column: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

const REVIEW_COLUMNS: &str = "id, evaluation_id, status, score, event, user_id, created_at, \
    claimed_by, claim_expires_at, outcome, note, resolved_by, resolved_at";

/// Who records the state changes riskgate makes itself.
const SYSTEM_ACTOR: &str = "riskgate";

fn read_review(row: &SqliteRow) -> Result<ReviewRow, StoreError> {
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?
            .map(|ms| from_millis(column, ms))
            .transpose()
    };
    Ok(ReviewRow {
        id: parse_uuid("id", &row.try_get::<String, _>("id")?)?,
        evaluation_id: parse_uuid("evaluation_id", &row.try_get::<String, _>("evaluation_id")?)?,
        status: row.try_get("status")?,
        score: row.try_get("score")?,
        event: row.try_get("event")?,
        user_id: row.try_get("user_id")?,
        created_at: from_millis("created_at", row.try_get("created_at")?)?,
        claimed_by: row.try_get("claimed_by")?,
        claim_expires_at: optional_time("claim_expires_at")?,
        outcome: row.try_get("outcome")?,
        note: row.try_get("note")?,
        resolved_by: row.try_get("resolved_by")?,
        resolved_at: optional_time("resolved_at")?,
    })
}

async fn enqueue(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    messages: &[OutboxMessage],
) -> Result<(), StoreError> {
    for message in messages {
        sqlx::query(
            "INSERT INTO webhook_messages (id, subscription, url, event_type, payload, created_at, \
             status, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?6)",
        )
        .bind(&message.id)
        .bind(&message.subscription)
        .bind(&message.url)
        .bind(&message.event_type)
        .bind(&message.payload)
        .bind(millis(message.created_at))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn non_negative(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

async fn audit(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    review_id: Uuid,
    at: DateTime<Utc>,
    actor: &str,
    from: Option<ReviewStatus>,
    to: ReviewStatus,
    note: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO review_audit (review_id, at, actor, from_status, to_status, note) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(review_id.to_string())
    .bind(millis(at))
    .bind(actor)
    .bind(from.map(ReviewStatus::as_str))
    .bind(to.as_str())
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn read_row(row: &SqliteRow) -> Result<Evaluation, StoreError> {
    let id: String = row.try_get("id")?;
    let created_ms: i64 = row.try_get("created_at")?;
    EvaluationRow {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("id: {e}")))?,
        created_at: DateTime::from_timestamp_millis(created_ms)
            .ok_or_else(|| StoreError::Corrupt(format!("created_at: {created_ms}")))?,
        session_id: row.try_get("session_id")?,
        event: row.try_get("event")?,
        user_id: row.try_get("user_id")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        metadata: row.try_get("metadata")?,
        decision: row.try_get("decision")?,
        score: row.try_get("score")?,
        reasons: row.try_get("reasons")?,
        policy_version: row.try_get("policy_version")?,
        degraded: row.try_get("degraded")?,
        degraded_reason: row.try_get("degraded_reason")?,
        session_replay_url: row.try_get("session_replay_url")?,
        upstream_attempts: row.try_get("upstream_attempts")?,
        upstream_ms: row.try_get("upstream_ms")?,
        total_ms: row.try_get("total_ms")?,
        report_shape: row.try_get("report_shape")?,
        report_snapshot: row.try_get("report_snapshot")?,
        request_id: row.try_get("request_id")?,
    }
    .into_evaluation()
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.insert_evaluation", skip_all, fields(id = %new.evaluation.id))]
    async fn insert_evaluation(&self, new: &NewEvaluation<'_>) -> Result<(), StoreError> {
        let evaluation = new.evaluation;
        let json = EncodedJson::of(evaluation)?;
        let t = &evaluation.timings;
        // IMMEDIATE takes the write lock up front, so the transaction never
        // has to upgrade a read lock (which SQLite may refuse outright).
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO evaluations (id, created_at, session_id, event, user_id, amount, currency, \
             metadata, decision, score, reasons, policy_version, degraded, degraded_reason, \
             session_replay_url, upstream_attempts, upstream_ms, total_ms, report_shape, report_snapshot, \
             request_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(evaluation.id.to_string())
        .bind(millis(evaluation.created_at))
        .bind(&evaluation.session_id)
        .bind(&evaluation.event)
        .bind(&evaluation.user_id)
        .bind(&evaluation.amount)
        .bind(&evaluation.currency)
        .bind(&json.metadata)
        .bind(evaluation.decision.as_str())
        .bind(evaluation.score)
        .bind(&json.reasons)
        .bind(&evaluation.policy_version)
        .bind(evaluation.degraded)
        .bind(&evaluation.degraded_reason)
        .bind(&evaluation.session_replay_url)
        .bind(i64::from(t.upstream_attempts))
        .bind(i64::from(t.upstream_ms))
        .bind(i64::from(t.total_ms))
        .bind(&evaluation.report_shape)
        .bind(&evaluation.report_snapshot)
        .bind(&evaluation.request_id)
        .execute(&mut *tx)
        .await?;
        if evaluation.decision == Decision::Review {
            let review_id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO review_items (id, evaluation_id, status, score, event, user_id, created_at) \
                 VALUES (?, ?, 'open', ?, ?, ?, ?)",
            )
            .bind(review_id.to_string())
            .bind(evaluation.id.to_string())
            .bind(evaluation.score)
            .bind(&evaluation.event)
            .bind(&evaluation.user_id)
            .bind(millis(evaluation.created_at))
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                review_id,
                evaluation.created_at,
                SYSTEM_ACTOR,
                None,
                ReviewStatus::Open,
                None,
            )
            .await?;
        }
        if let Some(hook) = new.inbound {
            sqlx::query(
                "UPDATE inbound_hooks SET status = 'done', locked_until = NULL \
                 WHERE source = ? AND webhook_id = ?",
            )
            .bind(&hook.source)
            .bind(&hook.webhook_id)
            .execute(&mut *tx)
            .await?;
        }
        enqueue(&mut tx, new.outbox).await?;
        if let Some(key) = new.idempotency {
            let done = sqlx::query(
                "UPDATE idempotency_keys SET evaluation_id = ? \
                 WHERE scope = ? AND key = ? AND request_hash = ? AND evaluation_id IS NULL",
            )
            .bind(evaluation.id.to_string())
            .bind(&key.scope)
            .bind(&key.key)
            .bind(&key.request_hash)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::IdempotencyLost);
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_idempotency_key(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        // As on PostgreSQL: one upsert, the primary key serialising racers.
        let acquired = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, evaluation_id, locked_until, expires_at, created_at) \
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6) \
             ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, \
                 evaluation_id = NULL, locked_until = excluded.locked_until, \
                 expires_at = excluded.expires_at, created_at = excluded.created_at \
             WHERE idempotency_keys.expires_at <= excluded.created_at \
                OR (idempotency_keys.evaluation_id IS NULL \
                    AND idempotency_keys.locked_until <= excluded.created_at \
                    AND idempotency_keys.request_hash = excluded.request_hash) \
             RETURNING 1",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(millis(now + chrono_duration(lease)))
        .bind(millis(now + chrono_duration(ttl)))
        .bind(millis(now))
        .fetch_optional(&self.writer)
        .await?;
        if acquired.is_some() {
            return Ok(Claim::Acquired);
        }
        let held = sqlx::query(
            "SELECT request_hash, evaluation_id FROM idempotency_keys WHERE scope = ? AND key = ?",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .fetch_optional(&self.writer)
        .await?;
        let Some(row) = held else {
            return Ok(Claim::InProgress);
        };
        let evaluation_id: Option<String> = row.try_get("evaluation_id")?;
        let evaluation_id = evaluation_id
            .map(|id| {
                Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("evaluation_id: {e}")))
            })
            .transpose()?;
        Ok(claim_from(key, row.try_get("request_hash")?, evaluation_id))
    }

    async fn peek_idempotency_key(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, evaluation_id, locked_until, expires_at FROM idempotency_keys \
             WHERE scope = ? AND key = ?",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .fetch_optional(&self.reader)
        .await?;
        let held = match row {
            None => None,
            Some(r) => {
                let evaluation_id: Option<String> = r.try_get("evaluation_id")?;
                Some((
                    r.try_get("request_hash")?,
                    evaluation_id
                        .map(|id| parse_uuid("evaluation_id", &id))
                        .transpose()?,
                    from_millis("locked_until", r.try_get("locked_until")?)?,
                    from_millis("expires_at", r.try_get("expires_at")?)?,
                ))
            }
        };
        Ok(peek_from(key, held, now))
    }

    async fn release_idempotency_key(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = ? AND key = ? AND request_hash = ? AND evaluation_id IS NULL",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn purge_expired_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?")
            .bind(millis(now))
            .execute(&self.writer)
            .await?;
        Ok(purged.rows_affected())
    }

    async fn get_evaluation(&self, id: Uuid) -> Result<Option<Evaluation>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM evaluations WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(read_row).transpose()
    }

    async fn list_evaluations(
        &self,
        filter: &EvaluationFilter,
    ) -> Result<Vec<Evaluation>, StoreError> {
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM evaluations WHERE 1"));
        if let Some(session_id) = &filter.session_id {
            query.push(" AND session_id = ").push_bind(session_id);
        }
        if let Some(user_id) = &filter.user_id {
            query.push(" AND user_id = ").push_bind(user_id);
        }
        if let Some(decision) = filter.decision {
            query.push(" AND decision = ").push_bind(decision.as_str());
        }
        if let Some(event) = &filter.event {
            query.push(" AND event = ").push_bind(event);
        }
        if let Some(since) = filter.since {
            query.push(" AND created_at >= ").push_bind(millis(since));
        }
        if let Some((created_at, id)) = filter.after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(millis(created_at))
                .push(", ")
                .push_bind(id.to_string())
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(read_row).collect()
    }

    async fn list_reviews(
        &self,
        filter: &ReviewFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {REVIEW_COLUMNS} FROM review_items WHERE 1"));
        match filter.status {
            Some(ReviewStatus::Open) => query
                .push(" AND (status = 'open' OR (status = 'claimed' AND claim_expires_at <= ")
                .push_bind(millis(now))
                .push("))"),
            Some(ReviewStatus::Claimed) => query
                .push(" AND status = 'claimed' AND claim_expires_at > ")
                .push_bind(millis(now)),
            Some(ReviewStatus::Resolved) => query.push(" AND status = 'resolved'"),
            None => &mut query,
        };
        if let Some(event) = &filter.event {
            query.push(" AND event = ").push_bind(event);
        }
        if let Some(user_id) = &filter.user_id {
            query.push(" AND user_id = ").push_bind(user_id);
        }
        if let Some(min_score) = filter.min_score {
            query.push(" AND score >= ").push_bind(min_score);
        }
        if let Some(before) = filter.created_before {
            query.push(" AND created_at < ").push_bind(millis(before));
        }
        if let Some((score, created_at, id)) = filter.after {
            query
                .push(" AND (score < ")
                .push_bind(score)
                .push(" OR (score = ")
                .push_bind(score)
                .push(" AND (created_at > ")
                .push_bind(millis(created_at))
                .push(" OR (created_at = ")
                .push_bind(millis(created_at))
                .push(" AND id > ")
                .push_bind(id.to_string())
                .push("))))");
        }
        query
            .push(" ORDER BY score DESC, created_at ASC, id ASC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter()
            .map(|row| read_review(row)?.into_item(now))
            .collect()
    }

    async fn get_review(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<(ReviewItem, Vec<AuditEntry>)>, StoreError> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?
        else {
            return Ok(None);
        };
        let item = read_review(&row)?.into_item(now)?;
        let trail = sqlx::query(
            "SELECT at, actor, from_status, to_status, note FROM review_audit WHERE review_id = ? ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                at: from_millis("at", row.try_get("at")?)?,
                actor: row.try_get("actor")?,
                from: decode_status(row.try_get::<Option<String>, _>("from_status")?.as_deref())?,
                to: decode_status(Some(row.try_get::<String, _>("to_status")?.as_str()))?
                    .unwrap_or(ReviewStatus::Open),
                note: row.try_get("note")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((item, trail)))
    }

    async fn claim_next_review(
        &self,
        actor: &str,
        event: Option<&str>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<ReviewItem>, StoreError> {
        // SQLite has one writer at a time: the IMMEDIATE transaction is the
        // lock, so the select-then-update below cannot interleave with another.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let next: Option<String> = sqlx::query_scalar(
            "SELECT id FROM review_items \
             WHERE (status = 'open' OR (status = 'claimed' AND claim_expires_at <= ?1)) \
               AND (?2 IS NULL OR event = ?2) \
             ORDER BY score DESC, created_at ASC, id ASC LIMIT 1",
        )
        .bind(millis(now))
        .bind(event)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = next else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "UPDATE review_items SET status = 'claimed', claimed_by = ?, claim_expires_at = ? \
             WHERE id = ? RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(actor)
        .bind(millis(now + chrono_duration(lease)))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let item = read_review(&row)?.into_item(now)?;
        audit(
            &mut tx,
            item.id,
            now,
            actor,
            Some(ReviewStatus::Open),
            ReviewStatus::Claimed,
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(item))
    }

    async fn claim_review(
        &self,
        id: Uuid,
        actor: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Result<ReviewItem, ReviewConflict>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Err(ReviewConflict::NotFound));
        };
        let state = read_review(&row)?.claim_state()?;
        if let Err(conflict) = state.check_claim(actor, now) {
            return Ok(Err(conflict));
        }
        let row = sqlx::query(&format!(
            "UPDATE review_items SET status = 'claimed', claimed_by = ?, claim_expires_at = ? \
             WHERE id = ? RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(actor)
        .bind(millis(now + chrono_duration(lease)))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        audit(
            &mut tx,
            id,
            now,
            actor,
            Some(state.effective(now)),
            ReviewStatus::Claimed,
            None,
        )
        .await?;
        let item = read_review(&row)?.into_item(now)?;
        tx.commit().await?;
        Ok(Ok(item))
    }

    async fn resolve_review(
        &self,
        id: Uuid,
        actor: &str,
        outcome: ReviewOutcome,
        note: Option<&str>,
        now: DateTime<Utc>,
        announce: &(dyn for<'r> Fn(&'r ReviewItem) -> Vec<OutboxMessage> + Sync),
    ) -> Result<Result<ReviewItem, ReviewConflict>, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Err(ReviewConflict::NotFound));
        };
        let current = read_review(&row)?;
        if let Err(conflict) = current.claim_state()?.check_resolve(actor, now) {
            return Ok(Err(conflict));
        }
        let row = sqlx::query(&format!(
            "UPDATE review_items SET status = 'resolved', outcome = ?, note = ?, resolved_by = ?, \
             resolved_at = ? WHERE id = ? RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(outcome.as_str())
        .bind(note)
        .bind(actor)
        .bind(millis(now))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        audit(
            &mut tx,
            id,
            now,
            actor,
            Some(ReviewStatus::Claimed),
            ReviewStatus::Resolved,
            note,
        )
        .await?;
        sqlx::query(
            "INSERT INTO labels (id, evaluation_id, label, source, note, created_by, created_at) \
             VALUES (?, ?, ?, 'review', ?, ?, ?)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(current.evaluation_id.to_string())
        .bind(outcome.label().as_str())
        .bind(note)
        .bind(actor)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        let item = read_review(&row)?.into_item(now)?;
        enqueue(&mut tx, &announce(&item)).await?;
        tx.commit().await?;
        Ok(Ok(item))
    }

    async fn add_label(&self, label: &LabelRecord) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO labels (id, evaluation_id, label, source, note, created_by, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM evaluations WHERE id = ?2)",
        )
        .bind(label.id.to_string())
        .bind(label.evaluation_id.to_string())
        .bind(label.label.as_str())
        .bind(&label.source)
        .bind(&label.note)
        .bind(&label.created_by)
        .bind(millis(label.created_at))
        .execute(&self.writer)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn stats(&self, window: &StatsWindow, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        let windowed = |sql: &str, column: &str| {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(sql);
            if let Some(since) = window.since {
                query
                    .push(format!(" AND {column} >= "))
                    .push_bind(millis(since));
            }
            if let Some(until) = window.until {
                query
                    .push(format!(" AND {column} < "))
                    .push_bind(millis(until));
            }
            if let Some(event) = &window.event {
                query.push(" AND event = ").push_bind(event.clone());
            }
            query
        };
        let mut by_event = windowed(
            "SELECT event, decision, COUNT(*) AS n FROM evaluations WHERE 1",
            "created_at",
        );
        by_event.push(" GROUP BY event, decision");
        let by_event_decision = by_event
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("event")?, r.try_get("decision")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let degraded: i64 = windowed(
            "SELECT COUNT(*) FROM evaluations WHERE degraded",
            "created_at",
        )
        .build_query_scalar()
        .fetch_one(&self.reader)
        .await?;
        let mut outcomes = windowed(
            "SELECT outcome, COUNT(*) AS n FROM review_items WHERE status = 'resolved'",
            "resolved_at",
        );
        outcomes.push(" GROUP BY outcome");
        let outcomes = outcomes
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let now_ms = millis(now);
        let mut queue: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT COALESCE(SUM(CASE WHEN status = 'open' OR claim_expires_at <= ",
        );
        queue
            .push_bind(now_ms)
            .push(" THEN 1 ELSE 0 END), 0) AS open, COALESCE(SUM(CASE WHEN status = 'claimed' AND claim_expires_at > ")
            .push_bind(now_ms)
            .push(" THEN 1 ELSE 0 END), 0) AS claimed, MIN(CASE WHEN status = 'open' OR claim_expires_at <= ")
            .push_bind(now_ms)
            .push(" THEN created_at END) AS oldest FROM review_items WHERE status <> 'resolved'");
        if let Some(event) = &window.event {
            queue.push(" AND event = ").push_bind(event.clone());
        }
        let queue_row = queue.build().fetch_one(&self.reader).await?;
        let oldest: Option<i64> = queue_row.try_get("oldest")?;
        let queue = (
            queue_row.try_get("open")?,
            queue_row.try_get("claimed")?,
            oldest.map(|ms| from_millis("oldest", ms)).transpose()?,
        );
        let resolution_secs: Vec<f64> = windowed(
            "SELECT (resolved_at - created_at) / 1000.0 FROM review_items WHERE status = 'resolved'",
            "resolved_at",
        )
        .build_query_scalar()
        .fetch_all(&self.reader)
        .await?;
        let mut labels = windowed(
            "SELECT decision, label, COUNT(*) AS n FROM (SELECT e.decision, \
             (SELECT l.label FROM labels l WHERE l.evaluation_id = e.id ORDER BY l.created_at DESC, l.id DESC LIMIT 1) AS label \
             FROM evaluations e WHERE 1",
            "e.created_at",
        );
        labels.push(") latest WHERE label IS NOT NULL GROUP BY decision, label");
        let decision_labels = labels
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("decision")?, r.try_get("label")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(assemble_stats(
            window,
            now,
            by_event_decision,
            degraded,
            outcomes,
            queue,
            resolution_secs,
            decision_labels,
        ))
    }

    async fn claim_deliveries(
        &self,
        subscriptions: &[String],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        // One statement, so SQLite's single writer makes it atomic.
        let rows = sqlx::query(
            "UPDATE webhook_messages SET attempts = attempts + 1, locked_until = ?2 \
             WHERE id IN ( \
                 SELECT h.id FROM webhook_messages h \
                 WHERE h.status = 'pending' AND h.next_attempt_at <= ?1 \
                   AND h.subscription IN (SELECT value FROM json_each(?4)) \
                   AND (h.locked_until IS NULL OR h.locked_until <= ?1) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_messages o \
                       WHERE o.subscription = h.subscription AND o.status = 'pending' \
                         AND (o.created_at, o.id) < (h.created_at, h.id)) \
                 ORDER BY h.created_at, h.id LIMIT ?3) \
             RETURNING id, subscription, url, payload, attempts, failures",
        )
        .bind(millis(now))
        .bind(millis(now + chrono_duration(lease)))
        .bind(i64::from(limit))
        .bind(super::to_json(&subscriptions)?)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    subscription: row.try_get("subscription")?,
                    url: row.try_get("url")?,
                    payload: row.try_get("payload")?,
                    attempt: non_negative(row.try_get("attempts")?),
                    failures: non_negative(row.try_get("failures")?),
                })
            })
            .collect()
    }

    async fn record_delivery(
        &self,
        delivery: &Delivery,
        result: &AttemptResult,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (message_id, attempt, at, status_code, error, duration_ms) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(i64::from(delivery.attempt))
        .bind(millis(now))
        .bind(result.status_code.map(i64::from))
        .bind(&result.error)
        .bind(i64::from(result.duration_ms))
        .execute(&mut *tx)
        .await?;
        let (status, next) = match (result.delivered(), retry_at) {
            (true, _) => ("delivered", now),
            (false, Some(at)) => ("pending", at),
            (false, None) => ("failed", now),
        };
        sqlx::query(
            "UPDATE webhook_messages SET status = ?3, next_attempt_at = ?4, locked_until = NULL, \
             failures = CASE WHEN ?3 = 'delivered' THEN failures ELSE failures + 1 END, \
             last_status_code = ?5, last_error = ?6, \
             delivered_at = CASE WHEN ?3 = 'delivered' THEN ?7 ELSE delivered_at END \
             WHERE id = ?1 AND attempts = ?2 AND status = 'pending'",
        )
        .bind(&delivery.id)
        .bind(i64::from(delivery.attempt))
        .bind(status)
        .bind(millis(next))
        .bind(result.status_code.map(i64::from))
        .bind(&result.error)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, subscription, url, event_type, status, attempts, next_attempt_at, \
             last_status_code, last_error, created_at, delivered_at FROM webhook_messages WHERE 1",
        );
        if let Some(status) = &filter.status {
            query.push(" AND status = ").push_bind(status);
        }
        if let Some(event_type) = &filter.event_type {
            query.push(" AND event_type = ").push_bind(event_type);
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.reader).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            let attempt_log = sqlx::query(
                "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts \
                 WHERE message_id = ? ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptView {
                    attempt: non_negative(a.try_get("attempt")?),
                    at: from_millis("at", a.try_get("at")?)?,
                    status_code: a
                        .try_get::<Option<i64>, _>("status_code")?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: a.try_get("error")?,
                    duration_ms: non_negative(a.try_get("duration_ms")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let delivered_at: Option<i64> = row.try_get("delivered_at")?;
            views.push(DeliveryView {
                next_attempt_at: if status == "pending" {
                    Some(from_millis(
                        "next_attempt_at",
                        row.try_get("next_attempt_at")?,
                    )?)
                } else {
                    None
                },
                id,
                subscription: row.try_get("subscription")?,
                url: row.try_get("url")?,
                event_type: row.try_get("event_type")?,
                status,
                attempts: non_negative(row.try_get("attempts")?),
                last_status_code: row
                    .try_get::<Option<i64>, _>("last_status_code")?
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: row.try_get("last_error")?,
                created_at: from_millis("created_at", row.try_get("created_at")?)?,
                delivered_at: delivered_at
                    .map(|ms| from_millis("delivered_at", ms))
                    .transpose()?,
                attempt_log,
            });
        }
        Ok(views)
    }

    async fn retry_delivery(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, StoreError> {
        let requeued = sqlx::query(
            "UPDATE webhook_messages SET status = 'pending', failures = 0, next_attempt_at = ?, \
             locked_until = NULL WHERE id = ? AND status = 'failed'",
        )
        .bind(millis(now))
        .bind(id)
        .execute(&self.writer)
        .await?;
        if requeued.rows_affected() == 1 {
            return Ok(Some(true));
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM webhook_messages WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.writer)
                .await?;
        Ok(exists.map(|_| false))
    }

    async fn record_inbound_hook(&self, hook: &InboundHook) -> Result<Recorded, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO inbound_hooks (source, webhook_id, evaluation_id, body, received_at, status) \
             VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT (source, webhook_id) DO NOTHING",
        )
        .bind(&hook.source)
        .bind(&hook.webhook_id)
        .bind(hook.evaluation_id.to_string())
        .bind(&hook.body)
        .bind(millis(hook.received_at))
        .execute(&self.writer)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Recorded::New);
        }
        let evaluation_id: String = sqlx::query_scalar(
            "SELECT evaluation_id FROM inbound_hooks WHERE source = ? AND webhook_id = ?",
        )
        .bind(&hook.source)
        .bind(&hook.webhook_id)
        .fetch_one(&self.writer)
        .await?;
        Ok(Recorded::Duplicate {
            evaluation_id: parse_uuid("evaluation_id", &evaluation_id)?,
        })
    }

    async fn claim_inbound_hooks(
        &self,
        sources: &[String],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<InboundHook>, StoreError> {
        let rows = sqlx::query(
            "UPDATE inbound_hooks SET locked_until = ?2 WHERE (source, webhook_id) IN ( \
                 SELECT source, webhook_id FROM inbound_hooks \
                 WHERE status = 'pending' AND source IN (SELECT value FROM json_each(?4)) \
                   AND (locked_until IS NULL OR locked_until <= ?1) \
                 ORDER BY received_at LIMIT ?3) \
             RETURNING source, webhook_id, evaluation_id, body, received_at",
        )
        .bind(millis(now))
        .bind(millis(now + chrono_duration(lease)))
        .bind(i64::from(limit))
        .bind(super::to_json(&sources)?)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(InboundHook {
                    source: row.try_get("source")?,
                    webhook_id: row.try_get("webhook_id")?,
                    evaluation_id: parse_uuid(
                        "evaluation_id",
                        &row.try_get::<String, _>("evaluation_id")?,
                    )?,
                    body: row.try_get("body")?,
                    received_at: from_millis("received_at", row.try_get("received_at")?)?,
                })
            })
            .collect()
    }

    async fn fail_inbound_hook(&self, hook: &InboundHook, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbound_hooks SET status = 'failed', error = ?, locked_until = NULL \
             WHERE source = ? AND webhook_id = ?",
        )
        .bind(error)
        .bind(&hook.source)
        .bind(&hook.webhook_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn pool_stats(&self) -> (u32, u32, u32) {
        let (mut in_use, mut idle, mut max) = (0, 0, 0);
        for pool in [&self.writer, &self.reader] {
            let pool_idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
            in_use += pool.size().saturating_sub(pool_idle);
            idle += pool_idle;
            max += pool.options().get_max_connections();
        }
        (in_use, idle, max)
    }
}
