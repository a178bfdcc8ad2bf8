//! The review queue, labels and stats, end to end.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{assert_problem, spawn_app_with, Backend, Options, TestApp, SEED, V1_REPORT};
use crate::on_both_backends;

const ALICE: &str = "alice-key";
const BOB: &str = "bob-key";

/// An app whose keys have names: `checkout` (the helpers' key), `alice`, `bob`.
async fn app_with_reviewers(backend: Backend, options: Options) -> TestApp {
    let options = options.with(
        "RISKGATE_API_KEYS",
        format!(
            "checkout:{},alice:{ALICE},bob:{BOB}",
            crate::helpers::API_KEY
        ),
    );
    spawn_app_with(backend, options).await
}

async fn as_(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("sent")
}

async fn post(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    as_(app, key, reqwest::Method::POST, path, body).await
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let response = as_(app, key, reqwest::Method::GET, path, None).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

async fn serve(app: &TestApp, session: &str, body: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/v0.0/sessions/{session}/report")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/json"))
        .mount(&app.roundtable)
        .await;
}

async fn evaluate(app: &TestApp, session: &str, event: &str) -> Value {
    app.post_evaluation(&json!({"session_id": session, "event": event, "user_id": "u-1"}))
        .await
        .json()
        .await
        .expect("json")
}

const CLEAN: &str = r#"{"session_id": "clean", "user_logs": [{"action": "Clicked \"Pay now\"", "timestamp": 1}], "failed_checks": []}"#;

async fn review_verdicts_open_items_with_a_timeline(backend: Backend) {
    let app = app_with_reviewers(backend, Options::default()).await;
    serve(&app, "abc123def456", SEED).await;
    serve(&app, "clean", CLEAN).await;
    let reviewed = evaluate(&app, "abc123def456", "account_change").await;
    assert_eq!(reviewed["decision"], "review");
    assert_eq!(
        evaluate(&app, "clean", "checkout").await["decision"],
        "allow"
    );

    let page = get(&app, ALICE, "/v1/reviews?status=open").await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "only the review verdict opened an item");
    assert_eq!(items[0]["evaluation_id"], reviewed["id"]);
    assert_eq!(items[0]["score"], reviewed["score"]);

    let detail = get(
        &app,
        ALICE,
        &format!("/v1/reviews/{}", items[0]["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(detail["evaluation"]["id"], reviewed["id"]);
    assert_eq!(
        detail["session_replay_url"],
        "https://app.roundtable.ai/replay/abc123def456"
    );
    let timeline = detail["timeline"].as_array().expect("timeline");
    let texts: Vec<&str> = timeline.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(
        texts,
        [
            "Signed in",
            "Navigated to /dashboard",
            "Unnatural mouse movement",
            "Suspicious copy-paste activity",
            "Updated credit card"
        ]
    );
    assert_eq!(timeline[4]["sensitive_action"], "payment method change");
    assert_eq!(timeline[2]["points"], 26.5);
    assert_eq!(timeline[4]["seconds_since_previous"], 45.0);
    assert_eq!(detail["audit"][0]["to"], "open");
    assert_eq!(detail["audit"][0]["actor"], "riskgate");
}

async fn claim_resolve_exactly_once_by_the_claimant(backend: Backend) {
    let app = app_with_reviewers(backend, Options::default()).await;
    serve(&app, "abc123def456", SEED).await;
    let evaluation = evaluate(&app, "abc123def456", "account_change").await;

    let claimed = post(&app, ALICE, "/v1/reviews/next", None).await;
    assert_eq!(claimed.status(), 200);
    let claimed: Value = claimed.json().await.expect("json");
    let id = claimed["item"]["id"].as_str().expect("id").to_owned();
    assert_eq!(claimed["item"]["status"], "claimed");
    assert_eq!(claimed["item"]["claimed_by"], "alice");
    assert_eq!(claimed["timeline"].as_array().map(Vec::len), Some(5));

    // Nothing else is open: bob gets 204; bob cannot take or resolve alice's item.
    assert_eq!(
        post(&app, BOB, "/v1/reviews/next", None).await.status(),
        204
    );
    assert_problem(
        post(&app, BOB, &format!("/v1/reviews/{id}/claim"), None).await,
        409,
        "review-not-claimable",
    )
    .await;
    let resolve = json!({"outcome": "reject", "note": "card testing pattern"});
    assert_problem(
        post(
            &app,
            BOB,
            &format!("/v1/reviews/{id}/resolve"),
            Some(resolve.clone()),
        )
        .await,
        409,
        "review-not-claimable",
    )
    .await;

    let resolved = post(
        &app,
        ALICE,
        &format!("/v1/reviews/{id}/resolve"),
        Some(resolve.clone()),
    )
    .await;
    assert_eq!(resolved.status(), 200);
    let resolved: Value = resolved.json().await.expect("json");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["outcome"], "reject");
    assert_eq!(resolved["resolved_by"], "alice");
    assert_problem(
        post(
            &app,
            ALICE,
            &format!("/v1/reviews/{id}/resolve"),
            Some(resolve),
        )
        .await,
        409,
        "review-already-resolved",
    )
    .await;

    let detail = get(&app, ALICE, &format!("/v1/reviews/{id}")).await;
    let trail: Vec<(String, Value, String)> = detail["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_owned(),
                e["from"].clone(),
                e["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("riskgate".to_owned(), Value::Null, "open".to_owned()),
            ("alice".to_owned(), json!("open"), "claimed".to_owned()),
            ("alice".to_owned(), json!("claimed"), "resolved".to_owned()),
        ]
    );
    assert_eq!(detail["audit"][2]["note"], "card testing pattern");

    // The outcome became a label.
    let stats = get(&app, ALICE, "/v1/stats").await;
    assert_eq!(stats["decisions_vs_labels"]["review"]["fraud"], 1);
    assert_eq!(evaluation["decision"], "review");
}

async fn an_abandoned_claim_returns_to_the_queue(backend: Backend) {
    let app = app_with_reviewers(
        backend,
        Options::default().with("RISKGATE_REVIEWS__LEASE_SECS", "1"),
    )
    .await;
    serve(&app, "abc123def456", SEED).await;
    evaluate(&app, "abc123def456", "account_change").await;
    let claimed: Value = post(&app, ALICE, "/v1/reviews/next", None)
        .await
        .json()
        .await
        .expect("json");
    let id = claimed["item"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        get(&app, BOB, "/v1/reviews?status=claimed").await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let open = get(&app, BOB, "/v1/reviews?status=open").await;
    assert_eq!(
        open["items"][0]["id"],
        id.as_str(),
        "back in the queue by itself"
    );
    assert_eq!(open["items"][0]["claimed_by"], Value::Null);

    let resolve = json!({"outcome": "approve"});
    let late = post(
        &app,
        ALICE,
        &format!("/v1/reviews/{id}/resolve"),
        Some(resolve.clone()),
    )
    .await;
    assert_problem(late, 409, "review-not-claimable").await;

    let taken: Value = post(&app, BOB, "/v1/reviews/next", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(taken["item"]["id"], id.as_str());
    assert_eq!(
        post(
            &app,
            BOB,
            &format!("/v1/reviews/{id}/resolve"),
            Some(resolve)
        )
        .await
        .status(),
        200
    );
}

async fn bad_review_requests_get_problems(backend: Backend) {
    let app = app_with_reviewers(backend, Options::default()).await;
    let unknown = uuid::Uuid::now_v7();
    assert_problem(
        as_(
            &app,
            ALICE,
            reqwest::Method::GET,
            &format!("/v1/reviews/{unknown}"),
            None,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_problem(
        post(&app, ALICE, &format!("/v1/reviews/{unknown}/claim"), None).await,
        404,
        "not-found",
    )
    .await;
    assert_problem(
        post(&app, ALICE, "/v1/reviews/not-a-uuid/claim", None).await,
        404,
        "not-found",
    )
    .await;
    let bad = post(
        &app,
        ALICE,
        &format!("/v1/reviews/{unknown}/resolve"),
        Some(json!({"outcome": "maybe", "extra": 1})),
    )
    .await;
    assert_problem(bad, 422, "validation-failed").await;
    let bad_label = post(
        &app,
        ALICE,
        &format!("/v1/evaluations/{unknown}/label"),
        Some(json!({"label": "spam"})),
    )
    .await;
    let problem = assert_problem(bad_label, 422, "validation-failed").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["label", "source"]);
    let missing = post(
        &app,
        ALICE,
        &format!("/v1/evaluations/{unknown}/label"),
        Some(json!({"label": "fraud", "source": "chargeback"})),
    )
    .await;
    assert_problem(missing, 404, "not-found").await;
    for query in [
        "status=pending",
        "min_score=high",
        "older_than=soon",
        "limit=0",
        "cursor=x",
        "colour=red",
    ] {
        assert_problem(
            as_(
                &app,
                ALICE,
                reqwest::Method::GET,
                &format!("/v1/reviews?{query}"),
                None,
            )
            .await,
            422,
            "validation-failed",
        )
        .await;
    }
    assert_problem(
        as_(
            &app,
            ALICE,
            reqwest::Method::GET,
            "/v1/stats?since=yesterday",
            None,
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_problem(
        as_(&app, ALICE, reqwest::Method::GET, "/v1/reviews/next", None).await,
        405,
        "method-not-allowed",
    )
    .await;
}

async fn two_reviewers_drain_a_thousand_items_exactly_once(backend: Backend) {
    let app = app_with_reviewers(backend, Options::default()).await;
    let store = riskgate::store::connect(
        &app.database_url,
        &riskgate::config::DatabaseSettings {
            max_connections: 4,
            acquire_timeout_ms: 5_000,
            timeout_ms: 5_000,
        },
    )
    .await
    .expect("store");
    for i in 0..1_000 {
        store
            .insert_evaluation(&riskgate::store::NewEvaluation::plain(
                &crate::store::review_evaluation(f64::from(i % 97)),
            ))
            .await
            .expect("seed");
    }
    let started = std::time::Instant::now();
    let reviewer = |key: &'static str| {
        let app = &app;
        async move {
            let mut resolved = Vec::new();
            loop {
                let next = post(app, key, "/v1/reviews/next", None).await;
                if next.status() == 204 {
                    break resolved;
                }
                assert_eq!(next.status(), 200);
                let detail: Value = next.json().await.expect("json");
                let id = detail["item"]["id"].as_str().expect("id").to_owned();
                let done = post(
                    app,
                    key,
                    &format!("/v1/reviews/{id}/resolve"),
                    Some(json!({"outcome": "approve"})),
                )
                .await;
                assert_eq!(done.status(), 200, "{key} resolves what it claimed");
                resolved.push(id);
            }
        }
    };
    let (alice, bob) = tokio::join!(reviewer(ALICE), reviewer(BOB));
    let took = started.elapsed();
    let alice_set: HashSet<&String> = alice.iter().collect();
    let bob_set: HashSet<&String> = bob.iter().collect();
    assert_eq!(
        alice_set.len(),
        alice.len(),
        "nothing handed to alice twice"
    );
    assert_eq!(bob_set.len(), bob.len(), "nothing handed to bob twice");
    assert!(alice_set.is_disjoint(&bob_set), "nothing handed to both");
    assert_eq!(alice.len() + bob.len(), 1_000, "none lost");
    let stats = get(&app, ALICE, "/v1/stats").await;
    assert_eq!(stats["review_outcomes"]["approve"], 1_000);
    assert_eq!(stats["queue_open"], 0);
    assert_eq!(stats["time_to_resolution_secs"]["count"], 1_000);
    println!("{backend:?}: two reviewers drained 1,000 items in {took:?} (alice {}, bob {}), each resolved once", alice.len(), bob.len());
}

async fn stats_match_a_hand_built_data_set(backend: Backend) {
    let app = app_with_reviewers(backend, Options::default()).await;
    serve(&app, "abc123def456", SEED).await;
    serve(&app, "clean", CLEAN).await;
    serve(&app, "bot", V1_REPORT).await;
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/gone/report"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&app.roundtable)
        .await;

    let seed: Vec<Value> = futures_util::future::join_all(
        (0..3).map(|_| evaluate(&app, "abc123def456", "account_change")),
    )
    .await;
    let clean_1 = evaluate(&app, "clean", "checkout").await;
    evaluate(&app, "clean", "checkout").await;
    let bot = evaluate(&app, "bot", "checkout").await;
    let gone = evaluate(&app, "gone", "checkout").await;
    assert_eq!(
        (
            bot["decision"].as_str(),
            gone["decision"].as_str(),
            gone["degraded"].as_bool()
        ),
        (Some("block"), Some("review"), Some(true))
    );

    // Review two of the four review items: seed[0] rejected, seed[1] approved.
    for (evaluation, outcome) in [(&seed[0], "reject"), (&seed[1], "approve")] {
        let items = get(&app, ALICE, "/v1/reviews?status=open&limit=200").await;
        let item = items["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["evaluation_id"] == evaluation["id"])
            .cloned()
            .expect("item");
        let id = item["id"].as_str().expect("id");
        assert_eq!(
            post(&app, ALICE, &format!("/v1/reviews/{id}/claim"), None)
                .await
                .status(),
            200
        );
        assert_eq!(
            post(
                &app,
                ALICE,
                &format!("/v1/reviews/{id}/resolve"),
                Some(json!({"outcome": outcome}))
            )
            .await
            .status(),
            200
        );
    }
    // Learned later: a chargeback on an allowed checkout, the block was a real customer,
    // and the approved seed[1] turned out to be fraud after all (the latest label counts).
    for (evaluation, label) in [(&clean_1, "fraud"), (&bot, "legit"), (&seed[1], "fraud")] {
        let response = post(
            &app,
            BOB,
            &format!(
                "/v1/evaluations/{}/label",
                evaluation["id"].as_str().expect("id")
            ),
            Some(json!({"label": label, "source": "chargeback", "note": "bank notice"})),
        )
        .await;
        assert_eq!(response.status(), 201);
        let record: Value = response.json().await.expect("json");
        assert_eq!(record["created_by"], "bob");
    }

    let stats = get(&app, ALICE, "/v1/stats").await;
    let counts = |v: &Value| -> BTreeMap<String, Value> {
        v.as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    assert_eq!(stats["evaluations"], 7);
    assert_eq!(
        counts(&stats["by_decision"]),
        counts(&json!({"allow": 2, "review": 4, "block": 1}))
    );
    assert_eq!(
        stats["by_event"],
        json!({"account_change": {"review": 3}, "checkout": {"allow": 2, "block": 1, "review": 1}})
    );
    assert_eq!(stats["degraded"], 1);
    assert_eq!(stats["degraded_share"], 1.0 / 7.0);
    assert_eq!(stats["review_outcomes"], json!({"approve": 1, "reject": 1}));
    assert_eq!(stats["queue_open"], 2);
    assert_eq!(stats["queue_claimed"], 0);
    assert_eq!(stats["time_to_resolution_secs"]["count"], 2);
    assert_eq!(
        stats["decisions_vs_labels"],
        json!({"allow": {"fraud": 1}, "block": {"legit": 1}, "review": {"fraud": 2}})
    );
    let oldest_open = [&seed[2], &gone]
        .iter()
        .map(|e| e["created_at"].as_str().unwrap_or_default().to_owned())
        .min()
        .unwrap_or_default();
    let reported: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(stats["oldest_open_created_at"].clone()).expect("time");
    let expected: chrono::DateTime<chrono::Utc> = oldest_open.parse().expect("time");
    assert_eq!(reported, expected);

    let checkout = get(&app, ALICE, "/v1/stats?event=checkout").await;
    assert_eq!(checkout["evaluations"], 4);
    assert_eq!(checkout["queue_open"], 1);
    assert_eq!(
        checkout["decisions_vs_labels"],
        json!({"allow": {"fraud": 1}, "block": {"legit": 1}})
    );
    let future = get(&app, ALICE, "/v1/stats?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["evaluations"], 0);
    assert_eq!(future["degraded_share"], 0.0);
    assert_eq!(future["queue_open"], 2, "the queue is now, not windowed");
}

on_both_backends!(
    review_verdicts_open_items_with_a_timeline,
    claim_resolve_exactly_once_by_the_claimant,
    an_abandoned_claim_returns_to_the_queue,
    bad_review_requests_get_problems,
    two_reviewers_drain_a_thousand_items_exactly_once,
    stats_match_a_hand_built_data_set,
);
