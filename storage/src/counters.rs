//! The integers INCR, DECR, INCRBY and DECRBY last wrote, kept in memory, so that the next
//! increment of a key needs no RocksDB read.
//!
//! In-place updates keep the memtables small while the WAL grows with every write; when the
//! WAL reaches its bound RocksDB flushes every shard, and the next read of each key goes
//! through its SST files, several times the cost of a memtable read. A counter is read before
//! every write, so after such a flush each increment paid that read. Here its last value
//! stays in memory whatever RocksDB flushed.
//!
//! The engine keeps this in step: every record it writes or deletes, other than an
//! increment's, drops the entry of its key's hash before the write is applied (under the
//! key's lock, which every writer holds); an increment updates its key's entry only after its
//! write was applied (until then the entry still holds what RocksDB holds); and clearing
//! shards clears it all. So an entry, when there is one, is the key's record as RocksDB holds
//! it. Expired entries read as absent, leaving the key to RocksDB's read. Memory is bounded:
//! a segment over its share of the budget drops half its entries.
//!
//! Every write asks whether its key has an entry, so the answer for the keys that have none
//! (nearly every SET and MSET) must be cheap: a bitmap by key hash, set when an entry is made
//! and cleared only with the whole cache, answers most of them with one load and no lock. A
//! batch's loads are made together, before any lock (see [`Counters::forget_all`]).
//!
//! An increment's key nearly always has an entry, and finding it is a cache miss or two. A
//! group of increments asks for its keys' slots first ([`Counters::prefetch`]), so that their
//! misses overlap instead of each waiting for the one before (`hash_slots`).

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::hash_slots::{self, HashSlots, Shape};

/// Segments, each behind its own mutex: two event loops rarely meet on one.
const SEGMENTS: usize = 1024;

/// Bits of the may-have-an-entry bitmap per counter the budget holds (of a 16-byte key): a
/// key then shares a bit with one of a full cache's counters about one time in nine (512 KiB
/// of bitmap for the default 64 MiB).
const MAYBE_BITS_PER_ENTRY: usize = 8;

/// What an entry costs besides a key too long to sit in it: its 64-byte slot and the
/// table's spare capacity (a table is a quarter to five eighths empty), roughly.
const ENTRY_OVERHEAD: usize = 112;

/// A counter's last value and its key's expiry (ms since the epoch, 0 for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub expire_at: i64,
    pub value: i64,
}

/// The cache: segments chosen by the key's hash (the one its data record is ordered by).
pub struct Counters {
    segments: Box<[Cell]>,
    /// Bytes one segment may hold; 0 turns the cache off.
    segment_budget: usize,
    /// Bits in `maybe`, a power of two.
    maybe_bits: usize,
    /// A bit per key hash: clear when no key of that hash has an entry. The key's lock
    /// orders the bit's setting before any later write of the key reads it.
    maybe: Box<[AtomicU64]>,
    /// Entries over all segments, for the metrics.
    entries: AtomicUsize,
}

/// A segment and where its slots are, readable without its lock for a prefetch.
#[derive(Default)]
struct Cell {
    segment: Mutex<Segment>,
    /// The segment's [`Shape`], set under the lock whenever its slots move.
    first: AtomicPtr<u8>,
    mask: AtomicUsize,
}

/// Entries by key hash: a write drops its hash's entry knowing only the hash, and a read
/// checks the key (two keys of one 64-bit hash share an entry, the later one's).
#[derive(Default)]
struct Segment {
    map: HashSlots<Entry>,
    bytes: usize,
}

struct Entry {
    /// The key, in the entry up to 24 bytes (nearly every key): a read compares it without a
    /// cache miss of its own.
    key: SmallVec<[u8; 24]>,
    counter: Counter,
}

// An entry with its hash fits one 64-byte slot: one cache line per lookup.
const _: () = assert!(std::mem::size_of::<Option<(u64, Entry)>>() <= 64);

fn cost(key: &[u8]) -> usize {
    key.len() + ENTRY_OVERHEAD
}

impl Counters {
    /// A cache of at most about `budget_bytes`; 0 keeps nothing.
    pub fn new(budget_bytes: usize) -> Self {
        let maybe_bits = (budget_bytes / cost(&[0; 16]) * MAYBE_BITS_PER_ENTRY)
            .next_power_of_two()
            .max(64);
        Counters {
            segments: (0..SEGMENTS).map(|_| Cell::default()).collect(),
            segment_budget: budget_bytes / SEGMENTS,
            maybe_bits,
            maybe: (0..maybe_bits / 64).map(|_| AtomicU64::new(0)).collect(),
            entries: AtomicUsize::new(0),
        }
    }

    /// The key's word of the bitmap and its bit in it.
    fn maybe_bit(&self, hash: u64) -> (&AtomicU64, u64) {
        let bit = (hash >> 24) as usize & (self.maybe_bits - 1);
        (&self.maybe[bit / 64], 1 << (bit % 64))
    }

    /// Whether the key may have an entry (false: it has none).
    fn may_hold(&self, hash: u64) -> bool {
        let (word, bit) = self.maybe_bit(hash);
        word.load(Ordering::Relaxed) & bit != 0
    }

    fn cell(&self, hash: u64) -> &Cell {
        // High bits: the low ones pick the shard, and the lock stripe takes bits 20 and up.
        &self.segments[(hash >> 48) as usize % SEGMENTS]
    }

    fn segment(&self, hash: u64) -> &Mutex<Segment> {
        &self.cell(hash).segment
    }

    /// Starts loading the slot `get(hash, …)` will read first: call it for every key of a
    /// group before looking any of them up. Takes no lock.
    pub fn prefetch(&self, hash: u64) {
        let cell = self.cell(hash);
        let shape = Shape {
            first: cell.first.load(Ordering::Relaxed),
            mask: cell.mask.load(Ordering::Relaxed),
        };
        hash_slots::prefetch::<Entry>(shape, hash);
    }

    /// Publishes where `segment`'s slots are now, for [`Counters::prefetch`]: call it with
    /// the segment's lock held after anything that may have moved them.
    fn publish(&self, hash: u64, segment: &Segment) {
        let cell = self.cell(hash);
        let shape = segment.map.shape();
        // Stored only when it changed: the other loop reads these lines for its prefetches.
        if cell.first.load(Ordering::Relaxed).cast_const() != shape.first
            || cell.mask.load(Ordering::Relaxed) != shape.mask
        {
            cell.first.store(shape.first.cast_mut(), Ordering::Relaxed);
            cell.mask.store(shape.mask, Ordering::Relaxed);
        }
    }

    /// The key's counter, unless it has none or it expired by `now` (ms). `hash` is the
    /// key's `layout::order_of`.
    pub fn get(&self, hash: u64, key: &[u8], now: i64) -> Option<Counter> {
        // No look at the bitmap: an increment's key nearly always has an entry, and the
        // bitmap's cache miss came on top of the segment's (a third of this function's time).
        let segment = self.segment(hash).lock();
        let entry = segment.map.get(hash).filter(|e| *e.key == *key)?;
        let found = entry.counter;
        (found.expire_at == 0 || found.expire_at > now).then_some(found)
    }

    /// Records the value an increment just wrote for `key`.
    pub fn set(&self, hash: u64, key: &[u8], counter: Counter) {
        let cost = cost(key);
        if cost > self.segment_budget {
            return;
        }
        let mut segment = self.segment(hash).lock();
        if let Some(entry) = segment.map.get_mut(hash) {
            if *entry.key == *key {
                entry.counter = counter;
                return;
            }
        }
        self.remove(&mut segment, hash);
        if segment.bytes + cost > self.segment_budget {
            self.evict_half(&mut segment);
        }
        let (word, bit) = self.maybe_bit(hash);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
        let key = SmallVec::from_slice(key);
        segment.map.insert(hash, Entry { key, counter });
        segment.bytes += cost;
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.publish(hash, &segment);
    }

    /// Drops every other entry of a full segment (which ones is up to the map's order).
    fn evict_half(&self, segment: &mut Segment) {
        let before = segment.map.len();
        let mut keep = false;
        let mut freed = 0;
        segment.map.retain(|entry| {
            keep = !keep;
            if !keep {
                freed += cost(&entry.key);
            }
            keep
        });
        segment.bytes -= freed;
        self.entries
            .fetch_sub(before - segment.map.len(), Ordering::Relaxed);
    }

    fn remove(&self, segment: &mut Segment, hash: u64) {
        if let Some(entry) = segment.map.remove(hash) {
            segment.bytes -= cost(&entry.key);
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Forgets the keys of these hashes: their records are about to be written by something
    /// other than an increment, or deleted. The bitmap is read for every key first: the loads
    /// are independent, so their cache misses overlap, where one check per write in turn
    /// waited for each (5% of a storage node's CPU at MSET -P 16).
    pub fn forget_all(&self, hashes: &[u64]) {
        let held: SmallVec<[u64; 16]> = hashes
            .iter()
            .copied()
            .filter(|&hash| self.may_hold(hash))
            .collect();
        for hash in held {
            self.remove(&mut self.segment(hash).lock(), hash);
        }
    }

    /// Forgets everything (FLUSHALL, FLUSHDB). The caller holds every key lock.
    pub fn clear(&self) {
        for word in self.maybe.iter() {
            word.store(0, Ordering::Relaxed);
        }
        for cell in self.segments.iter() {
            let mut segment = cell.segment.lock();
            let dropped = segment.map.len();
            segment.map.clear();
            segment.bytes = 0;
            cell.first.store(std::ptr::null_mut(), Ordering::Relaxed);
            cell.mask.store(0, Ordering::Relaxed);
            self.entries.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    /// How many counters are held, for the metrics.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn counter(value: i64) -> Counter {
        Counter {
            expire_at: 0,
            value,
        }
    }

    #[test]
    fn keeps_the_last_value_until_forgotten() {
        let counters = Counters::new(1 << 20);
        assert_eq!(counters.get(7, b"a", NOW), None);
        counters.set(7, b"a", counter(1));
        counters.set(7, b"a", counter(2));
        assert_eq!(counters.get(7, b"a", NOW), Some(counter(2)));
        assert_eq!(counters.len(), 1);
        counters.forget_all(&[7]);
        assert_eq!(counters.get(7, b"a", NOW), None);
        assert_eq!(counters.len(), 0);
    }

    #[test]
    fn an_expired_counter_reads_as_absent() {
        let counters = Counters::new(1 << 20);
        let expiring = Counter {
            expire_at: NOW,
            value: 5,
        };
        counters.set(1, b"k", expiring);
        assert_eq!(counters.get(1, b"k", NOW - 1), Some(expiring));
        assert_eq!(counters.get(1, b"k", NOW), None);
    }

    #[test]
    fn stays_within_its_budget() {
        // Room for four entries of a 4-byte key per segment.
        let counters = Counters::new(SEGMENTS * 4 * cost(b"k000"));
        // Small hashes: one segment for all.
        for i in 0..100u32 {
            let key = format!("k{i:03}");
            counters.set(u64::from(i), key.as_bytes(), counter(i64::from(i)));
        }
        let held = counters.len();
        assert!((2..=4).contains(&held), "{held} entries held");
        // The newest entry always survives its own insertion.
        assert_eq!(counters.get(99, b"k099", NOW), Some(counter(99)));
        counters.clear();
        assert_eq!(counters.len(), 0);
        assert_eq!(counters.get(99, b"k099", NOW), None);
    }

    #[test]
    fn keys_of_one_hash_never_read_each_other() {
        let counters = Counters::new(1 << 20);
        counters.set(9, b"a", counter(1));
        assert_eq!(counters.get(9, b"b", NOW), None);
        counters.set(9, b"b", counter(2));
        assert_eq!(counters.get(9, b"a", NOW), None);
        assert_eq!(counters.get(9, b"b", NOW), Some(counter(2)));
        assert_eq!(counters.len(), 1);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let counters = Counters::new(0);
        counters.set(3, b"a", counter(1));
        assert_eq!(counters.get(3, b"a", NOW), None);
        assert_eq!(counters.len(), 0);
    }
}
