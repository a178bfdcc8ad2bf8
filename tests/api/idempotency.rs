//! Idempotency-Key: one evaluation per key, whoever asks and however often.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{assert_problem, spawn_app, Backend, TestApp, API_KEY, SEED};
use crate::on_both_backends;

async fn post_with_key(app: &TestApp, api_key: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/v1/evaluations"))
        .bearer_auth(api_key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn mount_seed(app: &TestApp, delay: Duration, calls: u64) {
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/abc123def456/report"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(SEED, "application/json")
                .set_delay(delay),
        )
        .expect(calls)
        .mount(&app.roundtable)
        .await;
}

async fn a_repeated_key_replays_the_stored_verdict(backend: Backend) {
    let app = spawn_app(backend).await;
    mount_seed(&app, Duration::ZERO, 1).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    let first = post_with_key(&app, API_KEY, "order-42", &body).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");

    // Same body, other formatting and key order: still the same request.
    let reordered = json!({"event": "account_change", "session_id": "abc123def456"});
    let again = post_with_key(&app, API_KEY, "order-42", &reordered).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again, first);
    assert_eq!(app.row_count().await, 1, "no new row");

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("riskgate_idempotent_replays_total 1"),
        "{metrics}"
    );
}

async fn a_key_reused_with_another_body_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    mount_seed(&app, Duration::ZERO, 1).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    assert_eq!(post_with_key(&app, API_KEY, "k", &body).await.status(), 200);
    let other = json!({"session_id": "abc123def456", "event": "checkout"});
    let problem = assert_problem(
        post_with_key(&app, API_KEY, "k", &other).await,
        422,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(problem["field"], "Idempotency-Key");
    assert_eq!(app.row_count().await, 1);
}

async fn keys_are_scoped_to_the_api_key(backend: Backend) {
    let app = spawn_app(backend).await;
    mount_seed(&app, Duration::ZERO, 2).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    let mine: Value = post_with_key(&app, API_KEY, "k", &body)
        .await
        .json()
        .await
        .expect("json");
    let theirs: Value = post_with_key(&app, "other-key", "k", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(mine["id"], theirs["id"]);
    assert_eq!(app.row_count().await, 2);
}

async fn a_malformed_key_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    for key in ["", &"k".repeat(256), "has space"] {
        let problem = assert_problem(
            post_with_key(&app, API_KEY, key, &body).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(problem["field"], "Idempotency-Key", "{key:?}");
    }
    assert_eq!(app.row_count().await, 0);
}

async fn concurrent_identical_requests_make_one_evaluation(backend: Backend) {
    let app = spawn_app(backend).await;
    // Slow enough upstream that all hundred overlap the first.
    mount_seed(&app, Duration::from_millis(150), 1).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change", "amount": "10", "currency": "EUR"});
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..100).map(|_| async {
        let response = post_with_key(&app, API_KEY, "checkout-7", &body).await;
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        (
            status,
            replayed,
            response.json::<Value>().await.expect("json"),
        )
    }))
    .await;
    let took = started.elapsed();
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let first = &answers[0].2;
    assert!(
        answers.iter().all(|(_, _, v)| v == first),
        "100 identical verdicts"
    );
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one fresh, 99 replayed"
    );
    assert_eq!(app.row_count().await, 1, "one row");
    println!(
        "{backend:?}: 100 concurrent requests, one key: 1 row, 100 identical verdicts in {took:?}"
    );
}

on_both_backends!(
    a_repeated_key_replays_the_stored_verdict,
    a_key_reused_with_another_body_is_refused,
    keys_are_scoped_to_the_api_key,
    a_malformed_key_is_refused,
    concurrent_identical_requests_make_one_evaluation,
);
