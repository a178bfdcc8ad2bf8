//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! types they return, and an API page that works offline (no CDN: the page
//! renders `/openapi.json` itself).

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::evaluations::Page;
use super::problem::{FieldProblem, Problem};
use crate::domain::Decision;
use crate::engine::{Reason, ReasonCode};
use crate::evaluation::{Evaluation, Timings};

/// The body of `POST /v1/evaluations`, as documented. The handler parses the
/// body itself (to name every bad field); a test keeps the two in step.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EvaluationRequestBody {
    /// The Roundtable session id (`rtSessionId`).
    #[schema(max_length = 256)]
    session_id: String,
    /// `checkout`, `account_change`, `login`, `signup`, or any name of `[a-z0-9_.-]`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    event: String,
    user_id: Option<String>,
    /// A non-negative decimal, as a number or a string (kept exactly).
    #[schema(value_type = Option<String>, example = "49.99")]
    amount: Option<String>,
    /// ISO 4217, required with `amount`.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Free-form context, stored and returned as given.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// The action being gated: a string (exact match, ignoring ASCII case) or
    /// `{"match": "exact"|"prefix"|"regex", "pattern": "..."}`.
    #[schema(value_type = Option<Object>)]
    require_action: Option<serde_json::Value>,
    /// How long to wait for `require_action` to appear (capped by the deadline).
    #[schema(maximum = 60000)]
    wait_ms: Option<u64>,
}

/// The body of `POST /v1/hooks/{source}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HookBodyDoc {
    /// e.g. `account.payment_method.updated`; mapped to an event by the source's configuration.
    #[serde(rename = "type")]
    kind: String,
    session_id: String,
    /// Overrides the mapping from `type`.
    event: Option<String>,
    user_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    require_action: Option<serde_json::Value>,
    /// Kept with the evaluation's metadata.
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "riskgate",
        description = "Risk decisions before the money moves: Roundtable session reports through a rules engine, answered allow / review / block. Errors are RFC 9457 problem+json."
    ),
    paths(
        super::evaluations::create,
        super::evaluations::get,
        super::evaluations::list,
        super::reviews::label,
        super::reviews::list,
        super::reviews::get,
        super::reviews::next,
        super::reviews::claim,
        super::reviews::resolve,
        super::reviews::stats,
        super::hooks::receive,
        super::hooks::list_deliveries,
        super::hooks::retry_delivery,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(
        EvaluationRequestBody, Evaluation, Page, Reason, ReasonCode, Decision, Timings, Problem, FieldProblem,
        super::reviews::ReviewPage, super::reviews::ResolveBody, super::reviews::LabelBody,
        crate::review::ReviewItem, crate::review::ReviewDetail, crate::review::AuditEntry,
        crate::review::TimelineEntry, crate::review::LabelRecord, crate::review::Stats,
        crate::review::Percentiles, crate::review::ReviewStatus, crate::review::ReviewOutcome,
        crate::review::Label, HookBodyDoc, super::hooks::HookAccepted,
        crate::webhooks::DeliveryView, crate::webhooks::AttemptView
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "evaluations", description = "Decide on a session, and read past decisions"),
        (name = "reviews", description = "The review queue, labels, and the numbers to tune the policy with"),
        (name = "webhooks", description = "Signed hooks in (Standard Webhooks), and the outbound delivery log"),
        (name = "operations", description = "Health and metrics (no key needed)"),
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

/// `GET /openapi.json`
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// `GET /docs`
pub async fn docs_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::REQUEST_FIELDS;

    #[test]
    fn documented_request_fields_are_the_parsed_ones() {
        let doc: serde_json::Value = serde_json::from_str(&document()).expect("json");
        let properties = doc["components"]["schemas"]["EvaluationRequestBody"]["properties"]
            .as_object()
            .expect("properties");
        let mut documented: Vec<&str> = properties.keys().map(String::as_str).collect();
        let mut parsed = REQUEST_FIELDS.to_vec();
        documented.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(documented, parsed);
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
