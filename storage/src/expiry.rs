//! Background work: the expiry sweep and the once-a-second WAL sync of `--fsync everysec`.
//!
//! Reads never return an expired value, and compaction drops expired records, but neither
//! makes DBSIZE or SCAN forget a key that nobody reads. The sweep walks each shard's expiry
//! index (ordered by time) ten times a second and deletes what is due, at most a bounded batch
//! per shard per pass so that a million keys expiring at once cannot stall writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ringkv_common::clock::now_ms;

use crate::config::Fsync;
use crate::engine::EngineError;
use crate::layout::split_expiry_key;
use crate::Storage;

/// Most index entries one shard handles per pass.
const BATCH: usize = 500;
/// Time between passes.
const PERIOD: Duration = Duration::from_millis(100);

/// Tells the background thread to stop (set on shutdown).
#[derive(Default)]
pub(crate) struct StopFlag(AtomicBool);

impl StopFlag {
    pub(crate) fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A task the thread repeats, and whether it is failing: its error is logged when it starts
/// to fail and a line when it works again, not on every try (a full disk fails the WAL sync
/// every second for as long as it lasts).
struct Repeated {
    task: &'static str,
    failing: bool,
}

impl Repeated {
    fn new(task: &'static str) -> Repeated {
        Repeated {
            task,
            failing: false,
        }
    }

    fn report<T>(&mut self, outcome: &Result<T, EngineError>) {
        match (outcome, self.failing) {
            (Err(e), false) => {
                tracing::error!(task = self.task, error = %e, "failed; repeats of this error are not logged")
            }
            (Ok(_), true) => tracing::info!(task = self.task, "works again"),
            _ => {}
        }
        self.failing = outcome.is_err();
    }
}

/// Starts the background thread; it holds only a weak reference and ends with the store.
pub(crate) fn start(storage: &Arc<Storage>) {
    let weak: Weak<Storage> = Arc::downgrade(storage);
    let spawned = std::thread::Builder::new()
        .name("ringkv-expiry".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            let mut sweeping = Repeated::new("expiry sweep");
            let mut syncing = Repeated::new("WAL sync");
            loop {
                std::thread::sleep(PERIOD);
                let Some(st) = weak.upgrade() else { return };
                if st.stop.stopped() {
                    return;
                }
                sweeping.report(&sweep(&st));
                if st.fsync == Fsync::Everysec && last_sync.elapsed() >= Duration::from_secs(1) {
                    last_sync = Instant::now();
                    syncing.report(&st.engine.sync_wal());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the expiry thread: expired keys stay until read or compacted");
    }
}

/// One pass over every shard's due index entries; a shard with nothing due is skipped
/// without opening an iterator (see `Engine::nothing_due`).
pub(crate) fn sweep(st: &Storage) -> Result<u64, EngineError> {
    let now = now_ms();
    let mut removed = 0;
    for shard in st.engine.hosted() {
        if st.engine.nothing_due(shard, now) {
            continue;
        }
        st.engine.claim_due(shard);
        match sweep_shard(st, shard, now) {
            Ok((swept, next)) => {
                removed += swept;
                st.engine.note_due(shard, next);
            }
            Err(e) => {
                // Unknown again: the next pass looks at this shard.
                st.engine.note_due(shard, i64::MIN);
                return Err(e);
            }
        }
    }
    if removed > 0 {
        st.engine.flush_wal_buffer(st.engine.write_mark())?;
    }
    st.counters.expired.fetch_add(removed, Ordering::Relaxed);
    Ok(removed)
}

/// Deletes up to `BATCH` of `shard`'s entries due at `now`; returns the keys removed and when
/// the shard's next entry is due (`i64::MIN`: more are due now, `i64::MAX`: none left), read
/// by the same walk of the index.
fn sweep_shard(st: &Storage, shard: u32, now: i64) -> Result<(u64, i64), EngineError> {
    let mut due: Vec<(Vec<u8>, i64, Vec<u8>)> = Vec::new();
    let mut next = i64::MAX;
    {
        let mut iter = st.engine.expiry_iter(shard)?;
        while let Some((record_key, _)) = iter.current() {
            if let Some((at, key)) = split_expiry_key(record_key) {
                if at > now {
                    next = at;
                    break;
                }
                if due.len() == BATCH {
                    next = i64::MIN;
                    break;
                }
                due.push((record_key.to_vec(), at, key.to_vec()));
            }
            iter.advance();
        }
        iter.status()?;
    }
    if due.is_empty() {
        return Ok((0, next));
    }
    let mut removed = 0;
    let _held = st.locks.lock_many(due.iter().map(|(_, _, key)| &key[..]));
    let mut batch = st.engine.batch();
    for (index_key, at, key) in &due {
        // Delete the key only if it still carries this expiry; the entry goes either way.
        if let Some(header) = st.engine.raw_header(shard, key)? {
            if header.expire_at == *at && header.expired(now) {
                st.engine.delete(&mut batch, shard, key)?;
                removed += 1;
            }
        }
        st.engine
            .delete_expiry_entry(&mut batch, shard, index_key)?;
    }
    st.engine.write(batch)?;
    Ok((removed, next))
}
