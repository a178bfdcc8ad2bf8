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
use uuid::Uuid;

use crate::config::DatabaseSettings;
use crate::evaluation::{Evaluation, EvaluationFilter};

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
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
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

/// Where evaluations live.
#[async_trait]
pub trait Store: Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Stores one evaluation, all or nothing.
    async fn insert_evaluation(&self, evaluation: &Evaluation) -> Result<(), StoreError>;
    async fn get_evaluation(&self, id: Uuid) -> Result<Option<Evaluation>, StoreError>;
    /// Newest first, at most `filter.limit` rows.
    async fn list_evaluations(
        &self,
        filter: &EvaluationFilter,
    ) -> Result<Vec<Evaluation>, StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
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
        })
    }
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
