//! RocksDB underneath: one database, one column family per shard, memory bounded by one
//! shared block cache and one write-buffer budget whatever the number of shards.
//!
//! This module knows RocksDB and the record layout, and nothing of Redis commands.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use ringkv_common::clock::now_ms;
use rocksdb::{
    compaction_filter::Decision, BlockBasedOptions, BoundColumnFamily, Cache,
    ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, DBWithThreadMode, Env, MemtableFactory,
    MultiThreaded, Options, ReadOptions, SliceTransform, WriteBatch, WriteOptions,
};
use smallvec::SmallVec;

use crate::batch::{self, Batch};
use crate::config::{Fsync, Hosting, StorageConfig, StorageError};
use crate::counters::{Counter, Counters};
use crate::families::{self, Handle};
use crate::layout::{self, DATA, EXPIRY};
use crate::value::{self, Header, Value, HEADER_LEN};

type Db = DBWithThreadMode<MultiThreaded>;

/// Key in the default column family that records the shard count a directory was made with.
const SHARDS_META_KEY: &[u8] = b"ringkv.shards";

/// Reader-writer lock stripes per memtable for in-place updates (see `Engine::open`).
const INPLACE_UPDATE_LOCKS: usize = 8;

/// Hash buckets per memtable (8 bytes each, from the memtable's own arena: 32 KiB, so 8 MiB
/// of the write budget with 256 shards). Few enough that the bucket arrays of all shards stay
/// in cache (a HashSkipList of 16,384 buckets measured 0.71-0.97x the throughput of this
/// HashLinkList at -P 16), many enough for about one record per bucket at the ~1 MiB a
/// shard's memtable averages under the shared budget; a bucket past 256 records turns into a
/// skiplist.
const MEMTABLE_BUCKETS: usize = 4 * 1024;

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// RocksDB failed (I/O, corruption…).
    #[error(transparent)]
    Rocks(#[from] rocksdb::Error),
    /// The shard's column family is not open on this node: it was never given this shard.
    #[error("shard {0} is not hosted by this node")]
    NotHosted(u32),
    /// A key or value too long for a RocksDB record.
    #[error(transparent)]
    TooLarge(#[from] batch::TooLarge),
    /// This RocksDB encodes write batches in a way `batch.rs` does not know.
    #[error("unknown RocksDB write batch format")]
    BatchFormat,
    /// The loop turn holding this batch's writes could not be applied (see `turn`).
    #[error(transparent)]
    Turn(#[from] crate::turn::TurnFailed),
    /// RocksDB could not create shard column families.
    #[error("cannot create column families: {0}")]
    CreateFamilies(String),
}

/// An open shard family: its handle for reads, its RocksDB id for writes (see [`Batch`]).
struct Hosted {
    handle: Handle,
    id: u32,
}

impl Hosted {
    fn new(handle: Handle) -> Result<Hosted, EngineError> {
        let mut probe = WriteBatch::default();
        probe.put_cf(&handle, b"", b"");
        let id = batch::family_id(probe.data()).ok_or(EngineError::BatchFormat)?;
        Ok(Hosted { handle, id })
    }
}

/// An open store.
pub struct Engine {
    // Field order matters: the column family handles borrow from `db` and drop first.
    /// Slot `s` holds shard `s`'s family once it is open; a slot is set at most once and
    /// never cleared, so reading it is one atomic load on the hot path.
    cfs: Box<[OnceLock<Hosted>]>,
    db: Arc<Db>,
    write_opts: WriteOptions,
    /// Options of every shard family, for the ones created while serving.
    cf_opts: Options,
    /// Serialises creating families (RocksDB allows it concurrently; the slots do not).
    creating: Mutex<()>,
    /// RocksDB's in-memory environment, when `--in-memory`: there is no log to sync.
    env: Option<Env>,
    /// Every write up to this sequence number has been handed to the OS (the WAL buffer
    /// written out), so a batch whose writes are older needs no `write(2)` of its own.
    wal_written: AtomicU64,
    /// Per shard, a time (ms) before which none of its expiry-index entries is due, so the
    /// expiry sweep skips the shard without opening an iterator (a pass over 256 shards ten
    /// times a second was 1.8% of a core on an idle server). Lowered after every write that
    /// indexes an expiry, raised by the sweep; `i64::MIN` (unknown) after opening.
    next_due: Box<[AtomicI64]>,
    /// The options of every point read, made once: the crate's `get_pinned_cf` makes and
    /// frees a C++ `ReadOptions` per call (~1% of a storage node's CPU at GET -P 1).
    point_reads: PointReads,
    /// Integers the increments wrote, so the next increment skips the read.
    counters: Counters,
}

/// Default read options shared by every thread's point reads.
struct PointReads(ReadOptions);

// SAFETY: RocksDB only reads a `ReadOptions` it is given (`const ReadOptions&`), and nothing
// here changes these after they are made, so reading them from many threads at once is safe.
unsafe impl Sync for PointReads {}

/// Records to apply together ([`Engine::write`]), and the expiry times they index, per
/// shard, for [`Engine::nothing_due`] once they are applied.
pub struct Writes {
    records: Batch,
    expiring: SmallVec<[(u32, i64); 2]>,
    /// The hashes of the keys written, whose counter-cache entries go before the write.
    written: SmallVec<[u64; 16]>,
}

impl Writes {
    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Moves `other`'s writes after these, to be applied with them as one batch.
    pub fn append(&mut self, other: Writes) {
        self.records.append(other.records);
        self.expiring.extend(other.expiring);
        self.written.extend(other.written);
    }
}

/// The handle of a family the crate opened, kept by the engine.
fn crate_handle(cf: Arc<BoundColumnFamily<'_>>) -> Handle {
    // SAFETY: the handle points into the database, which the engine keeps alive for longer
    // than its handles (fields drop in declaration order) and which never drops a family
    // the engine holds.
    let cf: Arc<BoundColumnFamily<'static>> = unsafe { std::mem::transmute(cf) };
    Handle::Opened(cf)
}

/// Name of a shard's column family.
pub fn cf_name(shard: u32) -> String {
    format!("s{shard}")
}

/// The shard a column family name stands for (`s17` → 17).
fn shard_of_cf(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('s')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Drops records whose value has expired; the expiry index is left to the sweeper.
fn expiry_filter(_level: u32, key: &[u8], record: &[u8]) -> Decision {
    if key.first() == Some(&DATA) {
        if let Some(header) = Header::decode(record) {
            if header.expired(now_ms()) {
                return Decision::Remove;
            }
        }
    }
    Decision::Keep
}

impl Engine {
    /// Opens or creates the store described by `config`.
    pub fn open(config: &StorageConfig) -> Result<Engine, StorageError> {
        let dir = config.dir.display().to_string();
        let open_err = |source| StorageError::Open {
            dir: dir.clone(),
            source,
        };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_db_write_buffer_size(config.write_buffer_bytes);
        db_opts.increase_parallelism(
            std::thread::available_parallelism().map_or(2, |n| n.get() as i32),
        );
        db_opts.set_max_background_jobs(4);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_total_wal_size(512 << 20);
        // The WAL is written to the OS once per client batch (`flush_wal_buffer`), not once
        // per write: a pipeline of 16 SETs costs one write(2) instead of 16. With
        // `--fsync always` every write syncs, so RocksDB writes the log itself.
        let sync_every_write = config.fsync == Fsync::Always && !config.sync_per_batch;
        db_opts.set_manual_wal_flush(!sync_every_write);
        // RocksDB's in-memory environment cannot resolve relative paths.
        let path = std::path::absolute(&config.dir).unwrap_or_else(|_| config.dir.clone());
        let env = if config.in_memory {
            let env = Env::mem_env().map_err(open_err)?;
            db_opts.set_env(&env);
            Some(env)
        } else {
            None
        };

        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        cf_opts.set_compaction_filter("ringkv-expiry", expiry_filter);
        cf_opts.set_write_buffer_size(16 << 20);
        // Memtables grow in arena blocks (write_buffer_size / 8 by default: 2 MiB). With
        // hundreds of families that alone would exceed the shared write-buffer budget after one
        // write to each, and RocksDB would flush tiny memtables forever.
        cf_opts.set_arena_block_size(64 << 10);
        cf_opts.set_level_compaction_dynamic_level_bytes(true);
        // Overwrites replace the memtable entry in place when the new record is no larger
        // (RocksDB's inplace_update_support), so a memtable holds one entry per key instead of
        // one per write. A Redis workload rewrites the same keys over and over: with one entry
        // per write the skiplists grew to the whole write buffer and their cache misses were
        // 30-40% of a SET's CPU (SET -P 16 fell from ~190k to ~90k requests/s as the buffer
        // filled); in place it stays at ~160-185k. Nothing here reads through snapshots, the
        // one thing in-place updates give up. It requires one memtable writer at a time.
        db_opts.set_allow_concurrent_memtable_write(false);
        cf_opts.set_inplace_update_support(true);
        // Each memtable allocates this many reader-writer locks for its in-place updates
        // (RocksDB's default is 10,000: 560 KiB per memtable, 140 MiB for 256 shards, and a
        // cache miss on every write). Writes to memtables are serialised anyway; a few
        // stripes keep readers and the one writer apart just as well. With 64 stripes (900
        // KiB of locks over 256 shards) taking the lock was 8.7% of an MSET -P 16 run's CPU,
        // nearly all of it a cache miss; with 8 it is 4-5%.
        cf_opts.set_inplace_update_locks(INPLACE_UPDATE_LOCKS);
        // Point reads and writes find their key through a hash of its record prefix (tag and
        // key hash, see `layout::record_prefix`) into a short linked list, instead of a
        // skiplist search: with every recently written key in a memtable, that search was a
        // dozen dependent cache misses and a quarter of a SET's CPU. Ordered walks (SCAN,
        // KEYS, DBSIZE) ask for total order, for which RocksDB sorts a copy of the memtable;
        // the expiry index keeps one ordered bucket, which the expiry sweep walks without a
        // copy.
        cf_opts.set_prefix_extractor(SliceTransform::create(
            "ringkv.record-prefix",
            layout::record_prefix,
            None,
        ));
        cf_opts.set_memtable_factory(MemtableFactory::HashLinkList {
            bucket_count: MEMTABLE_BUCKETS,
        });

        let existing: Vec<u32> = if config.in_memory {
            Vec::new()
        } else {
            Db::list_cf(&db_opts, &path)
                .map(|names| names.iter().filter_map(|n| shard_of_cf(n)).collect())
                .unwrap_or_default()
        };
        let shard_count_error = |found: u32| StorageError::ShardCount {
            dir: dir.clone(),
            found,
            wanted: config.shards,
        };
        match config.hosting {
            Hosting::All => {
                let found = existing.len() as u32;
                if found != 0 && found != config.shards {
                    return Err(shard_count_error(found));
                }
            }
            Hosting::Assigned => {
                if let Some(&beyond) = existing.iter().find(|&&s| s >= config.shards) {
                    return Err(shard_count_error(beyond + 1));
                }
            }
        }
        let opened: Vec<u32> = match config.hosting {
            Hosting::All => (0..config.shards).collect(),
            Hosting::Assigned => existing,
        };
        let mut descriptors = vec![ColumnFamilyDescriptor::new(
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            Options::default(),
        )];
        descriptors.extend(
            opened
                .iter()
                .map(|&s| ColumnFamilyDescriptor::new(cf_name(s), cf_opts.clone())),
        );
        let db = Arc::new(Db::open_cf_descriptors(&db_opts, &path, descriptors).map_err(open_err)?);
        if let Some(recorded) = db.get(SHARDS_META_KEY).map_err(open_err)? {
            let recorded = std::str::from_utf8(&recorded)
                .ok()
                .and_then(|text| text.parse::<u32>().ok());
            if let Some(found) = recorded.filter(|&n| n != config.shards) {
                return Err(shard_count_error(found));
            }
        }
        db.put(SHARDS_META_KEY, config.shards.to_string())
            .map_err(open_err)?;

        let cfs: Box<[OnceLock<Hosted>]> = (0..config.shards).map(|_| OnceLock::new()).collect();
        for &shard in &opened {
            let Some(cf) = db.cf_handle(&cf_name(shard)) else {
                return Err(shard_count_error(shard));
            };
            let _ = cfs[shard as usize].set(Hosted::new(crate_handle(cf))?);
        }
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync_every_write);
        Ok(Engine {
            cfs,
            db,
            write_opts,
            cf_opts,
            creating: Mutex::new(()),
            env,
            wal_written: AtomicU64::new(0),
            next_due: (0..config.shards)
                .map(|_| AtomicI64::new(i64::MIN))
                .collect(),
            point_reads: PointReads(ReadOptions::default()),
            counters: Counters::new(config.counter_cache_bytes),
        })
    }

    /// Opens the column families of `shards`, creating those this node never held in one
    /// RocksDB call (see [`families`]). Returns how many it created. Idempotent; a family
    /// once open stays open. If creating fails part-way, the families made before the
    /// failure are open and the error is returned.
    pub fn host(&self, shards: &[u32]) -> Result<usize, EngineError> {
        if let Some(&beyond) = shards.iter().find(|&&s| s >= self.shards()) {
            return Err(EngineError::NotHosted(beyond));
        }
        let _creating = self
            .creating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut missing: Vec<u32> = shards.iter().copied().filter(|&s| !self.hosts(s)).collect();
        missing.sort_unstable();
        missing.dedup();
        let mut to_create = Vec::with_capacity(missing.len());
        for shard in missing {
            match self.db.cf_handle(&cf_name(shard)) {
                Some(cf) => self.set_hosted(shard, crate_handle(cf))?,
                None => to_create.push(shard),
            }
        }
        if to_create.is_empty() {
            return Ok(0);
        }
        let names: Vec<String> = to_create.iter().map(|&s| cf_name(s)).collect();
        let (handles, error) = families::create(&self.db, &self.cf_opts, &names);
        let created = handles.len();
        for (shard, handle) in to_create.into_iter().zip(handles) {
            self.set_hosted(shard, handle)?;
        }
        match error {
            Some(error) => Err(EngineError::CreateFamilies(error)),
            None => Ok(created),
        }
    }

    /// Fills shard `shard`'s slot (left as it is if already filled).
    fn set_hosted(&self, shard: u32, handle: Handle) -> Result<(), EngineError> {
        let hosted = Hosted::new(handle)?;
        if let Some(slot) = self.cfs.get(shard as usize) {
            let _ = slot.set(hosted);
        }
        Ok(())
    }

    /// Whether shard `shard`'s family is open here.
    pub fn hosts(&self, shard: u32) -> bool {
        self.cfs
            .get(shard as usize)
            .is_some_and(|slot| slot.get().is_some())
    }

    /// The shards whose families are open here, in order.
    pub fn hosted(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.shards()).filter(|&s| self.hosts(s))
    }

    /// Number of shards in the whole store (or cluster), hosted here or not.
    pub fn shards(&self) -> u32 {
        self.cfs.len() as u32
    }

    #[inline]
    fn family(&self, shard: u32) -> Result<&Hosted, EngineError> {
        self.cfs
            .get(shard as usize)
            .and_then(OnceLock::get)
            .ok_or(EngineError::NotHosted(shard))
    }

    #[inline]
    fn cf(&self, shard: u32) -> Result<&Handle, EngineError> {
        Ok(&self.family(shard)?.handle)
    }

    /// Reads a key's record; expired values read as absent.
    pub fn get(&self, shard: u32, key: &[u8], now: i64) -> Result<Option<Value>, EngineError> {
        self.read_live(shard, key, now, |expire_at, payload| Value {
            expire_at,
            payload: Bytes::copy_from_slice(payload),
        })
    }

    /// Reads a live key's expiry and payload in place (no copy) through `read`; expired
    /// values read as absent.
    pub fn read_live<R>(
        &self,
        shard: u32,
        key: &[u8],
        now: i64,
        read: impl FnOnce(i64, &[u8]) -> R,
    ) -> Result<Option<R>, EngineError> {
        let record_key = layout::data_key(key);
        let cf = self.cf(shard)?;
        let Some(record) = self
            .db
            .get_pinned_cf_opt(cf, &record_key, &self.point_reads.0)?
        else {
            return Ok(None);
        };
        match Header::decode(&record) {
            Some(header) if !header.expired(now) => {
                Ok(Some(read(header.expire_at, &record[HEADER_LEN..])))
            }
            _ => Ok(None),
        }
    }

    /// Reads only a live key's header (expiry), for TTL, EXISTS, TYPE.
    pub fn header(&self, shard: u32, key: &[u8], now: i64) -> Result<Option<Header>, EngineError> {
        Ok(self.raw_header(shard, key)?.filter(|h| !h.expired(now)))
    }

    /// Reads a key's header whether or not it has expired.
    pub fn raw_header(&self, shard: u32, key: &[u8]) -> Result<Option<Header>, EngineError> {
        let record_key = layout::data_key(key);
        let record =
            self.db
                .get_pinned_cf_opt(self.cf(shard)?, &record_key, &self.point_reads.0)?;
        Ok(record.and_then(|r| Header::decode(&r)))
    }

    /// Applies a batch atomically, syncing the log when the fsync policy says so.
    pub fn write(&self, batch: Writes) -> Result<(), EngineError> {
        self.counters.forget_all(&batch.written);
        self.db
            .write_opt(batch.records.into_write_batch(), &self.write_opts)?;
        // After the write, so a sweep that finds the shard's time lowered also finds the entry.
        for (shard, at) in batch.expiring {
            self.note_due(shard, at);
        }
        Ok(())
    }

    /// A new empty batch.
    pub fn batch(&self) -> Writes {
        Writes {
            records: Batch::default(),
            expiring: SmallVec::new(),
            written: SmallVec::new(),
        }
    }

    /// Whether no expiry-index entry of `shard` is due at `now` (ms), as far as the writes
    /// applied so far tell: the expiry sweep then skips the shard.
    pub fn nothing_due(&self, shard: u32, now: i64) -> bool {
        self.next_due
            .get(shard as usize)
            .is_some_and(|due| due.load(Ordering::Acquire) > now)
    }

    /// Starts a sweep of `shard`: writes applied from here on lower its time again, so the
    /// sweep may raise it with [`Engine::note_due`] to what it finds without losing theirs.
    /// Call before opening the sweep's iterator.
    pub fn claim_due(&self, shard: u32) {
        if let Some(due) = self.next_due.get(shard as usize) {
            due.store(i64::MAX, Ordering::Release);
        }
    }

    /// Records that an entry of `shard` is due at `at` (ms), or sooner.
    pub fn note_due(&self, shard: u32, at: i64) {
        if let Some(due) = self.next_due.get(shard as usize) {
            due.fetch_min(at, Ordering::AcqRel);
        }
    }

    /// The value an increment last wrote for `key`, if the counter cache still holds it
    /// (see [`Counters`]): then it is the key's live record, and no read is needed.
    /// `hash` is the key's `layout::order_of`.
    pub fn counter(&self, key: &[u8], hash: u64, now: i64) -> Option<Counter> {
        self.counters.get(hash, key, now)
    }

    /// Starts loading where [`Engine::counter`] will look for the key of `hash` (see
    /// [`Counters::prefetch`]).
    pub fn prefetch_counter(&self, hash: u64) {
        self.counters.prefetch(hash);
    }

    /// Keeps the integer an increment wrote for `key` (`hash`: its `layout::order_of`). Call
    /// after its write was applied, with the key's lock still held, since every other write of
    /// the key drops the entry.
    pub fn remember_counter(&self, key: &[u8], hash: u64, counter: Counter) {
        self.counters.set(hash, key, counter);
    }

    /// Stores `payload` under `key`, indexing its expiry if it has one.
    pub fn put(
        &self,
        batch: &mut Writes,
        shard: u32,
        key: &[u8],
        expire_at: i64,
        payload: &[u8],
    ) -> Result<(), EngineError> {
        self.put_ordered(batch, shard, key, layout::order_of(key), expire_at, payload)
    }

    /// [`Engine::put`] for a key whose scan order ([`layout::order_of`]) is already known: a
    /// write group hashes each key once.
    pub fn put_ordered(
        &self,
        batch: &mut Writes,
        shard: u32,
        key: &[u8],
        order: u64,
        expire_at: i64,
        payload: &[u8],
    ) -> Result<(), EngineError> {
        batch.written.push(order);
        self.put_record(batch, shard, key, order, expire_at, payload)
    }

    /// Stores the integer an increment computed for `key` (its digits in `payload`), keeping
    /// the key's counter-cache entry: until the write is applied the entry still holds what
    /// RocksDB holds, and after it the caller stores the new value with
    /// [`Engine::remember_counter`]. A counter's entry is so updated in place, not dropped
    /// and made again (an allocation per key and group). `order` is the key's
    /// [`layout::order_of`].
    pub fn put_increment(
        &self,
        batch: &mut Writes,
        shard: u32,
        key: &[u8],
        order: u64,
        expire_at: i64,
        payload: &[u8],
    ) -> Result<(), EngineError> {
        self.put_record(batch, shard, key, order, expire_at, payload)
    }

    fn put_record(
        &self,
        batch: &mut Writes,
        shard: u32,
        key: &[u8],
        order: u64,
        expire_at: i64,
        payload: &[u8],
    ) -> Result<(), EngineError> {
        // Callers that hashed the key already pass that hash; it must be the key's order.
        debug_assert_eq!(order, layout::order_of(key));
        let id = self.family(shard)?.id;
        let header = value::header(expire_at);
        let records = &mut batch.records;
        records.put(id, &[&layout::data_seek(order), key], &[&header, payload])?;
        if expire_at != 0 {
            records.put(id, &[&layout::expiry_prefix(expire_at), key], &[])?;
            batch.expiring.push((shard, expire_at));
        }
        Ok(())
    }

    /// Deletes `key` (its expiry-index entry, if any, goes stale and the sweeper drops it).
    pub fn delete(&self, batch: &mut Writes, shard: u32, key: &[u8]) -> Result<(), EngineError> {
        let id = self.family(shard)?.id;
        let order = layout::order_of(key);
        batch.written.push(order);
        Ok(batch
            .records
            .delete(id, &[&layout::data_seek(order), key])?)
    }

    /// Deletes an expiry-index entry.
    pub fn delete_expiry_entry(
        &self,
        batch: &mut Writes,
        shard: u32,
        record_key: &[u8],
    ) -> Result<(), EngineError> {
        Ok(batch
            .records
            .delete(self.family(shard)?.id, &[record_key])?)
    }

    /// Deletes every record of the given shards, atomically. The caller holds every key
    /// lock: no write may run until this returns.
    ///
    /// The cleared shards' memtables are then switched for empty ones, because overwrites
    /// update memtable entries in place, keeping the entry's old sequence number: a SET
    /// landing on an entry from before the tombstone would stay hidden behind it. RocksDB
    /// switches the memtable before a flush returns, even one that does not wait for the
    /// disk, so the old memtables reach disk in the background and FLUSHALL stays quick.
    ///
    /// Shards that hold no record are left alone. Each cleared shard's memtable becomes a
    /// small file on disk, and a memtable cannot be switched again before its last one has
    /// reached the disk: clearing all 256 shards of a nearly empty store wrote 256 files, and
    /// a FLUSHALL right after another (a test suite's setup) waited ~0.4 s for them.
    pub fn clear(&self, shards: impl IntoIterator<Item = u32>) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        let mut cleared = Vec::new();
        for shard in shards {
            let cf = self.cf(shard)?;
            if self.holds_records(cf) {
                batch.delete_range_cf(cf, [EXPIRY], [DATA + 1]);
                cleared.push(cf);
            }
        }
        self.counters.clear();
        if cleared.is_empty() {
            return Ok(());
        }
        self.db.write_opt(batch, &self.write_opts)?;
        let mut switch = rocksdb::FlushOptions::default();
        switch.set_wait(false);
        Ok(self.db.flush_cfs_opt(&cleared, &switch)?)
    }

    /// Whether a shard holds any record, live, expired or in its expiry index; when in
    /// doubt (RocksDB cannot tell), it does. A shard whose current memtable has entries
    /// does; otherwise its older memtables and files are walked to the first record
    /// (a cleared shard's range tombstone hides what it covers).
    fn holds_records(&self, cf: &Handle) -> bool {
        let active = self
            .db
            .property_int_value_cf(cf, "rocksdb.num-entries-active-mem-table");
        if !matches!(active, Ok(Some(0))) {
            return true;
        }
        let mut opts = ReadOptions::default();
        // Every record in key order, whichever memtable bucket it is in.
        opts.set_total_order_seek(true);
        let mut records = self.db.raw_iterator_cf_opt(cf, opts);
        records.seek_to_first();
        records.valid() || records.status().is_err()
    }

    /// An iterator over one shard's data records from scan position `order`.
    pub fn data_iter(&self, shard: u32, order: u64) -> Result<ShardIter<'_>, EngineError> {
        let mut opts = ReadOptions::default();
        // Across every key's bucket, in key order (the memtable sorts a copy for it).
        opts.set_total_order_seek(true);
        opts.set_iterate_upper_bound([DATA + 1]);
        let mut inner = self.db.raw_iterator_cf_opt(self.cf(shard)?, opts);
        inner.seek(layout::data_seek(order));
        Ok(ShardIter { inner })
    }

    /// An iterator over one shard's expiry index, oldest first.
    pub fn expiry_iter(&self, shard: u32) -> Result<ShardIter<'_>, EngineError> {
        let mut opts = ReadOptions::default();
        // The index is one prefix bucket: walk it in order, no sorted copy of the memtable.
        opts.set_prefix_same_as_start(true);
        opts.set_iterate_upper_bound([DATA]);
        let mut inner = self.db.raw_iterator_cf_opt(self.cf(shard)?, opts);
        inner.seek([EXPIRY]);
        Ok(ShardIter { inner })
    }

    /// Syncs the write-ahead log to disk.
    pub fn sync_wal(&self) -> Result<(), EngineError> {
        if self.env.is_some() {
            return Ok(());
        }
        Ok(self.db.flush_wal(true)?)
    }

    /// The sequence number of the latest write: taken once a batch's writes are done, it is
    /// the mark [`Engine::flush_wal_buffer`] needs to reach for them.
    pub fn write_mark(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// Hands the buffered WAL to the operating system, so that the writes up to `mark` (a
    /// [`Engine::write_mark`]) survive the process being killed. Called before replies to
    /// writes are sent. One call covers every write before it, whoever made it: when another
    /// batch's call already did, this one costs an atomic load and no syscall (group commit).
    pub fn flush_wal_buffer(&self, mark: u64) -> Result<(), EngineError> {
        if self.env.is_some() || self.wal_written.load(Ordering::Acquire) >= mark {
            return Ok(());
        }
        // A write is in the log buffer before its sequence number is published, so reading
        // the latest number first makes the flush cover at least that far.
        let covered = self.db.latest_sequence_number();
        self.db.flush_wal(false)?;
        self.wal_written.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }

    /// RocksDB's figures for the metrics endpoint: per hosted shard (estimated records,
    /// SST + memtable bytes) and for the whole database. Properties RocksDB cannot give read
    /// as 0.
    pub fn figures(&self) -> EngineFigures {
        use rocksdb::properties as p;
        let int = |name| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let mut figures = EngineFigures {
            block_cache_bytes: int(p::BLOCK_CACHE_USAGE),
            running_compactions: int(p::NUM_RUNNING_COMPACTIONS),
            write_stopped: int(p::IS_WRITE_STOPPED) != 0,
            write_delayed: int(p::ACTUAL_DELAYED_WRITE_RATE) != 0,
            cached_counters: self.counters.len() as u64,
            ..EngineFigures::default()
        };
        for shard in self.hosted() {
            let Ok(cf) = self.cf(shard) else { continue };
            let int = |name| {
                self.db
                    .property_int_value_cf(cf, name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            let memtable = int(p::CUR_SIZE_ALL_MEM_TABLES);
            let sst = int(p::TOTAL_SST_FILES_SIZE);
            figures.memtable_bytes += memtable;
            figures.sst_bytes += sst;
            figures.pending_compaction_bytes += int(p::ESTIMATE_PENDING_COMPACTION_BYTES);
            figures.shards.push(ShardFigures {
                shard,
                records: int(p::ESTIMATE_NUM_KEYS),
                bytes: memtable + sst,
            });
        }
        figures
    }

    /// Reads a node-metadata record from the default family (never a shard's).
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.db.get(key)?)
    }

    /// Writes a node-metadata record to the default family, durably (synced), since it
    /// says what the node may serve after a restart.
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.env.is_none());
        Ok(self.db.put_opt(key, value, &opts)?)
    }

    /// Flushes every memtable and syncs the log: a clean shutdown.
    pub fn flush(&self) -> Result<(), EngineError> {
        if self.env.is_some() {
            // Nothing outlives an in-memory store; RocksDB's memory WAL cannot even sync.
            return Ok(());
        }
        let cfs: Vec<&Handle> = self
            .cfs
            .iter()
            .filter_map(|slot| slot.get().map(|hosted| &hosted.handle))
            .collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(self.db.flush_wal(true)?)
    }
}

/// RocksDB's figures for one shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardFigures {
    /// The shard.
    pub shard: u32,
    /// Estimated records (data and expiry index).
    pub records: u64,
    /// SST plus memtable bytes.
    pub bytes: u64,
}

/// RocksDB's figures for the whole database.
#[derive(Debug, Clone, Default)]
pub struct EngineFigures {
    /// Per hosted shard.
    pub shards: Vec<ShardFigures>,
    /// Memtables, all shards.
    pub memtable_bytes: u64,
    /// SST files, all shards.
    pub sst_bytes: u64,
    /// Block cache in use.
    pub block_cache_bytes: u64,
    /// Compaction debt, all shards.
    pub pending_compaction_bytes: u64,
    /// Compactions running.
    pub running_compactions: u64,
    /// Writes stopped (a stall).
    pub write_stopped: bool,
    /// Writes slowed down.
    pub write_delayed: bool,
    /// Integers in the counter cache.
    pub cached_counters: u64,
}

/// A forward iterator over records of one shard.
pub struct ShardIter<'a> {
    inner: DBRawIteratorWithThreadMode<'a, Db>,
}

impl ShardIter<'_> {
    /// The current record, or `None` at the end (or on an I/O error, reported by `status`).
    pub fn current(&self) -> Option<(&[u8], &[u8])> {
        Some((self.inner.key()?, self.inner.value()?))
    }

    /// Moves to the next record.
    pub fn advance(&mut self) {
        self.inner.next();
    }

    /// The error that ended the iteration early, if any.
    pub fn status(&self) -> Result<(), rocksdb::Error> {
        self.inner.status()
    }
}
