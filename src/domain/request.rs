//! The body of `POST /v1/evaluations`, parsed into domain types.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Event, FieldError, SessionId};
use crate::policy::{ActionMatcher, MatchKind};

/// The caller's own id for the user, if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        if text.is_empty() || text.len() > Self::MAX_LEN || text.chars().any(char::is_control) {
            return Err(FieldError::new(
                "user_id",
                format!(
                    "must be 1 to {} bytes without control characters",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-negative decimal amount, kept as the exact text given: money is
/// never rounded through a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(String);

impl Amount {
    const MAX_INTEGER_DIGITS: usize = 15;
    const MAX_FRACTION_DIGITS: usize = 6;

    pub fn parse(value: &Value) -> Result<Self, FieldError> {
        let invalid = || {
            FieldError::new(
                "amount",
                format!(
                    "must be a non-negative decimal number or string with at most {} integer and {} fraction digits",
                    Self::MAX_INTEGER_DIGITS,
                    Self::MAX_FRACTION_DIGITS
                ),
            )
        };
        let text = match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => return Err(invalid()),
        };
        let (integer, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        // No leading zeros: PostgreSQL's NUMERIC would drop them, and the
        // amount must read back exactly as given.
        let leading_zero = integer.len() > 1 && integer.starts_with('0');
        let well_formed = !integer.is_empty()
            && !leading_zero
            && integer.len() <= Self::MAX_INTEGER_DIGITS
            && digits(integer)
            && fraction.len() <= Self::MAX_FRACTION_DIGITS
            && digits(fraction)
            && !(text.contains('.') && fraction.is_empty());
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 alphabetic code such as `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        if text.len() != 3 || !text.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new(
                "currency",
                "must be a three-letter ISO 4217 code in upper case, e.g. \"EUR\"",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-form caller context, stored with the evaluation and returned as given.
pub type Metadata = Map<String, Value>;

/// An action the caller is about to gate and expects in the report (e.g. its
/// own "Clicked Pay"), matched like the policy's sensitive actions.
#[derive(Debug, Clone)]
pub struct RequiredAction {
    /// The pattern as given, for reasons and logs.
    pub pattern: String,
    pub matcher: ActionMatcher,
}

impl RequiredAction {
    /// A string (exact match) or `{"match": "exact"|"prefix"|"regex", "pattern": "…"}`.
    pub fn parse(value: &Value) -> Result<Self, FieldError> {
        let field = "require_action";
        let (kind, pattern) = match value {
            Value::String(text) => (MatchKind::Exact, text.as_str()),
            Value::Object(spec) => {
                let kind = match spec.get("match").and_then(Value::as_str).unwrap_or("exact") {
                    "exact" => MatchKind::Exact,
                    "prefix" => MatchKind::Prefix,
                    "regex" => MatchKind::Regex,
                    _ => {
                        return Err(FieldError::new(
                            field,
                            "match must be exact, prefix or regex",
                        ))
                    }
                };
                let pattern = spec
                    .get("pattern")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FieldError::new(field, "pattern (a string) is required"))?;
                if spec.keys().any(|k| k != "match" && k != "pattern") {
                    return Err(FieldError::new(field, "only match and pattern are known"));
                }
                (kind, pattern)
            }
            _ => {
                return Err(FieldError::new(
                    field,
                    "must be a string or {match, pattern}",
                ))
            }
        };
        if pattern.len() > 512 {
            return Err(FieldError::new(field, "pattern must be at most 512 bytes"));
        }
        let matcher = ActionMatcher::new(kind, pattern).map_err(|m| FieldError::new(field, m))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            matcher,
        })
    }
}

/// A request to evaluate one session, valid by construction.
#[derive(Debug, Clone)]
pub struct EvaluationRequest {
    pub session_id: SessionId,
    pub event: Event,
    pub user_id: Option<UserId>,
    pub amount: Option<Amount>,
    pub currency: Option<Currency>,
    pub metadata: Option<Metadata>,
    pub require_action: Option<RequiredAction>,
    /// How long to wait for `require_action` to appear (capped by the deadline).
    pub wait: Option<Duration>,
}

/// Longest `wait_ms` accepted; the evaluation deadline caps it further.
pub const MAX_WAIT_MS: u64 = 60_000;

/// Every field the body may have (the OpenAPI schema is checked against it).
pub const FIELDS: &[&str] = &[
    "session_id",
    "event",
    "user_id",
    "amount",
    "currency",
    "metadata",
    "require_action",
    "wait_ms",
];

impl EvaluationRequest {
    /// Parses a JSON body, reporting every invalid field at once.
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new("", "body must be a JSON object")]);
        };
        let mut errors: Vec<FieldError> = object
            .keys()
            .filter(|key| !FIELDS.contains(&key.as_str()))
            .map(|key| FieldError::new(key.as_str(), "is not a known field"))
            .collect();
        let e = &mut errors;
        let session_id = keep(
            e,
            required_str(object, "session_id").and_then(SessionId::parse),
        );
        let event = keep(e, required_str(object, "event").and_then(Event::parse));
        let user_id = keep(
            e,
            optional_str(object, "user_id").and_then(|v| v.map(UserId::parse).transpose()),
        )
        .flatten();
        let amount = keep(e, present(object, "amount").map(Amount::parse).transpose()).flatten();
        let currency = keep(
            e,
            optional_str(object, "currency").and_then(|v| v.map(Currency::parse).transpose()),
        )
        .flatten();
        let metadata = keep(
            e,
            match present(object, "metadata") {
                None => Ok(None),
                Some(Value::Object(map))
                    if map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)) =>
                {
                    Err(FieldError::new(
                        "metadata",
                        "must not contain NUL characters",
                    ))
                }
                Some(Value::Object(map)) => Ok(Some(map.clone())),
                Some(_) => Err(FieldError::new("metadata", "must be a JSON object")),
            },
        )
        .flatten();
        let require_action = keep(
            e,
            present(object, "require_action")
                .map(RequiredAction::parse)
                .transpose(),
        )
        .flatten();
        let wait = keep(
            e,
            match present(object, "wait_ms") {
                None => Ok(None),
                Some(value) => match value.as_u64() {
                    Some(ms) if ms <= MAX_WAIT_MS => Ok(Some(Duration::from_millis(ms))),
                    _ => Err(FieldError::new(
                        "wait_ms",
                        format!("must be an integer from 0 to {MAX_WAIT_MS}"),
                    )),
                },
            },
        )
        .flatten();
        if wait.is_some() && require_action.is_none() && present(object, "require_action").is_none()
        {
            errors.push(FieldError::new("wait_ms", "needs require_action"));
        }
        if amount.is_some() && currency.is_none() && present(object, "currency").is_none() {
            errors.push(FieldError::new(
                "currency",
                "is required when amount is given",
            ));
        }

        match (session_id, event) {
            (Some(session_id), Some(event)) if errors.is_empty() => Ok(Self {
                session_id,
                event,
                user_id,
                amount,
                currency,
                metadata,
                require_action,
                wait,
            }),
            _ => Err(errors),
        }
    }
}

/// The value, or nothing with its error recorded.
fn keep<T>(errors: &mut Vec<FieldError>, result: Result<T, FieldError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// Databases refuse NUL in text, so it is refused here, at the edge.
fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// A field that is present and not null.
fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|v| !v.is_null())
}

fn required_str<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    optional_str(object, field)?.ok_or_else(|| FieldError::new(field, "is required"))
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, FieldError> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(body: Value) -> Vec<String> {
        EvaluationRequest::parse(&body)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn parses_a_full_request() {
        let body = json!({"session_id": "abc", "event": "checkout", "user_id": "u1",
            "amount": "12.50", "currency": "EUR", "metadata": {"order": 7}});
        let request = EvaluationRequest::parse(&body).expect("valid");
        assert_eq!(request.session_id.as_str(), "abc");
        assert_eq!(request.event.as_str(), "checkout");
        assert_eq!(request.amount.as_ref().map(Amount::as_str), Some("12.50"));
        assert_eq!(request.currency.as_ref().map(Currency::as_str), Some("EUR"));
        assert_eq!(
            request.metadata,
            Some(json!({"order": 7}).as_object().cloned().unwrap_or_default())
        );
    }

    #[test]
    fn optional_fields_may_be_null_or_absent() {
        let body =
            json!({"session_id": "abc", "event": "login", "user_id": null, "metadata": null});
        let request = EvaluationRequest::parse(&body).expect("valid");
        assert_eq!(request.user_id, None);
        assert_eq!(request.metadata, None);
    }

    #[test]
    fn names_each_bad_field() {
        assert_eq!(fields(json!({})), ["session_id", "event"]);
        assert_eq!(
            fields(json!({"session_id": 5, "event": "checkout"})),
            ["session_id"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "Check Out"})),
            ["event"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "amount": 10})),
            ["currency"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "amount": -1, "currency": "EUR"})),
            ["amount"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "amount": "1e5", "currency": "EUR"})),
            ["amount"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "amount": "1.", "currency": "eur"})),
            ["amount", "currency"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "metadata": [1]})),
            ["metadata"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "metadata": {"a": [{"b": "\u{0}"}]}})),
            ["metadata"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "sessionId": "b"})),
            ["sessionId"]
        );
        assert_eq!(fields(json!([1])), [""]);
    }

    #[test]
    fn required_actions_and_waits() {
        let body = json!({"session_id": "a", "event": "checkout", "require_action": {"match": "prefix", "pattern": "Clicked \"Pay"}, "wait_ms": 1500});
        let request = EvaluationRequest::parse(&body).expect("valid");
        let required = request.require_action.expect("required action");
        assert!(required.matcher.matches("Clicked \"Pay now\""));
        assert_eq!(request.wait, Some(Duration::from_millis(1500)));
        let exact = EvaluationRequest::parse(
            &json!({"session_id": "a", "event": "x", "require_action": "Clicked Pay"}),
        )
        .expect("valid");
        assert!(exact
            .require_action
            .expect("required")
            .matcher
            .matches("clicked pay"));

        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "wait_ms": 10})),
            ["wait_ms"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "require_action": "A", "wait_ms": -1})),
            ["wait_ms"]
        );
        assert_eq!(
            fields(
                json!({"session_id": "a", "event": "x", "require_action": "A", "wait_ms": 60001})
            ),
            ["wait_ms"]
        );
        assert_eq!(
            fields(
                json!({"session_id": "a", "event": "x", "require_action": {"match": "regex", "pattern": "("}})
            ),
            ["require_action"]
        );
        assert_eq!(
            fields(
                json!({"session_id": "a", "event": "x", "require_action": {"match": "fuzzy", "pattern": "a"}})
            ),
            ["require_action"]
        );
        assert_eq!(
            fields(json!({"session_id": "a", "event": "x", "require_action": 7})),
            ["require_action"]
        );
    }

    #[test]
    fn amounts_keep_their_exact_text() {
        for (input, kept) in [
            (json!(10), "10"),
            (json!(0.5), "0.5"),
            (json!(" 99.999999 "), "99.999999"),
        ] {
            assert_eq!(Amount::parse(&input).map(|a| a.0), Ok(kept.to_owned()));
        }
        for bad in [
            json!("007.5"),
            json!("00"),
            json!(""),
            json!("1.2.3"),
            json!("1234567890123456"),
            json!(true),
            json!("0.1234567"),
        ] {
            assert!(Amount::parse(&bad).is_err(), "{bad}");
        }
    }
}
