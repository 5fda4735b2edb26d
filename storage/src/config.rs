//! How the engine is opened, and why opening can fail.

use std::path::PathBuf;

/// When the write-ahead log reaches the disk, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every acknowledged write is on disk; concurrent writers share one sync (group commit).
    Always,
    /// The log is synced once a second: a crash of the machine loses at most about a second.
    Everysec,
    /// The operating system decides when the log reaches the disk.
    No,
}

impl Fsync {
    /// The name Redis's `appendfsync` uses.
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
            Fsync::No => "no",
        }
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "everysec" => Ok(Fsync::Everysec),
            "no" => Ok(Fsync::No),
            other => Err(format!("'{other}' is not one of always, everysec, no")),
        }
    }
}

/// Which shards' column families a store opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosting {
    /// Every shard, from the start (the standalone server).
    All,
    /// The shards found on disk, then whatever the shard map assigns
    /// ([`crate::Storage::host`]): a storage node of a cluster.
    Assigned,
}

/// How to open the engine.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Where RocksDB keeps its files (a name only, with `in_memory`).
    pub dir: PathBuf,
    /// Number of shards (column families); fixed when the data directory is created.
    pub shards: u32,
    /// Keep everything in memory: nothing survives a restart.
    pub in_memory: bool,
    /// WAL sync policy.
    pub fsync: Fsync,
    /// Shared block cache size in bytes, whatever the number of shards.
    pub block_cache_bytes: usize,
    /// Bound on all memtables together, whatever the number of shards.
    pub write_buffer_bytes: usize,
    /// Bound on the integers kept for INCR and its family (`counters.rs`); 0 keeps none.
    pub counter_cache_bytes: usize,
    /// Which shards to open.
    pub hosting: Hosting,
    /// With `--fsync always`, sync the log once per batch of requests
    /// ([`crate::Storage::end_batch`], before the batch's replies) rather than inside every
    /// write. A storage node's requests arrive pipelined over a few proxy connections, so
    /// its concurrency is in batches, not in concurrent writers RocksDB could group.
    pub sync_per_batch: bool,
}

impl StorageConfig {
    /// A configuration with the default memory bounds.
    pub fn new(dir: impl Into<PathBuf>, shards: u32, in_memory: bool, fsync: Fsync) -> Self {
        StorageConfig {
            dir: dir.into(),
            shards,
            in_memory,
            fsync,
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 256 << 20,
            counter_cache_bytes: 64 << 20,
            hosting: Hosting::All,
            sync_per_batch: false,
        }
    }
}

/// Why the engine could not open.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused (unusable directory, lock held by another process, corruption…).
    #[error("cannot open the data directory {dir}: {source}")]
    Open {
        /// The directory.
        dir: String,
        /// RocksDB's reason.
        source: rocksdb::Error,
    },
    /// The directory was created with another shard count.
    #[error("the data directory {dir} holds {found} shards, not {wanted} (the shard count is fixed when a directory is created)")]
    ShardCount {
        /// The directory.
        dir: String,
        /// Shards found on disk.
        found: u32,
        /// Shards asked for.
        wanted: u32,
    },
    /// A RocksDB call failed while serving.
    #[error("storage error: {0}")]
    Engine(#[from] crate::engine::EngineError),
}
