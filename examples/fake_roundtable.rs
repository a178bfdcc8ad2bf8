//! A fast loopback stand-in for Roundtable, for the HTTP load harness
//! (`bench/load.sh`). Serves `GET /{v0.0|v1}/sessions/s-{n}/report` for
//! `n < FAKE_SESSIONS` (default 5,000): even sessions in the v0.0 shape
//! (failed checks near a card update), odd ones in the v1 shape (flags and a
//! vendor score), so both readers are exercised. Anything else is a 404.
//!
//! `cargo run --release --example fake_roundtable -- 127.0.0.1:18081`

use actix_web::{web, App, HttpResponse, HttpServer};

fn v0_report(n: u64) -> String {
    let base = 1_795_000_000_000u64 + n * 1_000;
    format!(
        r#"{{"session_id":"s-{n}","user_id":"u-{n}","user_logs":[{{"action":"Signed in","user_time":"x","timestamp":{a}}},{{"action":"Navigated to /settings","user_time":"x","timestamp":{b}}},{{"action":"Updated credit card","user_time":"x","timestamp":{c}}}],"failed_checks":[{{"check":"Unnatural mouse movement","user_time":"x","timestamp":{d}}},{{"check":"Suspicious copy-paste activity","user_time":"x","timestamp":{e}}}],"session_replay":{{"url":"https://app.roundtable.ai/replay/s-{n}","duration_seconds":142}}}}"#,
        a = base,
        b = base + 5_000,
        c = base + 90_000,
        d = base + 20_000 + (n % 60) * 1_000,
        e = base + 45_000,
    )
}

fn v1_report(n: u64) -> String {
    let flag = |on: bool| if on { "Detected" } else { "Not detected" };
    format!(
        r#"{{"session_id":"s-{n}","user_id":"u-{n}","tags":["checkout-flow"],"risk_score":{score},"risk_explanation":"synthetic","recommended_action":"Unknown","user_logs":[{{"action":"Navigated to /checkout","user_time":"x","unix_timestamp":{a}}},{{"action":"Clicked \"Pay now\"","user_time":"x","unix_timestamp":{b}}}],"biometric_checks":{{"agent_behavior":"{f1}","programmatic_typing":"{f2}","teleporting_mouse":"Not detected","no_corrections":"{f3}","all_pasted":"Unknown"}},"device_checks":{{"bot":"{bot}","vpn":"{f3}","tor":"Not detected"}}}}"#,
        score = n % 100,
        a = 1_795_000_000_000u64 + n,
        b = 1_795_000_005_000u64 + n,
        f1 = flag(n % 5 == 1),
        f2 = flag(n % 3 == 1),
        f3 = flag(n % 7 == 1),
        bot = flag(n % 11 == 1),
    )
}

async fn report(path: web::Path<(String, String)>, sessions: web::Data<u64>) -> HttpResponse {
    let (_, id) = path.into_inner();
    let Some(n) = id
        .strip_prefix("s-")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| n < sessions.get_ref())
    else {
        return HttpResponse::NotFound().finish();
    };
    let body = if n % 2 == 0 {
        v0_report(n)
    } else {
        v1_report(n)
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let sessions: u64 = std::env::var("FAKE_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let sessions = web::Data::new(sessions);
    HttpServer::new(move || {
        App::new()
            .app_data(sessions.clone())
            .route("/{version}/sessions/{id}/report", web::get().to(report))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await
}
