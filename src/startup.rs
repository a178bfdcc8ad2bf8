//! Build, then run: [`Application::build`] connects, migrates and binds (port 0
//! in tests), reporting the real port; [`Application::run_until_stopped`] serves.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use secrecy::ExposeSecret;
use tracing_actix_web::TracingLogger;

use crate::api::{self, ApiKeys, AppState};
use crate::config::{ConfigError, Settings};
use crate::evaluation::Evaluator;
use crate::roundtable::{DemoReportSource, ReportSource, RoundtableClient};
use crate::store::{self, StoreError};

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why riskgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database ({url}): {source}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("roundtable client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, ready-to-run riskgate.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to the database, applies migrations, and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let source: Arc<dyn ReportSource> = if settings.demo {
            Arc::new(DemoReportSource)
        } else {
            Arc::new(RoundtableClient::new(&settings.roundtable)?)
        };
        Self::build_with_source(settings, source).await
    }

    /// As [`Application::build`], with the report source given.
    pub async fn build_with_source(
        settings: Settings,
        source: Arc<dyn ReportSource>,
    ) -> Result<Self, StartupError> {
        let policy = Arc::new(settings.load_policy()?);
        let store = open_store(&settings).await?;
        let store_error = |source| StartupError::Store {
            url: redact(settings.database_url.expose_secret()),
            source,
        };
        store.migrate().await.map_err(store_error)?;

        let addr = settings.listen_addr()?;
        let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: addr.to_string(),
                source,
            })?
            .port();

        let state = web::Data::new(AppState {
            evaluator: Evaluator::new(
                source,
                policy.clone(),
                store,
                Duration::from_millis(settings.roundtable.deadline_ms),
            ),
            max_body_bytes: settings.max_body_bytes,
        });
        let keys = web::Data::new(ApiKeys::new(&settings.accepted_api_keys()));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .app_data(keys.clone())
                .configure(api::routes)
        })
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?
        .run();
        tracing::info!(%addr, port, policy = policy.version(), demo = settings.demo, "riskgate listening");
        Ok(Self { port, server })
    }

    /// The port actually bound (useful when configured with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Connects to the configured database without serving (for `riskgate migrate`).
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn store::Store>, StartupError> {
    let url = settings.database_url.expose_secret();
    store::connect(url, &settings.database)
        .await
        .map_err(|source| StartupError::Store {
            url: redact(url),
            source,
        })
}

/// A database URL fit for a log line: any password replaced.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
