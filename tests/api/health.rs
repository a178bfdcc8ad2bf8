//! Health routes, and the one failure that may answer 503: the database.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Backend, Options, SEED};
use crate::on_both_backends;
use crate::proxy::TcpProxy;

async fn health_routes_need_no_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.expect("sent");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
}

on_both_backends!(health_routes_need_no_key);

/// PostgreSQL behind a proxy we can cut: a database outage answers 503 with
/// Retry-After, stores nothing, shows on /readyz, and heals without a restart.
#[tokio::test]
async fn database_outage_answers_503_and_recovers_by_itself() {
    let probe = spawn_app(Backend::Postgres).await;
    let real = url::Url::parse(&probe.database_url).expect("url");
    let target = format!(
        "{}:{}",
        real.host_str().unwrap_or("127.0.0.1"),
        real.port().unwrap_or(5432)
    );
    let proxy = TcpProxy::start(&target).await;
    let mut through_proxy = real.clone();
    through_proxy.set_port(Some(proxy.port())).expect("port");

    let app = spawn_app_with(
        Backend::Postgres,
        Options::default()
            .with("RISKGATE_DATABASE_URL", through_proxy.to_string())
            .with("RISKGATE_DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
    )
    .await;
    app.serve_report("abc123def456", SEED).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    assert_eq!(app.post_evaluation(&body).await.status(), 200);

    proxy.cut();
    let response = app.post_evaluation(&body).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = assert_problem(response, 503, "database-unavailable").await;
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("sqlx"),
        "5xx bodies say nothing internal"
    );
    let ready = app.http.get(app.url("/readyz")).send().await.expect("sent");
    assert_problem(ready, 503, "database-unavailable").await;

    proxy.restore();
    let recovered = app.post_evaluation(&body).await;
    assert_eq!(recovered.status(), 200, "recovers without a restart");
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    // Exactly the two answered evaluations were stored; the failed one left nothing.
    assert_eq!(probe_rows(&real).await, 2);
}

async fn probe_rows(url: &url::Url) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url.as_str())
        .await
        .expect("connect");
    sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}
