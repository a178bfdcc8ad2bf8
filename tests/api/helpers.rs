//! `spawn_app`: the real riskgate, on a fresh database, against a wiremock
//! Roundtable.

use std::collections::HashMap;
use std::sync::LazyLock;

use riskgate::config::Settings;
use riskgate::startup::Application;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const API_KEY: &str = "test-key";
pub const ROUNDTABLE_KEY: &str = "rt-test-key";
pub const SEED: &str = include_str!("../../demo/v0.0-seed.json");
pub const V1_REPORT: &str = include_str!("../../demo/v1-report.json");

/// Where the PostgreSQL tests create their databases. Tests fail, not skip,
/// when it cannot be reached.
static POSTGRES_ADMIN_URL: LazyLock<String> = LazyLock::new(|| {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
});

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        riskgate::telemetry::init(riskgate::config::LogFormat::Pretty);
    }
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    pub roundtable: MockServer,
    pub http: reqwest::Client,
    pub database_url: String,
    postgres_database: Option<String>,
    _dir: tempfile::TempDir,
}

/// Settings a test may change before the app starts (environment names, as
/// deploy scripts would set them).
#[derive(Default)]
pub struct Options {
    pub env: Vec<(&'static str, String)>,
    /// A configuration file's text, passed as `--config` would be.
    pub config: Option<String>,
}

impl Options {
    pub fn with_config(mut self, toml: impl Into<String>) -> Self {
        self.config = Some(toml.into());
        self
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: Options) -> TestApp {
    LazyLock::force(&TRACING);
    let roundtable = MockServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, postgres_database) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("riskgate.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, name) = create_postgres_database().await;
            (url, Some(name))
        }
    };
    let mut env: HashMap<String, String> = [
        ("RISKGATE_LISTEN", "127.0.0.1:0".to_owned()),
        ("RISKGATE_DATABASE_URL", database_url.clone()),
        ("RISKGATE_API_KEYS", format!("other-key,{API_KEY}")),
        ("ROUNDTABLE_API_URL", roundtable.uri()),
        ("ROUNDTABLE_API_KEY", ROUNDTABLE_KEY.to_owned()),
        ("RISKGATE_ROUNDTABLE__DEADLINE_MS", "1000".to_owned()),
        ("RISKGATE_ROUNDTABLE__ATTEMPT_TIMEOUT_MS", "300".to_owned()),
        ("RISKGATE_ROUNDTABLE__BACKOFF_BASE_MS", "20".to_owned()),
        ("RISKGATE_ROUNDTABLE__BACKOFF_MAX_MS", "80".to_owned()),
        ("RISKGATE_WEBHOOKS__POLL_INTERVAL_MS", "50".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(options.env.into_iter().map(|(k, v)| (k.to_owned(), v)));

    let config_path = options.config.map(|text| {
        let path = dir.path().join("riskgate.toml");
        std::fs::write(&path, text).expect("config written");
        path
    });
    let settings =
        Settings::load_from(config_path.as_deref(), env).expect("test settings are valid");
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        roundtable,
        http: reqwest::Client::new(),
        database_url,
        postgres_database,
        _dir: dir,
    }
}

async fn create_postgres_database() -> (String, String) {
    let admin_url = POSTGRES_ADMIN_URL.as_str();
    let mut admin = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required for these tests: {e}"));
    let name = format!("riskgate_test_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .expect("create test database");
    let mut url = url::Url::parse(admin_url).expect("admin url");
    url.set_path(&name);
    (url.to_string(), name)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let Some(name) = self.postgres_database.take() else {
            return;
        };
        // Drop runs inside the test's runtime; a thread of its own may block.
        let admin_url = POSTGRES_ADMIN_URL.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Serves `body` for a session on the v0.0 path.
    pub async fn serve_report(&self, session_id: &str, body: &str) {
        Mock::given(method("GET"))
            .and(path(format!("/v0.0/sessions/{session_id}/report")))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/json"),
            )
            .mount(&self.roundtable)
            .await;
    }

    pub async fn post_evaluation(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/evaluations"))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("request sent")
    }

    /// Rows in the evaluations table, read straight from the database.
    pub async fn row_count(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM evaluations").await
    }

    /// A count read straight from the database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        if self.database_url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("sqlite");
            sqlx::query_scalar(sql)
                .fetch_one(&mut conn)
                .await
                .expect("count")
        } else {
            let mut conn = PgConnection::connect(&self.database_url)
                .await
                .expect("postgres");
            sqlx::query_scalar(sql)
                .fetch_one(&mut conn)
                .await
                .expect("count")
        }
    }
}

/// Asserts an RFC 9457 problem answer, returning its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, type_suffix: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:riskgate:problem:{type_suffix}"));
    assert!(body["title"].is_string());
    assert!(body["detail"].is_string());
    body
}

/// Instantiates each `async fn(Backend)` test once per storage backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::helpers::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::helpers::Backend::Postgres).await
            })*
        }
    };
}
