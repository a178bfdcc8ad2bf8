//! `/v1/evaluations`: thin handlers that parse, call the evaluator, answer.

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::Caller;
use super::body::read_json;
use super::openapi::EvaluationRequestBody;
use super::problem::{ApiError, Problem};
use super::query;
use super::request_id::RequestId;
use super::AppState;
use crate::domain::{Decision, EvaluationRequest, FieldError};
use crate::evaluation::{EvaluateCall, Evaluation, EvaluationFilter, Outcome};
use crate::store::IdempotencyKey;

/// `POST /v1/evaluations`
#[utoipa::path(
    post,
    path = "/v1/evaluations", operation_id = "create_evaluation",
    tag = "evaluations",
    summary = "Evaluate a session: allow, review or block",
    description = "Fetches the Roundtable session report, applies the policy, stores the verdict and returns it. \
        Upstream trouble never fails the call: the verdict is then `degraded` and decided by the policy's fail mode.",
    request_body(content = EvaluationRequestBody, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key and body return the stored verdict (24 h by default)"),
        ("X-Request-Id" = Option<String>, Header, description = "Echoed back and stored; made when absent"),
    ),
    responses(
        (status = 200, description = "The stored evaluation", body = Evaluation,
            headers(
                ("Location" = String, description = "The evaluation's URL"),
                ("Idempotent-Replayed" = String, description = "`true` when replayed for a repeated Idempotency-Key"),
            )),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same Idempotency-Key still in progress (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (Retry-After); nothing stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "api.create_evaluation", skip_all)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let idempotency = idempotency_key(&req, &body)?;
    let request = EvaluationRequest::parse(&body).map_err(ApiError::Validation)?;
    let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
    let outcome = state
        .evaluator
        .evaluate(EvaluateCall {
            request,
            request_id,
            idempotency,
            id: None,
            inbound: None,
        })
        .await?;
    let (evaluation, replayed) = match outcome {
        Outcome::Created(evaluation) => (evaluation, false),
        Outcome::Replayed(evaluation) => (evaluation, true),
    };
    let mut response = HttpResponse::Ok();
    response.insert_header((
        header::LOCATION,
        format!("/v1/evaluations/{}", evaluation.id),
    ));
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(&evaluation))
}

/// Set on an answer replayed for a repeated `Idempotency-Key` (as Stripe does).
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, scoped to the caller and bound to a hash of
/// the body (canonical JSON: keys sorted, so formatting does not matter).
fn idempotency_key(req: &HttpRequest, body: &Value) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )])
        })?;
    let scope = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    let hash: String = Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(IdempotencyKey {
        scope,
        key: key.to_owned(),
        request_hash: hash,
    }))
}

#[derive(Serialize)]
struct WithReport<'a> {
    #[serde(flatten)]
    evaluation: &'a Evaluation,
    /// The upstream report as served; `null` for a degraded evaluation.
    report: Option<Value>,
}

/// `GET /v1/evaluations/{id}` (`?include=report` adds the stored report).
#[utoipa::path(
    get,
    path = "/v1/evaluations/{id}", operation_id = "get_evaluation",
    tag = "evaluations",
    summary = "One evaluation",
    params(
        ("id" = Uuid, Path, description = "Evaluation id"),
        ("include" = Option<String>, Query, description = "`report` adds the upstream report as served, under `report`"),
    ),
    responses(
        (status = 200, description = "The evaluation", body = Evaluation),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "api.get_evaluation", skip_all)]
pub async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A malformed id names no evaluation: 404, as for an unknown one.
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("evaluation"))?;
    let mut include_report = false;
    for (key, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("include", "report") => include_report = true,
            ("include", _) => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "include",
                    "the only value is \"report\"",
                )]))
            }
            (other, _) => return Err(unknown_parameter(other)),
        }
    }
    let evaluation = state
        .evaluator
        .get(id)
        .await?
        .ok_or(ApiError::NotFound("evaluation"))?;
    if !include_report {
        return Ok(HttpResponse::Ok().json(&evaluation));
    }
    let report = evaluation
        .report_snapshot
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw).ok());
    Ok(HttpResponse::Ok().json(WithReport {
        evaluation: &evaluation,
        report,
    }))
}

/// One page of evaluations, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = EvaluationPage)]
pub struct Page {
    items: Vec<Evaluation>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// `GET /v1/evaluations?session_id=&user_id=&decision=&event=&since=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/v1/evaluations", operation_id = "list_evaluations",
    tag = "evaluations",
    summary = "List evaluations, newest first (keyset pagination)",
    params(
        ("session_id" = Option<String>, Query),
        ("user_id" = Option<String>, Query),
        ("decision" = Option<Decision>, Query),
        ("event" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339 time, inclusive"),
        ("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page", body = Page),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "api.list_evaluations", skip_all)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter(req.query_string())?;
    let limit = filter.limit;
    let mut items = state
        .evaluator
        .list(&EvaluationFilter {
            limit: limit + 1,
            ..filter
        })
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .map(|last| encode_cursor(last.created_at, last.id))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

fn unknown_parameter(name: &str) -> ApiError {
    ApiError::Validation(vec![FieldError::new(
        name,
        "is not a known query parameter",
    )])
}

fn parse_filter(query: &str) -> Result<EvaluationFilter, ApiError> {
    let mut filter = EvaluationFilter {
        limit: query::DEFAULT_LIMIT,
        ..EvaluationFilter::default()
    };
    let mut errors = Vec::new();
    for (key, value) in query::pairs(query, &mut errors) {
        match key.as_str() {
            "session_id" => filter.session_id = Some(value),
            "user_id" => filter.user_id = Some(value),
            "event" => filter.event = Some(value),
            "decision" => match Decision::parse(&value) {
                Some(d) => filter.decision = Some(d),
                None => errors.push(FieldError::new(
                    "decision",
                    "must be allow, review or block",
                )),
            },
            "since" => match DateTime::parse_from_rfc3339(&value) {
                Ok(t) => filter.since = Some(t.with_timezone(&Utc)),
                Err(_) => errors.push(FieldError::new(
                    "since",
                    "must be an RFC 3339 time, e.g. 2026-11-28T00:00:00Z",
                )),
            },
            "limit" => match query::limit(&value) {
                Ok(n) => filter.limit = n,
                Err(e) => errors.push(e),
            },
            "cursor" => match decode_cursor(&value) {
                Some(after) => filter.after = Some(after),
                None => errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returned",
                )),
            },
            other => errors.push(query::unknown(other)),
        }
    }
    query::checked(filter, errors)
}

/// Opaque to clients: the (created_at, id) of the last row of a page.
fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", created_at.timestamp_millis()))
}

/// Milliseconds a cursor may carry: 1970 to 9999, what every backend stores.
pub(super) fn cursor_millis(text: &str) -> Option<i64> {
    text.parse()
        .ok()
        .filter(|ms| (0..=253_402_300_799_999).contains(ms))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (millis, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_millis(cursor_millis(millis)?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_hash_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(
            r#"{"session_id": "s", "event": "checkout", "metadata": {"b": 1, "a": 2}}"#,
        )
        .expect("json");
        let b: Value = serde_json::from_str(
            r#"{"metadata":{"a":2,"b":1},"event":"checkout","session_id":"s"}"#,
        )
        .expect("json");
        assert_eq!(
            serde_json::to_vec(&a).expect("json"),
            serde_json::to_vec(&b).expect("json")
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_millis(1_795_000_000_123).expect("time");
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        let far_past = URL_SAFE_NO_PAD.encode(format!("-1000000000000000:{id}"));
        for bad in [
            "",
            "!!!",
            "bm90LWEtY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("12:not-a-uuid"),
            &far_past,
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_parse_and_name_bad_parameters() {
        let filter =
            parse_filter("session_id=s%201&decision=review&limit=10&since=2026-11-28T00:00:00Z")
                .expect("valid");
        assert_eq!(filter.session_id.as_deref(), Some("s 1"));
        assert_eq!(filter.decision, Some(Decision::Review));
        assert_eq!(filter.limit, 10);
        assert!(filter.since.is_some());
        let Err(ApiError::Validation(errors)) =
            parse_filter("limit=0&decision=maybe&since=yesterday&colour=red&user_id=a%00b")
        else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["user_id", "limit", "decision", "since", "colour"]);
    }
}
