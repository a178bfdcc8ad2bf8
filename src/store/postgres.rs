//! PostgreSQL: the production backend.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{
    assemble_stats, chrono_duration, claim_from, decode_status, peek_from, Claim, EncodedJson,
    EvaluationRow, IdempotencyKey, NewEvaluation, ReviewRow, StatsWindow, Store, StoreError,
};
use crate::evaluation::{Evaluation, EvaluationFilter};
use crate::review::{
    AuditEntry, LabelRecord, ReviewConflict, ReviewFilter, ReviewItem, ReviewOutcome, ReviewStatus,
    Stats,
};
use crate::webhooks::{
    AttemptResult, AttemptView, Delivery, DeliveryFilter, DeliveryView, InboundHook, OutboxMessage,
    Recorded,
};

const COLUMNS: &str = "id, created_at, session_id, event, user_id, amount::text AS amount, \
    currency, metadata::text AS metadata, decision, score, reasons::text AS reasons, \
    policy_version, degraded, degraded_reason, session_replay_url, \
    upstream_attempts::bigint AS upstream_attempts, upstream_ms::bigint AS upstream_ms, \
    total_ms::bigint AS total_ms, report_shape, report_snapshot::text AS report_snapshot, request_id";

/// Evaluations in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            // Every checkout is pinged (sqlx's default). Pinging only idle
            // connections saved a round trip per request, but a connection
            // broken by a database outage then kept failing requests after the
            // database was back: recovery must not depend on luck.
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

fn read_row(row: &PgRow) -> Result<Evaluation, StoreError> {
    EvaluationRow {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
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

const REVIEW_COLUMNS: &str = "id, evaluation_id, status, score, event, user_id, created_at, \
    claimed_by, claim_expires_at, outcome, note, resolved_by, resolved_at";

/// Who records the state changes riskgate makes itself.
const SYSTEM_ACTOR: &str = "riskgate";

fn read_review(row: &PgRow) -> Result<ReviewRow, StoreError> {
    Ok(ReviewRow {
        id: row.try_get("id")?,
        evaluation_id: row.try_get("evaluation_id")?,
        status: row.try_get("status")?,
        score: row.try_get("score")?,
        event: row.try_get("event")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        claimed_by: row.try_get("claimed_by")?,
        claim_expires_at: row.try_get("claim_expires_at")?,
        outcome: row.try_get("outcome")?,
        note: row.try_get("note")?,
        resolved_by: row.try_get("resolved_by")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

async fn audit(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    review_id: Uuid,
    at: DateTime<Utc>,
    actor: &str,
    from: Option<ReviewStatus>,
    to: ReviewStatus,
    note: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO review_audit (review_id, at, actor, from_status, to_status, note) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(review_id)
    .bind(at)
    .bind(actor)
    .bind(from.map(ReviewStatus::as_str))
    .bind(to.as_str())
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes an evaluation with everything that goes with it in one statement:
/// the row, its review item and audit entry (for a review), its outbox
/// messages, and its inbound hook's completion.
async fn write_evaluation<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    new: &NewEvaluation<'_>,
) -> Result<(), StoreError> {
    let evaluation = new.evaluation;
    let json = EncodedJson::of(evaluation)?;
    let t = &evaluation.timings;
    let column = |f: fn(&OutboxMessage) -> &String| {
        new.outbox.iter().map(f).cloned().collect::<Vec<String>>()
    };
    sqlx::query(
        "WITH ev AS ( \
             INSERT INTO evaluations (id, created_at, session_id, event, user_id, amount, currency, \
             metadata, decision, score, reasons, policy_version, degraded, degraded_reason, \
             session_replay_url, upstream_attempts, upstream_ms, total_ms, report_shape, report_snapshot, \
             request_id) \
             VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8::jsonb, $9, $10, $11::jsonb, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20::json, $21) RETURNING id), \
         rv AS ( \
             INSERT INTO review_items (id, evaluation_id, status, score, event, user_id, created_at) \
             SELECT $22, id, 'open', $10, $4, $5, $2 FROM ev WHERE $9 = 'review' RETURNING id), \
         au AS ( \
             INSERT INTO review_audit (review_id, at, actor, from_status, to_status) \
             SELECT id, $2, $30, NULL, 'open' FROM rv), \
         ob AS ( \
             INSERT INTO webhook_messages (id, subscription, url, event_type, payload, created_at, \
             status, next_attempt_at) \
             SELECT m.id, m.subscription, m.url, m.event_type, m.payload, $2, 'pending', $2 \
             FROM ev, unnest($23::text[], $24::text[], $25::text[], $26::text[], $27::text[]) \
                 AS m(id, subscription, url, event_type, payload)), \
         hk AS ( \
             UPDATE inbound_hooks SET status = 'done', locked_until = NULL \
             WHERE source = $28 AND webhook_id = $29 AND EXISTS (SELECT 1 FROM ev)) \
         SELECT 1",
    )
    .bind(evaluation.id)
    .bind(evaluation.created_at)
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
    .bind(saturating_i32(t.upstream_attempts))
    .bind(saturating_i32(t.upstream_ms))
    .bind(saturating_i32(t.total_ms))
    .bind(&evaluation.report_shape)
    .bind(&evaluation.report_snapshot)
    .bind(&evaluation.request_id)
    .bind(Uuid::now_v7())
    .bind(column(|m| &m.id))
    .bind(column(|m| &m.subscription))
    .bind(column(|m| &m.url))
    .bind(column(|m| &m.event_type))
    .bind(column(|m| &m.payload))
    .bind(new.inbound.map(|h| h.source.as_str()))
    .bind(new.inbound.map(|h| h.webhook_id.as_str()))
    .bind(SYSTEM_ACTOR)
    .execute(executor)
    .await?;
    Ok(())
}

async fn enqueue(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    messages: &[OutboxMessage],
) -> Result<(), StoreError> {
    for message in messages {
        sqlx::query(
            "INSERT INTO webhook_messages (id, subscription, url, event_type, payload, created_at, \
             status, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $6)",
        )
        .bind(&message.id)
        .bind(&message.subscription)
        .bind(&message.url)
        .bind(&message.event_type)
        .bind(&message.payload)
        .bind(message.created_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn non_negative(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn saturating_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.insert_evaluation", skip_all, fields(id = %new.evaluation.id))]
    async fn insert_evaluation(&self, new: &NewEvaluation<'_>) -> Result<(), StoreError> {
        // Without an idempotency key, one statement is the whole write: one
        // round trip, atomic by itself. With one, a transaction adds the
        // key's completion, which must roll everything back if it was lost.
        let Some(key) = new.idempotency else {
            write_evaluation(&self.pool, new).await?;
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        write_evaluation(&mut *tx, new).await?;
        let done = sqlx::query(
            "UPDATE idempotency_keys SET evaluation_id = $1 \
             WHERE scope = $2 AND key = $3 AND request_hash = $4 AND evaluation_id IS NULL",
        )
        .bind(new.evaluation.id)
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::IdempotencyLost);
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
        // One statement: insert, or take over a key that expired or whose
        // in-progress owner's lease ran out. The primary key serialises racers.
        let acquired = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, evaluation_id, locked_until, expires_at, created_at) \
             VALUES ($1, $2, $3, NULL, $4, $5, $6) \
             ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
                 evaluation_id = NULL, locked_until = EXCLUDED.locked_until, \
                 expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at \
             WHERE idempotency_keys.expires_at <= EXCLUDED.created_at \
                OR (idempotency_keys.evaluation_id IS NULL \
                    AND idempotency_keys.locked_until <= EXCLUDED.created_at \
                    AND idempotency_keys.request_hash = EXCLUDED.request_hash) \
             RETURNING 1",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(now + chrono_duration(lease))
        .bind(now + chrono_duration(ttl))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if acquired.is_some() {
            return Ok(Claim::Acquired);
        }
        let held = sqlx::query(
            "SELECT request_hash, evaluation_id FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match held {
            Some(row) => claim_from(
                key,
                row.try_get("request_hash")?,
                row.try_get("evaluation_id")?,
            ),
            // Purged between the two statements: the next attempt will insert.
            None => Claim::InProgress,
        })
    }

    async fn peek_idempotency_key(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, evaluation_id, locked_until, expires_at FROM idempotency_keys \
             WHERE scope = $1 AND key = $2",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .fetch_optional(&self.pool)
        .await?;
        let held = row
            .map(|r| {
                Ok::<_, sqlx::Error>((
                    r.try_get("request_hash")?,
                    r.try_get("evaluation_id")?,
                    r.try_get("locked_until")?,
                    r.try_get("expires_at")?,
                ))
            })
            .transpose()?;
        Ok(peek_from(key, held, now))
    }

    async fn release_idempotency_key(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND request_hash = $3 AND evaluation_id IS NULL",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_expired_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(purged.rows_affected())
    }

    async fn get_evaluation(&self, id: Uuid) -> Result<Option<Evaluation>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM evaluations WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(read_row).transpose()
    }

    async fn list_evaluations(
        &self,
        filter: &EvaluationFilter,
    ) -> Result<Vec<Evaluation>, StoreError> {
        let mut query: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM evaluations WHERE TRUE"));
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
            query.push(" AND created_at >= ").push_bind(since);
        }
        if let Some((created_at, id)) = filter.after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(created_at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(read_row).collect()
    }

    async fn list_reviews(
        &self,
        filter: &ReviewFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE TRUE"
        ));
        match filter.status {
            Some(ReviewStatus::Open) => query
                .push(" AND (status = 'open' OR (status = 'claimed' AND claim_expires_at <= ")
                .push_bind(now)
                .push("))"),
            Some(ReviewStatus::Claimed) => query
                .push(" AND status = 'claimed' AND claim_expires_at > ")
                .push_bind(now),
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
            query.push(" AND created_at < ").push_bind(before);
        }
        if let Some((score, created_at, id)) = filter.after {
            query
                .push(" AND (score < ")
                .push_bind(score)
                .push(" OR (score = ")
                .push_bind(score)
                .push(" AND (created_at > ")
                .push_bind(created_at)
                .push(" OR (created_at = ")
                .push_bind(created_at)
                .push(" AND id > ")
                .push_bind(id)
                .push("))))");
        }
        query
            .push(" ORDER BY score DESC, created_at ASC, id ASC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
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
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let item = read_review(&row)?.into_item(now)?;
        let trail = sqlx::query(
            "SELECT at, actor, from_status, to_status, note FROM review_audit WHERE review_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                at: row.try_get("at")?,
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
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: concurrent reviewers each take a different item without waiting.
        let row = sqlx::query(&format!(
            "WITH next AS ( \
                 SELECT id FROM review_items \
                 WHERE (status = 'open' OR (status = 'claimed' AND claim_expires_at <= $1)) \
                   AND ($2::text IS NULL OR event = $2) \
                 ORDER BY score DESC, created_at ASC, id ASC \
                 LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE review_items r SET status = 'claimed', claimed_by = $3, claim_expires_at = $4 \
             FROM next WHERE r.id = next.id RETURNING {}",
            REVIEW_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(now)
        .bind(event)
        .bind(actor)
        .bind(now + chrono_duration(lease))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
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
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
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
            "UPDATE review_items SET status = 'claimed', claimed_by = $2, claim_expires_at = $3 \
             WHERE id = $1 RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(id)
        .bind(actor)
        .bind(now + chrono_duration(lease))
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
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
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
            "UPDATE review_items SET status = 'resolved', outcome = $2, note = $3, resolved_by = $4, \
             resolved_at = $5 WHERE id = $1 RETURNING {REVIEW_COLUMNS}"
        ))
        .bind(id)
        .bind(outcome.as_str())
        .bind(note)
        .bind(actor)
        .bind(now)
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
             VALUES ($1, $2, $3, 'review', $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(current.evaluation_id)
        .bind(outcome.label().as_str())
        .bind(note)
        .bind(actor)
        .bind(now)
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
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM evaluations WHERE id = $2)",
        )
        .bind(label.id)
        .bind(label.evaluation_id)
        .bind(label.label.as_str())
        .bind(&label.source)
        .bind(&label.note)
        .bind(&label.created_by)
        .bind(label.created_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn stats(&self, window: &StatsWindow, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        // One window filter, pushed onto each query against `column`.
        let windowed = |sql: &str, column: &str| {
            let mut query: QueryBuilder<Postgres> = QueryBuilder::new(sql);
            if let Some(since) = window.since {
                query.push(format!(" AND {column} >= ")).push_bind(since);
            }
            if let Some(until) = window.until {
                query.push(format!(" AND {column} < ")).push_bind(until);
            }
            if let Some(event) = &window.event {
                query.push(" AND event = ").push_bind(event.clone());
            }
            query
        };
        let mut by_event = windowed(
            "SELECT event, decision, COUNT(*) AS n FROM evaluations WHERE TRUE",
            "created_at",
        );
        by_event.push(" GROUP BY event, decision");
        let by_event_decision = by_event
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("event")?, r.try_get("decision")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let degraded: i64 = windowed(
            "SELECT COUNT(*) FROM evaluations WHERE degraded",
            "created_at",
        )
        .build_query_scalar()
        .fetch_one(&self.pool)
        .await?;
        let mut outcomes = windowed(
            "SELECT outcome, COUNT(*) AS n FROM review_items WHERE status = 'resolved'",
            "resolved_at",
        );
        outcomes.push(" GROUP BY outcome");
        let outcomes = outcomes
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let mut queue: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT COALESCE(SUM(CASE WHEN status = 'open' OR claim_expires_at <= ",
        );
        queue
            .push_bind(now)
            .push(" THEN 1 ELSE 0 END), 0)::bigint AS open, COALESCE(SUM(CASE WHEN status = 'claimed' AND claim_expires_at > ")
            .push_bind(now)
            .push(" THEN 1 ELSE 0 END), 0)::bigint AS claimed, MIN(CASE WHEN status = 'open' OR claim_expires_at <= ")
            .push_bind(now)
            .push(" THEN created_at END) AS oldest FROM review_items WHERE status <> 'resolved'");
        if let Some(event) = &window.event {
            queue.push(" AND event = ").push_bind(event.clone());
        }
        let queue_row = queue.build().fetch_one(&self.pool).await?;
        let queue = (
            queue_row.try_get("open")?,
            queue_row.try_get("claimed")?,
            queue_row.try_get("oldest")?,
        );
        let resolution_secs: Vec<f64> = windowed(
            "SELECT EXTRACT(EPOCH FROM (resolved_at - created_at))::float8 FROM review_items WHERE status = 'resolved'",
            "resolved_at",
        )
        .build_query_scalar()
        .fetch_all(&self.pool)
        .await?;
        let mut labels = windowed(
            "SELECT decision, label, COUNT(*) AS n FROM (SELECT e.decision, \
             (SELECT l.label FROM labels l WHERE l.evaluation_id = e.id ORDER BY l.created_at DESC, l.id DESC LIMIT 1) AS label \
             FROM evaluations e WHERE TRUE",
            "e.created_at",
        );
        labels.push(") latest WHERE label IS NOT NULL GROUP BY decision, label");
        let decision_labels = labels
            .build()
            .fetch_all(&self.pool)
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
        // The head of each subscription's queue, if due and not leased.
        // SKIP LOCKED lets several workers claim different heads at once;
        // the attempt number is taken here, so no two attempts share one.
        let rows = sqlx::query(
            "UPDATE webhook_messages m SET attempts = m.attempts + 1, locked_until = $2 \
             WHERE m.id IN ( \
                 SELECT h.id FROM webhook_messages h \
                 WHERE h.status = 'pending' AND h.next_attempt_at <= $1 \
                   AND h.subscription = ANY($4) \
                   AND (h.locked_until IS NULL OR h.locked_until <= $1) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_messages o \
                       WHERE o.subscription = h.subscription AND o.status = 'pending' \
                         AND (o.created_at, o.id) < (h.created_at, h.id)) \
                 ORDER BY h.created_at, h.id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING m.id, m.subscription, m.url, m.payload, m.attempts, m.failures",
        )
        .bind(now)
        .bind(now + chrono_duration(lease))
        .bind(i64::from(limit))
        .bind(subscriptions)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    subscription: row.try_get("subscription")?,
                    url: row.try_get("url")?,
                    payload: row.try_get("payload")?,
                    attempt: non_negative(row.try_get::<i32, _>("attempts")?),
                    failures: non_negative(row.try_get::<i32, _>("failures")?),
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (message_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(saturating_i32(delivery.attempt))
        .bind(now)
        .bind(result.status_code.map(i32::from))
        .bind(&result.error)
        .bind(saturating_i32(result.duration_ms))
        .execute(&mut *tx)
        .await?;
        let (status, next) = match (result.delivered(), retry_at) {
            (true, _) => ("delivered", now),
            (false, Some(at)) => ("pending", at),
            (false, None) => ("failed", now),
        };
        // Only the holder of this attempt may settle it.
        sqlx::query(
            "UPDATE webhook_messages SET status = $3, next_attempt_at = $4, locked_until = NULL, \
             failures = CASE WHEN $3 = 'delivered' THEN failures ELSE failures + 1 END, \
             last_status_code = $5, last_error = $6, \
             delivered_at = CASE WHEN $3 = 'delivered' THEN $7 ELSE delivered_at END \
             WHERE id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(&delivery.id)
        .bind(saturating_i32(delivery.attempt))
        .bind(status)
        .bind(next)
        .bind(result.status_code.map(i32::from))
        .bind(&result.error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, subscription, url, event_type, status, attempts, next_attempt_at, \
             last_status_code, last_error, created_at, delivered_at FROM webhook_messages WHERE TRUE",
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
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            let attempt_log = sqlx::query(
                "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts \
                 WHERE message_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptView {
                    attempt: non_negative(a.try_get::<i32, _>("attempt")?),
                    at: a.try_get("at")?,
                    status_code: a
                        .try_get::<Option<i32>, _>("status_code")?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: a.try_get("error")?,
                    duration_ms: non_negative(a.try_get::<i32, _>("duration_ms")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            views.push(DeliveryView {
                next_attempt_at: (status == "pending")
                    .then(|| row.try_get("next_attempt_at"))
                    .transpose()?,
                id,
                subscription: row.try_get("subscription")?,
                url: row.try_get("url")?,
                event_type: row.try_get("event_type")?,
                status,
                attempts: non_negative(row.try_get::<i32, _>("attempts")?),
                last_status_code: row
                    .try_get::<Option<i32>, _>("last_status_code")?
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                delivered_at: row.try_get("delivered_at")?,
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
            "UPDATE webhook_messages SET status = 'pending', failures = 0, next_attempt_at = $2, \
             locked_until = NULL WHERE id = $1 AND status = 'failed'",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if requeued.rows_affected() == 1 {
            return Ok(Some(true));
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM webhook_messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(exists.map(|_| false))
    }

    async fn record_inbound_hook(&self, hook: &InboundHook) -> Result<Recorded, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO inbound_hooks (source, webhook_id, evaluation_id, body, received_at, status) \
             VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT (source, webhook_id) DO NOTHING",
        )
        .bind(&hook.source)
        .bind(&hook.webhook_id)
        .bind(hook.evaluation_id)
        .bind(&hook.body)
        .bind(hook.received_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Recorded::New);
        }
        let evaluation_id: Uuid = sqlx::query_scalar(
            "SELECT evaluation_id FROM inbound_hooks WHERE source = $1 AND webhook_id = $2",
        )
        .bind(&hook.source)
        .bind(&hook.webhook_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Recorded::Duplicate { evaluation_id })
    }

    async fn claim_inbound_hooks(
        &self,
        sources: &[String],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<InboundHook>, StoreError> {
        let rows = sqlx::query(
            "UPDATE inbound_hooks h SET locked_until = $2 WHERE (h.source, h.webhook_id) IN ( \
                 SELECT source, webhook_id FROM inbound_hooks \
                 WHERE status = 'pending' AND source = ANY($4) \
                   AND (locked_until IS NULL OR locked_until <= $1) \
                 ORDER BY received_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING h.source, h.webhook_id, h.evaluation_id, h.body, h.received_at",
        )
        .bind(now)
        .bind(now + chrono_duration(lease))
        .bind(i64::from(limit))
        .bind(sources)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(InboundHook {
                    source: row.try_get("source")?,
                    webhook_id: row.try_get("webhook_id")?,
                    evaluation_id: row.try_get("evaluation_id")?,
                    body: row.try_get("body")?,
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect()
    }

    async fn fail_inbound_hook(&self, hook: &InboundHook, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbound_hooks SET status = 'failed', error = $3, locked_until = NULL \
             WHERE source = $1 AND webhook_id = $2",
        )
        .bind(&hook.source)
        .bind(&hook.webhook_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool_stats(&self) -> (u32, u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        let size = self.pool.size();
        (
            size.saturating_sub(idle),
            idle,
            self.pool.options().get_max_connections(),
        )
    }
}
