//! The delivery worker: claims due outbox messages (leased, so several
//! replicas can run it), POSTs them signed, and records each attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;

use super::{AttemptResult, Delivery, Outbox, SigningSecret, WebhookSettings};
use crate::store::Store;

/// Messages claimed per round.
const BATCH: u32 = 16;
/// A lease outlives the attempt's timeout by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

pub struct DeliveryWorker {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    secrets: HashMap<String, SigningSecret>,
    subscriptions: Vec<String>,
    schedule: Vec<f64>,
    timeout: Duration,
    poll: Duration,
}

impl DeliveryWorker {
    pub fn new(
        store: Arc<dyn Store>,
        settings: &WebhookSettings,
        outbox: &Outbox,
        poll: Duration,
    ) -> Result<Self, reqwest::Error> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let http = reqwest::Client::builder()
            .user_agent(concat!("riskgate-webhooks/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        let secrets = outbox.secrets();
        Ok(Self {
            store,
            http,
            subscriptions: secrets.keys().cloned().collect(),
            secrets,
            schedule: settings.retry_schedule_secs.clone(),
            timeout,
            poll,
        })
    }

    /// One round: claim what is due and deliver it. Returns how many.
    pub async fn run_once(&self) -> usize {
        if self.secrets.is_empty() {
            return 0;
        }
        let lease = self.timeout + LEASE_MARGIN;
        let claimed = match self
            .store
            .claim_deliveries(&self.subscriptions, Utc::now(), lease, BATCH)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim webhook deliveries");
                return 0;
            }
        };
        let count = claimed.len();
        futures_util::future::join_all(claimed.into_iter().map(|d| self.deliver(d))).await;
        count
    }

    #[tracing::instrument(name = "webhook.deliver", skip_all, fields(id = %delivery.id, attempt = delivery.attempt))]
    async fn deliver(&self, delivery: Delivery) {
        let started = Instant::now();
        let result = match self.secrets.get(&delivery.subscription) {
            None => AttemptResult {
                status_code: None,
                error: Some("subscription is no longer configured".to_owned()),
                duration_ms: 0,
            },
            Some(secret) => self.post(&delivery, secret, started).await,
        };
        let retry_at = if result.delivered() || !self.secrets.contains_key(&delivery.subscription) {
            None
        } else {
            self.schedule.get(delivery.failures as usize).map(|secs| {
                // ±20 % jitter, so a receiver coming back is not hit by every message at once.
                let jittered = secs * rand::thread_rng().gen_range(0.8..=1.2);
                Utc::now() + chrono::Duration::milliseconds((jittered * 1000.0) as i64)
            })
        };
        if !result.delivered() {
            tracing::warn!(status = ?result.status_code, error = ?result.error, retry = retry_at.is_some(), "webhook delivery failed");
        }
        if let Err(error) = self
            .store
            .record_delivery(&delivery, &result, retry_at, Utc::now())
            .await
        {
            // The lease runs out and the message is tried again: at least once.
            tracing::warn!(%error, "could not record a webhook attempt");
        }
    }

    async fn post(
        &self,
        delivery: &Delivery,
        secret: &SigningSecret,
        started: Instant,
    ) -> AttemptResult {
        let timestamp = Utc::now().timestamp();
        let signature = secret.sign(&delivery.id, timestamp, delivery.payload.as_bytes());
        let response = self
            .http
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        match response {
            Ok(response) => {
                let status = response.status().as_u16();
                AttemptResult {
                    status_code: Some(status),
                    error: (!response.status().is_success()).then(|| format!("HTTP {status}")),
                    duration_ms,
                }
            }
            Err(error) => AttemptResult {
                status_code: None,
                error: Some(if error.is_timeout() {
                    "timed out".to_owned()
                } else {
                    error.to_string()
                }),
                duration_ms,
            },
        }
    }
}

/// Runs the worker until the task is dropped.
pub async fn run_delivery_worker(worker: Arc<DeliveryWorker>) {
    loop {
        if worker.run_once().await == 0 {
            tokio::time::sleep(worker.poll).await;
        }
    }
}
