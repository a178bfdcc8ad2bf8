//! `POST /v1/hooks/{source}` (signed, no bearer key) and the webhook delivery log.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::body::read_body;
use super::problem::{ApiError, Problem};
use super::query;
use super::AppState;
use crate::domain::FieldError;
use crate::webhooks::{
    parse_hook_body, DeliveryFilter, DeliveryView, HookSettings, HookSourceSettings, InboundHook,
    Recorded, SigningSecret,
};

/// The configured senders, with their secrets parsed once.
pub struct HookSources {
    sources: Vec<(HookSourceSettings, Option<SigningSecret>)>,
}

impl HookSources {
    pub fn new(settings: &HookSettings) -> Self {
        Self {
            sources: settings
                .sources
                .iter()
                .map(|s| (s.clone(), s.signing_secret().ok()))
                .collect(),
        }
    }

    fn find(&self, name: &str) -> Option<&(HookSourceSettings, Option<SigningSecret>)> {
        self.sources.iter().find(|(s, _)| s.name == name)
    }
}

/// The answer to an inbound hook.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HookAccepted {
    /// The evaluation this hook makes (or made): `GET /v1/evaluations/{id}`
    /// finds it once evaluated.
    pub evaluation_id: Uuid,
    /// `pending` for a new hook; `duplicate` when this `webhook-id` was seen before.
    pub status: &'static str,
}

/// `POST /v1/hooks/{source}`
#[utoipa::path(
    post, path = "/v1/hooks/{source}", tag = "webhooks", operation_id = "receive_hook",
    summary = "Receive a signed account-change hook (Standard Webhooks); evaluates in the background",
    description = "Authenticated by the webhook-signature alone (no bearer key). Answers once the hook is durably recorded; a repeated webhook-id answers with the first hook's evaluation.",
    params(
        ("source" = String, Path, description = "A configured [[hooks.sources]] name"),
        ("webhook-id" = String, Header), ("webhook-timestamp" = String, Header), ("webhook-signature" = String, Header),
    ),
    request_body(content = crate::api::openapi::HookBodyDoc, content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded; evaluating", body = HookAccepted),
        (status = 200, description = "A repeat of an earlier hook", body = HookAccepted),
        (status = 401, description = "Bad or missing signature, or a timestamp more than 5 minutes off", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown source", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn receive(
    req: HttpRequest,
    source: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (settings, secret) = state
        .hooks
        .find(&source)
        .ok_or(ApiError::NotFound("hook source"))?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let secret = secret.as_ref().ok_or(ApiError::NotFound("hook source"))?;
    secret
        .verify(
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
            Utc::now().timestamp(),
        )
        .map_err(ApiError::BadSignature)?;
    let webhook_id = header("webhook-id").unwrap_or_default().trim();
    if webhook_id.is_empty() || webhook_id.len() > 255 || webhook_id.chars().any(char::is_control) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "webhook-id",
            "must be 1 to 255 characters",
        )]));
    }
    parse_hook_body(&body, settings).map_err(ApiError::Validation)?;
    let hook = InboundHook {
        source: settings.name.clone(),
        webhook_id: webhook_id.to_owned(),
        evaluation_id: Uuid::now_v7(),
        // Parsed above, so it is UTF-8 JSON.
        body: String::from_utf8_lossy(&body).into_owned(),
        received_at: Utc::now(),
    };
    let evaluator = &state.evaluator;
    let recorded = evaluator
        .bounded(evaluator.store().record_inbound_hook(&hook))
        .await?;
    Ok(match recorded {
        Recorded::New => {
            state.hook_wake.notify_one();
            HttpResponse::Accepted().json(HookAccepted {
                evaluation_id: hook.evaluation_id,
                status: "pending",
            })
        }
        Recorded::Duplicate { evaluation_id } => HttpResponse::Ok().json(HookAccepted {
            evaluation_id,
            status: "duplicate",
        }),
    })
}

/// `GET /v1/webhook-deliveries`
#[utoipa::path(
    get, path = "/v1/webhook-deliveries", tag = "webhooks", operation_id = "list_webhook_deliveries",
    summary = "Outbound messages, newest first, with their attempts and last errors",
    params(
        ("status" = Option<String>, Query, description = "pending, delivered or failed"),
        ("event_type" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
    ),
    responses(
        (status = 200, description = "Messages", body = Vec<DeliveryView>),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = DeliveryFilter {
        limit: query::DEFAULT_LIMIT,
        ..DeliveryFilter::default()
    };
    let mut errors = Vec::new();
    for (key, value) in query::pairs(req.query_string(), &mut errors) {
        match key.as_str() {
            "status" if ["pending", "delivered", "failed"].contains(&value.as_str()) => {
                filter.status = Some(value)
            }
            "status" => errors.push(FieldError::new(
                "status",
                "must be pending, delivered or failed",
            )),
            "event_type" => filter.event_type = Some(value),
            "limit" => match query::limit(&value) {
                Ok(n) => filter.limit = n,
                Err(e) => errors.push(e),
            },
            other => errors.push(query::unknown(other)),
        }
    }
    let filter = query::checked(filter, errors)?;
    let evaluator = &state.evaluator;
    let deliveries = evaluator
        .bounded(evaluator.store().list_deliveries(&filter))
        .await?;
    Ok(HttpResponse::Ok().json(deliveries))
}

/// `POST /v1/webhook-deliveries/{id}/retry`
#[utoipa::path(
    post, path = "/v1/webhook-deliveries/{id}/retry", tag = "webhooks", operation_id = "retry_webhook_delivery",
    summary = "Re-queue a failed message (its retry schedule starts again)",
    params(("id" = String, Path, description = "The webhook-id")),
    responses(
        (status = 202, description = "Re-queued"),
        (status = 404, description = "No such message", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The message has not failed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn retry_delivery(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Message ids are ours (`msg_` and 32 hex digits); anything else names nothing.
    if id.is_empty() || id.len() > 64 || id.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(ApiError::NotFound("webhook delivery"));
    }
    let evaluator = &state.evaluator;
    match evaluator
        .bounded(evaluator.store().retry_delivery(&id, Utc::now()))
        .await?
    {
        Some(true) => Ok(HttpResponse::Accepted()
            .json(serde_json::json!({"id": id.as_str(), "status": "pending"}))),
        Some(false) => Err(ApiError::NotRetryable),
        None => Err(ApiError::NotFound("webhook delivery")),
    }
}
