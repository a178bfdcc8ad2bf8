//! The evaluate path: claim the idempotency key, fetch the report (waiting
//! for the gated action if asked), apply the engine, store the verdict, and
//! only then answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Evaluation, EvaluationFilter, Timings};
use crate::domain::{EvaluationRequest, RequiredAction};
use crate::engine::{self, Reason, ReasonCode};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::roundtable::{FetchError, FetchedReport, ReportSource};
use crate::store::{Claim, IdempotencyKey, NewEvaluation, Store, StoreError};
use crate::webhooks::{InboundHook, Outbox};

/// Bounds the evaluator works within.
#[derive(Debug, Clone, Copy)]
pub struct EvaluatorLimits {
    /// Fetching (retries and waiting for an action included) ends by then.
    pub deadline: Duration,
    /// Longest any one database call may take before answering 503.
    pub database_timeout: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
}

/// Why an evaluation could not be answered with a verdict.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being evaluated")]
    IdempotencyInProgress,
}

/// A verdict, fresh or replayed for a repeated idempotency key.
#[derive(Debug)]
pub enum Outcome {
    Created(Evaluation),
    Replayed(Evaluation),
}

/// One call to evaluate, as the API (or the inbound hook worker) hands it over.
pub struct EvaluateCall {
    pub request: EvaluationRequest,
    pub request_id: Option<String>,
    pub idempotency: Option<IdempotencyKey>,
    /// A pre-assigned id (inbound hooks answer with it before evaluating).
    pub id: Option<Uuid>,
    /// The inbound hook this evaluation answers.
    pub inbound: Option<InboundHook>,
}

/// Everything an evaluation needs, shared by every request.
pub struct Evaluator {
    source: Arc<dyn ReportSource>,
    policy: Arc<Policy>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    limits: EvaluatorLimits,
}

impl Evaluator {
    pub fn new(
        source: Arc<dyn ReportSource>,
        policy: Arc<Policy>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        outbox: Arc<Outbox>,
        limits: EvaluatorLimits,
    ) -> Self {
        Self {
            source,
            policy,
            store,
            metrics,
            outbox,
            limits,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs a database call within the configured bound.
    pub async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        crate::store::bounded(self.limits.database_timeout, call).await
    }

    /// How long a claimed key stays locked before another request may take
    /// it over: the whole evaluation's worst case, with room to spare.
    fn lease(&self) -> Duration {
        self.limits.deadline + self.limits.database_timeout * 4 + Duration::from_secs(5)
    }

    /// Evaluates once per idempotency key: a repeat with the same body
    /// replays the stored verdict; concurrent repeats wait for the first.
    #[tracing::instrument(name = "evaluate", skip_all, fields(session_id = %call.request.session_id, event = %call.request.event))]
    pub async fn evaluate(&self, call: EvaluateCall) -> Result<Outcome, EvaluateError> {
        let Some(key) = call.idempotency.clone() else {
            return Ok(Outcome::Created(self.evaluate_once(call, None).await?));
        };
        // Wait about as long as a first request normally takes; past that,
        // answer 409 and let the caller retry rather than hold the checkout.
        let give_up = Instant::now() + self.limits.deadline + self.limits.database_timeout * 2;
        let mut pause = Duration::from_millis(20);
        // Claim first; while another request holds the key, only peek (a
        // read takes no lock that the holder's completion would queue behind).
        let mut claim_next = true;
        loop {
            let found = if claim_next {
                self.bounded(self.store.claim_idempotency_key(
                    &key,
                    Utc::now(),
                    self.lease(),
                    self.limits.idempotency_ttl,
                ))
                .await?
            } else {
                self.bounded(self.store.peek_idempotency_key(&key, Utc::now()))
                    .await?
            };
            claim_next = false;
            match found {
                Claim::Vacant => claim_next = true,
                Claim::Acquired => {
                    let result = self.evaluate_once(call, Some(&key)).await;
                    if result.is_err() {
                        // Let a retry run now rather than after the lease.
                        let released = self.bounded(self.store.release_idempotency_key(&key)).await;
                        if let Err(error) = released {
                            tracing::warn!(%error, "could not release the idempotency key; it frees itself when its lease ends");
                        }
                    }
                    return Ok(Outcome::Created(result?));
                }
                Claim::Completed(id) => {
                    let stored = self.bounded(self.store.get_evaluation(id)).await?;
                    let evaluation = stored.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "idempotency key names missing evaluation {id}"
                        ))
                    })?;
                    self.metrics.idempotent_replays.inc();
                    return Ok(Outcome::Replayed(evaluation));
                }
                Claim::Mismatch => return Err(EvaluateError::IdempotencyKeyReused),
                Claim::InProgress if Instant::now() + pause < give_up => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Claim::InProgress => return Err(EvaluateError::IdempotencyInProgress),
            }
        }
    }

    async fn evaluate_once(
        &self,
        call: EvaluateCall,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Evaluation, StoreError> {
        let started = Instant::now();
        let request = call.request;
        let (fetched, note) = self.fetch(&request, started).await;
        let upstream_ms = elapsed_ms(started);

        let (mut verdict, degraded_reason, attempts, shape, snapshot) = match fetched {
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
        verdict.reasons.extend(note);

        let evaluation = Evaluation {
            id: call.id.unwrap_or_else(Uuid::now_v7),
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
            request_id: call.request_id,
        };
        let outbox = self.outbox.for_evaluation(&evaluation);
        let new = NewEvaluation {
            evaluation: &evaluation,
            idempotency,
            inbound: call.inbound.as_ref(),
            outbox: &outbox,
        };
        self.bounded(self.store.insert_evaluation(&new)).await?;
        self.metrics
            .record_evaluation(&self.policy, &evaluation, started.elapsed());
        tracing::info!(
            id = %evaluation.id,
            decision = %evaluation.decision,
            score = evaluation.score,
            degraded = evaluation.degraded,
            "evaluated"
        );
        Ok(evaluation)
    }

    /// Fetches the report; with `require_action`, polls with backoff until
    /// the action shows or the wait (capped by the deadline) runs out, then
    /// decides on the latest report there is, saying so in a reason.
    async fn fetch(
        &self,
        request: &EvaluationRequest,
        started: Instant,
    ) -> (Result<FetchedReport, FetchError>, Option<Reason>) {
        let deadline = started + self.limits.deadline;
        let Some(required) = &request.require_action else {
            return (self.source.fetch(&request.session_id, deadline).await, None);
        };
        let wait_until = started + request.wait.unwrap_or_default().min(self.limits.deadline);
        let mut latest: Option<FetchedReport> = None;
        let mut polls = 0u32;
        let mut pause = Duration::from_millis(50);
        loop {
            polls += 1;
            match self.source.fetch(&request.session_id, deadline).await {
                Ok(fetched) if has_action(&fetched, required) => {
                    let reason = Reason::note(
                        ReasonCode::RequiredActionSeen,
                        format!(
                            "required action {:?} found on poll {polls}",
                            required.pattern
                        ),
                    );
                    return (Ok(fetched), Some(reason));
                }
                Ok(fetched) => latest = Some(fetched),
                // A live session may not be known upstream yet: keep waiting.
                Err(FetchError::NotFound) if latest.is_none() => {}
                Err(error) if latest.is_none() => return (Err(error), None),
                Err(error) => tracing::warn!(%error, "poll failed; keeping the previous report"),
            }
            if Instant::now() + pause >= wait_until {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        let waited = started.elapsed().as_millis();
        let reason = Reason::note(
            ReasonCode::RequiredActionMissing,
            format!(
                "required action {:?} not in the report after {polls} polls ({waited} ms); decided on what was there",
                required.pattern
            ),
        );
        match latest {
            Some(fetched) => (Ok(fetched), Some(reason)),
            None => (Err(FetchError::NotFound), Some(reason)),
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Evaluation>, StoreError> {
        self.bounded(self.store.get_evaluation(id)).await
    }

    pub async fn list(&self, filter: &EvaluationFilter) -> Result<Vec<Evaluation>, StoreError> {
        self.bounded(self.store.list_evaluations(filter)).await
    }
}

fn has_action(fetched: &FetchedReport, required: &RequiredAction) -> bool {
    fetched
        .report
        .actions
        .iter()
        .any(|action| required.matcher.matches(&action.text))
}

fn elapsed_ms(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// Millisecond precision, the finest both backends keep, so that a cursor
/// made from a returned evaluation matches the stored row exactly.
fn now_millis() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
