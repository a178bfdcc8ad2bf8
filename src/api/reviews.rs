//! `/v1/reviews`, `/v1/evaluations/{id}/label`, `/v1/stats`: the analyst's side.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::auth::Caller;
use super::body::read_json;
use super::problem::{ApiError, Problem};
use super::query;
use super::AppState;
use crate::domain::FieldError;
use crate::review::{
    Label, LabelRecord, ReviewConflict, ReviewDetail, ReviewFilter, ReviewItem, ReviewOutcome,
    ReviewStatus, Stats,
};
use crate::store::StatsWindow;

const MAX_NOTE: usize = 4_000;

/// One page of the queue.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReviewPage {
    items: Vec<ReviewItem>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

fn caller(req: &HttpRequest) -> String {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn review_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("review item"))
}

fn conflict(conflict: ReviewConflict) -> ApiError {
    match conflict {
        ReviewConflict::NotFound => ApiError::NotFound("review item"),
        other => ApiError::ReviewConflict(other),
    }
}

/// `GET /v1/reviews`
#[utoipa::path(
    get, path = "/v1/reviews", operation_id = "list_reviews", tag = "reviews",
    summary = "The review queue: highest score first, then oldest (keyset pagination)",
    params(
        ("status" = Option<ReviewStatus>, Query, description = "An expired claim counts as open"),
        ("event" = Option<String>, Query),
        ("user_id" = Option<String>, Query),
        ("min_score" = Option<f64>, Query),
        ("older_than" = Option<String>, Query, description = "Items created before this RFC 3339 time, or at least this many seconds ago"),
        ("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "A page of items", body = ReviewPage),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter(req.query_string(), Utc::now())?;
    let limit = filter.limit;
    let mut items = state
        .reviews
        .list(&ReviewFilter {
            limit: limit + 1,
            ..filter
        })
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| {
            URL_SAFE_NO_PAD.encode(format!(
                "{}:{}:{}",
                last.score,
                last.created_at.timestamp_millis(),
                last.id
            ))
        })
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ReviewPage { items, next_cursor }))
}

fn parse_filter(query: &str, now: DateTime<Utc>) -> Result<ReviewFilter, ApiError> {
    let mut filter = ReviewFilter {
        limit: query::DEFAULT_LIMIT,
        ..ReviewFilter::default()
    };
    let mut errors = Vec::new();
    for (key, value) in query::pairs(query, &mut errors) {
        match key.as_str() {
            "status" => match ReviewStatus::parse(&value) {
                Some(status) => filter.status = Some(status),
                None => errors.push(FieldError::new(
                    "status",
                    "must be open, claimed or resolved",
                )),
            },
            "event" => filter.event = Some(value),
            "user_id" => filter.user_id = Some(value),
            "min_score" => match value.parse::<f64>() {
                Ok(score) if score.is_finite() => filter.min_score = Some(score),
                _ => errors.push(FieldError::new("min_score", "must be a number")),
            },
            "older_than" => match older_than(&value, now) {
                Some(before) => filter.created_before = Some(before),
                None => errors.push(FieldError::new(
                    "older_than",
                    "must be an RFC 3339 time or a number of seconds",
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

fn older_than(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    let seconds: u32 = value.parse().ok()?;
    Some(now - chrono::Duration::seconds(i64::from(seconds)))
}

fn decode_cursor(cursor: &str) -> Option<(f64, DateTime<Utc>, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut parts = text.splitn(3, ':');
    let score: f64 = parts.next()?.parse().ok()?;
    let created =
        DateTime::from_timestamp_millis(super::evaluations::cursor_millis(parts.next()?)?)?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    score.is_finite().then_some((score, created, id))
}

/// `GET /v1/reviews/{id}`
#[utoipa::path(
    get, path = "/v1/reviews/{id}", operation_id = "get_review", tag = "reviews",
    summary = "An item, its evaluation, the session timeline, the replay URL and the audit trail",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The item in full", body = ReviewDetail),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let detail = state
        .reviews
        .detail(review_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound("review item"))?;
    Ok(HttpResponse::Ok().json(detail))
}

/// `POST /v1/reviews/next`
#[utoipa::path(
    post, path = "/v1/reviews/next", operation_id = "claim_next_review", tag = "reviews",
    summary = "Claim the next open item (atomically) and return it in full",
    params(("event" = Option<String>, Query, description = "Only items of this event")),
    responses(
        (status = 200, description = "The claimed item in full", body = ReviewDetail),
        (status = 204, description = "The queue is empty"),
    ),
    security(("bearer" = []))
)]
pub async fn next(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut event = None;
    let mut errors = Vec::new();
    for (key, value) in query::pairs(req.query_string(), &mut errors) {
        match key.as_str() {
            "event" => event = Some(value),
            other => errors.push(query::unknown(other)),
        }
    }
    let event = query::checked(event, errors)?;
    let actor = caller(&req);
    let Some(item) = state.reviews.claim_next(&actor, event.as_deref()).await? else {
        return Ok(HttpResponse::NoContent().finish());
    };
    let detail = state
        .reviews
        .detail(item.id)
        .await?
        .ok_or(ApiError::NotFound("review item"))?;
    Ok(HttpResponse::Ok().json(detail))
}

/// `POST /v1/reviews/{id}/claim`
#[utoipa::path(
    post, path = "/v1/reviews/{id}/claim", operation_id = "claim_review", tag = "reviews",
    summary = "Claim one item (or renew your claim); a claim is a lease that expires",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Claimed", body = ReviewItem),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Claimed by someone else, or resolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn claim(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let item = state
        .reviews
        .claim(review_id(&id)?, &caller(&req))
        .await?
        .map_err(conflict)?;
    Ok(HttpResponse::Ok().json(item))
}

/// `POST /v1/reviews/{id}/resolve`
#[utoipa::path(
    post, path = "/v1/reviews/{id}/resolve", operation_id = "resolve_review", tag = "reviews",
    summary = "Resolve an item you have a live claim on, exactly once; records a label",
    params(("id" = Uuid, Path)),
    request_body(content = ResolveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Resolved", body = ReviewItem),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already resolved, not your claim, or your claim expired", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn resolve(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = review_id(&id)?;
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let object = fields(&body, &["outcome", "note"])?;
    let mut errors = Vec::new();
    let outcome = match object
        .get("outcome")
        .and_then(Value::as_str)
        .and_then(ReviewOutcome::parse)
    {
        Some(outcome) => Some(outcome),
        None => {
            errors.push(FieldError::new("outcome", "must be approve or reject"));
            None
        }
    };
    let note = optional_text(object, "note", MAX_NOTE, &mut errors);
    let (Some(outcome), true) = (outcome, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let item = state
        .reviews
        .resolve(id, &caller(&req), outcome, note.as_deref())
        .await?
        .map_err(conflict)?;
    Ok(HttpResponse::Ok().json(item))
}

/// The body of a resolve.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ResolveBody {
    outcome: ReviewOutcome,
    #[schema(max_length = 4000)]
    note: Option<String>,
}

/// The body of a label.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LabelBody {
    label: Label,
    /// Where it was learned, e.g. `chargeback`, `customer_complaint`.
    #[schema(max_length = 64)]
    source: String,
    #[schema(max_length = 4000)]
    note: Option<String>,
}

/// `POST /v1/evaluations/{id}/label`
#[utoipa::path(
    post, path = "/v1/evaluations/{id}/label", operation_id = "label_evaluation", tag = "reviews",
    summary = "Record what was learned later about an evaluation (fraud or legit)",
    params(("id" = Uuid, Path)),
    request_body(content = LabelBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded", body = LabelRecord),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn label(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let evaluation_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("evaluation"))?;
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let object = fields(&body, &["label", "source", "note"])?;
    let mut errors = Vec::new();
    let label = object
        .get("label")
        .and_then(Value::as_str)
        .and_then(Label::parse);
    if label.is_none() {
        errors.push(FieldError::new("label", "must be fraud or legit"));
    }
    let source = optional_text(object, "source", 64, &mut errors);
    if source.is_none() && !errors.iter().any(|e| e.field == "source") {
        errors.push(FieldError::new(
            "source",
            "is required, e.g. \"chargeback\"",
        ));
    }
    let note = optional_text(object, "note", MAX_NOTE, &mut errors);
    let (Some(label), Some(source), true) = (label, source, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let record = state
        .reviews
        .label(evaluation_id, label, source, note, &caller(&req))
        .await?
        .ok_or(ApiError::NotFound("evaluation"))?;
    Ok(HttpResponse::Created().json(record))
}

/// `GET /v1/stats`
#[utoipa::path(
    get, path = "/v1/stats", operation_id = "get_stats", tag = "reviews",
    summary = "Counts by decision and event, degraded share, review outcomes, queue depth, time to resolution, decisions against labels",
    params(
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("event" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "The numbers", body = Stats),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stats(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut window = StatsWindow::default();
    let mut errors = Vec::new();
    for (key, value) in query::pairs(req.query_string(), &mut errors) {
        let time = || {
            DateTime::parse_from_rfc3339(&value)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        match key.as_str() {
            "since" => match time() {
                Some(t) => window.since = Some(t),
                None => errors.push(FieldError::new("since", "must be an RFC 3339 time")),
            },
            "until" => match time() {
                Some(t) => window.until = Some(t),
                None => errors.push(FieldError::new("until", "must be an RFC 3339 time")),
            },
            "event" => window.event = Some(value.clone()),
            other => errors.push(query::unknown(other)),
        }
    }
    let window = query::checked(window, errors)?;
    Ok(HttpResponse::Ok().json(state.reviews.stats(&window).await?))
}

/// The body as an object with only the `known` fields.
fn fields<'a>(body: &'a Value, known: &[&str]) -> Result<&'a Map<String, Value>, ApiError> {
    let object = body.as_object().ok_or_else(|| {
        ApiError::Validation(vec![FieldError::new("", "body must be a JSON object")])
    })?;
    let unknown: Vec<FieldError> = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| FieldError::new(k.as_str(), "is not a known field"))
        .collect();
    if unknown.is_empty() {
        Ok(object)
    } else {
        Err(ApiError::Validation(unknown))
    }
}

fn optional_text(
    object: &Map<String, Value>,
    field: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if s.chars().count() <= max && !s.contains('\0') && !s.trim().is_empty() =>
        {
            Some(s.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                field,
                format!("must be a non-empty string of at most {max} characters without NUL"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_cursors_round_trip() {
        let at = DateTime::from_timestamp_millis(1_795_000_000_123).expect("time");
        let id = Uuid::now_v7();
        let cursor = URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", 54.25, at.timestamp_millis(), id));
        assert_eq!(decode_cursor(&cursor), Some((54.25, at, id)));
        assert_eq!(decode_cursor("garbage"), None);
    }

    #[test]
    fn older_than_takes_a_time_or_seconds() {
        let now = Utc::now();
        assert_eq!(
            older_than("60", now),
            Some(now - chrono::Duration::seconds(60))
        );
        assert!(older_than("2026-11-28T00:00:00Z", now).is_some());
        assert_eq!(older_than("yesterday", now), None);
    }
}
