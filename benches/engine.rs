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

/// A policy with 100 rules: 40 sensitive actions (exact, prefix and regex),
/// 50 check weights and 10 hard rules, on top of the default thresholds.
fn hundred_rule_policy() -> Policy {
    let mut text = String::from(
        "version = \"bench-100\"\ndefault_check_weight = 5\n[events.default]\nreview = 50\nblock = 70\non_upstream_error = \"allow\"\non_session_not_found = \"allow\"\n[checks]\n",
    );
    for i in 0..48 {
        text.push_str(&format!("\"check number {i}\" = {}\n", i % 20 + 1));
    }
    text.push_str("\"Unnatural mouse movement\" = 15\n\"Suspicious copy-paste activity\" = 15\n");
    for i in 0..40 {
        let (kind, pattern) = match i % 3 {
            0 => ("exact", format!("Sensitive action {i}")),
            1 => ("prefix", format!("Changed setting {i}")),
            _ => ("regex", format!("(?i)^updated (card|bank account) {i}$")),
        };
        text.push_str(&format!(
            "[[sensitive_actions]]\nname = \"rule {i}\"\nmatch = \"{kind}\"\npattern = \"{pattern}\"\nmultiplier = 2.0\nwindow_secs = 300\n"
        ));
    }
    text.push_str("[[sensitive_actions]]\nname = \"card\"\nmatch = \"exact\"\npattern = \"Updated credit card\"\nmultiplier = 2.0\nwindow_secs = 300\n");
    for i in 0..9 {
        text.push_str(&format!("[[hard_rules]]\nname = \"hard {i}\"\ncheck = \"check number {i}\"\ndecision = \"block\"\n"));
    }
    text.push_str("[[hard_rules]]\nname = \"vendor\"\nmin_risk_score = 95\ndecision = \"block\"\n");
    Policy::from_toml(&text).expect("100-rule policy is valid")
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
    let hundred = hundred_rule_policy();
    c.bench_function("engine/100_rule_policy/seed", |b| {
        b.iter(|| evaluate(&hundred, black_box(&seed), &account_change))
    });
    c.bench_function("engine/100_rule_policy/10k_actions_300_checks", |b| {
        b.iter(|| evaluate(&hundred, black_box(&long_report), &account_change))
    });
    c.bench_function("reader/seed", |b| b.iter(|| read_report(black_box(SEED))));
    c.bench_function("reader/v1", |b| b.iter(|| read_report(black_box(V1))));
    c.bench_function("reader/10k_actions_300_checks", |b| {
        b.iter(|| read_report(black_box(&long)))
    });
}

criterion_group!(engine, benches);
criterion_main!(engine);
