//! `require_action` / `wait_ms`: waiting for the action being gated to show
//! up in a live session's report.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

const PATH: &str = "/v0.0/sessions/live-1/report";

fn report(with_pay_click: bool) -> String {
    let mut actions = vec![json!({"action": "Navigated to /checkout", "timestamp": 1_000_000})];
    if with_pay_click {
        actions.push(json!({"action": "Clicked \"Pay now\"", "timestamp": 1_030_000}));
    }
    json!({
        "session_id": "live-1",
        "user_logs": actions,
        "failed_checks": [{"check": "Unnatural mouse movement", "timestamp": 1_020_000}],
    })
    .to_string()
}

async fn evaluate(app: &TestApp, wait_ms: u64) -> (Value, Duration) {
    let started = Instant::now();
    let response = app
        .post_evaluation(&json!({
            "session_id": "live-1", "event": "checkout",
            "require_action": {"match": "prefix", "pattern": "Clicked \"Pay"}, "wait_ms": wait_ms
        }))
        .await;
    assert_eq!(response.status(), 200);
    (response.json().await.expect("json"), started.elapsed())
}

fn reason<'a>(verdict: &'a Value, code: &str) -> Option<&'a Value> {
    verdict["reasons"]
        .as_array()?
        .iter()
        .find(|r| r["code"] == code)
}

async fn the_action_appearing_on_the_third_poll_is_used(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(report(false), "application/json"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&app.roundtable)
        .await;
    Mock::given(method("GET"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(report(true), "application/json"))
        .expect(1)
        .mount(&app.roundtable)
        .await;
    let (verdict, _) = evaluate(&app, 900).await;
    assert_eq!(verdict["degraded"], false);
    let seen = reason(&verdict, "required_action_seen").expect("says it was seen");
    assert!(
        seen["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("poll 3"),
        "{seen}"
    );
    // The full report is the one decided on: the check is weighed against the pay click.
    let check = reason(&verdict, "failed_check").expect("the check counts");
    assert_eq!(check["near_action"], "payment submitted");
    assert_eq!(check["seconds_apart"], 10.0);
}

async fn an_action_that_never_appears_is_decided_at_the_wait_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(report(false), "application/json"))
        .mount(&app.roundtable)
        .await;
    let (verdict, took) = evaluate(&app, 400).await;
    assert!(took >= Duration::from_millis(300), "it waited: {took:?}");
    assert!(
        took < Duration::from_millis(1_500),
        "and no longer than asked: {took:?}"
    );
    assert_eq!(verdict["degraded"], false, "decided on what was there");
    let missing = reason(&verdict, "required_action_missing").expect("says it is missing");
    assert!(missing["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("decided on what was there"));
    let check = reason(&verdict, "failed_check").expect("the check counts");
    assert_eq!(check["near_action"], Value::Null);
}

async fn a_session_not_yet_known_upstream_is_waited_for(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(404))
        .up_to_n_times(1)
        .mount(&app.roundtable)
        .await;
    Mock::given(method("GET"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(report(true), "application/json"))
        .mount(&app.roundtable)
        .await;
    let (verdict, _) = evaluate(&app, 900).await;
    assert_eq!(verdict["degraded"], false);
    assert!(reason(&verdict, "required_action_seen").is_some());
}

async fn the_wait_is_capped_by_the_deadline(backend: Backend) {
    // The test app's deadline is 1,000 ms; ask for a minute.
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(report(false), "application/json"))
        .mount(&app.roundtable)
        .await;
    let (verdict, took) = evaluate(&app, 60_000).await;
    assert!(took < Duration::from_millis(1_800), "{took:?}");
    assert!(reason(&verdict, "required_action_missing").is_some());
}

on_both_backends!(
    the_action_appearing_on_the_third_poll_is_used,
    an_action_that_never_appears_is_decided_at_the_wait_limit,
    a_session_not_yet_known_upstream_is_waited_for,
    the_wait_is_capped_by_the_deadline,
);
