//! Liveness, readiness and metrics, outside authentication.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::ApiError;
use super::AppState;
use crate::metrics;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers within the database bound.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let evaluator = &state.evaluator;
    evaluator.bounded(evaluator.store().ping()).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (in_use, idle, max) = state.evaluator.store().pool_stats();
    state.metrics.set_pool(in_use, idle, max);
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(state.metrics.encode())
}
