//! RocksDB underneath: one database, one column family per shard, memory bounded by one
//! shared block cache and one write-buffer budget whatever the number of shards.
//!
//! This module knows RocksDB and the record layout, and nothing of Redis commands.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_common::clock::now_ms;
use rocksdb::{
    compaction_filter::Decision, BlockBasedOptions, BoundColumnFamily, Cache,
    ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, DBWithThreadMode, Env, MultiThreaded,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use crate::config::{Fsync, StorageConfig, StorageError};
use crate::layout::{self, DATA, EXPIRY};
use crate::value::{self, Header, Value, HEADER_LEN};

type Db = DBWithThreadMode<MultiThreaded>;

/// Key in the default column family that records the shard count a directory was made with.
const SHARDS_META_KEY: &[u8] = b"ringkv.shards";

/// An open store.
pub struct Engine {
    // Field order matters: the column family handles borrow from `db` and drop first.
    cfs: Vec<Arc<BoundColumnFamily<'static>>>,
    db: Arc<Db>,
    write_opts: WriteOptions,
    /// RocksDB's in-memory environment, when `--in-memory`: there is no log to sync.
    env: Option<Env>,
}

/// Name of a shard's column family.
pub fn cf_name(shard: u32) -> String {
    format!("s{shard}")
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
        db_opts.set_manual_wal_flush(config.fsync != Fsync::Always);
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

        if !config.in_memory {
            if let Ok(existing) = Db::list_cf(&db_opts, &path) {
                let found = existing.iter().filter(|n| n.starts_with('s')).count() as u32;
                if found != 0 && found != config.shards {
                    return Err(StorageError::ShardCount {
                        dir,
                        found,
                        wanted: config.shards,
                    });
                }
            }
        }
        let mut descriptors = vec![ColumnFamilyDescriptor::new(
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            Options::default(),
        )];
        descriptors.extend(
            (0..config.shards).map(|s| ColumnFamilyDescriptor::new(cf_name(s), cf_opts.clone())),
        );
        let db = Arc::new(Db::open_cf_descriptors(&db_opts, &path, descriptors).map_err(open_err)?);
        db.put(SHARDS_META_KEY, config.shards.to_string())
            .map_err(open_err)?;

        let mut cfs = Vec::with_capacity(config.shards as usize);
        for shard in 0..config.shards {
            let Some(cf) = db.cf_handle(&cf_name(shard)) else {
                return Err(StorageError::ShardCount {
                    dir,
                    found: shard,
                    wanted: config.shards,
                });
            };
            // SAFETY: the handle points into `db`, which this struct keeps alive for longer
            // than `cfs` (fields drop in declaration order) and never drops a family it holds.
            let cf: Arc<BoundColumnFamily<'static>> = unsafe { std::mem::transmute(cf) };
            cfs.push(cf);
        }
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.fsync == Fsync::Always);
        Ok(Engine {
            cfs,
            db,
            write_opts,
            env,
        })
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.cfs.len() as u32
    }

    fn cf(&self, shard: u32) -> &Arc<BoundColumnFamily<'static>> {
        &self.cfs[shard as usize]
    }

    /// Reads a key's record; expired values read as absent.
    pub fn get(&self, shard: u32, key: &[u8], now: i64) -> Result<Option<Value>, rocksdb::Error> {
        let record_key = layout::data_key(key);
        let Some(record) = self.db.get_pinned_cf(self.cf(shard), &record_key)? else {
            return Ok(None);
        };
        match Header::decode(&record) {
            Some(header) if !header.expired(now) => Ok(Some(Value {
                expire_at: header.expire_at,
                payload: Bytes::copy_from_slice(&record[HEADER_LEN..]),
            })),
            _ => Ok(None),
        }
    }

    /// Reads only a live key's header (expiry), for TTL, EXISTS, TYPE.
    pub fn header(
        &self,
        shard: u32,
        key: &[u8],
        now: i64,
    ) -> Result<Option<Header>, rocksdb::Error> {
        Ok(self.raw_header(shard, key)?.filter(|h| !h.expired(now)))
    }

    /// Reads a key's header whether or not it has expired.
    pub fn raw_header(&self, shard: u32, key: &[u8]) -> Result<Option<Header>, rocksdb::Error> {
        let record_key = layout::data_key(key);
        let record = self.db.get_pinned_cf(self.cf(shard), &record_key)?;
        Ok(record.and_then(|r| Header::decode(&r)))
    }

    /// Applies a batch atomically, syncing the log when the fsync policy says so.
    pub fn write(&self, batch: Batch) -> Result<(), rocksdb::Error> {
        self.db.write_opt(batch.inner, &self.write_opts)
    }

    /// A new empty batch.
    pub fn batch(&self) -> Batch {
        Batch {
            inner: WriteBatch::default(),
        }
    }

    /// Stores `payload` under `key`, indexing its expiry if it has one.
    pub fn put(&self, batch: &mut Batch, shard: u32, key: &[u8], expire_at: i64, payload: &[u8]) {
        let cf = self.cf(shard);
        batch
            .inner
            .put_cf(cf, layout::data_key(key), value::encode(expire_at, payload));
        if expire_at != 0 {
            batch
                .inner
                .put_cf(cf, layout::expiry_key(expire_at, key), []);
        }
    }

    /// Deletes `key` (its expiry-index entry, if any, goes stale and the sweeper drops it).
    pub fn delete(&self, batch: &mut Batch, shard: u32, key: &[u8]) {
        batch.inner.delete_cf(self.cf(shard), layout::data_key(key));
    }

    /// Deletes an expiry-index entry.
    pub fn delete_expiry_entry(&self, batch: &mut Batch, shard: u32, record_key: &[u8]) {
        batch.inner.delete_cf(self.cf(shard), record_key);
    }

    /// Deletes every record of every shard.
    pub fn clear_all(&self) -> Result<(), rocksdb::Error> {
        let mut batch = self.batch();
        for shard in 0..self.shards() {
            batch
                .inner
                .delete_range_cf(self.cf(shard), [EXPIRY], [DATA + 1]);
        }
        self.write(batch)
    }

    /// An iterator over one shard's data records from scan position `order`.
    pub fn data_iter(&self, shard: u32, order: u64) -> ShardIter<'_> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound([DATA + 1]);
        let mut inner = self.db.raw_iterator_cf_opt(self.cf(shard), opts);
        inner.seek(layout::data_seek(order));
        ShardIter { inner }
    }

    /// An iterator over one shard's expiry index, oldest first, up to (not including) `until`.
    pub fn expiry_iter(&self, shard: u32, until: i64) -> ShardIter<'_> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(layout::expiry_key(until, b""));
        let mut inner = self.db.raw_iterator_cf_opt(self.cf(shard), opts);
        inner.seek([EXPIRY]);
        ShardIter { inner }
    }

    /// Syncs the write-ahead log to disk.
    pub fn sync_wal(&self) -> Result<(), rocksdb::Error> {
        if self.env.is_some() {
            return Ok(());
        }
        self.db.flush_wal(true)
    }

    /// Hands the buffered WAL to the operating system, so that the writes so far survive the
    /// process being killed. Called before replies to writes are sent.
    pub fn flush_wal_buffer(&self) -> Result<(), rocksdb::Error> {
        if self.env.is_some() {
            return Ok(());
        }
        self.db.flush_wal(false)
    }

    /// Flushes every memtable and syncs the log: a clean shutdown.
    pub fn flush(&self) -> Result<(), rocksdb::Error> {
        if self.env.is_some() {
            // Nothing outlives an in-memory store; RocksDB's memory WAL cannot even sync.
            return Ok(());
        }
        let cfs: Vec<_> = self.cfs.iter().collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        self.db.flush_wal(true)
    }
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

/// Writes to apply together.
pub struct Batch {
    inner: WriteBatch,
}

impl Batch {
    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}
