//! Server-wide counters for INFO, kept in atomics so that no connection ever waits on
//! another to count. Connections add once per batch, not once per command, so that a busy
//! pipeline touches these shared cache lines rarely.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ringkv_common::command::CommandSpec;
use ringkv_common::metrics::{names, CommandTable, Layer};
use ringkv_common::resp::Reply;

use crate::command_stats::{CommandStats, LocalCounts};

/// Count and latency per command, as clients see them (exported to Prometheus).
static COMMAND_METRICS: CommandTable = CommandTable::new(Layer::Client);

/// Samples between two copies of these counters to the metrics exporter (one second).
const EXPORT_EVERY: usize = 10;

/// How often instantaneous_ops_per_sec is sampled, and over how many samples it is averaged:
/// Redis's 100 ms and 16 samples, so the figure reads the same as redis-server's.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const SAMPLES: usize = 16;

/// The counters behind INFO's clients and stats sections.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub connected_clients: AtomicU64,
    /// Connections accepted since start (or CONFIG RESETSTAT).
    pub connections_received: AtomicU64,
    /// Connections refused because maxclients was reached.
    pub rejected_connections: AtomicU64,
    /// Commands run (unknown commands and arity errors are not counted, as in Redis).
    pub commands_processed: AtomicU64,
    /// Error replies sent.
    pub error_replies: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// The last computed instantaneous_ops_per_sec.
    ops_per_sec: AtomicU64,
    /// The last computed rates behind instantaneous_input_kbps and instantaneous_output_kbps,
    /// in bytes per second.
    input_per_sec: AtomicU64,
    output_per_sec: AtomicU64,
    /// Per command and per error code, for INFO commandstats and errorstats.
    pub commands: CommandStats,
}

/// What one batch of requests adds to the counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchCounts {
    /// Commands run.
    pub commands: u64,
    /// Error replies.
    pub errors: u64,
    /// Bytes read.
    pub input_bytes: u64,
    /// Bytes written.
    pub output_bytes: u64,
}

impl Stats {
    /// Counts one command that ran, `failed` when its reply is an error: for the metrics
    /// exporter and for INFO commandstats.
    #[inline]
    pub fn record_command(&self, spec: &CommandSpec, failed: bool, took: Duration) {
        COMMAND_METRICS.record(spec, failed, took);
        self.commands.record(spec, failed, took);
    }

    /// Counts the commands of a group that ran as one engine write, each taking `took`
    /// (`replies[i]` answers `specs[i]`): this thread's counts are looked up once.
    pub fn record_group(&self, specs: &[&'static CommandSpec], replies: &[Reply], took: Duration) {
        let local = self.commands.local();
        for (spec, reply) in specs.iter().zip(replies) {
            self.record_command_with(&local, spec, reply.is_error(), took);
        }
    }

    /// [`Stats::record_command`] with this thread's counts looked up already, for a caller
    /// that records many.
    #[inline]
    pub fn record_command_with(
        &self,
        local: &LocalCounts<'_>,
        spec: &CommandSpec,
        failed: bool,
        took: Duration,
    ) {
        COMMAND_METRICS.record(spec, failed, took);
        local.record(spec, failed, took);
    }

    /// Adds a batch's figures: a few relaxed atomic adds per batch, none per command.
    pub fn add_batch(&self, counts: BatchCounts) {
        if counts.commands > 0 {
            self.commands_processed.fetch_add(counts.commands, Relaxed);
        }
        if counts.errors > 0 {
            self.error_replies.fetch_add(counts.errors, Relaxed);
        }
        if counts.input_bytes > 0 {
            self.net_input_bytes.fetch_add(counts.input_bytes, Relaxed);
        }
        if counts.output_bytes > 0 {
            self.net_output_bytes
                .fetch_add(counts.output_bytes, Relaxed);
        }
    }

    /// Copies the server-wide figures to the metrics exporter: the same numbers INFO shows.
    pub fn export(&self) {
        metrics::gauge!(names::CONNECTED_CLIENTS).set(self.connected_clients.load(Relaxed) as f64);
        metrics::counter!(names::CONNECTIONS).absolute(self.connections_received.load(Relaxed));
        metrics::counter!(names::REJECTED_CONNECTIONS)
            .absolute(self.rejected_connections.load(Relaxed));
        metrics::counter!(names::NET_INPUT).absolute(self.net_input_bytes.load(Relaxed));
        metrics::counter!(names::NET_OUTPUT).absolute(self.net_output_bytes.load(Relaxed));
    }

    /// Commands per second, averaged over the last 1.6 seconds.
    pub fn ops_per_sec(&self) -> u64 {
        self.ops_per_sec.load(Relaxed)
    }

    /// KiB read from clients per second, averaged over the last 1.6 seconds.
    pub fn input_kbps(&self) -> f64 {
        self.input_per_sec.load(Relaxed) as f64 / 1024.0
    }

    /// KiB written to clients per second, averaged over the last 1.6 seconds.
    pub fn output_kbps(&self) -> f64 {
        self.output_per_sec.load(Relaxed) as f64 / 1024.0
    }

    /// CONFIG RESETSTAT: zeroes the counters (not the connected_clients gauge).
    pub fn reset(&self) {
        for counter in [
            &self.connections_received,
            &self.rejected_connections,
            &self.commands_processed,
            &self.error_replies,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.ops_per_sec,
            &self.input_per_sec,
            &self.output_per_sec,
        ] {
            counter.store(0, Relaxed);
        }
        self.commands.reset();
    }

    /// Samples the command and byte counters forever (spawn it; it ends with the runtime) to
    /// keep instantaneous_ops_per_sec, instantaneous_input_kbps and instantaneous_output_kbps
    /// current.
    pub async fn sample_rates(&self) {
        let mut rates = [
            (&self.commands_processed, &self.ops_per_sec, Rate::default()),
            (&self.net_input_bytes, &self.input_per_sec, Rate::default()),
            (
                &self.net_output_bytes,
                &self.output_per_sec,
                Rate::default(),
            ),
        ];
        for (total, _, rate) in &mut rates {
            rate.last = total.load(Relaxed);
        }
        let mut interval = tokio::time::interval(SAMPLE_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_at = tokio::time::Instant::now();
        let mut ticks = 0usize;
        loop {
            interval.tick().await;
            let now = tokio::time::Instant::now();
            let elapsed_ms = now.duration_since(last_at).as_millis().max(1) as u64;
            last_at = now;
            for (total, average, rate) in &mut rates {
                average.store(rate.sample(total.load(Relaxed), elapsed_ms), Relaxed);
            }
            ticks += 1;
            if ticks.is_multiple_of(EXPORT_EVERY) {
                self.export();
            }
        }
    }
}

/// Redis's instantaneous metrics: a counter's per-second rate in each of the last `SAMPLES`
/// samples.
#[derive(Default)]
struct Rate {
    samples: [u64; SAMPLES],
    next: usize,
    /// The counter at the last sample.
    last: u64,
}

impl Rate {
    /// Takes a sample of the counter, `elapsed_ms` after the last one, and returns the
    /// average rate per second over the samples kept. A counter that went down (CONFIG
    /// RESETSTAT) counts as no change.
    fn sample(&mut self, total: u64, elapsed_ms: u64) -> u64 {
        self.samples[self.next] = total.saturating_sub(self.last) * 1000 / elapsed_ms.max(1);
        self.next = (self.next + 1) % SAMPLES;
        self.last = total;
        self.samples.iter().sum::<u64>() / SAMPLES as u64
    }
}

/// Decrements connected_clients when a connection ends, however it ends (a panic included).
#[derive(Debug)]
pub struct ClientGuard<'a>(&'a Stats);

impl<'a> ClientGuard<'a> {
    /// Counts a new connection.
    pub fn new(stats: &'a Stats) -> Self {
        stats.connected_clients.fetch_add(1, Relaxed);
        stats.connections_received.fetch_add(1, Relaxed);
        ClientGuard(stats)
    }
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.0.connected_clients.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_zeroes_counters_but_not_the_client_gauge() {
        let stats = Stats::default();
        let _guard = ClientGuard::new(&stats);
        stats.add_batch(BatchCounts {
            commands: 5,
            errors: 1,
            input_bytes: 20,
            output_bytes: 10,
        });
        assert_eq!(stats.net_input_bytes.load(Relaxed), 20);
        stats.reset();
        assert_eq!(stats.commands_processed.load(Relaxed), 0);
        assert_eq!(stats.error_replies.load(Relaxed), 0);
        assert_eq!(stats.connections_received.load(Relaxed), 0);
        assert_eq!(
            stats.connected_clients.load(Relaxed),
            1,
            "a gauge survives RESETSTAT"
        );
    }

    #[test]
    fn rates_average_the_last_samples_and_survive_a_reset() {
        let mut rate = Rate::default();
        // 1,600 per 100 ms for a full ring: 16,000 a second.
        let mut total = 0;
        for _ in 0..SAMPLES {
            total += 1600;
            assert!(rate.sample(total, 100) <= 16_000);
        }
        assert_eq!(rate.sample(total + 1600, 100), 16_000);
        // The counter was reset: that sample counts as nothing, the next ones as before.
        assert_eq!(rate.sample(0, 100), 15_000);
        assert_eq!(rate.sample(1600, 100), 15_000);
    }

    #[test]
    fn guard_counts_connections() {
        let stats = Stats::default();
        {
            let _a = ClientGuard::new(&stats);
            let _b = ClientGuard::new(&stats);
            assert_eq!(stats.connected_clients.load(Relaxed), 2);
        }
        assert_eq!(stats.connected_clients.load(Relaxed), 0);
        assert_eq!(stats.connections_received.load(Relaxed), 2);
    }
}
