//! Build, then run: [`Application::build`] connects, migrates and binds (port 0
//! in tests), reporting the real port; [`Application::run_until_stopped`] serves.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use secrecy::ExposeSecret;

use crate::api::HookSources;
use crate::api::{self, trace_request, ApiKeys, AppState};
use crate::config::{ConfigError, Settings};
use crate::evaluation::{Evaluator, EvaluatorLimits};
use crate::metrics::Metrics;
use crate::review::Reviews;
use crate::roundtable::{CircuitBreaker, DemoReportSource, ReportSource, RoundtableClient};
use crate::store::{self, StoreError};
use crate::webhooks::{
    run_delivery_worker, run_inbound_worker, DeliveryWorker, InboundWorker, Outbox,
};
use tokio::sync::Notify;

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

/// How often expired idempotency keys are deleted.
const IDEMPOTENCY_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// A bound, ready-to-run riskgate.
pub struct Application {
    port: u16,
    server: Server,
    store: Arc<dyn store::Store>,
    delivery: Arc<DeliveryWorker>,
    inbound: Arc<InboundWorker>,
}

/// Deletes idempotency keys past their time to live. Safe on every replica:
/// it is one idempotent DELETE.
async fn purge_expired_idempotency_keys(store: Arc<dyn store::Store>) {
    let mut every = tokio::time::interval(IDEMPOTENCY_SWEEP_EVERY);
    loop {
        every.tick().await;
        match store
            .purge_expired_idempotency_keys(chrono::Utc::now())
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys deleted"),
            Err(error) => tracing::warn!(%error, "could not purge expired idempotency keys"),
        }
    }
}

impl Application {
    /// Connects to the database, applies migrations, and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let metrics = Arc::new(Metrics::new());
        let source: Arc<dyn ReportSource> = if settings.demo {
            Arc::new(DemoReportSource)
        } else {
            let rt = &settings.roundtable;
            Arc::new(CircuitBreaker::new(
                RoundtableClient::new(rt, metrics.clone())?,
                rt.circuit_failure_threshold,
                Duration::from_millis(rt.circuit_cool_down_ms),
                metrics.clone(),
            ))
        };
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

        let limits = EvaluatorLimits {
            deadline: Duration::from_millis(settings.roundtable.deadline_ms),
            database_timeout: Duration::from_millis(settings.database.timeout_ms),
            idempotency_ttl: Duration::from_secs(settings.idempotency.ttl_secs),
        };
        let outbox = Arc::new(Outbox::new(settings.webhooks.subscriptions.clone()));
        let evaluator = Arc::new(Evaluator::new(
            source,
            policy.clone(),
            store.clone(),
            metrics.clone(),
            outbox.clone(),
            limits,
        ));
        let reviews = Reviews::new(
            store.clone(),
            policy.clone(),
            outbox.clone(),
            Duration::from_secs(settings.reviews.lease_secs),
            limits.database_timeout,
        );
        let hook_wake = Arc::new(Notify::new());
        let poll = Duration::from_millis(settings.webhooks.poll_interval_ms);
        let delivery = DeliveryWorker::new(store.clone(), &settings.webhooks, &outbox, poll)?;
        let inbound = InboundWorker::new(
            store.clone(),
            evaluator.clone(),
            settings.hooks.sources.clone(),
            hook_wake.clone(),
            poll,
            // Evaluating a hook takes at most the deadline plus a few
            // database calls; a lease past that means its worker died.
            limits.deadline + limits.database_timeout * 4 + Duration::from_secs(5),
        );
        let state = web::Data::new(AppState {
            evaluator,
            reviews,
            metrics,
            max_body_bytes: settings.max_body_bytes,
            hooks: HookSources::new(&settings.hooks),
            hook_wake,
        });
        let keys = web::Data::new(ApiKeys::new(&settings.accepted_api_keys()));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(trace_request))
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
        Ok(Self {
            port,
            server,
            store,
            delivery: Arc::new(delivery),
            inbound: Arc::new(inbound),
        })
    }

    /// The port actually bound (useful when configured with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then lets in-flight requests finish
    /// (up to the grace period) and exits. Background work runs alongside.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let workers = [
            tokio::spawn(purge_expired_idempotency_keys(self.store.clone())),
            tokio::spawn(run_delivery_worker(self.delivery.clone())),
            tokio::spawn(run_inbound_worker(self.inbound.clone())),
        ];
        let served = self.server.await;
        // Work cut short here is leased: another replica, or the next start,
        // picks it up when the lease ends.
        for worker in workers {
            worker.abort();
        }
        served
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
