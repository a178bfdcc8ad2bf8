//! The HTTP client for Roundtable's session report API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use reqwest::{header, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use super::{FetchError, FetchedReport, ReportSource};
use crate::domain::SessionId;
use crate::metrics::Metrics;
use crate::report::read_report;

/// Everything but RFC 3986 unreserved characters is encoded, `/` included,
/// so a session id is always exactly one path segment. The dots stay as they
/// are: URL parsers resolve `%2E%2E` like `..`, so dot segments are refused
/// when the id is parsed instead.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Which report path to call. The body's shape is detected from its
/// content, whichever path served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ApiVersion {
    #[serde(rename = "v0.0")]
    V0,
    #[serde(rename = "v1")]
    V1,
}

impl ApiVersion {
    pub fn path(self) -> &'static str {
        match self {
            ApiVersion::V0 => "v0.0",
            ApiVersion::V1 => "v1",
        }
    }
}

/// `[roundtable]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundtableSettings {
    /// Base URL of the API (`ROUNDTABLE_API_URL`).
    pub api_url: String,
    /// Secret key sent as the bearer token (`ROUNDTABLE_API_KEY`).
    pub api_key: Option<SecretString>,
    /// `v0.0` or `v1` (`ROUNDTABLE_API_VERSION`).
    pub api_version: ApiVersion,
    /// Longest one upstream call may take.
    pub attempt_timeout_ms: u64,
    /// Longest fetching a report may take, retries included; then the
    /// policy's fail mode decides.
    pub deadline_ms: u64,
    /// Upstream calls per evaluation, the first included.
    pub max_attempts: u32,
    /// First retry delay; doubles each retry, with jitter.
    pub backoff_base_ms: u64,
    /// Largest retry delay.
    pub backoff_max_ms: u64,
    /// Failed fetches in a row that open the circuit.
    pub circuit_failure_threshold: u32,
    /// How long an open circuit answers the fail mode before one probe.
    pub circuit_cool_down_ms: u64,
}

/// A pooled client for one Roundtable workspace.
#[derive(Debug, Clone)]
pub struct RoundtableClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<SecretString>,
    version: ApiVersion,
    attempt_timeout: Duration,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    metrics: Arc<Metrics>,
}

/// What one attempt came to, and whether another is worth making.
enum Attempt {
    Done(Result<FetchedReport, FetchError>),
    Retry {
        error: FetchError,
        retry_after: Option<Duration>,
    },
}

impl RoundtableClient {
    pub fn new(
        settings: &RoundtableSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let attempt_timeout = Duration::from_millis(settings.attempt_timeout_ms);
        let http = reqwest::Client::builder()
            .user_agent(concat!("riskgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(attempt_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base_url: settings.api_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            version: settings.api_version,
            attempt_timeout,
            max_attempts: settings.max_attempts.max(1),
            backoff_base: Duration::from_millis(settings.backoff_base_ms),
            backoff_max: Duration::from_millis(settings.backoff_max_ms),
            metrics,
        })
    }

    /// The report URL of a session, its id one encoded path segment.
    pub fn report_url(&self, session_id: &SessionId) -> String {
        format!(
            "{}/{}/sessions/{}/report",
            self.base_url,
            self.version.path(),
            utf8_percent_encode(session_id.as_str(), SEGMENT)
        )
    }

    async fn attempt(&self, url: &str, timeout: Duration, attempts: u32) -> Attempt {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, self.call(url, timeout, attempts))
            .await
            .unwrap_or(Attempt::Retry {
                error: FetchError::Timeout,
                retry_after: None,
            });
        let label = match &outcome {
            Attempt::Done(Ok(_)) => "200".to_owned(),
            Attempt::Done(Err(e)) | Attempt::Retry { error: e, .. } => match e {
                FetchError::NotFound => "404".to_owned(),
                FetchError::Unauthorized(s) | FetchError::Status(s) => s.to_string(),
                FetchError::RateLimited => "429".to_owned(),
                FetchError::Timeout => "timeout".to_owned(),
                FetchError::Connect(_) => "connect_error".to_owned(),
                FetchError::InvalidBody(_) => "invalid_body".to_owned(),
                FetchError::CircuitOpen => "circuit_open".to_owned(),
            },
        };
        self.metrics.record_upstream(&label, started.elapsed());
        outcome
    }

    async fn call(&self, url: &str, timeout: Duration, attempts: u32) -> Attempt {
        let mut request = self.http.get(url).timeout(timeout);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    error: transport_error(&error),
                    retry_after: None,
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return match response.bytes().await {
                Ok(body) => Attempt::Done(read_body(&body, attempts)),
                Err(error) => Attempt::Retry {
                    error: transport_error(&error),
                    retry_after: None,
                },
            };
        }
        let error = match status {
            StatusCode::NOT_FOUND => FetchError::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                FetchError::Unauthorized(status.as_u16())
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Attempt::Retry {
                    error: FetchError::RateLimited,
                    retry_after: retry_after(response.headers()),
                }
            }
            s if s.is_server_error() => {
                return Attempt::Retry {
                    error: FetchError::Status(s.as_u16()),
                    retry_after: None,
                }
            }
            s => FetchError::Status(s.as_u16()),
        };
        Attempt::Done(Err(error))
    }

    /// Exponential backoff with equal jitter: half the delay fixed, half random.
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX))
            .min(self.backoff_max);
        let half = exp / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

#[async_trait]
impl ReportSource for RoundtableClient {
    #[tracing::instrument(name = "roundtable.fetch", skip_all, fields(session_id = %session_id))]
    async fn fetch(
        &self,
        session_id: &SessionId,
        deadline: Instant,
    ) -> Result<FetchedReport, FetchError> {
        let url = self.report_url(session_id);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FetchError::Timeout);
            }
            let timeout = self.attempt_timeout.min(remaining);
            let outcome = self.attempt(&url, timeout, attempts).await;
            let (error, retry_after) = match outcome {
                Attempt::Done(result) => return result,
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            tracing::warn!(attempt = attempts, error = %error, "roundtable call failed");
            if attempts >= self.max_attempts {
                return Err(error);
            }
            let delay = retry_after.unwrap_or_else(|| self.backoff(attempts - 1));
            // A retry that cannot finish before the deadline is not worth starting.
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
        }
    }
}

fn read_body(body: &[u8], attempts: u32) -> Result<FetchedReport, FetchError> {
    let report = read_report(body)?;
    // serde_json only accepts UTF-8, so nothing is replaced here.
    let raw = String::from_utf8_lossy(body).into_owned();
    Ok(FetchedReport {
        report,
        raw,
        attempts,
    })
}

fn transport_error(error: &reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else {
        // The source chain says why (refused, reset, DNS); the top level rarely does.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        FetchError::Connect(message)
    }
}

/// `Retry-After` in delta-seconds; an HTTP-date is rare from APIs and would
/// not fit a two-second deadline anyway.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(version: ApiVersion) -> RoundtableClient {
        RoundtableClient::new(
            &RoundtableSettings {
                api_url: "http://upstream.test/base/".into(),
                api_key: None,
                api_version: version,
                attempt_timeout_ms: 100,
                deadline_ms: 1000,
                max_attempts: 3,
                backoff_base_ms: 40,
                backoff_max_ms: 100,
                circuit_failure_threshold: 5,
                circuit_cool_down_ms: 1000,
            },
            Arc::new(Metrics::new()),
        )
        .expect("client builds")
    }

    #[test]
    fn session_id_is_one_encoded_segment() {
        let c = client(ApiVersion::V0);
        let cases = [
            (
                "abc123def456",
                "http://upstream.test/base/v0.0/sessions/abc123def456/report",
            ),
            (
                "../../x",
                "http://upstream.test/base/v0.0/sessions/..%2F..%2Fx/report",
            ),
            (
                "a?b#c",
                "http://upstream.test/base/v0.0/sessions/a%3Fb%23c/report",
            ),
            (
                "%2e%2e",
                "http://upstream.test/base/v0.0/sessions/%252e%252e/report",
            ),
        ];
        for (id, expected) in cases {
            let id = SessionId::parse(id).expect("valid session id");
            let url = c.report_url(&id);
            assert_eq!(url, expected);
            // What reqwest sends is what we built: no segment was resolved away.
            let parsed = reqwest::Url::parse(&url).expect("valid url");
            assert_eq!(parsed.as_str(), expected);
        }
        assert_eq!(
            client(ApiVersion::V1).report_url(&SessionId::parse("s").expect("s")),
            "http://upstream.test/base/v1/sessions/s/report"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let c = client(ApiVersion::V0);
        for _ in 0..50 {
            let first = c.backoff(0);
            assert!(first >= Duration::from_millis(20) && first <= Duration::from_millis(40));
            let capped = c.backoff(10);
            assert!(capped >= Duration::from_millis(50) && capped <= Duration::from_millis(100));
        }
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(1)));
        headers.insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static("0.25"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
