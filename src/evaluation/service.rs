//! The evaluate path: fetch the report, apply the engine, store the verdict,
//! and only then answer.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Evaluation, EvaluationFilter, Timings};
use crate::domain::EvaluationRequest;
use crate::engine;
use crate::policy::Policy;
use crate::roundtable::ReportSource;
use crate::store::{Store, StoreError};

/// Everything an evaluation needs, shared by every request.
pub struct Evaluator {
    source: Arc<dyn ReportSource>,
    policy: Arc<Policy>,
    store: Arc<dyn Store>,
    deadline: Duration,
}

impl Evaluator {
    pub fn new(
        source: Arc<dyn ReportSource>,
        policy: Arc<Policy>,
        store: Arc<dyn Store>,
        deadline: Duration,
    ) -> Self {
        Self {
            source,
            policy,
            store,
            deadline,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Decides on one session. Upstream trouble never fails this: it gives a
    /// degraded verdict by the policy's fail mode. Only storage can fail it.
    #[tracing::instrument(name = "evaluate", skip_all, fields(session_id = %request.session_id, event = %request.event))]
    pub async fn evaluate(&self, request: EvaluationRequest) -> Result<Evaluation, StoreError> {
        let started = Instant::now();
        let fetched = self
            .source
            .fetch(&request.session_id, started + self.deadline)
            .await;
        let upstream_ms = elapsed_ms(started);

        let (verdict, degraded_reason, attempts, shape, snapshot) = match fetched {
            Ok(fetched) => (
                engine::evaluate(&self.policy, &fetched.report, &request.event),
                None,
                fetched.attempts,
                Some(fetched.report.shape.as_str().to_owned()),
                Some(fetched.raw),
            ),
            Err(error) => {
                tracing::warn!(error = %error, "evaluating without a report");
                let verdict = engine::decide_without_report(
                    &self.policy,
                    &request.event,
                    error.failure(),
                    &error.to_string(),
                );
                (verdict, Some(error.code().to_owned()), 0, None, None)
            }
        };

        let evaluation = Evaluation {
            id: Uuid::now_v7(),
            created_at: now_millis(),
            session_id: request.session_id.as_str().to_owned(),
            event: request.event.as_str().to_owned(),
            user_id: request.user_id.map(|u| u.as_str().to_owned()),
            amount: request.amount.map(|a| a.as_str().to_owned()),
            currency: request.currency.map(|c| c.as_str().to_owned()),
            metadata: request.metadata,
            decision: verdict.decision,
            score: verdict.score,
            reasons: verdict.reasons,
            policy_version: verdict.policy_version,
            degraded: degraded_reason.is_some(),
            degraded_reason,
            session_replay_url: verdict.session_replay_url,
            timings: Timings {
                upstream_attempts: attempts,
                upstream_ms,
                total_ms: elapsed_ms(started),
            },
            report_shape: shape,
            report_snapshot: snapshot,
        };
        self.store.insert_evaluation(&evaluation).await?;
        tracing::info!(
            id = %evaluation.id,
            decision = %evaluation.decision,
            score = evaluation.score,
            degraded = evaluation.degraded,
            "evaluated"
        );
        Ok(evaluation)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Evaluation>, StoreError> {
        self.store.get_evaluation(id).await
    }

    pub async fn list(&self, filter: &EvaluationFilter) -> Result<Vec<Evaluation>, StoreError> {
        self.store.list_evaluations(filter).await
    }
}

fn elapsed_ms(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// Millisecond precision, the finest both backends keep, so that a cursor
/// made from a returned evaluation matches the stored row exactly.
fn now_millis() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
