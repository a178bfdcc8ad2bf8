//! The storage interface itself, on both backends: idempotency claims,
//! leases, expiry, and the all-or-nothing evaluation write.

use std::time::Duration;

use chrono::Utc;
use riskgate::config::DatabaseSettings;
use riskgate::store::{self, Claim, IdempotencyKey, NewEvaluation, Store, StoreError};
use serde_json::json;

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

async fn open(backend: Backend) -> (crate::helpers::TestApp, std::sync::Arc<dyn Store>) {
    // The app creates and migrates a fresh database; we open our own pool to it.
    let app = spawn_app(backend).await;
    let settings = DatabaseSettings {
        max_connections: 4,
        acquire_timeout_ms: 2_000,
        timeout_ms: 2_000,
    };
    let store = store::connect(&app.database_url, &settings)
        .await
        .expect("store opens");
    (app, store)
}

fn key(hash: &str) -> IdempotencyKey {
    IdempotencyKey {
        scope: "checkout".into(),
        key: "order-1".into(),
        request_hash: hash.into(),
    }
}

async fn idempotency_claims_follow_their_lease_and_expiry(backend: Backend) {
    let (app, store) = open(backend).await;
    let lease = Duration::from_millis(200);
    let ttl = Duration::from_secs(3600);
    let now = Utc::now();

    assert_eq!(
        store
            .claim_idempotency_key(&key("h1"), now, lease, ttl)
            .await
            .expect("claim"),
        Claim::Acquired
    );
    assert_eq!(
        store
            .claim_idempotency_key(&key("h1"), now, lease, ttl)
            .await
            .expect("claim"),
        Claim::InProgress
    );
    assert_eq!(
        store
            .claim_idempotency_key(&key("h2"), now, lease, ttl)
            .await
            .expect("claim"),
        Claim::Mismatch
    );
    let other_scope = IdempotencyKey {
        scope: "alice".into(),
        ..key("h2")
    };
    assert_eq!(
        store
            .claim_idempotency_key(&other_scope, now, lease, ttl)
            .await
            .expect("claim"),
        Claim::Acquired
    );

    // Waiters peek without locking: the same answers, and Vacant when the
    // key is free to claim.
    let peek = |k: IdempotencyKey, at| {
        let store = store.clone();
        async move { store.peek_idempotency_key(&k, at).await.expect("peek") }
    };
    assert_eq!(peek(key("h1"), now).await, Claim::InProgress);
    assert_eq!(peek(key("h2"), now).await, Claim::Mismatch);
    assert_eq!(
        peek(key("h1"), now + chrono::Duration::milliseconds(250)).await,
        Claim::Vacant
    );
    let unknown = IdempotencyKey {
        key: "never-used".into(),
        ..key("h1")
    };
    assert_eq!(peek(unknown, now).await, Claim::Vacant);

    // The first owner died: once its lease ends, a retry takes over.
    let later = now + chrono::Duration::milliseconds(250);
    assert_eq!(
        store
            .claim_idempotency_key(&key("h1"), later, lease, ttl)
            .await
            .expect("claim"),
        Claim::Acquired
    );

    // Completing stores the evaluation and the key's answer together.
    let evaluation = sample_evaluation();
    store
        .insert_evaluation(&NewEvaluation {
            idempotency: Some(&key("h1")),
            ..NewEvaluation::plain(&evaluation)
        })
        .await
        .expect("insert");
    assert_eq!(
        store
            .claim_idempotency_key(&key("h1"), later, lease, ttl)
            .await
            .expect("claim"),
        Claim::Completed(evaluation.id)
    );
    // A completed key is not taken over when its lease ends, only when it expires.
    let much_later = now + chrono::Duration::minutes(30);
    assert_eq!(
        store
            .claim_idempotency_key(&key("h1"), much_later, lease, ttl)
            .await
            .expect("claim"),
        Claim::Completed(evaluation.id)
    );
    assert_eq!(
        peek(key("h1"), much_later).await,
        Claim::Completed(evaluation.id)
    );
    let expired = now + chrono::Duration::hours(2);
    assert_eq!(peek(key("h1"), expired).await, Claim::Vacant);
    assert_eq!(
        store
            .purge_expired_idempotency_keys(expired)
            .await
            .expect("purge"),
        2
    );
    assert_eq!(
        store
            .claim_idempotency_key(&key("h2"), expired, lease, ttl)
            .await
            .expect("claim"),
        Claim::Acquired
    );
    drop(app);
}

async fn a_lost_claim_rolls_the_evaluation_back(backend: Backend) {
    let (app, store) = open(backend).await;
    let now = Utc::now();
    let lease = Duration::from_secs(60);
    let ttl = Duration::from_secs(3600);
    assert_eq!(
        store
            .claim_idempotency_key(&key("h1"), now, lease, ttl)
            .await
            .expect("claim"),
        Claim::Acquired
    );
    // Someone else's claim replaced ours (our lease ran out): our write must not land.
    store
        .release_idempotency_key(&key("h1"))
        .await
        .expect("release");
    let evaluation = sample_evaluation();
    let result = store
        .insert_evaluation(&NewEvaluation {
            idempotency: Some(&key("h1")),
            ..NewEvaluation::plain(&evaluation)
        })
        .await;
    assert!(
        matches!(result, Err(StoreError::IdempotencyLost)),
        "{result:?}"
    );
    assert_eq!(
        store.get_evaluation(evaluation.id).await.expect("get"),
        None
    );
    assert_eq!(app.row_count().await, 0, "nothing half-written");
}

/// An evaluation the engine would have sent to review, with the given score.
pub fn review_evaluation(score: f64) -> riskgate::evaluation::Evaluation {
    riskgate::evaluation::Evaluation {
        id: uuid::Uuid::now_v7(),
        decision: riskgate::domain::Decision::Review,
        score,
        event: "account_change".into(),
        ..sample_evaluation()
    }
}

fn sample_evaluation() -> riskgate::evaluation::Evaluation {
    use riskgate::domain::Decision;
    use riskgate::evaluation::{Evaluation, Timings};
    Evaluation {
        id: uuid::Uuid::now_v7(),
        created_at: Utc::now(),
        session_id: "s".into(),
        event: "checkout".into(),
        user_id: None,
        amount: Some("10.00".into()),
        currency: Some("EUR".into()),
        metadata: json!({"k": [1, "\u{e9}"]}).as_object().cloned(),
        decision: Decision::Allow,
        score: 0.0,
        reasons: vec![],
        policy_version: "p".into(),
        degraded: false,
        degraded_reason: None,
        session_replay_url: None,
        timings: Timings {
            upstream_attempts: 1,
            upstream_ms: 1,
            total_ms: 1,
        },
        report_shape: None,
        report_snapshot: None,
        request_id: Some("r".into()),
    }
}

on_both_backends!(
    idempotency_claims_follow_their_lease_and_expiry,
    a_lost_claim_rolls_the_evaluation_back,
);
