//! The engine's Prometheus metrics: per-command engine time and per-shard operations on the
//! hot path (pre-registered handles: an atomic add per command), and RocksDB's figures plus the
//! hit/miss/expiry counters, copied to the exporter periodically by [`Storage::export_metrics`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::Counter;
use ringkv_common::command::CommandSpec;
use ringkv_common::metrics::{names, CommandTable, Layer};

use crate::Storage;

/// Engine time and count per command.
static COMMANDS: CommandTable = CommandTable::new(Layer::Storage);

/// Per-shard operation counters, built on first use.
#[derive(Default)]
pub(crate) struct ShardCounters {
    counters: OnceLock<Vec<Counter>>,
}

impl ShardCounters {
    fn get(&self, shards: u32) -> &[Counter] {
        self.counters.get_or_init(|| {
            (0..shards)
                .map(|s| metrics::counter!(names::SHARD_OPERATIONS, "shard" => s.to_string()))
                .collect()
        })
    }
}

impl Storage {
    /// Records one command run by the engine, on `shard` if it has one.
    #[inline]
    pub(crate) fn record(&self, spec: &CommandSpec, shard: Option<u32>, took: Duration) {
        COMMANDS.record(spec, false, took);
        if let Some(shard) = shard {
            if let Some(counter) = self.shard_counters.get(self.shards()).get(shard as usize) {
                counter.increment(1);
            }
        }
    }

    /// Copies RocksDB's figures and the hit, miss and expiry counters to the metrics
    /// exporter. Reads a few RocksDB properties per shard: call it every few seconds, off the
    /// async workers.
    pub fn export_metrics(&self) {
        let figures = self.engine.figures();
        for shard in &figures.shards {
            let label = shard.shard.to_string();
            metrics::gauge!(names::SHARD_KEYS, "shard" => label.clone()).set(shard.records as f64);
            metrics::gauge!(names::SHARD_BYTES, "shard" => label).set(shard.bytes as f64);
        }
        metrics::gauge!(names::ROCKSDB_MEMTABLE).set(figures.memtable_bytes as f64);
        metrics::gauge!(names::ROCKSDB_BLOCK_CACHE).set(figures.block_cache_bytes as f64);
        metrics::gauge!(names::ROCKSDB_SST).set(figures.sst_bytes as f64);
        metrics::gauge!(names::ROCKSDB_PENDING_COMPACTION)
            .set(figures.pending_compaction_bytes as f64);
        metrics::gauge!(names::ROCKSDB_RUNNING_COMPACTIONS).set(figures.running_compactions as f64);
        metrics::gauge!(names::ROCKSDB_WRITE_STOPPED)
            .set(f64::from(u8::from(figures.write_stopped)));
        metrics::gauge!(names::ROCKSDB_WRITE_DELAYED)
            .set(f64::from(u8::from(figures.write_delayed)));
        metrics::gauge!(names::COUNTER_CACHE_ENTRIES).set(figures.cached_counters as f64);
        let counters = &self.counters;
        metrics::counter!(names::KEYSPACE_HITS).absolute(counters.hits.sum());
        metrics::counter!(names::KEYSPACE_MISSES).absolute(counters.misses.sum());
        metrics::counter!(names::EXPIRED_KEYS).absolute(counters.expired.load(Ordering::Relaxed));
    }
}

/// How often RocksDB's figures are copied to the exporter.
pub const EXPORT_EVERY: Duration = Duration::from_secs(2);

/// Copies the engine's figures to the exporter every [`EXPORT_EVERY`], forever (run it as a
/// task; it reads RocksDB off the async workers).
pub async fn export_forever(storage: Arc<Storage>) {
    let mut tick = tokio::time::interval(EXPORT_EVERY);
    loop {
        tick.tick().await;
        let storage = Arc::clone(&storage);
        if tokio::task::spawn_blocking(move || storage.export_metrics())
            .await
            .is_err()
        {
            tracing::warn!("exporting the storage metrics failed");
        }
    }
}
