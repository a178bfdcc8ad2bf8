//! Request ids, metrics, the OpenAPI document and docs page, the circuit breaker.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options, API_KEY, SEED};
use crate::on_both_backends;

async fn request_ids_are_taken_or_made_echoed_and_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    app.serve_report("abc123def456", SEED).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});

    let given = app
        .http
        .post(app.url("/v1/evaluations"))
        .bearer_auth(API_KEY)
        .header("x-request-id", "checkout-req-123")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(given.headers()["x-request-id"], "checkout-req-123");
    let verdict: Value = given.json().await.expect("json");
    assert_eq!(verdict["request_id"], "checkout-req-123");

    let made = app.post_evaluation(&body).await;
    let id = made.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let verdict: Value = made.json().await.expect("json");
    assert_eq!(verdict["request_id"], id.as_str());

    // An unusable id (too long) is replaced, not echoed.
    let long = "x".repeat(200);
    let replaced = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", &long)
        .send()
        .await
        .expect("sent");
    assert_ne!(replaced.headers()["x-request-id"], long.as_str());
    // Errors carry it too.
    let unauthorized = app
        .http
        .get(app.url("/v1/evaluations"))
        .header("x-request-id", "r-401")
        .send()
        .await
        .expect("sent");
    assert_eq!(unauthorized.headers()["x-request-id"], "r-401");
}

async fn metrics_count_evaluations_upstream_and_pool(backend: Backend) {
    let app = spawn_app(backend).await;
    app.serve_report("abc123def456", SEED).await;
    for event in ["account_change", "account_change", "payout"] {
        app.post_evaluation(&json!({"session_id": "abc123def456", "event": event}))
            .await;
    }
    app.post_evaluation(&json!({"session_id": "unknown", "event": "checkout"}))
        .await;
    let response = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.expect("text");
    // 16 connections; SQLite adds its one writer.
    let max = if backend == Backend::Sqlite { 17 } else { 16 };
    assert!(
        text.contains(&format!(
            r#"riskgate_database_connections{{state="max"}} {max}"#
        )),
        "{text}"
    );
    for line in [
        r#"riskgate_evaluations_total{event="account_change",decision="review"} 2"#,
        // Events without a policy table share one label: no unbounded cardinality.
        r#"riskgate_evaluations_total{event="other",decision="review"} 1"#,
        r#"riskgate_evaluations_total{event="checkout",decision="review"} 1"#,
        r#"riskgate_evaluations_degraded_total{reason="upstream_session_not_found"} 1"#,
        r#"riskgate_upstream_responses_total{outcome="200"} 3"#,
        r#"riskgate_upstream_responses_total{outcome="404"} 1"#,
        "riskgate_evaluation_duration_seconds_count 4",
        "riskgate_upstream_circuit_state 0",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

async fn the_circuit_opens_and_answers_the_fail_mode_at_once(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Options::default()
            .with("RISKGATE_ROUNDTABLE__CIRCUIT_FAILURE_THRESHOLD", "2")
            .with("RISKGATE_ROUNDTABLE__CIRCUIT_COOL_DOWN_MS", "60000"),
    )
    .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .expect(6)
        .mount(&app.roundtable)
        .await;
    let body = json!({"session_id": "s-1", "event": "checkout"});
    for _ in 0..2 {
        let verdict: Value = app.post_evaluation(&body).await.json().await.expect("json");
        assert_eq!(verdict["degraded_reason"], "upstream_error_status");
    }
    let started = Instant::now();
    let verdict: Value = app.post_evaluation(&body).await.json().await.expect("json");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "no upstream call while open"
    );
    assert_eq!(verdict["degraded"], true);
    assert_eq!(verdict["degraded_reason"], "upstream_circuit_open");
    assert_eq!(verdict["decision"], "review");
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(text.contains("riskgate_upstream_circuit_state 2"), "{text}");
}

async fn the_openapi_document_and_docs_page_are_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/evaluations",
        "/v1/evaluations/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        doc["paths"]["/v1/evaluations"]["post"]["responses"]["422"]["content"]
            ["application/problem+json"]
            .is_object()
    );
    let page = app.http.get(app.url("/docs")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("text");
    assert!(html.contains("openapi.json"));
    // Works offline: nothing is loaded from another host.
    for needle in ["src=\"http", "href=\"http", "@import", "cdn"] {
        assert!(!html.to_lowercase().contains(needle), "{needle}");
    }
}

on_both_backends!(
    request_ids_are_taken_or_made_echoed_and_stored,
    metrics_count_evaluations_upstream_and_pool,
    the_circuit_opens_and_answers_the_fail_mode_at_once,
    the_openapi_document_and_docs_page_are_served,
);
