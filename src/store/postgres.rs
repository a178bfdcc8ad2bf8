//! PostgreSQL: the production backend.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{
    chrono_duration, claim_from, Claim, EncodedJson, EvaluationRow, IdempotencyKey, Store,
    StoreError,
};
use crate::evaluation::{Evaluation, EvaluationFilter};

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

    #[tracing::instrument(name = "store.insert_evaluation", skip_all, fields(id = %evaluation.id))]
    async fn insert_evaluation(
        &self,
        evaluation: &Evaluation,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(), StoreError> {
        let json = EncodedJson::of(evaluation)?;
        let t = &evaluation.timings;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO evaluations (id, created_at, session_id, event, user_id, amount, currency, \
             metadata, decision, score, reasons, policy_version, degraded, degraded_reason, \
             session_replay_url, upstream_attempts, upstream_ms, total_ms, report_shape, report_snapshot, \
             request_id) \
             VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8::jsonb, $9, $10, $11::jsonb, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20::json, $21)",
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
        .execute(&mut *tx)
        .await?;
        if let Some(key) = idempotency {
            let done = sqlx::query(
                "UPDATE idempotency_keys SET evaluation_id = $1 \
                 WHERE scope = $2 AND key = $3 AND request_hash = $4 AND evaluation_id IS NULL",
            )
            .bind(evaluation.id)
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
