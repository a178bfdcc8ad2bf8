//! When Roundtable fails, riskgate still answers: a degraded verdict by the
//! policy's fail mode, within the deadline. Never an error page.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options, SEED};
use crate::on_both_backends;

/// The test app's fetch deadline (helpers set 1,000 ms), plus room for the
/// database write and a loaded CI machine.
const ANSWER_WITHIN: Duration = Duration::from_millis(1_800);

const REPORT_PATH: &str = "/v0.0/sessions/s-1/report";

/// Posts a checkout for `s-1`; returns the verdict and how long it took.
async fn evaluate_checkout(app: &crate::helpers::TestApp) -> (Value, Duration) {
    let started = Instant::now();
    let response = app
        .post_evaluation(&json!({"session_id": "s-1", "event": "checkout"}))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        response.status(),
        200,
        "upstream trouble is never an error answer"
    );
    (response.json().await.expect("json"), elapsed)
}

fn assert_degraded(verdict: &Value, reason: &str, decision: &str) {
    assert_eq!(verdict["degraded"], true, "{verdict}");
    assert_eq!(verdict["degraded_reason"], reason, "{verdict}");
    assert_eq!(verdict["decision"], decision, "{verdict}");
    assert_eq!(verdict["reasons"][0]["code"], "upstream_unavailable");
}

async fn mount(app: &crate::helpers::TestApp, template: ResponseTemplate, expected_calls: u64) {
    Mock::given(method("GET"))
        .and(path(REPORT_PATH))
        .respond_with(template)
        .expect(expected_calls)
        .mount(&app.roundtable)
        .await;
}

async fn unknown_session_decides_by_the_not_found_mode_without_retrying(backend: Backend) {
    let app = spawn_app(backend).await;
    mount(&app, ResponseTemplate::new(404), 1).await;
    let (verdict, elapsed) = evaluate_checkout(&app).await;
    // Default policy: checkout on_session_not_found = "review".
    assert_degraded(&verdict, "upstream_session_not_found", "review");
    assert!(elapsed < ANSWER_WITHIN);
    assert_eq!(app.row_count().await, 1, "a degraded verdict is stored too");
}

async fn server_errors_are_retried_then_decided_by_the_error_mode(backend: Backend) {
    let app = spawn_app(backend).await;
    mount(&app, ResponseTemplate::new(503), 3).await;
    let (verdict, elapsed) = evaluate_checkout(&app).await;
    assert_degraded(&verdict, "upstream_error_status", "review");
    assert!(elapsed < ANSWER_WITHIN, "{elapsed:?}");
}

async fn a_server_error_then_a_report_recovers(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path(REPORT_PATH))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.roundtable)
        .await;
    mount(
        &app,
        ResponseTemplate::new(200).set_body_raw(SEED, "application/json"),
        1,
    )
    .await;
    let (verdict, _) = evaluate_checkout(&app).await;
    assert_eq!(verdict["degraded"], false);
    assert_eq!(verdict["timings"]["upstream_attempts"], 2);
}

async fn a_slow_upstream_times_out_within_the_deadline(backend: Backend) {
    let app = spawn_app(backend).await;
    let slow = ResponseTemplate::new(200)
        .set_body_raw(SEED, "application/json")
        .set_delay(Duration::from_secs(10));
    Mock::given(method("GET"))
        .and(path(REPORT_PATH))
        .respond_with(slow)
        .mount(&app.roundtable)
        .await;
    let (verdict, elapsed) = evaluate_checkout(&app).await;
    assert_degraded(&verdict, "upstream_timeout", "review");
    assert!(
        elapsed >= Duration::from_millis(300),
        "one attempt timeout at least: {elapsed:?}"
    );
    assert!(elapsed < ANSWER_WITHIN, "{elapsed:?}");
}

async fn a_body_that_is_not_a_report_is_not_retried(backend: Backend) {
    for body in [
        "<html><body>502 Bad Gateway</body></html>",
        r#"{"session_id": "s-1", "user_logs": [{"act"#,
        r#"{"error": "oops"}"#,
    ] {
        let app = spawn_app(backend).await;
        mount(
            &app,
            ResponseTemplate::new(200).set_body_raw(body, "application/json"),
            1,
        )
        .await;
        let (verdict, elapsed) = evaluate_checkout(&app).await;
        assert_degraded(&verdict, "upstream_invalid_report", "review");
        assert!(elapsed < ANSWER_WITHIN);
    }
}

async fn rate_limits_honour_retry_after_when_it_fits(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path(REPORT_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.roundtable)
        .await;
    mount(
        &app,
        ResponseTemplate::new(200).set_body_raw(SEED, "application/json"),
        1,
    )
    .await;
    let (verdict, _) = evaluate_checkout(&app).await;
    assert_eq!(verdict["degraded"], false);

    // A Retry-After past the deadline is not waited for.
    let app = spawn_app(backend).await;
    mount(
        &app,
        ResponseTemplate::new(429).insert_header("retry-after", "30"),
        1,
    )
    .await;
    let (verdict, elapsed) = evaluate_checkout(&app).await;
    assert_degraded(&verdict, "upstream_rate_limited", "review");
    assert!(elapsed < Duration::from_millis(800), "{elapsed:?}");
}

async fn client_errors_upstream_are_not_retried(backend: Backend) {
    for (status, reason) in [
        (401, "upstream_unauthorized"),
        (403, "upstream_unauthorized"),
        (400, "upstream_error_status"),
    ] {
        let app = spawn_app(backend).await;
        mount(&app, ResponseTemplate::new(status), 1).await;
        let (verdict, _) = evaluate_checkout(&app).await;
        assert_degraded(&verdict, reason, "review");
    }
}

async fn an_unreachable_upstream_is_degraded(backend: Backend) {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let app = spawn_app_with(
        backend,
        Options::default().with("ROUNDTABLE_API_URL", format!("http://127.0.0.1:{port}")),
    )
    .await;
    let (verdict, elapsed) = evaluate_checkout(&app).await;
    assert_degraded(&verdict, "upstream_unreachable", "review");
    assert!(elapsed < ANSWER_WITHIN);
}

async fn a_connection_reset_upstream_is_degraded(backend: Backend) {
    // Accepts, then closes at once: the client sees a reset or an empty answer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            drop(stream);
        }
    });
    let app = spawn_app_with(
        backend,
        Options::default().with("ROUNDTABLE_API_URL", format!("http://127.0.0.1:{port}")),
    )
    .await;
    let (verdict, elapsed) = evaluate_checkout(&app).await;
    assert_degraded(&verdict, "upstream_unreachable", "review");
    assert!(elapsed < ANSWER_WITHIN);
}

async fn fail_modes_follow_the_policy_per_event(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.roundtable)
        .await;
    // Default policy: login and other events fail open; money-moving ones to review.
    for (event, decision) in [
        ("login", "allow"),
        ("payout", "allow"),
        ("account_change", "review"),
    ] {
        let verdict: Value = app
            .post_evaluation(&json!({"session_id": "s-1", "event": event}))
            .await
            .json()
            .await
            .expect("json");
        assert_degraded(&verdict, "upstream_error_status", decision);
    }
}

on_both_backends!(
    unknown_session_decides_by_the_not_found_mode_without_retrying,
    server_errors_are_retried_then_decided_by_the_error_mode,
    a_server_error_then_a_report_recovers,
    a_slow_upstream_times_out_within_the_deadline,
    a_body_that_is_not_a_report_is_not_retried,
    rate_limits_honour_retry_after_when_it_fits,
    client_errors_upstream_are_not_retried,
    an_unreachable_upstream_is_degraded,
    a_connection_reset_upstream_is_degraded,
    fail_modes_follow_the_policy_per_event,
);
