//! Liveness, readiness and metrics, outside authentication.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::{ApiError, Problem};
use super::AppState;
use crate::metrics;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers within the database bound.
#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness: the database answers",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let evaluator = &state.evaluator;
    evaluator.bounded(evaluator.store().ping()).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics (OpenMetrics text)",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (in_use, idle, max) = state.evaluator.store().pool_stats();
    state.metrics.set_pool(in_use, idle, max);
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(state.metrics.encode())
}
