//! `[webhooks]` and `[hooks]` settings (a public interface: keep the names).

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::SigningSecret;
use crate::domain::Event;

/// The event types a subscription may ask for.
pub const EVENT_TYPES: &[&str] = &[
    "evaluation.completed",
    "evaluation.review_required",
    "evaluation.blocked",
    "review.resolved",
];

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Delays after each failed attempt; past the last, the message fails.
    pub retry_schedule_secs: Vec<f64>,
    /// Longest one delivery attempt may take.
    pub timeout_ms: u64,
    /// How often the workers look for due deliveries and pending hooks.
    pub poll_interval_ms: u64,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSettings>,
}

/// `[[webhooks.subscriptions]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// Optional stable name; the URL is used when absent.
    pub name: Option<String>,
    pub url: String,
    /// `whsec_…`
    pub secret: SecretString,
    /// Any of [`EVENT_TYPES`].
    pub events: Vec<String>,
}

impl SubscriptionSettings {
    /// What messages are filed under.
    pub fn key(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.url.clone())
    }

    pub fn signing_secret(&self) -> Result<SigningSecret, String> {
        SigningSecret::parse(self.secret.expose_secret())
    }
}

/// `[hooks]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    #[serde(default)]
    pub sources: Vec<HookSourceSettings>,
}

/// `[[hooks.sources]]`: a sender of `POST /v1/hooks/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSourceSettings {
    pub name: String,
    /// `whsec_…`
    pub secret: SecretString,
    /// Hook `type` → riskgate event, for hooks that carry no `event`
    /// (e.g. `"account.payment_method.updated" = "account_change"`).
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// The event for a hook whose `type` is not in `events`.
    pub default_event: Option<String>,
}

impl HookSourceSettings {
    pub fn signing_secret(&self) -> Result<SigningSecret, String> {
        SigningSecret::parse(self.secret.expose_secret())
    }
}

/// Checks what types cannot; the error names the setting.
pub fn validate(webhooks: &WebhookSettings, hooks: &HookSettings) -> Result<(), (String, String)> {
    if webhooks
        .retry_schedule_secs
        .iter()
        .any(|s| !s.is_finite() || *s < 0.0)
    {
        return Err((
            "webhooks.retry_schedule_secs".into(),
            "delays must be numbers ≥ 0".into(),
        ));
    }
    if webhooks.timeout_ms == 0 || webhooks.poll_interval_ms == 0 {
        return Err((
            "webhooks.timeout_ms".into(),
            "timeout_ms and poll_interval_ms must be > 0".into(),
        ));
    }
    let mut keys = std::collections::HashSet::new();
    for (i, s) in webhooks.subscriptions.iter().enumerate() {
        let field = |f: &str| format!("webhooks.subscriptions[{i}].{f}");
        match url::Url::parse(&s.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err((field("url"), format!("{:?} is not an http(s) URL", s.url))),
        }
        s.signing_secret().map_err(|m| (field("secret"), m))?;
        if s.events.is_empty() {
            return Err((field("events"), "must name at least one event type".into()));
        }
        if let Some(unknown) = s.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err((
                field("events"),
                format!("{unknown:?} is not one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !keys.insert(s.key()) {
            return Err((
                field("name"),
                "two subscriptions share a name (or URL)".into(),
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, source) in hooks.sources.iter().enumerate() {
        let field = |f: &str| format!("hooks.sources[{i}].{f}");
        let valid_name = !source.name.is_empty()
            && source.name.len() <= 64
            && source
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err((
                field("name"),
                "must be 1 to 64 of a-z, 0-9, '-', '_'".into(),
            ));
        }
        if !names.insert(source.name.clone()) {
            return Err((field("name"), "two sources share a name".into()));
        }
        source.signing_secret().map_err(|m| (field("secret"), m))?;
        for event in source.events.values().chain(source.default_event.iter()) {
            Event::parse(event).map_err(|e| (field("events"), e.message))?;
        }
    }
    Ok(())
}
