//! Surviving neighbours: several processes on one database, a database that
//! goes away mid-load, an upstream that flaps, and SIGTERM.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{spawn_app, spawn_app_with, Backend, Options, TestApp, API_KEY, SEED};
use crate::on_both_backends;
use crate::proxy::TcpProxy;

/// riskgate as a separate OS process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub address: String,
}

impl Process {
    pub async fn start(database_url: &str, roundtable: &str) -> Self {
        Self::start_with(database_url, roundtable, None).await
    }

    pub async fn start_with(
        database_url: &str,
        roundtable: &str,
        config: Option<&std::path::Path>,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_riskgate"));
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("serve")
            .env_clear()
            .env("RISKGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("RISKGATE_DATABASE_URL", database_url)
            .env("RISKGATE_API_KEYS", API_KEY)
            .env("ROUNDTABLE_API_URL", roundtable)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("riskgate starts");
        let process = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let ready_by = Instant::now() + Duration::from_secs(20);
        while client
            .get(format!("{}/readyz", process.address))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(
                Instant::now() < ready_by,
                "riskgate process did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_processes_on_one_postgres_make_one_evaluation_per_key() {
    let app = spawn_app(Backend::Postgres).await; // creates and migrates the database
    Mock::given(method("GET"))
        .and(path("/v0.0/sessions/abc123def456/report"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(SEED, "application/json")
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&app.roundtable)
        .await;
    let a = Process::start(&app.database_url, &app.roundtable.uri()).await;
    let b = Process::start(&app.database_url, &app.roundtable.uri()).await;
    let client = reqwest::Client::new();
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    let answers = futures_util::future::join_all((0..100).map(|i| {
        let target = if i % 2 == 0 { &a.address } else { &b.address };
        let request = client
            .post(format!("{target}/v1/evaluations"))
            .bearer_auth(API_KEY)
            .header("idempotency-key", "two-processes")
            .json(&body);
        async move {
            let response = request.send().await.expect("sent");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        }
    }))
    .await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "{:?}",
        answers.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|(_, v)| v["id"] == answers[0].1["id"]));
    assert_eq!(app.row_count().await, 1);
    println!("two processes, 100 concurrent requests, one key: 1 row");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let app = spawn_app(Backend::Sqlite).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(SEED, "application/json")
                .set_delay(Duration::from_millis(700)),
        )
        .mount(&app.roundtable)
        .await;
    let mut process = Process::start(&app.database_url, &app.roundtable.uri()).await;
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn(
        client
            .post(format!("{}/v1/evaluations", process.address))
            .bearer_auth(API_KEY)
            .json(&json!({"session_id": "abc123def456", "event": "account_change"}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    process.signal("TERM");
    let response = in_flight.await.expect("joined").expect("answered");
    assert_eq!(response.status(), 200, "the in-flight request finished");
    let exited_by = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = process.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < exited_by, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn database_stopped_mid_load_gives_only_verdicts_and_503s_then_recovers() {
    let probe = spawn_app(Backend::Postgres).await;
    let real = url::Url::parse(&probe.database_url).expect("url");
    let proxy = TcpProxy::start(&format!(
        "{}:{}",
        real.host_str().unwrap_or("127.0.0.1"),
        real.port().unwrap_or(5432)
    ))
    .await;
    let mut through = real.clone();
    through.set_port(Some(proxy.port())).expect("port");
    let app = spawn_app_with(
        Backend::Postgres,
        Options::default()
            .with("RISKGATE_DATABASE_URL", through.to_string())
            .with("RISKGATE_DATABASE__TIMEOUT_MS", "500")
            .with("RISKGATE_DATABASE__ACQUIRE_TIMEOUT_MS", "400"),
    )
    .await;
    app.serve_report("abc123def456", SEED).await;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});

    const REQUESTS: usize = 240;
    let post = |i: usize| {
        let request = app
            .http
            .post(app.url("/v1/evaluations"))
            .bearer_auth(API_KEY)
            .header("idempotency-key", format!("load-{i}"))
            .json(&body);
        async move {
            let started = Instant::now();
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            let id = response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned));
            (i, status, started.elapsed(), id)
        }
    };

    // Eight clients share the requests; the database goes away after 60 and
    // comes back 1.5 s later.
    let next = Arc::new(AtomicUsize::new(0));
    let load = futures_util::future::join_all((0..8).map(|_| {
        let next = next.clone();
        async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    break results;
                }
                results.push(post(i).await);
            }
        }
    }));
    let outage = async {
        while next.load(Ordering::SeqCst) < 60 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        proxy.restore();
    };
    let (results, ()) = tokio::join!(load, outage);
    let results: Vec<_> = results.into_iter().flatten().collect();
    let ok = results.iter().filter(|r| r.1 == 200).count();
    let unavailable: Vec<usize> = results.iter().filter(|r| r.1 == 503).map(|r| r.0).collect();
    assert_eq!(
        ok + unavailable.len(),
        REQUESTS,
        "only verdicts and 503s: {:?}",
        results.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    assert!(!unavailable.is_empty(), "the outage was seen");
    let slowest_503 = results
        .iter()
        .filter(|r| r.1 == 503)
        .map(|r| r.2)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_503 < Duration::from_millis(2_000),
        "503s come promptly: {slowest_503:?}"
    );

    // Recovered without a restart: every 503 retried with its key now gets a
    // verdict. A commit whose answer was lost in the outage is replayed, not redone.
    let mut ids: Vec<String> = results.iter().filter_map(|r| r.3.clone()).collect();
    let mut conflicts = 0;
    let mut late_503s = 0;
    for i in &unavailable {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, status, _, id) = post(*i).await;
            match status {
                200 => {
                    ids.push(id.expect("verdict id"));
                    break;
                }
                // A claim stranded by the outage frees itself when its lease ends.
                409 if Instant::now() < give_up => {
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // The pool reconnecting right after the restore may still answer
                // 503 + Retry-After, which is what a client retries.
                503 if Instant::now() < give_up => {
                    late_503s += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("request {i} after recovery: {other}"),
            }
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), REQUESTS, "one evaluation per request");

    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(real.as_str())
        .await
        .expect("connect");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(
        rows as usize, REQUESTS,
        "a row for every verdict, no orphans"
    );
    let open_keys: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE evaluation_id IS NULL")
            .fetch_one(&mut db)
            .await
            .expect("count");
    assert_eq!(open_keys, 0, "no half-finished claims");
    println!(
        "database outage mid-load: {REQUESTS} requests, {ok} verdicts, {} 503s (slowest {slowest_503:?}), all answered after recovery ({conflicts} 409s while stranded claims expired, {late_503s} 503s while the pool reconnected)",
        unavailable.len()
    );
    drop(probe);
}

/// An upstream that cycles through failure modes: 500, too slow, connection
/// reset, a good report, a body that is not a report.
async fn flapping_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let turn = calls.fetch_add(1, Ordering::SeqCst) % 5;
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let reply = |status: &str, body: &str| {
                    format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                };
                let response = match turn {
                    0 => reply("500 Internal Server Error", "{}"),
                    1 => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        reply("200 OK", SEED)
                    }
                    2 => return, // dropped: reset
                    3 => reply("200 OK", SEED),
                    _ => reply("200 OK", "<html>maintenance</html>"),
                };
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

async fn a_flapping_upstream_still_gets_a_verdict_within_the_deadline(backend: Backend) {
    let upstream = flapping_upstream().await;
    let app: TestApp = spawn_app_with(
        backend,
        Options::default().with("ROUNDTABLE_API_URL", upstream),
    )
    .await;
    let _unused: &MockServer = &app.roundtable;
    let body = json!({"session_id": "abc123def456", "event": "account_change"});
    let results = futures_util::future::join_all((0..40).map(|_| async {
        let started = Instant::now();
        let response = app.post_evaluation(&body).await;
        let status = response.status().as_u16();
        let verdict: Value = response.json().await.expect("json");
        (status, started.elapsed(), verdict)
    }))
    .await;
    let mut degraded = 0;
    for (status, took, verdict) in &results {
        assert_eq!(*status, 200);
        assert!(["allow", "review", "block"]
            .contains(&verdict["decision"].as_str().unwrap_or_default()));
        assert!(*took < Duration::from_millis(1_800), "{took:?}");
        degraded += usize::from(verdict["degraded"] == true);
    }
    println!(
        "{backend:?}: flapping upstream, 40 requests: all verdicts in time, {degraded} degraded"
    );
}

on_both_backends!(a_flapping_upstream_still_gets_a_verdict_within_the_deadline);
