//! Latency histograms with fixed buckets: recording is a few atomic adds and never allocates.
//!
//! metrics-exporter-prometheus keeps every histogram sample in a lock-free bucket that grows
//! block by block (an allocation every few dozen samples) until the next scrape drains it.
//! Every `*_duration_seconds` histogram here is recorded on a hot path, once per command, so
//! it counts into fixed Prometheus buckets instead: one atomic add for the bucket and one for
//! the sum.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::HistogramFn;

/// Bucket upper bounds of every `*_duration_seconds`, in seconds: 25 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One labelled series: a count per bucket (plus one past the last bound, `+Inf`) and the sum
/// in nanoseconds (an integer, so it is one atomic add). The sample count is the buckets' total.
#[derive(Debug, Default)]
pub struct FixedHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl FixedHistogram {
    /// Counts one sample of `seconds` (negative or NaN counts as 0).
    #[inline]
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds > 0.0 { seconds } else { 0.0 };
        // Prometheus buckets are `le`: a sample equal to a bound belongs to that bucket.
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // `as` saturates: an absurd duration cannot wrap the sum.
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// Appends this series in the Prometheus text format: cumulative `_bucket` lines with
    /// `le`, then `_sum` (seconds) and `_count`. `labels` is the rendered label set without
    /// braces (`command="get"`), or empty.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let _ = match LATENCY_BUCKETS.get(i) {
                Some(bound) => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
                ),
                None => writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        // `_count` is the `+Inf` bucket, as Prometheus requires.
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl HistogramFn for FixedHistogram {
    #[inline]
    fn record(&self, value: f64) {
        self.observe(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &FixedHistogram) -> String {
        let mut out = String::new();
        h.render("t_duration_seconds", "command=\"get\"", &mut out);
        out
    }

    #[test]
    fn buckets_are_cumulative_and_le_inclusive() {
        let h = FixedHistogram::default();
        h.observe(0.000_025); // exactly the first bound: in it
        h.observe(0.000_03);
        h.observe(0.002);
        h.observe(60.0); // past the last bound: only +Inf
        let text = rendered(&h);
        assert!(text.contains("t_duration_seconds_bucket{command=\"get\",le=\"0.000025\"} 1\n"));
        assert!(text.contains("t_duration_seconds_bucket{command=\"get\",le=\"0.00005\"} 2\n"));
        assert!(text.contains("t_duration_seconds_bucket{command=\"get\",le=\"0.0025\"} 3\n"));
        assert!(text.contains("t_duration_seconds_bucket{command=\"get\",le=\"10\"} 3\n"));
        assert!(text.contains("t_duration_seconds_bucket{command=\"get\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("t_duration_seconds_count{command=\"get\"} 4\n"));
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("t_duration_seconds_sum{command=\"get\"} "))
            .and_then(|v| v.parse().ok())
            .expect("a _sum line");
        assert!((sum - 60.002_055).abs() < 1e-6, "sum {sum}");
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn nonsense_samples_count_as_zero() {
        let h = FixedHistogram::default();
        h.observe(f64::NAN);
        h.observe(-1.0);
        let text = rendered(&h);
        assert!(text.contains("le=\"0.000025\"} 2\n"), "{text}");
        assert!(
            text.contains("t_duration_seconds_sum{command=\"get\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn no_labels_renders_without_braces_on_sum_and_count() {
        let h = FixedHistogram::default();
        h.observe(1.0);
        let mut out = String::new();
        h.render("x_duration_seconds", "", &mut out);
        assert!(
            out.contains("x_duration_seconds_bucket{le=\"1\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_duration_seconds_sum 1\n"), "{out}");
        assert!(out.contains("x_duration_seconds_count 1\n"), "{out}");
    }
}
