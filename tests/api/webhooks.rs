//! Webhooks in and out, signed per the Standard Webhooks specification and
//! checked against its published Rust implementation.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use standardwebhooks::Webhook;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{assert_problem, spawn_app_with, Backend, Options, TestApp, API_KEY, SEED};
use crate::on_both_backends;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HOOK_SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtYWNjb3VudHMtc291cmNl";

fn config(receiver: &str, events: &str, schedule: &str) -> String {
    format!(
        r#"
[webhooks]
retry_schedule_secs = {schedule}
timeout_ms = 2000
poll_interval_ms = 50

[[webhooks.subscriptions]]
name = "ops"
url = "{receiver}/hooks/riskgate"
secret = "{SECRET}"
events = {events}

[[hooks.sources]]
name = "accounts"
secret = "{HOOK_SECRET}"
events = {{ "account.payment_method.updated" = "account_change" }}
"#
    )
}

async fn app_with_receiver(
    backend: Backend,
    receiver: &MockServer,
    events: &str,
    schedule: &str,
) -> TestApp {
    let app = spawn_app_with(
        backend,
        Options::default().with_config(config(&receiver.uri(), events, schedule)),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/abc123def456/report"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(SEED, "application/json"))
        .mount(&app.roundtable)
        .await;
    app
}

/// Waits until `check` holds, or fails after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(request: &Request) -> Value {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = request.headers.get(name).expect("signature header present");
        headers.insert(
            name,
            http::HeaderValue::from_bytes(value.as_bytes()).expect("header"),
        );
    }
    Webhook::new(SECRET)
        .expect("secret")
        .verify(&request.body, &headers)
        .expect("riskgate's signature verifies with the standardwebhooks crate");
    let payload: Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(
        payload["id"],
        request.headers["webhook-id"].to_str().expect("ascii")
    );
    payload
}

#[test]
fn signatures_interoperate_with_the_reference_implementation() {
    let ours = riskgate::webhooks::SigningSecret::parse(SECRET).expect("secret");
    let theirs = Webhook::new(SECRET).expect("secret");
    let body = br#"{"type":"evaluation.completed","data":{"id":1}}"#;
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        ours.sign("msg_1", now, body),
        theirs.sign("msg_1", now, body).expect("sign")
    );
    let signature = theirs.sign("msg_2", now, body).expect("sign");
    assert_eq!(
        ours.verify(
            Some("msg_2"),
            Some(&now.to_string()),
            Some(&signature),
            body,
            now
        ),
        Ok(())
    );
}

async fn verdicts_reach_subscribers_signed(backend: Backend) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/riskgate"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let app = app_with_receiver(
        backend,
        &receiver,
        r#"["evaluation.completed", "evaluation.review_required", "review.resolved"]"#,
        "[5]",
    )
    .await;
    let evaluation: Value = app
        .post_evaluation(&json!({"session_id": "abc123def456", "event": "account_change"}))
        .await
        .json()
        .await
        .expect("json");
    eventually(Duration::from_secs(10), "two messages", || async {
        receiver.received_requests().await.unwrap_or_default().len() >= 2
    })
    .await;
    let received = receiver.received_requests().await.unwrap_or_default();
    let mut types: Vec<String> = received
        .iter()
        .map(|r| verify(r)["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["evaluation.completed", "evaluation.review_required"]
    );
    for request in &received {
        assert_eq!(
            verify(request)["data"]["id"],
            evaluation["id"],
            "data is the evaluation"
        );
    }

    // Resolving the review announces it too.
    let claimed: Value = app
        .http
        .post(app.url("/v1/reviews/next"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = claimed["item"]["id"].as_str().expect("id");
    app.http
        .post(app.url(&format!("/v1/reviews/{id}/resolve")))
        .bearer_auth(API_KEY)
        .json(&json!({"outcome": "approve"}))
        .send()
        .await
        .expect("sent");
    eventually(Duration::from_secs(10), "review.resolved", || async {
        receiver.received_requests().await.unwrap_or_default().len() >= 3
    })
    .await;
    let last = verify(
        receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .last()
            .expect("request"),
    );
    assert_eq!(last["type"], "review.resolved");
    assert_eq!(last["data"]["outcome"], "approve");

    // The receiver has answered; the attempt is recorded right after.
    eventually(Duration::from_secs(5), "three delivered", || async {
        let log: Value = app
            .get("/v1/webhook-deliveries?status=delivered")
            .await
            .json()
            .await
            .expect("json");
        log.as_array().map(Vec::len) == Some(3)
    })
    .await;
    let log: Value = app
        .get("/v1/webhook-deliveries?status=delivered")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log[0]["attempt_log"][0]["status_code"], 204);
}

async fn a_receiver_down_for_a_while_gets_everything_in_order(backend: Backend) {
    let receiver = MockServer::start().await;
    // Down for the first eight calls, then up.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(8)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let app = app_with_receiver(
        backend,
        &receiver,
        r#"["evaluation.completed"]"#,
        "[0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]",
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let evaluation: Value = app
            .post_evaluation(&json!({"session_id": "abc123def456", "event": "checkout"}))
            .await
            .json()
            .await
            .expect("json");
        ids.push(evaluation["id"].as_str().expect("id").to_owned());
    }
    eventually(Duration::from_secs(20), "all delivered", || async {
        let log: Value = app
            .get("/v1/webhook-deliveries?status=delivered")
            .await
            .json()
            .await
            .expect("json");
        log.as_array().map(Vec::len) == Some(5)
    })
    .await;
    let received = receiver.received_requests().await.unwrap_or_default();
    // Successful deliveries arrive in order of creation.
    let delivered_order: Vec<String> = received
        .iter()
        .skip(8)
        .map(|r| {
            verify(r)["data"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(delivered_order, ids, "in order of creation, each once");
    // Every attempt has its own number; the receiver saw exactly the attempts logged.
    let log: Value = app
        .get("/v1/webhook-deliveries")
        .await
        .json()
        .await
        .expect("json");
    for message in log.as_array().expect("messages") {
        let attempts: Vec<u64> = message["attempt_log"]
            .as_array()
            .expect("log")
            .iter()
            .filter_map(|a| a["attempt"].as_u64())
            .collect();
        let expected: Vec<u64> = (1..=attempts.len() as u64).collect();
        assert_eq!(attempts, expected, "attempt numbers are never reused");
        let seen = received
            .iter()
            .filter(|r| r.headers["webhook-id"] == message["id"].as_str().unwrap_or_default())
            .count();
        assert_eq!(
            seen,
            attempts.len(),
            "one request per attempt, same webhook-id each time"
        );
    }
    println!(
        "{backend:?}: receiver down for 8 calls; 5 messages delivered in order after {} requests",
        received.len()
    );
}

async fn a_message_that_exhausts_its_schedule_fails_and_can_be_retried(backend: Backend) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(3)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let app = app_with_receiver(
        backend,
        &receiver,
        r#"["evaluation.completed"]"#,
        "[0.1, 0.1]",
    )
    .await;
    app.post_evaluation(&json!({"session_id": "abc123def456", "event": "checkout"}))
        .await;
    let until = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let log: Value = app
            .get("/v1/webhook-deliveries?status=failed")
            .await
            .json()
            .await
            .expect("json");
        if !log[0].is_null() {
            break log[0].clone();
        }
        assert!(Instant::now() < until, "timed out waiting for the failure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["last_error"], "HTTP 500");
    let id = failed["id"].as_str().expect("id");
    let retried = app
        .http
        .post(app.url(&format!("/v1/webhook-deliveries/{id}/retry")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(retried.status(), 202);
    eventually(Duration::from_secs(10), "delivered after retry", || async {
        let log: Value = app
            .get("/v1/webhook-deliveries?status=delivered")
            .await
            .json()
            .await
            .expect("json");
        log.as_array().map(Vec::len) == Some(1)
    })
    .await;
    let again = app
        .http
        .post(app.url(&format!("/v1/webhook-deliveries/{id}/retry")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_problem(again, 409, "delivery-not-failed").await;
    let nul = app
        .http
        .post(app.url("/v1/webhook-deliveries/a%00b/retry"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_problem(nul, 404, "not-found").await;
    let missing = app
        .http
        .post(app.url("/v1/webhook-deliveries/msg_nope/retry"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_problem(missing, 404, "not-found").await;
}

/// Signature headers, as a sender would set them.
type Headers = Vec<(&'static str, String)>;

fn signed_hook(secret: &str, id: &str, timestamp: i64, body: &str) -> Headers {
    let signature = Webhook::new(secret)
        .expect("secret")
        .sign(id, timestamp, body.as_bytes())
        .expect("sign");
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

async fn send_hook(
    app: &TestApp,
    source: &str,
    headers: Vec<(&'static str, String)>,
    body: &str,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(&format!("/v1/hooks/{source}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("sent")
}

async fn inbound_hooks_evaluate_once_in_the_background(backend: Backend) {
    let receiver = MockServer::start().await;
    let app = app_with_receiver(backend, &receiver, r#"["evaluation.blocked"]"#, "[1]").await;
    let body = r#"{"type": "account.payment_method.updated", "session_id": "abc123def456", "user_id": "user-456", "data": {"last4": "4242"}}"#;
    let now = chrono::Utc::now().timestamp();
    let headers = signed_hook(HOOK_SECRET, "msg_hook_1", now, body);

    let first = send_hook(&app, "accounts", headers.clone(), body).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["status"], "pending");
    let id = first["evaluation_id"].as_str().expect("id").to_owned();

    let until = Instant::now() + Duration::from_secs(10);
    let evaluation: Value = loop {
        let response = app.get(&format!("/v1/evaluations/{id}")).await;
        if response.status() == 200 {
            break response.json().await.expect("json");
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for the hook's evaluation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        evaluation["event"], "account_change",
        "type mapped to event"
    );
    assert_eq!(evaluation["decision"], "review");
    assert_eq!(evaluation["metadata"]["data"]["last4"], "4242");
    assert_eq!(evaluation["request_id"], "hook:accounts:msg_hook_1");

    let repeat = send_hook(&app, "accounts", headers, body).await;
    assert_eq!(repeat.status(), 200);
    let repeat: Value = repeat.json().await.expect("json");
    assert_eq!(
        repeat["evaluation_id"],
        id.as_str(),
        "the second answer points to the first"
    );
    assert_eq!(repeat["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.row_count().await, 1, "evaluated once");
}

async fn bad_hooks_are_refused_and_nothing_is_stored(backend: Backend) {
    let receiver = MockServer::start().await;
    let app = app_with_receiver(backend, &receiver, r#"["evaluation.completed"]"#, "[1]").await;
    let body = r#"{"type": "account.payment_method.updated", "session_id": "abc123def456"}"#;
    let now = chrono::Utc::now().timestamp();
    let wrong_secret = "whsec_bm90LXRoZS1yaWdodC1zZWNyZXQtYXQtYWxs";
    let cases: Vec<(&str, Headers, &str, u16, &str)> = vec![
        (
            "accounts",
            signed_hook(wrong_secret, "m1", now, body),
            body,
            401,
            "invalid-signature",
        ),
        (
            "accounts",
            signed_hook(HOOK_SECRET, "m2", now - 360, body),
            body,
            401,
            "invalid-signature",
        ),
        (
            "accounts",
            signed_hook(HOOK_SECRET, "m3", now + 360, body),
            body,
            401,
            "invalid-signature",
        ),
        (
            "accounts",
            signed_hook(HOOK_SECRET, "m4", now, body),
            r#"{"type": "tampered", "session_id": "x"}"#,
            401,
            "invalid-signature",
        ),
        ("accounts", vec![], body, 401, "invalid-signature"),
        (
            "unknown",
            signed_hook(HOOK_SECRET, "m5", now, body),
            body,
            404,
            "not-found",
        ),
        (
            "accounts",
            signed_hook(
                HOOK_SECRET,
                "m6",
                now,
                r#"{"type": "other.thing", "session_id": "s"}"#,
            ),
            r#"{"type": "other.thing", "session_id": "s"}"#,
            422,
            "validation-failed",
        ),
    ];
    for (source, headers, sent_body, status, kind) in cases {
        assert_problem(
            send_hook(&app, source, headers, sent_body).await,
            status,
            kind,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.row_count().await, 0);
    let hooks = app.scalar("SELECT COUNT(*) FROM inbound_hooks").await;
    assert_eq!(hooks, 0, "no hook recorded");
}

/// riskgate killed with SIGKILL while a delivery is in flight, then
/// restarted: every message still arrives (at least once, same webhook-id).
#[tokio::test]
async fn a_kill_mid_delivery_loses_nothing() {
    let app = crate::helpers::spawn_app(Backend::Postgres).await; // the database; it has no subscriptions
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/abc123def456/report"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(SEED, "application/json"))
        .mount(&app.roundtable)
        .await;
    let receiver = MockServer::start().await;
    // The first delivery hangs long enough to kill the sender mid-way.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(1)))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().expect("dir");
    let config_path = dir.path().join("riskgate.toml");
    let text = config(
        &receiver.uri(),
        r#"["evaluation.completed"]"#,
        "[0.2, 0.2, 0.2]",
    )
    .replace("timeout_ms = 2000", "timeout_ms = 1500");
    std::fs::write(&config_path, text).expect("config");

    let first = crate::resilience::Process::start_with(
        &app.database_url,
        &app.roundtable.uri(),
        Some(&config_path),
    )
    .await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let verdict: Value = client
            .post(format!("{}/v1/evaluations", first.address))
            .bearer_auth(API_KEY)
            .json(&json!({"session_id": "abc123def456", "event": "checkout"}))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        ids.push(verdict["id"].as_str().expect("id").to_owned());
    }
    eventually(Duration::from_secs(10), "a delivery in flight", || async {
        !receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    first.signal("KILL");
    drop(first);

    let _second = crate::resilience::Process::start_with(
        &app.database_url,
        &app.roundtable.uri(),
        Some(&config_path),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "every message delivered after the restart",
        || async {
            let received = receiver.received_requests().await.unwrap_or_default();
            ids.iter().all(|id| {
                received
                    .iter()
                    .any(|r| verify(r)["data"]["id"] == id.as_str())
            })
        },
    )
    .await;
    let delivered = app
        .scalar("SELECT COUNT(*) FROM webhook_messages WHERE status = 'delivered'")
        .await;
    assert_eq!(delivered, 3);
    let received = receiver.received_requests().await.unwrap_or_default();
    println!(
        "SIGKILL mid-delivery: 3 messages, {} requests received, all delivered after restart",
        received.len()
    );
}

async fn a_hook_recorded_before_a_crash_is_evaluated_at_start(backend: Backend) {
    // A 202 was answered, then the process died before evaluating: the row is all there is.
    let receiver = MockServer::start().await;
    let app = app_with_receiver(backend, &receiver, r#"["evaluation.completed"]"#, "[1]").await;
    let store = riskgate::store::connect(
        &app.database_url,
        &riskgate::config::DatabaseSettings {
            max_connections: 2,
            acquire_timeout_ms: 2_000,
            timeout_ms: 2_000,
        },
    )
    .await
    .expect("store");
    let evaluation_id = uuid::Uuid::now_v7();
    let recorded = store
        .record_inbound_hook(&riskgate::webhooks::InboundHook {
            source: "accounts".into(),
            webhook_id: "msg_before_crash".into(),
            evaluation_id,
            body: r#"{"type": "account.payment_method.updated", "session_id": "abc123def456"}"#
                .into(),
            received_at: chrono::Utc::now(),
        })
        .await
        .expect("recorded");
    assert_eq!(recorded, riskgate::webhooks::Recorded::New);
    // The running app's worker finds it without any request arriving.
    eventually(
        Duration::from_secs(10),
        "the pending hook's evaluation",
        || async {
            app.get(&format!("/v1/evaluations/{evaluation_id}"))
                .await
                .status()
                == 200
        },
    )
    .await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM inbound_hooks WHERE status = 'done'")
            .await,
        1
    );
}

on_both_backends!(
    a_hook_recorded_before_a_crash_is_evaluated_at_start,
    verdicts_reach_subscribers_signed,
    a_receiver_down_for_a_while_gets_everything_in_order,
    a_message_that_exhausts_its_schedule_fails_and_can_be_retried,
    inbound_hooks_evaluate_once_in_the_background,
    bad_hooks_are_refused_and_nothing_is_stored,
);
