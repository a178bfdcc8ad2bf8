use super::*;
use crate::report::{read_report, Action, Check, CheckSource, ReportShape};

const POLICY: &str = r#"
    version = "test"
    default_check_weight = 4
    [checks]
    "Unnatural mouse movement" = 10
    programmatic_typing = 20
    bot = 40
    [[sensitive_actions]]
    name = "card change"
    match = "exact"
    pattern = "Updated credit card"
    multiplier = 3.0
    window_secs = 100
    [[sensitive_actions]]
    name = "password change"
    match = "prefix"
    pattern = "Changed pass"
    multiplier = 2.0
    window_secs = 1000
    [vendor_score]
    mode = "max"
    [events.default]
    review = 30
    block = 60
    on_upstream_error = "allow"
    on_session_not_found = "review"
    [events.checkout]
    review = 20
    block = 50
    on_upstream_error = "block"
    [[hard_rules]]
    name = "bot at checkout"
    events = ["checkout"]
    check = "bot"
    decision = "block"
"#;

fn policy() -> Policy {
    Policy::from_toml(POLICY).expect("test policy is valid")
}

fn event(name: &str) -> Event {
    Event::parse(name).expect("valid event")
}

fn report(actions: &[(&str, i64)], checks: &[(&str, Option<i64>)]) -> Report {
    Report {
        shape: ReportShape::V0,
        session_id: Some("s".into()),
        user_id: None,
        actions: actions
            .iter()
            .map(|(text, at)| Action {
                text: (*text).into(),
                at_ms: Some(*at),
            })
            .collect(),
        checks: checks
            .iter()
            .map(|(name, at)| Check {
                name: (*name).into(),
                status: CheckStatus::Failed,
                source: CheckSource::Behavioural,
                at_ms: *at,
            })
            .collect(),
        risk_score: None,
        recommended_action: None,
        tags: vec![],
        replay_url: None,
        replay_duration_secs: None,
    }
}

#[test]
fn proximity_multiplier_falls_linearly_to_one_at_the_window_edge() {
    // The card change is at t = 1,000 s; window 100 s, multiplier 3.
    let cases: &[(i64, f64, Option<&str>)] = &[
        (1_000_000, 3.0, Some("before")), // same instant: full multiplier
        (950_000, 2.0, Some("before")),   // half the window before
        (1_050_000, 2.0, Some("after")),  // half the window after
        (900_001, 1.0, Some("before")),   // just inside the edge: ~1
        (900_000, 1.0, None),             // exactly at the edge: base weight
        (100_000, 1.0, None),             // long before: base weight
    ];
    for &(check_at, multiplier, relative) in cases {
        let r = report(
            &[("Updated credit card", 1_000_000)],
            &[("Unnatural mouse movement", Some(check_at))],
        );
        let verdict = evaluate(&policy(), &r, &event("login"));
        let reason = &verdict.reasons[0];
        assert_eq!(reason.multiplier, Some(multiplier), "check at {check_at}");
        assert_eq!(
            reason.points,
            round(10.0 * multiplier),
            "check at {check_at}"
        );
        assert_eq!(reason.relative.as_deref(), relative, "check at {check_at}");
        assert_eq!(reason.near_action.is_some(), relative.is_some());
    }
}

#[test]
fn the_strongest_nearby_action_wins() {
    // 50 s from the card change (×2.0) and 10 s from the password change (×1.98).
    let r = report(
        &[
            ("Updated credit card", 100_000),
            ("Changed password", 160_000),
        ],
        &[("Unnatural mouse movement", Some(150_000))],
    );
    let verdict = evaluate(&policy(), &r, &event("login"));
    assert_eq!(
        verdict.reasons[0].near_action.as_deref(),
        Some("card change")
    );
    assert_eq!(verdict.reasons[0].seconds_apart, Some(50.0));
    assert_eq!(verdict.reasons[0].multiplier, Some(2.0));
}

#[test]
fn the_nearest_of_repeated_actions_is_used() {
    let r = report(
        &[
            ("Updated credit card", 10_000),
            ("Updated credit card", 500_000),
            ("Updated credit card", 900_000),
        ],
        &[("Unnatural mouse movement", Some(510_000))],
    );
    let verdict = evaluate(&policy(), &r, &event("login"));
    assert_eq!(verdict.reasons[0].seconds_apart, Some(10.0));
    assert_eq!(verdict.reasons[0].relative.as_deref(), Some("after"));
}

#[test]
fn checks_without_timestamps_and_unknown_checks_weigh_their_base() {
    let r = report(
        &[("Updated credit card", 1_000)],
        &[
            ("programmatic_typing", None),
            ("Never seen before", Some(1_000)),
        ],
    );
    let verdict = evaluate(&policy(), &r, &event("login"));
    assert_eq!(verdict.reasons[0].points, 20.0);
    assert_eq!(verdict.reasons[0].near_action, None);
    // Unknown to the policy: default weight 4, still multiplied by proximity.
    assert_eq!(verdict.reasons[1].base_weight, Some(4.0));
    assert_eq!(verdict.reasons[1].points, 12.0);
    assert!(verdict.reasons[1].detail.contains("default weight"));
    assert_eq!(verdict.score, 32.0);
    assert_eq!(verdict.decision, Decision::Review);
}

#[test]
fn thresholds_are_per_event_and_inclusive() {
    let cases = [
        ("login", 19.99, Decision::Allow),
        ("checkout", 20.0, Decision::Review),
        ("login", 20.0, Decision::Allow),
        ("login", 30.0, Decision::Review),
        ("checkout", 50.0, Decision::Block),
        ("login", 59.0, Decision::Review),
        ("signup", 60.0, Decision::Block),
    ];
    for (name, weight, expected) in cases {
        let text = format!("{POLICY}\n").replace(
            "default_check_weight = 4",
            &format!("default_check_weight = {weight}"),
        );
        let policy = Policy::from_toml(&text).expect("valid");
        let r = report(&[], &[("some check", None)]);
        let verdict = evaluate(&policy, &r, &event(name));
        assert_eq!(verdict.decision, expected, "{name} at {weight}");
    }
}

#[test]
fn empty_reports_are_allowed_with_no_reasons() {
    let verdict = evaluate(&policy(), &report(&[], &[]), &event("checkout"));
    assert_eq!(verdict.decision, Decision::Allow);
    assert_eq!(verdict.score, 0.0);
    assert!(verdict.reasons.is_empty());
    assert!(verdict.policy_version.starts_with("test+sha256:"));
}

#[test]
fn score_is_capped() {
    let checks: Vec<(&str, Option<i64>)> = (0..50).map(|_| ("bot", None)).collect();
    let verdict = evaluate(&policy(), &report(&[], &checks), &event("login"));
    assert_eq!(verdict.score, MAX_SCORE);
    assert_eq!(verdict.reasons.len(), 50);
    assert_eq!(verdict.decision, Decision::Block);
}

#[test]
fn huge_logs_are_handled() {
    let actions: Vec<(String, i64)> = (0..10_000)
        .map(|i| {
            let text = if i % 1000 == 0 {
                "Updated credit card"
            } else {
                "Navigated to /page"
            };
            (text.to_owned(), i * 1_000)
        })
        .collect();
    let actions: Vec<(&str, i64)> = actions.iter().map(|(t, at)| (t.as_str(), *at)).collect();
    let checks: Vec<(&str, Option<i64>)> = (0..300)
        .map(|i| ("Unnatural mouse movement", Some(i * 33_000 + 7)))
        .collect();
    let verdict = evaluate(&policy(), &report(&actions, &checks), &event("login"));
    assert_eq!(verdict.reasons.len(), 300);
    assert!(verdict.reasons.iter().any(|r| r.near_action.is_some()));
    assert!(verdict.reasons.iter().any(|r| r.near_action.is_none()));
    assert_eq!(verdict.score, MAX_SCORE);
}

#[test]
fn unknown_v1_flags_score_nothing_and_hard_rules_decide() {
    let v1 = read_report(include_bytes!("../../demo/v1-report.json")).expect("v1 example");
    let at_checkout = evaluate(&policy(), &v1, &event("checkout"));
    assert_eq!(at_checkout.decision, Decision::Block);
    assert!(at_checkout
        .reasons
        .iter()
        .any(|r| r.code == ReasonCode::HardRule && r.rule.as_deref() == Some("bot at checkout")));
    let unknown = at_checkout
        .reasons
        .iter()
        .find(|r| r.code == ReasonCode::UnknownCheck)
        .expect("all_pasted is unknown");
    assert_eq!(
        (unknown.check.as_deref(), unknown.points),
        (Some("all_pasted"), 0.0)
    );

    // No hard rule at login: the score decides. Rules: 20 + 40 + 3 × 4 = 72; vendor 75 is higher.
    let at_login = evaluate(&policy(), &v1, &event("login"));
    assert!(at_login
        .reasons
        .iter()
        .all(|r| r.code != ReasonCode::HardRule));
    assert_eq!(at_login.score, 75.0);
    let vendor = at_login
        .reasons
        .iter()
        .find(|r| r.code == ReasonCode::VendorRiskScore)
        .expect("vendor reason");
    assert_eq!(vendor.points, 3.0);
    assert_eq!(at_login.decision, Decision::Block);
}

#[test]
fn vendor_score_modes() {
    let mut v1 = report(&[], &[("programmatic_typing", None)]);
    v1.risk_score = Some(10);
    for (mode, weight, expected) in [
        ("ignore", 1.0, 20.0),
        ("add", 0.5, 25.0),
        ("max", 1.0, 20.0),
        ("max", 3.0, 30.0),
    ] {
        let text = POLICY.replace(
            "mode = \"max\"",
            &format!("mode = \"{mode}\"\nweight = {weight}"),
        );
        let policy = Policy::from_toml(&text).expect("valid");
        assert_eq!(
            evaluate(&policy, &v1, &event("login")).score,
            expected,
            "{mode} ×{weight}"
        );
    }
}

#[test]
fn the_seed_is_not_allowed_as_an_account_change_under_the_default_policy() {
    let seed = read_report(include_bytes!("../../demo/v0.0-seed.json")).expect("seed");
    let policy = Policy::bundled().expect("bundled policy");
    let verdict = evaluate(&policy, &seed, &event("account_change"));
    assert_ne!(verdict.decision, Decision::Allow);
    assert_eq!(verdict.reasons.len(), 2);
    for (reason, seconds) in verdict.reasons.iter().zip([70.0, 45.0]) {
        assert_eq!(reason.seconds_apart, Some(seconds));
        assert_eq!(reason.relative.as_deref(), Some("before"));
        assert_eq!(reason.near_action.as_deref(), Some("payment method change"));
        assert!(reason.multiplier.is_some_and(|m| m > 1.0));
    }
    assert_eq!(
        verdict.session_replay_url.as_deref(),
        Some("https://app.roundtable.ai/replay/abc123def456")
    );
}

#[test]
fn a_clean_checkout_is_allowed_under_the_default_policy() {
    let clean = report(
        &[
            ("Navigated to /checkout", 1_000),
            ("Clicked \"Pay now\"", 9_000),
        ],
        &[],
    );
    let verdict = evaluate(
        &Policy::bundled().expect("bundled"),
        &clean,
        &event("checkout"),
    );
    assert_eq!(verdict.decision, Decision::Allow);
}

#[test]
fn same_inputs_same_verdict() {
    let seed = read_report(include_bytes!("../../demo/v0.0-seed.json")).expect("seed");
    let policy = policy();
    let first = evaluate(&policy, &seed, &event("account_change"));
    for _ in 0..10 {
        assert_eq!(evaluate(&policy, &seed, &event("account_change")), first);
    }
}

#[test]
fn without_a_report_the_fail_mode_decides() {
    let policy = policy();
    let cases = [
        ("checkout", UpstreamFailure::Unavailable, Decision::Block),
        (
            "checkout",
            UpstreamFailure::SessionNotFound,
            Decision::Review,
        ),
        ("login", UpstreamFailure::Unavailable, Decision::Allow),
        ("login", UpstreamFailure::SessionNotFound, Decision::Review),
    ];
    for (name, failure, expected) in cases {
        let verdict = decide_without_report(&policy, &event(name), failure, "timed out");
        assert_eq!(verdict.decision, expected, "{name} {failure:?}");
        assert_eq!(verdict.reasons[0].code, ReasonCode::UpstreamUnavailable);
        assert!(verdict.reasons[0].detail.contains("timed out"));
    }
}
