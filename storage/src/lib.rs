//! ringkv-storage: the storage engine of ringkv.
//!
//! - [`config`]: how the engine opens ([`StorageConfig`], [`Fsync`]) and why it may not.
//! - `engine`: RocksDB, a column family per shard, bounded memory, the expiry compaction filter.
//! - `families`: shard column-family handles, and creating many families in one RocksDB call.
//! - `layout`: where data records and expiry-index records sit inside a shard.
//! - `value`: the stored value header (format version, type, expiry).
//! - `locks`: per-key write serialization, so read-modify-write commands lose no update.
//! - `counters`: the integers the increments wrote, kept so the next increment skips a read.
//! - `hash_slots`: the counter cache's table, whose slots a group prefetches before reading.
//! - [`tally`]: per-request counts, kept per thread so the event loops share no cache line.
//! - `strings`, `bits`, `keyspace`, `walk`: the Redis commands, on top of the engine; `lcs`
//!   (LCS's table) and `object` (OBJECT and MEMORY USAGE) beside them.
//! - `transaction`: EXEC, its queued commands run under their keys' locks, and WATCH's
//!   digests.
//! - `group`: consecutive blind writes and increments of a batch, run as one engine write.
//! - `turn`: the groups an event loop ran in one turn, applied as one engine write.
//! - [`metrics`]: the engine's Prometheus metrics.
//! - [`node`]: the cluster storage node (`ringkv-storage`): its port, its etcd membership and
//!   the shard map it follows.
//! - `expiry`: the background sweep that deletes expired keys in bounded batches, and the
//!   periodic WAL sync of `--fsync everysec`.
//!
//! [`Storage::execute`] is the one entry point: a resolved command and its arguments in, a
//! [`Reply`] out. The standalone server calls it directly; a storage node will call it for
//! requests that arrive from proxies.

mod batch;
mod bits;
pub mod config;
mod counters;
mod engine;
mod expiry;
mod families;
mod float;
mod group;
mod hash_slots;
mod keyspace;
mod layout;
mod lcs;
mod locks;
pub mod metrics;
pub mod node;
mod object;
mod strings;
pub mod tally;
mod transaction;
mod turn;
/// The stored value header (format version, type, expiry), public for the fuzz targets.
pub mod value;
mod walk;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ringkv_common::command::{flag, Cmd, CommandSpec};
use ringkv_common::placement::{shard_of, shard_of_hashed};
use ringkv_common::resp::Reply;

pub use config::{Fsync, Hosting, StorageConfig, StorageError};
use engine::Engine;
pub use engine::EngineError;
pub use group::WriteGroup;
use locks::KeyLocks;
pub use transaction::Executed;
pub use turn::{Deferred, EndsTurn};

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

/// Counts updated on the hot path: no lock, and the per-read ones per thread.
#[derive(Default)]
struct Counters {
    hits: tally::Tally,
    misses: tally::Tally,
    /// Added to once per expiry sweep batch, not per request.
    expired: AtomicU64,
}

/// The engine and the command semantics over it.
pub struct Storage {
    engine: Engine,
    locks: KeyLocks,
    counters: Counters,
    fsync: Fsync,
    sync_per_batch: bool,
    stop: expiry::StopFlag,
    shard_counters: metrics::ShardCounters,
    turns: turn::Turns,
    running: transaction::Running,
}

/// Which shards a command may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every shard this store hosts (the standalone server: all of them).
    All,
    /// Only this shard: a storage node serving one request of a proxy, which names the shard
    /// its keys hash to, or walks the shards one at a time (SCAN, DBSIZE…).
    Shard(u32),
}

/// A command's failure: a Redis error reply, or the engine failing underneath.
pub(crate) enum Failure {
    Reply(Reply),
    Engine(EngineError),
}

impl From<Reply> for Failure {
    fn from(reply: Reply) -> Self {
        Failure::Reply(reply)
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure::Engine(e)
    }
}

impl From<rocksdb::Error> for Failure {
    fn from(e: rocksdb::Error) -> Self {
        Failure::Engine(EngineError::Rocks(e))
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
            sync_per_batch: config.sync_per_batch,
            stop: expiry::StopFlag::default(),
            shard_counters: metrics::ShardCounters::default(),
            turns: turn::Turns::default(),
            running: transaction::Running::default(),
        });
        expiry::start(&storage);
        Ok(storage)
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.engine.shards()
    }

    /// The shard that owns `key`: a storage node checks a multi-shard request's keys by it.
    #[inline]
    pub fn shard(&self, key: &[u8]) -> u32 {
        shard_of(key, self.engine.shards())
    }

    /// [`Storage::shard`] of a key whose [`layout::order_of`] (its placement hash) is known.
    #[inline]
    pub(crate) fn shard_hashed(&self, key: &[u8], hash: u64) -> u32 {
        shard_of_hashed(key, hash, self.engine.shards())
    }

    /// Opens the column families of `shards` (creating the new ones together), so that the
    /// node can serve them: called when the shard map assigns shards to this node. Returns
    /// how many were created.
    pub fn host(&self, shards: &[u32]) -> Result<usize, StorageError> {
        Ok(self.engine.host(shards)?)
    }

    /// Whether shard `shard` is open here.
    pub fn hosts(&self, shard: u32) -> bool {
        self.engine.hosts(shard)
    }

    /// The shards open here.
    pub fn hosted(&self) -> Vec<u32> {
        self.engine.hosted().collect()
    }

    /// Reads a record of node metadata (kept apart from every shard's data).
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.engine.meta(key)?)
    }

    /// Writes a record of node metadata, synced to disk.
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        Ok(self.engine.put_meta(key, value)?)
    }

    /// Runs one command whose route is not `Local` over every shard. `args[0]` is the name;
    /// the arity has already been checked against `spec`.
    pub fn execute(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        self.execute_in(Scope::All, spec, args)
    }

    /// Runs one command within `scope`. With [`Scope::Shard`], every key must hash to that
    /// shard and the shard must be open; otherwise the reply is an error and nothing runs.
    pub fn execute_in(&self, scope: Scope, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        // Whatever runs now must see the writes before it, and may wait for key locks.
        self.end_turn();
        let shard = match scope {
            Scope::Shard(shard) => {
                if let Err(reply) = self.in_scope(shard, spec, args) {
                    return reply;
                }
                Some(shard)
            }
            Scope::All => spec
                .key_indexes(args.len())
                .next()
                .map(|i| self.shard(&args[i])),
        };
        // Keyless reads (SCAN, DBSIZE…) walk whole shards, and see writes land as they walk
        // whatever wrote them: a transaction's are no different.
        if spec.has(flag::READONLY) && spec.keys.first != 0 {
            return self.run_read(scope, shard, spec, args);
        }
        self.run_command(scope, shard, spec, args)
    }

    /// Runs one command whose scope was checked, its turn applied, and whose keys' locks it
    /// may take (or its transaction holds); `shard` is its first key's, for the metrics.
    fn run_command(
        &self,
        scope: Scope,
        shard: Option<u32>,
        spec: &'static CommandSpec,
        args: &[Bytes],
    ) -> Reply {
        let started = std::time::Instant::now();
        let outcome = match spec.cmd.family() {
            ringkv_common::command::Family::String => strings::execute(self, spec, args),
            ringkv_common::command::Family::Bitmap => bits::execute(self, spec, args),
            ringkv_common::command::Family::Other => match spec.cmd {
                Cmd::Dbsize
                | Cmd::Flushall
                | Cmd::Flushdb
                | Cmd::Scan
                | Cmd::Keys
                | Cmd::Randomkey => walk::execute(self, scope, spec, args),
                _ => keyspace::execute(self, spec, args),
            },
        };
        self.record(spec, shard, started.elapsed());
        reply_of(spec, outcome)
    }

    /// Refuses a request scoped to a shard this store does not host, or whose keys belong
    /// to another shard (a proxy routing by a different shard count or hash); the error is
    /// the reply [`Storage::execute_in`] gives.
    pub fn in_scope(&self, shard: u32, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Reply> {
        self.keys_in_scope(shard, spec.key_indexes(args.len()).map(|i| &args[i]))
    }

    /// [`Storage::in_scope`] for keys given one by one (a transaction's watched keys).
    pub(crate) fn keys_in_scope<'k>(
        &self,
        shard: u32,
        mut keys: impl Iterator<Item = &'k Bytes>,
    ) -> Result<(), Reply> {
        if !self.engine.hosts(shard) {
            return Err(Reply::error_owned(format!(
                "ERR shard {shard} is not hosted here"
            )));
        }
        match keys.find(|key| self.shard(key) != shard) {
            Some(_) => Err(Reply::error_owned(format!(
                "ERR a key of this request does not belong to shard {shard}"
            ))),
            None => Ok(()),
        }
    }

    /// Whether running `spec` may wait for a disk sync (`--fsync always` and a write): the
    /// caller then runs it on a blocking thread so that concurrent writers share one sync.
    pub fn may_block(&self, spec: &CommandSpec) -> bool {
        self.writes_may_block() && spec.has(flag::WRITE)
    }

    /// Whether every write may wait for a disk sync ([`Storage::may_block`] for writes).
    pub fn writes_may_block(&self) -> bool {
        self.fsync == Fsync::Always && !self.sync_per_batch
    }

    /// Whether [`Storage::end_batch`] waits for a disk sync (then call it off the async
    /// workers).
    pub fn end_batch_blocks(&self) -> bool {
        self.fsync == Fsync::Always && self.sync_per_batch
    }

    /// The mark a batch takes once its writes are done, for [`Storage::end_batch`].
    pub fn write_mark(&self) -> u64 {
        self.engine.write_mark()
    }

    /// Makes the writes of a batch of requests (those before `mark`, a
    /// [`Storage::write_mark`], and the groups `deferred` left in this thread's turns)
    /// survive the process being killed: call it on the batch's thread after running a
    /// batch that wrote and before sending its replies. The turn is applied if it is still
    /// pending, and the WAL is written to the OS once for every batch since the last time,
    /// not once per write: a batch that another batch's call already covered costs no
    /// syscall; `--fsync` then decides when it reaches the disk. An error means some of the
    /// batch's writes may be lost: its replies must not leave.
    pub fn end_batch(&self, mark: u64, deferred: Deferred) -> Result<(), StorageError> {
        let ended =
            self.settle(deferred)
                .and_then(|through| match (self.fsync, self.sync_per_batch) {
                    (Fsync::Always, false) => Ok(()),
                    (Fsync::Always, true) => self.engine.sync_wal(),
                    _ => self.engine.flush_wal_buffer(mark.max(through)),
                });
        if ended.is_err() {
            self.note_writes_failing(true);
        }
        Ok(ended?)
    }

    /// Figures for INFO (counting keys walks the shards: O(keys)).
    pub fn stats(&self) -> StorageStats {
        self.read_stats(true)
    }

    /// Figures for INFO; `count_keys` walks every hosted shard to count live keys (O(keys)),
    /// otherwise `keys` and `expires` are 0.
    pub fn read_stats(&self, count_keys: bool) -> StorageStats {
        self.end_turn();
        let (keys, expires) = if count_keys {
            walk::count(self, Scope::All).unwrap_or((0, 0))
        } else {
            (0, 0)
        };
        StorageStats {
            keys,
            expires,
            keyspace_hits: self.counters.hits.sum(),
            keyspace_misses: self.counters.misses.sum(),
            expired_keys: self.counters.expired.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the hit, miss and expiry counters (CONFIG RESETSTAT).
    pub fn reset_stats(&self) {
        self.counters.hits.reset();
        self.counters.misses.reset();
        self.counters.expired.store(0, Ordering::Relaxed);
    }

    /// Stops the background tasks, flushes memtables and syncs the WAL: a clean shutdown.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.stop.stop();
        Ok(self.engine.flush()?)
    }

    /// Counts a read as a hit or a miss.
    pub(crate) fn count_read(&self, found: bool) {
        let tally = if found {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        tally.add(1);
    }
}

/// A command's reply: its own, or an engine failure worded for the client (and logged).
fn reply_of(spec: &CommandSpec, outcome: Outcome) -> Reply {
    match outcome {
        Ok(reply) | Err(Failure::Reply(reply)) => reply,
        Err(Failure::Engine(e)) => storage_error(spec.name, e),
    }
}

/// An engine failure under `command`, logged, and worded for the client.
pub(crate) fn storage_error(command: &str, e: EngineError) -> Reply {
    tracing::error!(command, error = %e, "storage error");
    Reply::error_owned(format!(
        "ERR storage error: {}",
        e.to_string().replace(['\r', '\n'], " ")
    ))
}
