//! Engine and report-reader benchmarks: `cargo bench --bench engine`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use riskgate::domain::Event;
use riskgate::engine::evaluate;
use riskgate::policy::Policy;
use riskgate::report::read_report;

const SEED: &[u8] = include_bytes!("../demo/v0.0-seed.json");
const V1: &[u8] = include_bytes!("../demo/v1-report.json");

/// A long SPA session: 10,000 actions (a sensitive one every 500) and 300 failed checks.
fn long_session() -> Vec<u8> {
    let actions: Vec<String> = (0..10_000)
        .map(|i| {
            let action = if i % 500 == 0 {
                "Updated credit card"
            } else {
                "Navigated to /page"
            };
            format!(
                r#"{{"action": "{action}", "user_time": "x", "timestamp": {}}}"#,
                1_700_000_000_000i64 + i * 1_000
            )
        })
        .collect();
    let checks: Vec<String> = (0..300)
        .map(|i| {
            let check = [
                "Unnatural mouse movement",
                "Suspicious copy-paste activity",
                "Some new check",
            ][i % 3];
            format!(
                r#"{{"check": "{check}", "user_time": "x", "timestamp": {}}}"#,
                1_700_000_000_000i64 + i as i64 * 33_000
            )
        })
        .collect();
    format!(
        r#"{{"session_id": "long", "user_logs": [{}], "failed_checks": [{}]}}"#,
        actions.join(","),
        checks.join(",")
    )
    .into_bytes()
}

fn benches(c: &mut Criterion) {
    let policy = Policy::bundled().expect("bundled policy");
    let account_change = Event::parse("account_change").expect("event");
    let checkout = Event::parse("checkout").expect("event");
    let long = long_session();

    let seed = read_report(SEED).expect("seed");
    let v1 = read_report(V1).expect("v1");
    let long_report = read_report(&long).expect("long");

    c.bench_function("engine/seed", |b| {
        b.iter(|| evaluate(&policy, black_box(&seed), &account_change))
    });
    c.bench_function("engine/v1", |b| {
        b.iter(|| evaluate(&policy, black_box(&v1), &checkout))
    });
    c.bench_function("engine/10k_actions_300_checks", |b| {
        b.iter(|| evaluate(&policy, black_box(&long_report), &account_change))
    });
    c.bench_function("reader/seed", |b| b.iter(|| read_report(black_box(SEED))));
    c.bench_function("reader/v1", |b| b.iter(|| read_report(black_box(V1))));
    c.bench_function("reader/10k_actions_300_checks", |b| {
        b.iter(|| read_report(black_box(&long)))
    });
}

criterion_group!(engine, benches);
criterion_main!(engine);
