//! Inbound hooks: the body's shape, and the worker that evaluates recorded
//! hooks in the background (after a crash too, and on any replica).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use super::{HookSourceSettings, InboundHook};
use crate::domain::{EvaluationRequest, FieldError, MAX_WAIT_MS};
use crate::evaluation::{EvaluateCall, EvaluateError, Evaluator};
use crate::store::{Store, StoreError};

/// What a hook asks for, beyond the evaluation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookBody {
    pub kind: String,
}

const FIELDS: &[&str] = &[
    "type",
    "session_id",
    "event",
    "user_id",
    "require_action",
    "data",
];

/// Reads `{type, session_id, event?, user_id?, require_action?, data?}`; the
/// event comes from the source's `type` map when absent.
pub fn parse_hook_body(
    body: &[u8],
    source: &HookSourceSettings,
) -> Result<(HookBody, EvaluationRequest), Vec<FieldError>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| vec![FieldError::new("", format!("body is not JSON: {e}"))])?;
    let Some(object) = value.as_object() else {
        return Err(vec![FieldError::new("", "body must be a JSON object")]);
    };
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| FieldError::new(k.as_str(), "is not a known field"))
        .collect();
    let kind = match object.get("type").and_then(Value::as_str) {
        Some(kind) if !kind.trim().is_empty() && kind.len() <= 128 && !kind.contains('\0') => {
            kind.to_owned()
        }
        _ => {
            errors.push(FieldError::new(
                "type",
                "is required: a non-empty string of at most 128 bytes",
            ));
            String::new()
        }
    };
    let event = match object.get("event") {
        Some(Value::String(event)) => Some(event.clone()),
        None | Some(Value::Null) => source
            .events
            .get(&kind)
            .or(source.default_event.as_ref())
            .cloned(),
        Some(_) => {
            errors.push(FieldError::new("event", "must be a string"));
            None
        }
    };
    if event.is_none() && !errors.iter().any(|e| e.field == "event") && !kind.is_empty() {
        errors.push(FieldError::new(
            "event",
            format!(
                "is required: type {kind:?} maps to no event for source {:?}",
                source.name
            ),
        ));
    }
    let mut request = Map::new();
    for field in ["session_id", "user_id", "require_action"] {
        if let Some(value) = object.get(field) {
            request.insert(field.to_owned(), value.clone());
        }
    }
    if object.get("require_action").is_some_and(|v| !v.is_null()) {
        // Nobody waits on a hook: wait as long as the deadline allows.
        request.insert("wait_ms".to_owned(), json!(MAX_WAIT_MS));
    }
    request.insert("event".to_owned(), json!(event.unwrap_or_default()));
    let mut metadata = Map::new();
    metadata.insert("hook_source".to_owned(), json!(source.name));
    metadata.insert("hook_type".to_owned(), json!(kind));
    if let Some(data) = object.get("data").filter(|d| !d.is_null()) {
        metadata.insert("data".to_owned(), data.clone());
    }
    request.insert("metadata".to_owned(), Value::Object(metadata));
    match EvaluationRequest::parse(&Value::Object(request)) {
        Ok(parsed) if errors.is_empty() => Ok((HookBody { kind }, parsed)),
        Ok(_) => Err(errors),
        Err(more) => {
            // `event` was filled in above; if it is missing, that is already named.
            let named_event = errors.iter().any(|e| e.field == "event");
            errors.extend(
                more.into_iter()
                    .filter(|e| !(named_event && e.field == "event")),
            );
            Err(errors)
        }
    }
}

/// Evaluates recorded hooks.
pub struct InboundWorker {
    store: Arc<dyn Store>,
    evaluator: Arc<Evaluator>,
    sources: Vec<HookSourceSettings>,
    wake: Arc<Notify>,
    poll: Duration,
    lease: Duration,
}

impl InboundWorker {
    pub fn new(
        store: Arc<dyn Store>,
        evaluator: Arc<Evaluator>,
        sources: Vec<HookSourceSettings>,
        wake: Arc<Notify>,
        poll: Duration,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            evaluator,
            sources,
            wake,
            poll,
            lease,
        }
    }

    /// One round: claim pending hooks and evaluate them. Returns how many.
    pub async fn run_once(&self) -> usize {
        if self.sources.is_empty() {
            return 0;
        }
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
        let claimed = match self
            .store
            .claim_inbound_hooks(&names, Utc::now(), self.lease, 8)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim inbound hooks");
                return 0;
            }
        };
        let count = claimed.len();
        futures_util::future::join_all(claimed.into_iter().map(|hook| self.evaluate(hook))).await;
        count
    }

    #[tracing::instrument(name = "hook.evaluate", skip_all, fields(source = %hook.source, webhook_id = %hook.webhook_id))]
    async fn evaluate(&self, hook: InboundHook) {
        let parsed = self
            .sources
            .iter()
            .find(|s| s.name == hook.source)
            .ok_or_else(|| "hook source is no longer configured".to_owned())
            .and_then(|source| {
                parse_hook_body(hook.body.as_bytes(), source).map_err(|errors| {
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            });
        let request = match parsed {
            Ok((_, request)) => request,
            Err(error) => {
                tracing::warn!(%error, "inbound hook can no longer be evaluated");
                if let Err(e) = self.store.fail_inbound_hook(&hook, &error).await {
                    tracing::warn!(error = %e, "could not mark the hook failed");
                }
                return;
            }
        };
        let call = EvaluateCall {
            request,
            request_id: Some(format!("hook:{}:{}", hook.source, hook.webhook_id)),
            idempotency: None,
            id: Some(hook.evaluation_id),
            inbound: Some(hook),
        };
        match self.evaluator.evaluate(call).await {
            Ok(_) => {}
            // Another replica finished it first (its lease had run out).
            Err(EvaluateError::Store(StoreError::Duplicate)) => {}
            // Left pending: its lease runs out and it is tried again.
            Err(error) => tracing::warn!(%error, "inbound hook evaluation failed; will retry"),
        }
    }
}

/// Runs the worker until the task is dropped; wakes early when a hook arrives.
pub async fn run_inbound_worker(worker: Arc<InboundWorker>) {
    loop {
        if worker.run_once().await == 0 {
            tokio::select! {
                _ = tokio::time::sleep(worker.poll) => {}
                _ = worker.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn source() -> HookSourceSettings {
        HookSourceSettings {
            name: "accounts".into(),
            secret: SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            events: [(
                "account.payment_method.updated".to_owned(),
                "account_change".to_owned(),
            )]
            .into(),
            default_event: None,
        }
    }

    #[test]
    fn maps_type_to_event_and_keeps_the_rest_as_metadata() {
        let body = br#"{"type": "account.payment_method.updated", "session_id": "s1", "user_id": "u1", "data": {"last4": "4242"}}"#;
        let (hook, request) = parse_hook_body(body, &source()).expect("valid");
        assert_eq!(hook.kind, "account.payment_method.updated");
        assert_eq!(request.event.as_str(), "account_change");
        assert_eq!(request.session_id.as_str(), "s1");
        let metadata = request.metadata.expect("metadata");
        assert_eq!(metadata["hook_source"], "accounts");
        assert_eq!(metadata["data"]["last4"], "4242");
    }

    #[test]
    fn an_explicit_event_wins_and_missing_ones_are_named() {
        let (_, request) = parse_hook_body(
            br#"{"type": "x", "session_id": "s", "event": "login"}"#,
            &source(),
        )
        .expect("valid");
        assert_eq!(request.event.as_str(), "login");
        let fields = |body: &[u8]| -> Vec<String> {
            parse_hook_body(body, &source())
                .expect_err("invalid")
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(
            fields(br#"{"type": "unmapped", "session_id": "s"}"#),
            ["event"]
        );
        assert_eq!(
            fields(br#"{"session_id": "s", "event": "login"}"#),
            ["type"]
        );
        assert_eq!(
            fields(br#"{"type": "x", "event": "login", "extra": 1}"#),
            ["extra", "session_id"]
        );
        assert_eq!(fields(b"[]"), [""]);
    }
}
