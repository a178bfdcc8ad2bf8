//! Matching action text against a policy pattern.

use regex::Regex;
use serde::Deserialize;

/// How a pattern matches an action's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// The whole text, ignoring ASCII case and surrounding spaces.
    Exact,
    /// The start of the text, ignoring ASCII case.
    Prefix,
    /// A regular expression (Rust `regex` syntax); add `(?i)` to ignore case.
    Regex,
}

/// A compiled action pattern.
#[derive(Debug, Clone)]
pub enum ActionMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl ActionMatcher {
    /// Compiles a pattern; the error message says what is wrong with it.
    pub fn new(kind: MatchKind, pattern: &str) -> Result<Self, String> {
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(match kind {
            MatchKind::Exact => ActionMatcher::Exact(trimmed.to_owned()),
            MatchKind::Prefix => ActionMatcher::Prefix(trimmed.to_owned()),
            MatchKind::Regex => ActionMatcher::Regex(
                Regex::new(pattern).map_err(|e| format!("invalid regular expression: {e}"))?,
            ),
        })
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            ActionMatcher::Exact(pattern) => text.trim().eq_ignore_ascii_case(pattern),
            ActionMatcher::Prefix(pattern) => {
                let text = text.trim_start().as_bytes();
                text.len() >= pattern.len()
                    && text[..pattern.len()].eq_ignore_ascii_case(pattern.as_bytes())
            }
            ActionMatcher::Regex(regex) => regex.is_match(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_matches_as_documented() {
        let cases = [
            (
                MatchKind::Exact,
                "Updated credit card",
                " updated CREDIT card ",
                true,
            ),
            (
                MatchKind::Exact,
                "Updated credit card",
                "Updated credit card twice",
                false,
            ),
            (MatchKind::Prefix, "Changed", "changed password", true),
            (MatchKind::Prefix, "Changed password", "Changed", false),
            (MatchKind::Prefix, "Clické", "clické", true),
            (
                MatchKind::Regex,
                r"^Added (payout|bank) account$",
                "Added bank account",
                true,
            ),
            (
                MatchKind::Regex,
                r"^Added (payout|bank) account$",
                "added bank account",
                false,
            ),
            (
                MatchKind::Regex,
                r"(?i)^added payout",
                "ADDED PAYOUT account",
                true,
            ),
        ];
        for (kind, pattern, text, expected) in cases {
            let matcher = ActionMatcher::new(kind, pattern).expect("valid pattern");
            assert_eq!(
                matcher.matches(text),
                expected,
                "{kind:?} {pattern:?} {text:?}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(ActionMatcher::new(MatchKind::Regex, "(").is_err());
        assert!(ActionMatcher::new(MatchKind::Exact, "  ").is_err());
    }
}
