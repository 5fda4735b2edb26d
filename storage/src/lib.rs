//! ringkv-storage: the storage engine of ringkv.
//!
//! - [`config`]: how the engine opens ([`StorageConfig`], [`Fsync`]) and why it may not.
//! - `engine`: RocksDB, a column family per shard, bounded memory, the expiry compaction filter.
//! - `layout`: where data records and expiry-index records sit inside a shard.
//! - `value`: the stored value header (format version, type, expiry).
//! - `locks`: per-key write serialization, so read-modify-write commands lose no update.
//! - `strings`, `keyspace`, `walk`: the Redis commands, on top of the engine.
//! - `expiry`: the background sweep that deletes expired keys in bounded batches, and the
//!   periodic WAL sync of `--fsync everysec`.
//!
//! [`Storage::execute`] is the one entry point: a resolved command and its arguments in, a
//! [`Reply`] out. The standalone server calls it directly; a storage node will call it for
//! requests that arrive from proxies.

pub mod config;
mod engine;
mod expiry;
mod float;
mod keyspace;
mod layout;
mod locks;
mod strings;
mod value;
mod walk;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ringkv_common::command::{flag, Cmd, CommandSpec};
use ringkv_common::placement::shard_of;
use ringkv_common::resp::Reply;

pub use config::{Fsync, StorageConfig, StorageError};
use engine::Engine;
use locks::KeyLocks;

/// Figures for INFO.
#[derive(Debug, Clone, Default)]
pub struct StorageStats {
    /// Live keys (a walk of every shard: O(keys)).
    pub keys: u64,
    /// Live keys with an expiry.
    pub expires: u64,
    /// Reads that found their key.
    pub keyspace_hits: u64,
    /// Reads that did not.
    pub keyspace_misses: u64,
    /// Keys deleted because they expired.
    pub expired_keys: u64,
}

/// Counters updated on the hot path: relaxed atomics, no lock.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    expired: AtomicU64,
}

/// The engine and the command semantics over it.
pub struct Storage {
    engine: Engine,
    locks: KeyLocks,
    counters: Counters,
    fsync: Fsync,
    stop: expiry::StopFlag,
}

/// A command's failure: a Redis error reply, or the engine failing underneath.
pub(crate) enum Failure {
    Reply(Reply),
    Engine(rocksdb::Error),
}

impl From<Reply> for Failure {
    fn from(reply: Reply) -> Self {
        Failure::Reply(reply)
    }
}

impl From<rocksdb::Error> for Failure {
    fn from(e: rocksdb::Error) -> Self {
        Failure::Engine(e)
    }
}

/// What a command handler returns.
pub(crate) type Outcome = Result<Reply, Failure>;

impl Storage {
    /// Opens (or creates) the store and starts its background expiry sweep and WAL sync.
    pub fn open(config: StorageConfig) -> Result<Arc<Storage>, StorageError> {
        let engine = Engine::open(&config)?;
        let storage = Arc::new(Storage {
            engine,
            locks: KeyLocks::default(),
            counters: Counters::default(),
            fsync: config.fsync,
            stop: expiry::StopFlag::default(),
        });
        expiry::start(&storage);
        Ok(storage)
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.engine.shards()
    }

    /// The shard that owns `key`.
    #[inline]
    pub(crate) fn shard(&self, key: &[u8]) -> u32 {
        shard_of(key, self.engine.shards())
    }

    /// Runs one command whose route is not `Local`. `args[0]` is the name; the arity has
    /// already been checked against `spec`.
    pub fn execute(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        let outcome = match spec.cmd.family() {
            ringkv_common::command::Family::String => strings::execute(self, spec, args),
            ringkv_common::command::Family::Other => match spec.cmd {
                Cmd::Dbsize
                | Cmd::Flushall
                | Cmd::Flushdb
                | Cmd::Scan
                | Cmd::Keys
                | Cmd::Randomkey => walk::execute(self, spec, args),
                _ => keyspace::execute(self, spec, args),
            },
        };
        match outcome {
            Ok(reply) | Err(Failure::Reply(reply)) => reply,
            Err(Failure::Engine(e)) => {
                tracing::error!(command = spec.name, error = %e, "storage error");
                Reply::error_owned(format!(
                    "ERR storage error: {}",
                    e.to_string().replace(['\r', '\n'], " ")
                ))
            }
        }
    }

    /// Whether running `spec` may wait for a disk sync (`--fsync always` and a write): the
    /// caller then runs it on a blocking thread so that concurrent writers share one sync.
    pub fn may_block(&self, spec: &CommandSpec) -> bool {
        self.fsync == Fsync::Always && spec.has(flag::WRITE)
    }

    /// Makes the writes of a batch of requests survive the process being killed: call it
    /// after running a batch that wrote and before sending its replies. (The WAL is written
    /// to the OS once per batch rather than once per write; `--fsync` then decides when it
    /// reaches the disk.)
    pub fn end_batch(&self) -> Result<(), StorageError> {
        if self.fsync == Fsync::Always {
            return Ok(());
        }
        Ok(self.engine.flush_wal_buffer()?)
    }

    /// Figures for INFO (counting keys walks the shards: O(keys)).
    pub fn stats(&self) -> StorageStats {
        let (keys, expires) = walk::count(self).unwrap_or((0, 0));
        StorageStats {
            keys,
            expires,
            keyspace_hits: self.counters.hits.load(Ordering::Relaxed),
            keyspace_misses: self.counters.misses.load(Ordering::Relaxed),
            expired_keys: self.counters.expired.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the hit, miss and expiry counters (CONFIG RESETSTAT).
    pub fn reset_stats(&self) {
        self.counters.hits.store(0, Ordering::Relaxed);
        self.counters.misses.store(0, Ordering::Relaxed);
        self.counters.expired.store(0, Ordering::Relaxed);
    }

    /// Stops the background tasks, flushes memtables and syncs the WAL: a clean shutdown.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.stop.stop();
        Ok(self.engine.flush()?)
    }

    /// Counts a read as a hit or a miss.
    pub(crate) fn count_read(&self, found: bool) {
        let counter = if found {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
