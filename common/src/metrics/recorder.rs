//! The process's metrics recorder: counters and gauges go to metrics-exporter-prometheus,
//! `*_duration_seconds` histograms to [`FixedHistogram`]s, and one render joins both.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::histogram::FixedHistogram;

/// Histograms whose name ends so are latencies and get fixed buckets.
const DURATION_SUFFIX: &str = "_duration_seconds";

/// The fixed-bucket histograms, in registration order. Locked only to register and render,
/// never to record.
#[derive(Default)]
struct FixedRegistry {
    help: Vec<(String, String)>,
    series: Vec<(Key, Arc<FixedHistogram>)>,
}

/// A `metrics` recorder for the whole process; install it with
/// `metrics::set_global_recorder`, keep its [`MetricsHandle`] to render.
pub struct Recorder {
    prometheus: PrometheusRecorder,
    fixed: Arc<Mutex<FixedRegistry>>,
}

/// Renders every metric the [`Recorder`] holds, for `/metrics`.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    fixed: Arc<Mutex<FixedRegistry>>,
}

impl Recorder {
    /// A recorder with nothing registered yet.
    pub fn new() -> Recorder {
        Recorder {
            prometheus: PrometheusBuilder::new().build_recorder(),
            fixed: Arc::default(),
        }
    }

    /// The handle that renders this recorder's metrics.
    pub fn handle(&self) -> MetricsHandle {
        MetricsHandle {
            prometheus: self.prometheus.handle(),
            fixed: Arc::clone(&self.fixed),
        }
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if key.as_str().ends_with(DURATION_SUFFIX) {
            let mut fixed = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
            let name = key.as_str().to_string();
            fixed.help.retain(|(n, _)| *n != name);
            fixed.help.push((name, description.into_owned()));
        } else {
            self.prometheus.describe_histogram(key, unit, description);
        }
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.prometheus.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if !key.name().ends_with(DURATION_SUFFIX) {
            return self.prometheus.register_histogram(key, metadata);
        }
        let mut fixed = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
        let series = match fixed.series.iter().find(|(k, _)| k == key) {
            Some((_, series)) => Arc::clone(series),
            None => {
                let series = Arc::new(FixedHistogram::default());
                fixed.series.push((key.clone(), Arc::clone(&series)));
                series
            }
        };
        Histogram::from_arc(series)
    }
}

impl MetricsHandle {
    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.prometheus.run_upkeep();
        let mut out = self.prometheus.render();
        let fixed = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
        // Group the series by name: each name's HELP and TYPE come once, before its series.
        let mut order: Vec<usize> = (0..fixed.series.len()).collect();
        order.sort_by(|&a, &b| fixed.series[a].0.name().cmp(fixed.series[b].0.name()));
        let mut current: Option<&str> = None;
        let mut labels = String::new();
        for i in order {
            let (key, series) = &fixed.series[i];
            let name = key.name();
            if current != Some(name) {
                if let Some((_, help)) = fixed.help.iter().find(|(n, _)| n == name) {
                    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
                }
                let _ = writeln!(out, "# TYPE {name} histogram");
                current = Some(name);
            }
            labels.clear();
            for (n, label) in key.labels().enumerate() {
                let sep = if n == 0 { "" } else { "," };
                let _ = write!(
                    labels,
                    "{sep}{}=\"{}\"",
                    label.key(),
                    escape_label(label.value())
                );
            }
            series.render(name, &labels, &mut out);
        }
        out
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A HELP text as the text format wants it: backslash and newline escaped.
fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_get_fixed_buckets_and_the_rest_goes_to_the_exporter() {
        let recorder = Recorder::new();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!("x_duration_seconds", Unit::Seconds, "How long x took.");
            metrics::histogram!("x_duration_seconds", "command" => "get").record(0.001);
            // Registered twice: the same series.
            metrics::histogram!("x_duration_seconds", "command" => "get").record(0.002);
            metrics::histogram!("x_duration_seconds", "command" => "a\"b").record(0.5);
            metrics::counter!("x_total", "command" => "get").increment(3);
        });
        let text = handle.render();
        assert_eq!(
            text.matches("# TYPE x_duration_seconds histogram").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("# HELP x_duration_seconds How long x took.\n"),
            "{text}"
        );
        assert!(
            text.contains("x_duration_seconds_count{command=\"get\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_duration_seconds_bucket{command=\"a\\\"b\",le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("x_total{command=\"get\"} 3"), "{text}");
    }
}
