//! Webhooks in and out, both signed per the Standard Webhooks specification.
//!
//! Out: a transactional outbox. Messages are written in the same transaction
//! as the verdict or resolution they announce, then a delivery worker (safe
//! with several replicas: claims are leases, `SKIP LOCKED` on PostgreSQL)
//! POSTs them, retrying on a schedule. The `webhook-id` is the same on every
//! attempt, so receivers can deduplicate.
//!
//! In: `POST /v1/hooks/{source}`, authenticated by signature alone. The hook
//! is recorded durably (unique per source and `webhook-id`) before the 202;
//! the evaluation runs in the background and is picked up again after a crash.

mod delivery;
mod inbound;
mod settings;
mod signature;

pub use delivery::{run_delivery_worker, DeliveryWorker};
pub use inbound::{parse_hook_body, run_inbound_worker, HookBody, InboundWorker};
pub use settings::{
    validate as validate_settings, HookSettings, HookSourceSettings, SubscriptionSettings,
    WebhookSettings, EVENT_TYPES,
};
pub use signature::{SignatureError, SigningSecret, TOLERANCE_SECS};

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::Decision;
use crate::evaluation::Evaluation;
use crate::review::ReviewItem;

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// The `webhook-id`: `msg_` and a UUIDv7, the same on every attempt.
    pub id: String,
    pub subscription: String,
    pub url: String,
    pub event_type: String,
    /// The exact body sent (and signed).
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// A message claimed for one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub subscription: String,
    pub url: String,
    pub payload: String,
    /// 1 for the first attempt; never reused for the same message.
    pub attempt: u32,
    /// Failed attempts since the schedule last started (a manual retry restarts it).
    pub failures: u32,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
}

impl AttemptResult {
    pub fn delivered(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A message as `GET /v1/webhook-deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub subscription: String,
    pub url: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub attempt_log: Vec<AttemptView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
}

/// Filters for listing deliveries, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub limit: u32,
}

/// An inbound hook as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundHook {
    pub source: String,
    pub webhook_id: String,
    /// Assigned when the hook is recorded, so the 202 can name it.
    pub evaluation_id: Uuid,
    pub body: String,
    pub received_at: DateTime<Utc>,
}

/// Recording an inbound hook found it new, or a repeat of an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate { evaluation_id: Uuid },
}

/// Which subscriptions get which messages, and what they say.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    subscriptions: Vec<SubscriptionSettings>,
}

impl Outbox {
    pub fn new(subscriptions: Vec<SubscriptionSettings>) -> Self {
        Self { subscriptions }
    }

    /// `evaluation.completed` always; `evaluation.review_required` and
    /// `evaluation.blocked` by decision.
    pub fn for_evaluation(&self, evaluation: &Evaluation) -> Vec<OutboxMessage> {
        let mut types = vec!["evaluation.completed"];
        match evaluation.decision {
            Decision::Review => types.push("evaluation.review_required"),
            Decision::Block => types.push("evaluation.blocked"),
            Decision::Allow => {}
        }
        let data = serde_json::to_value(evaluation).unwrap_or(Value::Null);
        self.messages(&types, &data, evaluation.created_at)
    }

    pub fn for_review(&self, item: &ReviewItem) -> Vec<OutboxMessage> {
        let data = serde_json::to_value(item).unwrap_or(Value::Null);
        self.messages(
            &["review.resolved"],
            &data,
            item.resolved_at.unwrap_or(item.created_at),
        )
    }

    fn messages(&self, types: &[&str], data: &Value, at: DateTime<Utc>) -> Vec<OutboxMessage> {
        let mut out = Vec::new();
        for subscription in &self.subscriptions {
            for event_type in types
                .iter()
                .filter(|t| subscription.events.iter().any(|e| e == *t))
            {
                let id = format!("msg_{}", Uuid::now_v7().simple());
                let payload = serde_json::json!({
                    "type": event_type,
                    "id": id,
                    "created_at": at,
                    "data": data,
                });
                out.push(OutboxMessage {
                    id,
                    subscription: subscription.key(),
                    url: subscription.url.clone(),
                    event_type: (*event_type).to_owned(),
                    payload: payload.to_string(),
                    created_at: at,
                });
            }
        }
        out
    }

    /// Signing secrets by subscription key.
    pub fn secrets(&self) -> HashMap<String, SigningSecret> {
        self.subscriptions
            .iter()
            .filter_map(|s| Some((s.key(), s.signing_secret().ok()?)))
            .collect()
    }
}
