//! Configuration: built-in defaults < optional file < environment, validated
//! once after loading so a bad setting fails at start, naming itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::policy::{Policy, PolicyError};
use crate::roundtable::RoundtableSettings;
use crate::webhooks::{HookSettings, WebhookSettings};

/// The built-in defaults, commented: the reference for every setting.
pub const DEFAULTS_TOML: &str = include_str!("../config/default.toml");

/// The API key accepted in demo mode, printed at start.
pub const DEMO_API_KEY: &str = "demo-key";

/// Environment names outside the `RISKGATE_` prefix that are part of the
/// public interface, and the setting each sets.
const ROUNDTABLE_ENV: &[(&str, &str)] = &[
    ("ROUNDTABLE_API_URL", "roundtable.api_url"),
    ("ROUNDTABLE_API_KEY", "roundtable.api_key"),
    ("ROUNDTABLE_API_VERSION", "roundtable.api_version"),
];

/// A setting that is wrong, and which.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    #[error("configuration: {setting}: {message}")]
    Setting { setting: String, message: String },
    #[error("configuration: policy ({path}): {source}")]
    Policy {
        path: String,
        #[source]
        source: PolicyError,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `[database]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connections per riskgate process.
    pub max_connections: u32,
    /// How long a request waits for a free connection.
    pub acquire_timeout_ms: u64,
    /// Longest one database call may take before the request answers 503.
    pub timeout_ms: u64,
}

/// `[reviews]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// How long a claim on a review item lasts.
    pub lease_secs: u64,
}

/// `[idempotency]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long an `Idempotency-Key` is remembered.
    pub ttl_secs: u64,
}

/// Every setting riskgate reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to bind (`RISKGATE_LISTEN`).
    pub listen: String,
    /// `sqlite://…` or `postgres://…` (`RISKGATE_DATABASE_URL`); secret, as it
    /// may hold a password.
    pub database_url: SecretString,
    /// Policy file (`RISKGATE_POLICY`); `None`: the bundled default.
    pub policy: Option<PathBuf>,
    /// Bearer keys accepted on `/v1/*` (`RISKGATE_API_KEYS`).
    pub api_keys: Vec<SecretString>,
    /// `RISKGATE_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Built-in demo sessions instead of Roundtable; accepts [`DEMO_API_KEY`].
    pub demo: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    pub database: DatabaseSettings,
    pub idempotency: IdempotencySettings,
    pub reviews: ReviewSettings,
    pub webhooks: WebhookSettings,
    #[serde(default)]
    pub hooks: HookSettings,
    pub roundtable: RoundtableSettings,
}

impl Settings {
    /// Loads from the defaults, the optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars().collect())
    }

    /// Loads with an explicit environment (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("RISKGATE")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("api_keys")
                .with_list_parse_key("webhooks.retry_schedule_secs")
                .try_parsing(true)
                .source(Some(env.clone())),
        );
        for (name, key) in ROUNDTABLE_ENV {
            builder = builder.set_override_option(*key, env.get(*name).cloned())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validated()
    }

    /// Checks what types alone cannot.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.listen_addr()?;
        let url = self.database_url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "RISKGATE_DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }
        match url::Url::parse(&self.roundtable.api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(invalid(
                    "ROUNDTABLE_API_URL",
                    format!("{:?} is not an http(s) URL", self.roundtable.api_url),
                ))
            }
        }
        self.api_keys
            .retain(|key| !key.expose_secret().trim().is_empty());
        if self.api_keys.is_empty() && !self.demo {
            return Err(invalid(
                "RISKGATE_API_KEYS",
                "no API key configured; set at least one (or run with --demo)",
            ));
        }
        let rt = &self.roundtable;
        if rt.deadline_ms == 0 || rt.attempt_timeout_ms == 0 {
            return Err(invalid(
                "roundtable.deadline_ms",
                "deadline_ms and attempt_timeout_ms must be > 0",
            ));
        }
        if rt.max_attempts == 0 {
            return Err(invalid("roundtable.max_attempts", "must be at least 1"));
        }
        let db = &self.database;
        if db.max_connections == 0 || db.acquire_timeout_ms == 0 || db.timeout_ms == 0 {
            return Err(invalid(
                "database.max_connections",
                "max_connections, acquire_timeout_ms and timeout_ms must be > 0",
            ));
        }
        if let Err((setting, message)) =
            crate::webhooks::validate_settings(&self.webhooks, &self.hooks)
        {
            return Err(ConfigError::Setting { setting, message });
        }
        if self.reviews.lease_secs == 0 {
            return Err(invalid("reviews.lease_secs", "must be > 0"));
        }
        if self.idempotency.ttl_secs == 0 {
            return Err(invalid("idempotency.ttl_secs", "must be > 0"));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        self.load_policy()?;
        Ok(self)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "RISKGATE_LISTEN",
                format!("{:?} is not an address such as 127.0.0.1:8080", self.listen),
            )
        })
    }

    /// The configured policy, or the bundled one.
    pub fn load_policy(&self) -> Result<Policy, ConfigError> {
        let Some(path) = &self.policy else {
            return Policy::bundled().map_err(|source| ConfigError::Policy {
                path: "bundled".into(),
                source,
            });
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("RISKGATE_POLICY", format!("cannot read {shown}: {e}")))?;
        Policy::from_toml(&text).map_err(|source| ConfigError::Policy {
            path: shown,
            source,
        })
    }

    /// Every key `/v1/*` accepts, the demo key included in demo mode.
    pub fn accepted_api_keys(&self) -> Vec<SecretString> {
        let mut keys = self.api_keys.clone();
        if self.demo {
            keys.push(SecretString::from(format!("demo:{DEMO_API_KEY}")));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn setting_of(result: Result<Settings, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { setting, .. }) => setting.to_owned(),
            Err(other) => other.to_string(),
            Ok(_) => "ok".to_owned(),
        }
    }

    #[test]
    fn defaults_need_only_an_api_key() {
        let settings =
            Settings::load_from(None, env(&[("RISKGATE_API_KEYS", "k1,k2")])).expect("valid");
        assert_eq!(settings.listen, "127.0.0.1:8080");
        assert_eq!(
            settings.database_url.expose_secret(),
            "sqlite://riskgate.db"
        );
        assert_eq!(settings.api_keys.len(), 2);
        assert_eq!(settings.roundtable.api_url, "https://api.roundtable.ai");
        assert_eq!(settings.roundtable.deadline_ms, 2000);
    }

    #[test]
    fn environment_beats_file_beats_defaults() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "listen = \"0.0.0.0:9000\"\napi_keys = [\"from-file\"]\n[roundtable]\napi_url = \"http://file.example\"\ndeadline_ms = 1500"
        )
        .expect("write");
        let from_file = Settings::load_from(Some(file.path()), env(&[])).expect("valid");
        assert_eq!(from_file.listen, "0.0.0.0:9000");
        assert_eq!(from_file.roundtable.deadline_ms, 1500);
        assert_eq!(
            from_file.roundtable.api_version,
            crate::roundtable::ApiVersion::V0
        );

        let from_env = Settings::load_from(
            Some(file.path()),
            env(&[
                ("RISKGATE_LISTEN", "127.0.0.1:7000"),
                ("RISKGATE_DATABASE_URL", "postgres://u:p@db/riskgate"),
                ("ROUNDTABLE_API_URL", "http://env.example"),
                ("ROUNDTABLE_API_KEY", "rt-secret"),
                ("ROUNDTABLE_API_VERSION", "v1"),
                ("RISKGATE_ROUNDTABLE__DEADLINE_MS", "900"),
                ("RISKGATE_LOG_FORMAT", "json"),
            ]),
        )
        .expect("valid");
        assert_eq!(from_env.listen, "127.0.0.1:7000");
        assert_eq!(from_env.roundtable.api_url, "http://env.example");
        assert_eq!(
            from_env.roundtable.api_version,
            crate::roundtable::ApiVersion::V1
        );
        assert_eq!(from_env.roundtable.deadline_ms, 900);
        assert_eq!(from_env.log_format, LogFormat::Json);
        assert_eq!(from_env.api_keys.len(), 1);
    }

    #[test]
    fn secrets_do_not_print() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("RISKGATE_API_KEYS", "very-secret-key"),
                ("RISKGATE_DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("ROUNDTABLE_API_KEY", "rt-secret"),
            ]),
        )
        .expect("valid");
        let shown = format!("{settings:?}");
        for secret in ["very-secret-key", "hunter2", "rt-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn bad_settings_fail_naming_the_setting() {
        let key = ("RISKGATE_API_KEYS", "k");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "RISKGATE_API_KEYS"),
            (vec![("RISKGATE_API_KEYS", " , ")], "RISKGATE_API_KEYS"),
            (vec![key, ("RISKGATE_LISTEN", "nowhere")], "RISKGATE_LISTEN"),
            (
                vec![key, ("RISKGATE_DATABASE_URL", "mysql://x")],
                "RISKGATE_DATABASE_URL",
            ),
            (
                vec![key, ("ROUNDTABLE_API_URL", "not a url")],
                "ROUNDTABLE_API_URL",
            ),
            (
                vec![key, ("ROUNDTABLE_API_URL", "ftp://x")],
                "ROUNDTABLE_API_URL",
            ),
            (
                vec![key, ("RISKGATE_POLICY", "/does/not/exist.toml")],
                "RISKGATE_POLICY",
            ),
        ];
        for (pairs, setting) in cases {
            assert_eq!(
                setting_of(Settings::load_from(None, env(&pairs))),
                setting,
                "{pairs:?}"
            );
        }
        let demo = Settings::load_from(None, env(&[("RISKGATE_DEMO", "true")]))
            .expect("demo needs no key");
        assert_eq!(demo.accepted_api_keys().len(), 1);
        let version = Settings::load_from(None, env(&[key, ("ROUNDTABLE_API_VERSION", "v2")]));
        assert!(setting_of(version).contains("api_version"));
    }

    #[test]
    fn an_invalid_policy_file_fails_naming_its_field() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "version = \"x\"\ndefault_check_weight = -1\n[events.default]\nreview = 1\nblock = 2\non_upstream_error = \"allow\"\non_session_not_found = \"allow\"").expect("write");
        let path = file.path().display().to_string();
        let err = Settings::load_from(
            None,
            env(&[("RISKGATE_API_KEYS", "k"), ("RISKGATE_POLICY", &path)]),
        )
        .expect_err("invalid policy");
        let message = err.to_string();
        assert!(message.contains("default_check_weight"), "{message}");
        assert!(message.contains(&path), "{message}");
    }
}
