//! Query strings: one way to read them, so every route refuses the same
//! things the same way.

use super::problem::ApiError;
use crate::domain::FieldError;

/// Page size when none is asked for, and the most one page may hold.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// The pairs of a query string. A value with control characters is refused
/// here, named by its parameter (no database text column takes NUL).
pub fn pairs(query: &str, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter_map(|(key, value)| {
            if value.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    key.as_ref(),
                    "must not contain control characters",
                ));
                None
            } else {
                Some((key.into_owned(), value.into_owned()))
            }
        })
        .collect()
}

/// `limit`: 1 to [`MAX_LIMIT`].
pub fn limit(value: &str) -> Result<u32, FieldError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| FieldError::new("limit", format!("must be 1 to {MAX_LIMIT}")))
}

pub fn unknown(name: &str) -> FieldError {
    FieldError::new(name, "is not a known query parameter")
}

/// The parsed value, or every error at once.
pub fn checked<T>(value: T, errors: Vec<FieldError>) -> Result<T, ApiError> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::Validation(errors))
    }
}
