//! The policy: what a failed check weighs, which actions are sensitive, how
//! the vendor's own score counts, where the thresholds lie per event, and
//! which hard rules decide outright.
//!
//! A policy is read from TOML (see `policies/default.toml` for every field,
//! commented) and compiled once: names normalised, patterns compiled,
//! per-event settings resolved against `[events.default]`, and a version made
//! from the declared version plus a hash of the file's bytes.

mod matcher;

pub use matcher::{ActionMatcher, MatchKind};

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::{Decision, Event};

/// The policy bundled into the binary, used when no file is configured.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../policies/default.toml");

/// Why a policy file was refused; the message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("policy field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    default_check_weight: f64,
    #[serde(default)]
    checks: BTreeMap<String, f64>,
    #[serde(default)]
    sensitive_actions: Vec<SensitiveActionFile>,
    #[serde(default)]
    vendor_score: VendorScore,
    events: BTreeMap<String, EventFile>,
    #[serde(default)]
    hard_rules: Vec<HardRuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensitiveActionFile {
    name: String,
    #[serde(rename = "match")]
    kind: MatchKind,
    pattern: String,
    multiplier: f64,
    window_secs: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    review: Option<f64>,
    block: Option<f64>,
    on_upstream_error: Option<Decision>,
    on_session_not_found: Option<Decision>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HardRuleFile {
    name: String,
    #[serde(default)]
    events: Vec<String>,
    check: Option<String>,
    min_risk_score: Option<u8>,
    decision: Decision,
}

/// How the vendor's v1 `risk_score` (0–100) enters the score.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorScore {
    pub mode: VendorScoreMode,
    /// The vendor score is multiplied by this before use.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for VendorScore {
    fn default() -> Self {
        Self {
            mode: VendorScoreMode::Ignore,
            weight: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VendorScoreMode {
    /// Not used.
    Ignore,
    /// Added to the rule score.
    Add,
    /// The score is the larger of the rule score and the vendor's.
    Max,
}

/// An action that makes nearby failed checks weigh more.
#[derive(Debug, Clone)]
pub struct SensitiveAction {
    pub name: String,
    pub matcher: ActionMatcher,
    pub multiplier: f64,
    pub window_secs: f64,
}

/// Thresholds and fail modes for one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRules {
    pub review: f64,
    pub block: f64,
    pub on_upstream_error: Decision,
    pub on_session_not_found: Decision,
}

/// A rule that decides outright when it matches.
#[derive(Debug, Clone)]
pub struct HardRule {
    pub name: String,
    /// Empty: every event.
    pub events: Vec<String>,
    /// Matches a failed check of this (normalised) name.
    pub check: Option<String>,
    pub min_risk_score: Option<u8>,
    pub decision: Decision,
}

impl HardRule {
    pub fn applies_to(&self, event: &Event) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event.as_str())
    }
}

/// A compiled, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    version: String,
    default_check_weight: f64,
    check_weights: HashMap<String, f64>,
    sensitive_actions: Vec<SensitiveAction>,
    vendor_score: VendorScore,
    default_event: EventRules,
    events: HashMap<String, EventRules>,
    hard_rules: Vec<HardRule>,
}

impl Policy {
    /// The bundled default policy.
    pub fn bundled() -> Result<Self, PolicyError> {
        Self::from_toml(DEFAULT_POLICY_TOML)
    }

    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text)?;
        let digest = Sha256::digest(text.as_bytes());
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();

        let version = file.version.trim();
        if version.is_empty() {
            return Err(invalid("version", "must not be empty"));
        }
        weight("default_check_weight", file.default_check_weight)?;

        let mut check_weights = HashMap::with_capacity(file.checks.len());
        for (name, value) in &file.checks {
            weight(&format!("checks.\"{name}\""), *value)?;
            let key = normalise_check_name(name);
            if check_weights.insert(key, *value).is_some() {
                return Err(invalid(
                    format!("checks.\"{name}\""),
                    "names the same check as another entry (names match ignoring case, '_', '-' and spaces)",
                ));
            }
        }

        let sensitive_actions = file
            .sensitive_actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| {
                let field = |f: &str| format!("sensitive_actions[{i}].{f}");
                if !(action.multiplier.is_finite() && action.multiplier >= 1.0) {
                    return Err(invalid(field("multiplier"), "must be a number ≥ 1"));
                }
                if !(action.window_secs.is_finite() && action.window_secs > 0.0) {
                    return Err(invalid(field("window_secs"), "must be a number > 0"));
                }
                let matcher = ActionMatcher::new(action.kind, &action.pattern)
                    .map_err(|message| invalid(field("pattern"), message))?;
                Ok(SensitiveAction {
                    name: action.name,
                    matcher,
                    multiplier: action.multiplier,
                    window_secs: action.window_secs,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        weight("vendor_score.weight", file.vendor_score.weight)?;

        let default_file = file
            .events
            .get("default")
            .ok_or_else(|| invalid("events.default", "is required"))?;
        let default_event = resolve_event("default", default_file, None)?;
        let mut events = HashMap::new();
        for (name, rules) in &file.events {
            if name != "default" {
                Event::parse(name).map_err(|e| invalid(format!("events.{name}"), e.message))?;
                events.insert(
                    name.clone(),
                    resolve_event(name, rules, Some(&default_event))?,
                );
            }
        }

        let hard_rules = file
            .hard_rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                if rule.check.is_none() && rule.min_risk_score.is_none() {
                    return Err(invalid(
                        format!("hard_rules[{i}]"),
                        "needs a condition: `check` or `min_risk_score`",
                    ));
                }
                if rule.min_risk_score.is_some_and(|s| s > 100) {
                    return Err(invalid(
                        format!("hard_rules[{i}].min_risk_score"),
                        "must be 0 to 100",
                    ));
                }
                for event in &rule.events {
                    Event::parse(event)
                        .map_err(|e| invalid(format!("hard_rules[{i}].events"), e.message))?;
                }
                Ok(HardRule {
                    name: rule.name,
                    events: rule.events,
                    check: rule.check.as_deref().map(normalise_check_name),
                    min_risk_score: rule.min_risk_score,
                    decision: rule.decision,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            version: format!("{version}+sha256:{hash}"),
            default_check_weight: file.default_check_weight,
            check_weights,
            sensitive_actions,
            vendor_score: file.vendor_score,
            default_event,
            events,
            hard_rules,
        })
    }

    /// Declared version plus a hash of the file's content.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The base weight of a failed check and whether the policy knows it.
    pub fn check_weight(&self, name: &str) -> (f64, bool) {
        match self.check_weights.get(&normalise_check_name(name)) {
            Some(weight) => (*weight, true),
            None => (self.default_check_weight, false),
        }
    }

    pub fn sensitive_actions(&self) -> &[SensitiveAction] {
        &self.sensitive_actions
    }

    pub fn vendor_score(&self) -> VendorScore {
        self.vendor_score
    }

    pub fn event_rules(&self, event: &Event) -> &EventRules {
        self.events
            .get(event.as_str())
            .unwrap_or(&self.default_event)
    }

    /// Whether the event has a table of its own (else `[events.default]` applies).
    pub fn knows_event(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }

    pub fn hard_rules(&self) -> &[HardRule] {
        &self.hard_rules
    }
}

fn weight(field: &str, value: f64) -> Result<(), PolicyError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "must be a number ≥ 0"))
    }
}

fn resolve_event(
    name: &str,
    file: &EventFile,
    fallback: Option<&EventRules>,
) -> Result<EventRules, PolicyError> {
    let field = |f: &str| format!("events.{name}.{f}");
    let missing = |f: &str| invalid(field(f), "is required in [events.default]");
    let rules = EventRules {
        review: file
            .review
            .or(fallback.map(|d| d.review))
            .ok_or_else(|| missing("review"))?,
        block: file
            .block
            .or(fallback.map(|d| d.block))
            .ok_or_else(|| missing("block"))?,
        on_upstream_error: file
            .on_upstream_error
            .or(fallback.map(|d| d.on_upstream_error))
            .ok_or_else(|| missing("on_upstream_error"))?,
        on_session_not_found: file
            .on_session_not_found
            .or(fallback.map(|d| d.on_session_not_found))
            .ok_or_else(|| missing("on_session_not_found"))?,
    };
    weight(&field("review"), rules.review)?;
    weight(&field("block"), rules.block)?;
    if rules.review > rules.block {
        return Err(invalid(
            field("review"),
            format!("({}) must not exceed block ({})", rules.review, rules.block),
        ));
    }
    Ok(rules)
}

/// Check names match ignoring case, and `_`, `-` and runs of spaces are one
/// separator, so v1 keys (`programmatic_typing`) and v0.0 free text
/// ("Programmatic typing") name the same check.
pub fn normalise_check_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name
        .split(|c: char| c == '_' || c == '-' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        version = "t1"
        default_check_weight = 5
        [events.default]
        review = 30
        block = 60
        on_upstream_error = "review"
        on_session_not_found = "allow"
    "#;

    fn error_field(text: &str) -> String {
        match Policy::from_toml(text) {
            Err(PolicyError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn the_bundled_policy_compiles() {
        let policy = Policy::bundled().expect("bundled policy is valid");
        assert!(policy.version().contains("+sha256:"));
        let checkout = policy.event_rules(&Event::parse("checkout").expect("event"));
        assert!(checkout.block <= policy.default_event.block);
    }

    #[test]
    fn version_changes_with_content() {
        let a = Policy::from_toml(MINIMAL).expect("valid");
        let b = Policy::from_toml(&format!("{MINIMAL}\n# a comment")).expect("valid");
        assert!(a.version().starts_with("t1+sha256:"));
        assert_ne!(a.version(), b.version());
    }

    #[test]
    fn check_names_match_across_shapes() {
        let policy = Policy::from_toml(&MINIMAL.replace(
            "default_check_weight = 5",
            "default_check_weight = 5\n[checks]\n\"Programmatic  Typing\" = 25",
        ))
        .expect("valid");
        assert_eq!(policy.check_weight("programmatic_typing"), (25.0, true));
        assert_eq!(policy.check_weight("PROGRAMMATIC-typing"), (25.0, true));
        assert_eq!(policy.check_weight("something new"), (5.0, false));
    }

    #[test]
    fn events_inherit_from_default() {
        let policy = Policy::from_toml(&format!("{MINIMAL}\n[events.checkout]\nblock = 50\n"))
            .expect("valid");
        let checkout = policy.event_rules(&Event::parse("checkout").expect("event"));
        assert_eq!(checkout.block, 50.0);
        assert_eq!(checkout.review, 30.0);
        assert_eq!(checkout.on_session_not_found, Decision::Allow);
        let other = policy.event_rules(&Event::parse("payout").expect("event"));
        assert_eq!(other.block, 60.0);
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let cases = [
            (MINIMAL.replace("version = \"t1\"", "version = \" \""), "version"),
            (MINIMAL.replace("= 5", "= -5"), "default_check_weight"),
            (format!("{MINIMAL}\n[events.checkout]\nreview = 90\n"), "events.checkout.review"),
            (MINIMAL.replace("[events.default]", "[events.checkout]"), "events.default"),
            (format!("{MINIMAL}\n[events.Checkout]\nreview = 9\n"), "events.Checkout"),
            (
                format!("{MINIMAL}\n[[sensitive_actions]]\nname = \"x\"\nmatch = \"regex\"\npattern = \"(\"\nmultiplier = 2\nwindow_secs = 60\n"),
                "sensitive_actions[0].pattern",
            ),
            (
                format!("{MINIMAL}\n[[sensitive_actions]]\nname = \"x\"\nmatch = \"exact\"\npattern = \"a\"\nmultiplier = 0.5\nwindow_secs = 60\n"),
                "sensitive_actions[0].multiplier",
            ),
            (
                format!("{MINIMAL}\n[[hard_rules]]\nname = \"x\"\ndecision = \"block\"\n"),
                "hard_rules[0]",
            ),
            (
                MINIMAL.replace("default_check_weight = 5", "default_check_weight = 5\n[checks]\nvpn = 1\nVPN = 2"),
                "checks.\"vpn\"",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(error_field(&text), field, "{text}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_decisions_are_toml_errors() {
        for text in [
            format!("{MINIMAL}\nsurprise = 1\n"),
            MINIMAL.replace("\"allow\"", "\"maybe\""),
        ] {
            assert!(
                matches!(Policy::from_toml(&text), Err(PolicyError::Toml(_))),
                "{text}"
            );
        }
    }
}
