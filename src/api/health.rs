//! Liveness and readiness, outside authentication.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::ApiError;
use super::AppState;
use crate::store::StoreError;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers, within a second.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ping = state.evaluator.store().ping();
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        Ok(Err(error)) => Err(ApiError::Store(StoreError::Unavailable(match error {
            StoreError::Unavailable(e) | StoreError::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        }))),
        Err(_) => Err(ApiError::Store(StoreError::Unavailable(
            sqlx::Error::PoolTimedOut,
        ))),
    }
}
