//! The numbers an analyst tunes the policy with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub event: Option<String>,
    /// Evaluations in the window.
    pub evaluations: u64,
    /// decision → count.
    pub by_decision: BTreeMap<String, u64>,
    /// event → decision → count.
    pub by_event: BTreeMap<String, BTreeMap<String, u64>>,
    pub degraded: u64,
    /// degraded / evaluations (0 when there are none).
    pub degraded_share: f64,
    /// Review outcomes of items resolved in the window: outcome → count.
    pub review_outcomes: BTreeMap<String, u64>,
    /// Now, not windowed: items waiting (open, or with an expired claim).
    pub queue_open: u64,
    /// Now, not windowed: items under a live claim.
    pub queue_claimed: u64,
    pub oldest_open_created_at: Option<DateTime<Utc>>,
    pub oldest_open_age_secs: Option<f64>,
    /// Seconds from item creation to resolution, for items resolved in the
    /// window: nearest-rank percentiles.
    pub time_to_resolution_secs: Percentiles,
    /// decision → latest label → count, for evaluations in the window: how
    /// decisions compare with what was learned later.
    pub decisions_vs_labels: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            count: values.len() as u64,
            p50: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p99: percentile(&values, 99.0),
            max: values.last().copied(),
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` percent of the values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(5.0));
        assert_eq!(percentile(&values, 90.0), Some(9.0));
        assert_eq!(percentile(&values, 99.0), Some(10.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        let p = Percentiles::of(vec![30.0, 10.0, 20.0]);
        assert_eq!((p.count, p.p50, p.max), (3, Some(20.0), Some(30.0)));
    }
}
