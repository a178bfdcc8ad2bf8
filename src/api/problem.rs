//! The one place errors become HTTP: RFC 9457 `application/problem+json`
//! with a stable `type` from a small catalogue.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::FieldError;
use crate::evaluation::EvaluateError;
use crate::review::ReviewConflict;
use crate::store::StoreError;
use crate::webhooks::SignatureError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being evaluated; retry shortly")]
    IdempotencyInProgress,
    #[error("{0}")]
    ReviewConflict(ReviewConflict),
    #[error("webhook signature rejected: {0}")]
    BadSignature(SignatureError),
    #[error("only a failed delivery can be retried")]
    NotRetryable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EvaluateError> for ApiError {
    fn from(error: EvaluateError) -> Self {
        match error {
            EvaluateError::Store(e) => ApiError::Store(e),
            EvaluateError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            EvaluateError::IdempotencyInProgress => ApiError::IdempotencyInProgress,
        }
    }
}

/// One entry of the catalogue: the `type` URI's last part and the `title`.
struct Kind {
    code: &'static str,
    title: &'static str,
    status: StatusCode,
}

impl ApiError {
    fn kind(&self) -> Kind {
        let (code, title, status) = match self {
            ApiError::MalformedJson(_) => {
                ("malformed-json", "Malformed JSON", StatusCode::BAD_REQUEST)
            }
            ApiError::Unauthorized => ("unauthorized", "Unauthorized", StatusCode::UNAUTHORIZED),
            ApiError::NotFound(_) | ApiError::RouteNotFound => {
                ("not-found", "Not found", StatusCode::NOT_FOUND)
            }
            ApiError::MethodNotAllowed => (
                "method-not-allowed",
                "Method not allowed",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            ApiError::PayloadTooLarge { .. } => (
                "payload-too-large",
                "Request body too large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            ApiError::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            ApiError::Validation(_) => (
                "validation-failed",
                "Request fields are invalid",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ApiError::ReviewConflict(ReviewConflict::AlreadyResolved) => (
                "review-already-resolved",
                "Review item already resolved",
                StatusCode::CONFLICT,
            ),
            ApiError::ReviewConflict(_) => (
                "review-not-claimable",
                "Review item claimed by someone else, or your claim expired",
                StatusCode::CONFLICT,
            ),
            ApiError::BadSignature(_) => (
                "invalid-signature",
                "Webhook signature rejected",
                StatusCode::UNAUTHORIZED,
            ),
            ApiError::NotRetryable => (
                "delivery-not-failed",
                "Only a failed delivery can be retried",
                StatusCode::CONFLICT,
            ),
            ApiError::IdempotencyKeyReused => (
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ApiError::IdempotencyInProgress => (
                "idempotency-in-progress",
                "Request with this Idempotency-Key in progress",
                StatusCode::CONFLICT,
            ),
            ApiError::Store(e) if e.is_transient() => (
                "database-unavailable",
                "Database unavailable, retry shortly",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            ApiError::Store(StoreError::IdempotencyLost) => (
                "idempotency-in-progress",
                "Request with this Idempotency-Key in progress",
                StatusCode::CONFLICT,
            ),
            ApiError::Store(_) => (
                "internal",
                "Internal error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        };
        Kind {
            code,
            title,
            status,
        }
    }

    /// What the client is told. 5xx say nothing internal: the cause goes to the log.
    fn detail(&self) -> String {
        match self {
            ApiError::Store(_) => match self.kind().status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the database did not answer in time; the request was not stored".to_owned()
                }
                StatusCode::CONFLICT => {
                    "another request with this Idempotency-Key finished first; retry to get its verdict"
                        .to_owned()
                }
                _ => "an internal error occurred; it has been logged".to_owned(),
            },
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
}

/// An RFC 9457 problem.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:riskgate:problem:<code>`, stable: clients may branch on it.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The first offending field, for clients that show one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every offending field (422).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
}

/// One invalid field and what is wrong with it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub detail: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().status
    }

    fn error_response(&self) -> HttpResponse {
        let kind = self.kind();
        if kind.status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let errors: Vec<FieldProblem> = match self {
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| FieldProblem {
                    field: e.field.clone(),
                    detail: e.message.clone(),
                })
                .collect(),
            ApiError::IdempotencyKeyReused => vec![FieldProblem {
                field: "Idempotency-Key".to_owned(),
                detail: "was used with a different request body".to_owned(),
            }],
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: format!("urn:riskgate:problem:{}", kind.code),
            title: kind.title.to_owned(),
            status: kind.status.as_u16(),
            detail: self.detail(),
            field: errors.first().map(|e| e.field.clone()),
            errors,
        };
        let mut response = HttpResponse::build(kind.status);
        response.content_type(PROBLEM_JSON);
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"riskgate\""));
            }
            ApiError::Store(e) if e.is_transient() => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::IdempotencyInProgress | ApiError::Store(StoreError::IdempotencyLost) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(problem)
    }
}
