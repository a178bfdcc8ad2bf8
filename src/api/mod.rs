//! The HTTP API: routes, authentication, and the mapping of errors to
//! problem+json. Handlers are thin: parse, call, answer.

mod auth;
mod body;
mod evaluations;
mod health;
mod hooks;
pub mod openapi;
pub mod problem;
mod query;
mod request_id;
mod reviews;

pub use auth::{ApiKeys, Caller};
pub use hooks::HookSources;
pub use request_id::{trace_request, RequestId};

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};

use std::sync::Arc;

use crate::evaluation::Evaluator;
use crate::metrics::Metrics;
use crate::review::Reviews;
use problem::ApiError;

/// What handlers share.
pub struct AppState {
    pub evaluator: Arc<Evaluator>,
    pub reviews: Reviews,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub hooks: HookSources,
    /// Wakes the inbound worker when a hook is recorded.
    pub hook_wake: Arc<tokio::sync::Notify>,
}

/// Registers every route.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/openapi.json", web::get().to(openapi::openapi_json))
        .route("/docs", web::get().to(openapi::docs_page))
        // Signed hooks authenticate by signature, so they sit outside the
        // bearer-key scope (registered first: first match wins).
        .service(post_only("/v1/hooks/{source}", hooks::receive))
        .service(
            web::scope("/v1")
                .wrap(from_fn(auth::require_api_key))
                .service(
                    web::resource("/evaluations")
                        .route(web::post().to(evaluations::create))
                        .route(web::get().to(evaluations::list))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(
                    web::resource("/evaluations/{id}")
                        .route(web::get().to(evaluations::get))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(post_only("/evaluations/{id}/label", reviews::label))
                .service(
                    web::resource("/reviews")
                        .route(web::get().to(reviews::list))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(post_only("/reviews/next", reviews::next))
                .service(
                    web::resource("/reviews/{id}")
                        .route(web::get().to(reviews::get))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(post_only("/reviews/{id}/claim", reviews::claim))
                .service(post_only("/reviews/{id}/resolve", reviews::resolve))
                .service(
                    web::resource("/webhook-deliveries")
                        .route(web::get().to(hooks::list_deliveries))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(post_only(
                    "/webhook-deliveries/{id}/retry",
                    hooks::retry_delivery,
                ))
                .service(
                    web::resource("/stats")
                        .route(web::get().to(reviews::stats))
                        .default_service(web::to(method_not_allowed)),
                ),
        )
        .default_service(web::to(route_not_found));
}

fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
