//! The evaluate path end to end: fetch, decide, store, answer, read back.

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    spawn_app, spawn_app_with, Backend, Options, ROUNDTABLE_KEY, SEED, V1_REPORT,
};
use crate::on_both_backends;

async fn the_seed_account_change_is_reviewed_stored_and_read_back(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/abc123def456/report"))
        .and(header(
            "authorization",
            format!("Bearer {ROUNDTABLE_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(SEED, "application/json"))
        .expect(1)
        .mount(&app.roundtable)
        .await;

    let response = app
        .post_evaluation(&json!({
            "session_id": "abc123def456", "event": "account_change", "user_id": "user-456",
            "amount": "129.90", "currency": "EUR", "metadata": {"hook": "card-updated"}
        }))
        .await;
    assert_eq!(response.status(), 200);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let verdict: Value = response.json().await.expect("json");

    assert_eq!(verdict["decision"], "review");
    assert_eq!(verdict["degraded"], false);
    assert_eq!(verdict["degraded_reason"], Value::Null);
    assert_eq!(
        verdict["session_replay_url"],
        "https://app.roundtable.ai/replay/abc123def456"
    );
    assert!(verdict["policy_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("default-2026-11+sha256:")));
    let reasons = verdict["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0]["check"], "Unnatural mouse movement");
    assert_eq!(reasons[0]["near_action"], "payment method change");
    assert_eq!(reasons[0]["seconds_apart"], 70.0);
    assert_eq!(reasons[1]["seconds_apart"], 45.0);
    let score = verdict["score"].as_f64().expect("score");
    let sum: f64 = reasons.iter().filter_map(|r| r["points"].as_f64()).sum();
    assert!(
        (score - sum).abs() < 0.011,
        "score {score} is the sum of the reasons {sum}"
    );
    assert_eq!(verdict["report_shape"], "v0.0");

    let id = verdict["id"].as_str().expect("id");
    assert_eq!(location, format!("/v1/evaluations/{id}"));
    let stored: Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(stored, verdict, "GET returns what POST answered");
    assert_eq!(stored["amount"], "129.90");
    assert_eq!(stored["metadata"], json!({"hook": "card-updated"}));

    let with_report: Value = app
        .get(&format!("{location}?include=report"))
        .await
        .json()
        .await
        .expect("json");
    let expected: Value = serde_json::from_str(SEED).expect("seed");
    assert_eq!(
        with_report["report"], expected,
        "the report snapshot is kept"
    );
    assert_eq!(app.row_count().await, 1);
}

async fn a_clean_checkout_is_allowed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.serve_report(
        "clean-1",
        r#"{"session_id": "clean-1", "user_logs": [{"action": "Clicked \"Pay now\"", "timestamp": 1}], "failed_checks": []}"#,
    )
    .await;
    let verdict: Value = app
        .post_evaluation(&json!({"session_id": "clean-1", "event": "checkout"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(verdict["decision"], "allow");
    assert_eq!(verdict["score"], 0.0);
    assert_eq!(verdict["reasons"], json!([]));
}

async fn a_v1_bot_at_checkout_is_blocked_from_the_v1_path(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Options::default().with("ROUNDTABLE_API_VERSION", "v1"),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/v1/sessions/f3b9c2d17a/report"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(V1_REPORT, "application/json"))
        .expect(1)
        .mount(&app.roundtable)
        .await;
    let verdict: Value = app
        .post_evaluation(&json!({"session_id": "f3b9c2d17a", "event": "checkout"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(verdict["decision"], "block");
    assert_eq!(verdict["report_shape"], "v1");
    let rules: Vec<&Value> = verdict["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter(|r| r["code"] == "hard_rule")
        .collect();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["rule"], "automation framework at checkout");
}

async fn a_session_id_cannot_reach_another_upstream_path(backend: Backend) {
    let app = spawn_app(backend).await;
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/..%2F..%2Fx/report"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(SEED, "application/json"))
        .expect(1)
        .mount(&app.roundtable)
        .await;
    let verdict: Value = app
        .post_evaluation(&json!({"session_id": "../../x", "event": "account_change"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        verdict["degraded"], false,
        "the encoded path was the one called"
    );
    assert_eq!(verdict["session_id"], "../../x");
}

async fn listing_is_newest_first_filtered_and_paginated(backend: Backend) {
    let app = spawn_app(backend).await;
    app.serve_report("abc123def456", SEED).await;
    let mut ids = Vec::new();
    for (i, event) in [
        "checkout",
        "account_change",
        "checkout",
        "login",
        "checkout",
    ]
    .iter()
    .enumerate()
    {
        let user = if i % 2 == 0 { "u-even" } else { "u-odd" };
        let verdict: Value = app
            .post_evaluation(
                &json!({"session_id": "abc123def456", "event": event, "user_id": user}),
            )
            .await
            .json()
            .await
            .expect("json");
        ids.push(verdict["id"].as_str().expect("id").to_owned());
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    // Pages of two, following next_cursor to the end.
    let mut seen = Vec::new();
    let mut next = Some(String::new());
    while let Some(cursor) = next {
        let query = if cursor.is_empty() {
            "limit=2".to_owned()
        } else {
            format!("limit=2&cursor={cursor}")
        };
        let page: Value = app
            .get(&format!("/v1/evaluations?{query}"))
            .await
            .json()
            .await
            .expect("json");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_owned()),
        );
        next = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, newest_first);

    let filtered = |query: &'static str| {
        let app = &app;
        async move {
            let page: Value = app
                .get(&format!("/v1/evaluations?{query}"))
                .await
                .json()
                .await
                .expect("json");
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        filtered("event=checkout").await,
        [ids[4].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(
        filtered("user_id=u-odd").await,
        [ids[3].clone(), ids[1].clone()]
    );
    assert_eq!(
        filtered("session_id=abc123def456&event=login").await,
        [ids[3].clone()]
    );
    assert_eq!(
        filtered("decision=review&event=account_change").await,
        [ids[1].clone()]
    );
    assert_eq!(
        filtered("since=2999-01-01T00:00:00Z").await,
        Vec::<String>::new()
    );
    assert_eq!(filtered("since=2000-01-01T00:00:00Z").await.len(), 5);
}

on_both_backends!(
    the_seed_account_change_is_reviewed_stored_and_read_back,
    a_clean_checkout_is_allowed,
    a_v1_bot_at_checkout_is_blocked_from_the_v1_path,
    a_session_id_cannot_reach_another_upstream_path,
    listing_is_newest_first_filtered_and_paginated,
);
