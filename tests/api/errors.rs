//! Every client mistake gets its 4xx problem+json naming what was wrong, and
//! nothing is stored.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Backend, API_KEY};
use crate::on_both_backends;

async fn missing_or_wrong_api_keys_get_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"session_id": "s", "event": "checkout"});
    let requests = [
        app.http.post(app.url("/v1/evaluations")).json(&body),
        app.http
            .post(app.url("/v1/evaluations"))
            .bearer_auth("wrong-key")
            .json(&body),
        app.http
            .post(app.url("/v1/evaluations"))
            .header("authorization", format!("Basic {API_KEY}"))
            .json(&body),
        app.http.get(app.url("/v1/evaluations")),
        app.http
            .get(app.url("/v1/evaluations/00000000-0000-0000-0000-000000000000"))
            .bearer_auth(""),
    ];
    for request in requests {
        let response = request.send().await.expect("sent");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"riskgate\""
        );
        assert_problem(response, 401, "unauthorized").await;
    }
    // Every configured key works.
    let ok = app
        .http
        .get(app.url("/v1/evaluations"))
        .bearer_auth("other-key")
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_eq!(app.row_count().await, 0);
}

async fn malformed_json_gets_400(backend: Backend) {
    let app = spawn_app(backend).await;
    for body in ["{", "{\"session_id\": }", "", "nul", "{\"a\":1} trailing"] {
        let response = app
            .http
            .post(app.url("/v1/evaluations"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_problem(response, 400, "malformed-json").await;
    }
    assert_eq!(app.row_count().await, 0);
}

async fn wrong_content_type_gets_415(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = r#"{"session_id": "s", "event": "checkout"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .http
            .post(app.url("/v1/evaluations"))
            .bearer_auth(API_KEY)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        assert_problem(
            request.send().await.expect("sent"),
            415,
            "unsupported-media-type",
        )
        .await;
    }
    // Parameters and +json types are fine.
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.riskgate+json",
    ] {
        let response = app
            .http
            .post(app.url("/v1/evaluations"))
            .bearer_auth(API_KEY)
            .header("content-type", content_type)
            .body(r#"{"session_id": "s", "event": 5}"#)
            .send()
            .await
            .expect("sent");
        assert_problem(response, 422, "validation-failed").await;
    }
    assert_eq!(app.row_count().await, 0);
}

async fn a_body_over_the_cap_gets_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let padding = "x".repeat(70 * 1024);
    let body = json!({"session_id": "s", "event": "checkout", "metadata": {"padding": padding}});
    assert_problem(app.post_evaluation(&body).await, 413, "payload-too-large").await;
    // Without a Content-Length (chunked), the cap still holds.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
        serde_json::to_vec(&body).expect("json"),
    )]);
    let response = app
        .http
        .post(app.url("/v1/evaluations"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 413, "payload-too-large").await;
    assert_eq!(app.row_count().await, 0);
}

async fn invalid_fields_get_422_naming_each_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["session_id", "event"]),
        (json!({"session_id": "s"}), vec!["event"]),
        (
            json!({"session_id": 42, "event": "checkout"}),
            vec!["session_id"],
        ),
        (
            json!({"session_id": "..", "event": "checkout"}),
            vec!["session_id"],
        ),
        (
            json!({"session_id": "s", "event": "Check Out"}),
            vec!["event"],
        ),
        (
            json!({"session_id": "s", "event": "checkout", "amount": 10}),
            vec!["currency"],
        ),
        (
            json!({"session_id": "s", "event": "checkout", "amount": "ten", "currency": "EUR"}),
            vec!["amount"],
        ),
        (
            json!({"session_id": "s", "event": "checkout", "metadata": "x"}),
            vec!["metadata"],
        ),
        (
            json!({"session_id": "s", "event": "checkout", "metadata": {"k": "a\u{0}b"}}),
            vec!["metadata"],
        ),
        (
            json!({"session_id": "s", "event": "checkout", "user_id": "a\u{0}b"}),
            vec!["user_id"],
        ),
        (
            json!({"session_id": "s", "event": "checkout", "surprise": true}),
            vec!["surprise"],
        ),
        (json!(["not", "an", "object"]), vec![""]),
    ];
    for (body, fields) in cases {
        let problem =
            assert_problem(app.post_evaluation(&body).await, 422, "validation-failed").await;
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(named, fields, "{body}");
        assert_eq!(problem["field"], fields[0]);
    }
    assert_eq!(
        app.row_count().await,
        0,
        "nothing is stored for a bad request"
    );
}

async fn unknown_ids_routes_and_methods_get_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = uuid::Uuid::now_v7();
    assert_problem(
        app.get(&format!("/v1/evaluations/{unknown}")).await,
        404,
        "not-found",
    )
    .await;
    assert_problem(
        app.get("/v1/evaluations/not-a-uuid").await,
        404,
        "not-found",
    )
    .await;
    assert_problem(app.get("/v1/nothing-here").await, 404, "not-found").await;
    assert_problem(app.get("/nothing-here").await, 404, "not-found").await;
    let delete = app
        .http
        .delete(app.url("/v1/evaluations"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_problem(delete, 405, "method-not-allowed").await;
}

async fn bad_list_parameters_get_422(backend: Backend) {
    let app = spawn_app(backend).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("decision=maybe", "decision"),
        ("since=yesterday", "since"),
        ("cursor=garbage", "cursor"),
        // A cursor far outside what PostgreSQL can store is refused, not a 500.
        (
            "cursor=LTEwMDAwMDAwMDAwMDAwMDA6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw",
            "cursor",
        ),
        ("session_id=a%00b", "session_id"),
        ("colour=blue", "colour"),
    ] {
        let problem = assert_problem(
            app.get(&format!("/v1/evaluations?{query}")).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(problem["field"], field, "{query}");
    }
    let problem = assert_problem(
        app.get(&format!(
            "/v1/evaluations/{}?include=everything",
            uuid::Uuid::now_v7()
        ))
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(problem["field"], "include");
}

on_both_backends!(
    missing_or_wrong_api_keys_get_401,
    malformed_json_gets_400,
    wrong_content_type_gets_415,
    a_body_over_the_cap_gets_413,
    invalid_fields_get_422_naming_each_field,
    unknown_ids_routes_and_methods_get_problems,
    bad_list_parameters_get_422,
);
