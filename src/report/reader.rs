//! Bytes from Roundtable → [`Report`].
//!
//! Tolerant by design: the vendor adds flags every few months and real
//! reports have missing, null, empty or oddly typed fields. Anything that is
//! not what we expect is skipped, never an error. Only a body that is not a
//! report at all (HTML, truncated JSON, an error object) is rejected, so the
//! caller can answer with a degraded verdict instead.

use serde_json::{Map, Value};

use super::{Action, Check, CheckSource, CheckStatus, Report, ReportShape};

/// Why a body could not be read as a report.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error("body has none of the report fields")]
    NoReportFields,
}

/// Keys of which at least one must be present for a body to be a report.
const REPORT_KEYS: &[&str] = &[
    "session_id",
    "user_logs",
    "failed_checks",
    "biometric_checks",
    "device_checks",
    "risk_score",
    "session_replay",
];

/// Keys only the v1 shape has.
const V1_KEYS: &[&str] = &[
    "biometric_checks",
    "device_checks",
    "risk_score",
    "recommended_action",
    "risk_explanation",
];

/// Reads a report of either shape from a response body.
pub fn read_report(body: &[u8]) -> Result<Report, ReadError> {
    let value: Value = serde_json::from_slice(body)?;
    let Value::Object(root) = value else {
        return Err(ReadError::NotAnObject);
    };
    if !REPORT_KEYS.iter().any(|key| root.contains_key(*key)) {
        return Err(ReadError::NoReportFields);
    }
    let shape = if V1_KEYS.iter().any(|key| root.contains_key(*key)) {
        ReportShape::V1
    } else {
        ReportShape::V0
    };

    let mut checks = read_timed_checks(root.get("failed_checks"));
    read_flags(
        root.get("biometric_checks"),
        CheckSource::Biometric,
        &mut checks,
    );
    read_flags(root.get("device_checks"), CheckSource::Device, &mut checks);

    let replay = root.get("session_replay").and_then(Value::as_object);
    Ok(Report {
        shape,
        session_id: text(root.get("session_id")),
        user_id: text(root.get("user_id")),
        actions: read_actions(root.get("user_logs")),
        checks,
        risk_score: root.get("risk_score").and_then(score),
        recommended_action: text(root.get("recommended_action")),
        tags: read_tags(root.get("tags")),
        replay_url: replay.and_then(|r| text(r.get("url"))),
        replay_duration_secs: replay.and_then(|r| number(r.get("duration_seconds"))),
    })
}

fn entries(value: Option<&Value>) -> impl Iterator<Item = &Map<String, Value>> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn read_actions(value: Option<&Value>) -> Vec<Action> {
    entries(value)
        .filter_map(|entry| {
            Some(Action {
                text: text(entry.get("action"))?,
                at_ms: timestamp(entry),
            })
        })
        .collect()
}

fn read_timed_checks(value: Option<&Value>) -> Vec<Check> {
    entries(value)
        .filter_map(|entry| {
            Some(Check {
                name: text(entry.get("check"))?,
                status: CheckStatus::Failed,
                source: CheckSource::Behavioural,
                at_ms: timestamp(entry),
            })
        })
        .collect()
}

/// v1 flag objects: `"Detected"` is a failed check without a timestamp,
/// `"Unknown"` is kept but scores nothing, anything else passed.
fn read_flags(value: Option<&Value>, source: CheckSource, into: &mut Vec<Check>) {
    let Some(flags) = value.and_then(Value::as_object) else {
        return;
    };
    for (name, state) in flags {
        let status = match state.as_str().map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("detected") => CheckStatus::Failed,
            Some(s) if s.eq_ignore_ascii_case("unknown") => CheckStatus::Unknown,
            _ => continue,
        };
        // NUL dropped as in `text`: no database text column takes it.
        let name = name.replace('\0', "");
        if name.trim().is_empty() {
            continue;
        }
        into.push(Check {
            name,
            status,
            source,
            at_ms: None,
        });
    }
}

fn read_tags(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tag| text(Some(tag)))
        .collect()
}

/// A non-empty string, or nothing. NUL characters are dropped: no database
/// text column takes them, and upstream text ends up in stored reasons.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if s.contains('\0') => {
            Some(s.replace('\0', "")).filter(|s| !s.trim().is_empty())
        }
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

/// v0.0 names it `timestamp`, v1 `unix_timestamp`; both are epoch ms, and
/// either may turn up in either shape.
fn timestamp(entry: &Map<String, Value>) -> Option<i64> {
    let ms = number(entry.get("timestamp")).or_else(|| number(entry.get("unix_timestamp")))?;
    // Beyond ±2^53 an f64 cannot hold a millisecond exactly; such a value is noise.
    (ms.abs() < 9.0e15).then_some(ms as i64)
}

fn score(value: &Value) -> Option<u8> {
    let n = number(Some(value))?;
    (0.0..=100.0).contains(&n).then(|| n.round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = include_bytes!("../../demo/v0.0-seed.json");
    const V1: &[u8] = include_bytes!("../../demo/v1-report.json");

    #[test]
    fn reads_the_v0_seed() {
        let report = read_report(SEED).expect("seed is a report");
        assert_eq!(report.shape, ReportShape::V0);
        assert_eq!(report.session_id.as_deref(), Some("abc123def456"));
        assert_eq!(report.actions.len(), 3);
        assert_eq!(report.actions[2].text, "Updated credit card");
        assert_eq!(report.actions[2].at_ms, Some(1_743_055_935_000));
        let names: Vec<_> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["Unnatural mouse movement", "Suspicious copy-paste activity"]
        );
        assert_eq!(report.checks[0].at_ms, Some(1_743_055_865_000));
        assert_eq!(
            report.replay_url.as_deref(),
            Some("https://app.roundtable.ai/replay/abc123def456")
        );
        assert_eq!(report.replay_duration_secs, Some(142.0));
        assert_eq!(report.risk_score, None);
    }

    #[test]
    fn reads_the_v1_example() {
        let report = read_report(V1).expect("v1 example is a report");
        assert_eq!(report.shape, ReportShape::V1);
        assert_eq!(report.risk_score, Some(75));
        assert_eq!(report.tags, ["checkout-flow"]);
        assert_eq!(report.actions[2].at_ms, Some(1_795_165_934_000));
        let failed: Vec<_> = report.failed_checks().map(|c| c.name.as_str()).collect();
        assert_eq!(
            failed,
            [
                "centered_clicks",
                "jump_scrolling",
                "no_corrections",
                "programmatic_typing",
                "bot"
            ]
        );
        assert!(report.failed_checks().all(|c| c.at_ms.is_none()));
        let unknown: Vec<_> = report
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Unknown)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(unknown, ["all_pasted"]);
        let bot = report.checks.iter().find(|c| c.name == "bot");
        assert_eq!(bot.map(|c| c.source), Some(CheckSource::Device));
    }

    #[test]
    fn tolerates_missing_null_empty_and_extra_fields() {
        let cases: &[&str] = &[
            r#"{"session_id": "s"}"#,
            r#"{"session_id": null, "user_logs": null, "failed_checks": null, "session_replay": null}"#,
            r#"{"user_logs": [], "failed_checks": []}"#,
            r#"{"user_logs": "nope", "failed_checks": {"a": 1}, "shiny_new_field": [1,2]}"#,
            r#"{"user_logs": [null, 3, {"action": ""}, {"timestamp": 5}], "failed_checks": [{"check": null}]}"#,
            r#"{"biometric_checks": null, "device_checks": []}"#,
        ];
        for case in cases {
            let report = read_report(case.as_bytes()).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(report.actions.is_empty(), "{case}");
            assert!(report.checks.is_empty(), "{case}");
        }
    }

    #[test]
    fn reads_odd_timestamps_and_unknown_check_names() {
        let body = br#"{"user_logs": [{"action": "A", "timestamp": "1000"}, {"action": "B", "unix_timestamp": 2000.7}, {"action": "C", "timestamp": true}],
            "failed_checks": [{"check": "Brand new check", "timestamp": 1500}],
            "device_checks": {"quantum_tunnel": "Detected", "vpn": "Not detected", "tor": 7}}"#;
        let report = read_report(body).expect("a report");
        let times: Vec<_> = report.actions.iter().map(|a| a.at_ms).collect();
        assert_eq!(times, [Some(1000), Some(2000), None]);
        assert_eq!(report.checks.len(), 2);
        assert_eq!(report.checks[0].name, "Brand new check");
        assert_eq!(report.checks[1].name, "quantum_tunnel");
        assert_eq!(report.shape, ReportShape::V1);
    }

    #[test]
    fn nul_characters_are_dropped_from_text() {
        let body = br#"{"failed_checks": [{"check": "bad\u0000name"}, {"check": "\u0000"}], "session_replay": {"url": "u\u0000"},
            "device_checks": {"bot\u0000": "Detected", "\u0000": "Detected"}}"#;
        let report = read_report(body).expect("a report");
        assert_eq!(report.checks.len(), 2);
        assert_eq!(report.checks[0].name, "badname");
        assert_eq!(report.checks[1].name, "bot");
        assert_eq!(report.replay_url.as_deref(), Some("u"));
    }

    #[test]
    fn out_of_range_risk_score_is_ignored() {
        for body in [
            r#"{"risk_score": 101}"#,
            r#"{"risk_score": -1}"#,
            r#"{"risk_score": "x"}"#,
        ] {
            assert_eq!(read_report(body.as_bytes()).expect(body).risk_score, None);
        }
        assert_eq!(
            read_report(br#"{"risk_score": "49.6"}"#)
                .expect("report")
                .risk_score,
            Some(50)
        );
    }

    #[test]
    fn rejects_what_is_not_a_report() {
        let kind = |e: &ReadError| match e {
            ReadError::NotJson(_) => "not json",
            ReadError::NotAnObject => "not an object",
            ReadError::NoReportFields => "no report fields",
        };
        let cases: &[(&[u8], &str)] = &[
            (b"<html>502 Bad Gateway</html>", "not json"),
            (br#"{"session_id": "abc", "user_logs": [{"act"#, "not json"),
            (b"", "not json"),
            (b"[1, 2]", "not an object"),
            (br#"{"error": "internal"}"#, "no report fields"),
        ];
        for (body, expected) in cases {
            let err = read_report(body).expect_err("not a report");
            assert_eq!(kind(&err), *expected, "{:?}", String::from_utf8_lossy(body));
        }
    }

    mod properties {
        use super::super::read_report;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        /// JSON built from the report's own keys, so that the reader's
        /// branches are reached with every type in every place.
        fn json() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("session_id"),
                Just("user_id"),
                Just("user_logs"),
                Just("failed_checks"),
                Just("biometric_checks"),
                Just("device_checks"),
                Just("risk_score"),
                Just("tags"),
                Just("session_replay"),
                Just("action"),
                Just("check"),
                Just("timestamp"),
                Just("unix_timestamp"),
                Just("url"),
                Just("duration_seconds"),
                Just("bot"),
                Just("recommended_action"),
                Just("x"),
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                prop_oneof![
                    Just("Detected".to_owned()),
                    Just("Unknown".to_owned()),
                    ".{0,12}"
                ]
                .prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::vec((key.clone(), inner), 0..8).prop_map(|pairs| {
                        Value::Object(
                            pairs
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect::<Map<_, _>>(),
                        )
                    }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn any_bytes_give_a_report_or_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = read_report(&bytes);
            }

            #[test]
            fn any_report_shaped_json_gives_a_report_or_a_typed_error(value in json()) {
                let bytes = serde_json::to_vec(&value).expect("serialises");
                if let Ok(report) = read_report(&bytes) {
                    prop_assert!(report.risk_score.is_none_or(|s| s <= 100));
                    prop_assert!(report.checks.iter().all(|c| !c.name.trim().is_empty()));
                    prop_assert!(report.actions.iter().all(|a| !a.text.contains('\0')));
                }
            }
        }
    }
}
