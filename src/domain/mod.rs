//! Domain types, parsed once at the edge. Past a constructor, a value is valid
//! and nothing downstream checks it again.

mod request;

pub use request::{
    Amount, Currency, EvaluationRequest, Metadata, RequiredAction, UserId,
    FIELDS as REQUEST_FIELDS, MAX_WAIT_MS,
};

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused; `field` names the input it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The answer riskgate gives.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Review,
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Review => "review",
            Decision::Block => "block",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allow" => Some(Decision::Allow),
            "review" => Some(Decision::Review),
            "block" => Some(Decision::Block),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Roundtable session id (the browser's `rtSessionId`).
///
/// It becomes one path segment of an upstream URL, so it must never be able
/// to name another path: dot segments are refused (a URL parser resolves
/// them even percent-encoded) and everything else is percent-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let field = "session_id";
        if text.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if text.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                field,
                format!("must be at most {} bytes", Self::MAX_LEN),
            ));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(FieldError::new(
                field,
                "must not contain whitespace or control characters",
            ));
        }
        if text == "." || text == ".." {
            return Err(FieldError::new(field, "must not be a dot segment"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the caller is about to do: `checkout`, `account_change`, `login`,
/// `signup`, or any other name the policy may know.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Event(String);

impl Event {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let field = "event";
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
        if text.is_empty() || text.len() > Self::MAX_LEN || !text.chars().all(valid_char) {
            return Err(FieldError::new(
                field,
                format!(
                    "must be 1 to {} characters of a-z, 0-9, '_', '.' or '-' (e.g. \"checkout\")",
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

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_that_could_escape_the_path_are_refused_or_kept_whole() {
        for bad in ["", ".", "..", "a b", "a\nb", &"x".repeat(257)] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["abc123def456", "../../x", "a/b", "%2e%2e", "rt_01J?x#y"] {
            assert_eq!(SessionId::parse(good).map(|s| s.0), Ok(good.to_owned()));
        }
    }

    #[test]
    fn events_are_lowercase_names() {
        for good in ["checkout", "account_change", "payout.v2", "a-b"] {
            assert!(Event::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Checkout", "check out", "é", &"e".repeat(65)] {
            let err = Event::parse(bad).expect_err(bad);
            assert_eq!(err.field, "event");
        }
    }

    #[test]
    fn decisions_round_trip_and_order_by_severity() {
        for d in [Decision::Allow, Decision::Review, Decision::Block] {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        assert!(Decision::Allow < Decision::Review && Decision::Review < Decision::Block);
        assert_eq!(Decision::parse("Allow"), None);
    }
}
