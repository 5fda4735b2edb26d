//! Prometheus metrics: the names every process exports (one place, so code, dashboards and
//! the README agree), the exporter set-up, and per-command handles for the hot path.
//!
//! Recording goes through the `metrics` facade. On hot paths the handles are looked up once
//! (a table indexed by command, a vector indexed by shard) and then recording is an atomic
//! add, with no allocation, hashing or lock per request; latency histograms have fixed
//! buckets ([`histogram`]). Without `--metrics-addr` no recorder is installed and every handle
//! is a no-op.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};

use crate::command::{all_specs, CommandSpec, Route};

pub mod histogram;
mod http;
mod recorder;

pub use recorder::{MetricsHandle, Recorder};

/// Metric names, as exported.
pub mod names {
    /// Commands run, by `command` and `outcome` (`ok` | `error`).
    pub const COMMANDS: &str = "ringkv_commands_total";
    /// Latency of a command as its client sees it at the proxy (or standalone server).
    pub const COMMAND_DURATION: &str = "ringkv_command_duration_seconds";
    /// Clients connected now.
    pub const CONNECTED_CLIENTS: &str = "ringkv_connected_clients";
    /// Connections accepted.
    pub const CONNECTIONS: &str = "ringkv_connections_total";
    /// Connections refused over the client limit.
    pub const REJECTED_CONNECTIONS: &str = "ringkv_rejected_connections_total";
    /// Bytes read from clients.
    pub const NET_INPUT: &str = "ringkv_net_input_bytes_total";
    /// Bytes written to clients.
    pub const NET_OUTPUT: &str = "ringkv_net_output_bytes_total";
    /// Connections up from the proxy to a storage node, by `node`.
    pub const BACKEND_CONNECTIONS: &str = "ringkv_backend_connections";
    /// Requests queued or awaiting their reply at a storage node, by `node`.
    pub const BACKEND_IN_FLIGHT: &str = "ringkv_backend_in_flight_requests";
    /// Writes to a storage node, each carrying a batch of requests, by `node`.
    pub const BACKEND_BATCHES: &str = "ringkv_backend_batches_total";
    /// Requests written to a storage node, summed over batches, by `node`.
    pub const BACKEND_BATCHED_REQUESTS: &str = "ringkv_backend_batched_requests_total";
    /// Requests sent again after a refusal, by `reason` (`moved` | `stale`).
    pub const BACKEND_RETRIES: &str = "ringkv_backend_retries_total";
    /// Requests a storage node did not answer, by `node` and `reason` (`timeout` | `node_down`).
    pub const BACKEND_FAILURES: &str = "ringkv_backend_failures_total";
    /// Connections to a storage node made again after one failed, by `node`.
    pub const BACKEND_RECONNECTS: &str = "ringkv_backend_reconnects_total";
    /// Epoch of the shard map in use.
    pub const MAP_EPOCH: &str = "ringkv_map_epoch";
    /// 1 while the etcd watches are connected.
    pub const ETCD_UP: &str = "ringkv_etcd_up";
    /// etcd watch events, by `watch` (`map` | `nodes`) and `kind`.
    pub const ETCD_WATCH_EVENTS: &str = "ringkv_etcd_watch_events_total";
    /// Storage nodes registered in etcd (proxy).
    pub const CLUSTER_NODES: &str = "ringkv_cluster_nodes";
    /// Shards this storage node is primary of.
    pub const SERVED_SHARDS: &str = "ringkv_served_shards";
    /// Commands run by the storage engine, by `command`.
    pub const STORAGE_OPERATIONS: &str = "ringkv_storage_operations_total";
    /// Time the storage engine spent on a command, by `command`.
    pub const STORAGE_DURATION: &str = "ringkv_storage_duration_seconds";
    /// Requests refused by a storage node, by `reason` (`moved` | `stale`).
    pub const STORAGE_REFUSED: &str = "ringkv_storage_refused_total";
    /// Commands run on a shard, by `shard`.
    pub const SHARD_OPERATIONS: &str = "ringkv_shard_operations_total";
    /// RocksDB's estimate of a shard's records, by `shard`.
    pub const SHARD_KEYS: &str = "ringkv_shard_keys";
    /// A shard's SST and memtable bytes, by `shard`.
    pub const SHARD_BYTES: &str = "ringkv_shard_bytes";
    /// Memtable bytes, all shards.
    pub const ROCKSDB_MEMTABLE: &str = "ringkv_rocksdb_memtable_bytes";
    /// Block cache bytes in use.
    pub const ROCKSDB_BLOCK_CACHE: &str = "ringkv_rocksdb_block_cache_bytes";
    /// SST file bytes, all shards.
    pub const ROCKSDB_SST: &str = "ringkv_rocksdb_sst_bytes";
    /// Bytes compaction still has to rewrite, all shards.
    pub const ROCKSDB_PENDING_COMPACTION: &str = "ringkv_rocksdb_pending_compaction_bytes";
    /// Compactions running now.
    pub const ROCKSDB_RUNNING_COMPACTIONS: &str = "ringkv_rocksdb_running_compactions";
    /// 1 while RocksDB stops writes (a write stall).
    pub const ROCKSDB_WRITE_STOPPED: &str = "ringkv_rocksdb_write_stopped";
    /// 1 while RocksDB slows writes down.
    pub const ROCKSDB_WRITE_DELAYED: &str = "ringkv_rocksdb_write_delayed";
    /// Integers held for INCR and its family, so their next increment skips RocksDB's read.
    pub const COUNTER_CACHE_ENTRIES: &str = "ringkv_counter_cache_entries";
    /// Keys deleted because they expired.
    pub const EXPIRED_KEYS: &str = "ringkv_expired_keys_total";
    /// Reads that found their key.
    pub const KEYSPACE_HITS: &str = "ringkv_keyspace_hits_total";
    /// Reads that did not.
    pub const KEYSPACE_MISSES: &str = "ringkv_keyspace_misses_total";
    /// Always 1, labelled with `version` and `role`.
    pub const BUILD_INFO: &str = "ringkv_build_info";
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub reason: String,
}

/// Serves every metric on `http://addr/metrics` (any path answers) and records this
/// process's build info; `role` is `standalone`, `proxy` or `storage`. Call once, inside the
/// tokio runtime, before any handle is taken.
pub fn install(addr: SocketAddr, role: &'static str) -> Result<(), MetricsError> {
    let error = |reason: String| MetricsError { addr, reason };
    // Bound here, not in the task: a taken port is a clear error at start.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| error(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| error(e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| error(e.to_string()))?;
    let recorder = Recorder::new();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| error("a metrics recorder is already installed".into()))?;
    tokio::spawn(http::serve(listener, handle));
    describe();
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => role)
        .set(1.0);
    Ok(())
}

/// Help texts, shown by Prometheus and Grafana.
fn describe() {
    use names::*;
    describe_counter!(
        COMMANDS,
        "Commands run, by command and outcome (ok or error)."
    );
    describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "Command latency as the client sees it at the proxy."
    );
    describe_gauge!(CONNECTED_CLIENTS, "Client connections open now.");
    describe_counter!(CONNECTIONS, "Client connections accepted.");
    describe_counter!(REJECTED_CONNECTIONS, "Connections refused over maxclients.");
    describe_counter!(NET_INPUT, Unit::Bytes, "Bytes read from clients.");
    describe_counter!(NET_OUTPUT, Unit::Bytes, "Bytes written to clients.");
    describe_gauge!(BACKEND_CONNECTIONS, "Connections up to each storage node.");
    describe_gauge!(
        BACKEND_IN_FLIGHT,
        "Requests queued or awaiting a reply, per node."
    );
    describe_counter!(BACKEND_BATCHES, "Writes to a storage node (each a batch).");
    describe_counter!(
        BACKEND_BATCHED_REQUESTS,
        "Requests written to a storage node."
    );
    describe_counter!(BACKEND_RETRIES, "Requests sent again after MOVED or STALE.");
    describe_counter!(BACKEND_FAILURES, "Requests a storage node did not answer.");
    describe_counter!(BACKEND_RECONNECTS, "Storage node connections made again.");
    describe_gauge!(MAP_EPOCH, "Epoch of the shard map in use.");
    describe_gauge!(ETCD_UP, "1 while the etcd watches are connected.");
    describe_counter!(ETCD_WATCH_EVENTS, "etcd watch events, by watch and kind.");
    describe_gauge!(CLUSTER_NODES, "Storage nodes registered in etcd.");
    describe_gauge!(SERVED_SHARDS, "Shards this storage node is primary of.");
    describe_counter!(STORAGE_OPERATIONS, "Commands run by the storage engine.");
    describe_histogram!(
        STORAGE_DURATION,
        Unit::Seconds,
        "Storage engine time per command."
    );
    describe_counter!(STORAGE_REFUSED, "Requests refused with MOVED or STALE.");
    describe_counter!(SHARD_OPERATIONS, "Commands run on each shard.");
    describe_gauge!(SHARD_KEYS, "RocksDB's estimate of each shard's records.");
    describe_gauge!(
        SHARD_BYTES,
        Unit::Bytes,
        "SST and memtable bytes per shard."
    );
    describe_gauge!(ROCKSDB_MEMTABLE, Unit::Bytes, "Memtable bytes.");
    describe_gauge!(
        ROCKSDB_BLOCK_CACHE,
        Unit::Bytes,
        "Block cache bytes in use."
    );
    describe_gauge!(ROCKSDB_SST, Unit::Bytes, "SST file bytes.");
    describe_gauge!(
        ROCKSDB_PENDING_COMPACTION,
        Unit::Bytes,
        "Bytes compaction still has to rewrite."
    );
    describe_gauge!(ROCKSDB_RUNNING_COMPACTIONS, "Compactions running now.");
    describe_gauge!(ROCKSDB_WRITE_STOPPED, "1 while RocksDB stops writes.");
    describe_gauge!(ROCKSDB_WRITE_DELAYED, "1 while RocksDB slows writes.");
    describe_gauge!(
        COUNTER_CACHE_ENTRIES,
        "Integers held in memory for the next INCR of their key."
    );
    describe_counter!(EXPIRED_KEYS, "Keys deleted because they expired.");
    describe_counter!(KEYSPACE_HITS, "Reads that found their key.");
    describe_counter!(KEYSPACE_MISSES, "Reads that did not.");
}

/// Counts an etcd watch event of `watch` (`map` | `nodes`) and `kind`, and records whether
/// etcd is reachable: every event but `interrupted` proves it is.
pub fn watch_event(watch: &'static str, kind: &'static str) {
    metrics::counter!(names::ETCD_WATCH_EVENTS, "watch" => watch, "kind" => kind).increment(1);
    etcd_up(kind != "interrupted");
}

/// Records whether etcd answered the last request or watch.
pub fn etcd_up(up: bool) {
    metrics::gauge!(names::ETCD_UP).set(f64::from(u8::from(up)));
}

/// One command's handles.
struct CommandHandles {
    ok: Counter,
    error: Counter,
    duration: Histogram,
}

/// Which layer a [`CommandTable`] counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The client-facing layer: every command, by outcome (`ringkv_commands_total`,
    /// `ringkv_command_duration_seconds`).
    Client,
    /// The storage engine: the data commands, without outcome
    /// (`ringkv_storage_operations_total`, `ringkv_storage_duration_seconds`).
    Storage,
}

/// Handles per command, built on first use (after [`install`], which binaries call first).
pub struct CommandTable {
    layer: Layer,
    table: OnceLock<Vec<Option<CommandHandles>>>,
}

impl CommandTable {
    /// An empty table for `layer`.
    pub const fn new(layer: Layer) -> CommandTable {
        CommandTable {
            layer,
            table: OnceLock::new(),
        }
    }

    fn handles(&self) -> &[Option<CommandHandles>] {
        self.table.get_or_init(|| {
            let mut table: Vec<Option<CommandHandles>> = Vec::new();
            for spec in all_specs() {
                let handles = match self.layer {
                    Layer::Client => CommandHandles {
                        ok: metrics::counter!(names::COMMANDS, "command" => spec.name, "outcome" => "ok"),
                        error: metrics::counter!(names::COMMANDS, "command" => spec.name, "outcome" => "error"),
                        duration: metrics::histogram!(names::COMMAND_DURATION, "command" => spec.name),
                    },
                    Layer::Storage if spec.route == Route::Local => continue,
                    Layer::Storage => {
                        let count = metrics::counter!(names::STORAGE_OPERATIONS, "command" => spec.name);
                        CommandHandles {
                            ok: count.clone(),
                            error: count,
                            duration: metrics::histogram!(names::STORAGE_DURATION, "command" => spec.name),
                        }
                    }
                };
                let i = spec.cmd as usize;
                if table.len() <= i {
                    table.resize_with(i + 1, || None);
                }
                table[i] = Some(handles);
            }
            table
        })
    }

    /// Records one command: whether its reply was an error (the storage layer counts both
    /// alike) and how long it took.
    #[inline]
    pub fn record(&self, spec: &CommandSpec, error: bool, took: Duration) {
        if let Some(Some(handles)) = self.handles().get(spec.cmd as usize) {
            if error {
                handles.error.increment(1);
            } else {
                handles.ok.increment(1);
            }
            handles.duration.record(took.as_secs_f64());
        }
    }
}
