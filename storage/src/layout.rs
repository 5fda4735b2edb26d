//! Where records sit inside a shard's column family.
//!
//! Two ranges share each family so that moving a shard moves everything about it:
//! - data: `0x01 ‖ order(8) ‖ key`, where `order` is the key's frozen hash. Ordering by hash
//!   lets a SCAN cursor (a u64) name a position: shard in the high bits, the hash prefix of
//!   the next key in the rest. Stateless cursors keep working across restarts and proxies.
//! - expiry index: `0x00 ‖ expire_at(8, big-endian) ‖ key`, walked in time order by the
//!   sweeper. Entries may be stale (the key was deleted or got another TTL); the sweeper
//!   checks the record before deleting anything.

use ringkv_common::placement::stable_hash;

/// First byte of data records.
pub const DATA: u8 = 0x01;
/// First byte of expiry-index records.
pub const EXPIRY: u8 = 0x00;
/// Bytes before the user key in a data record.
pub const DATA_PREFIX_LEN: usize = 9;
/// Bytes before the user key in an expiry-index record.
pub const EXPIRY_PREFIX_LEN: usize = 9;

/// The part of a record key that RocksDB's hash-indexed memtable buckets it by (the
/// shard families' prefix extractor): a data record's tag and key hash, so a point read or
/// write finds its key in a bucket of about one entry; for the expiry index its tag alone,
/// so the whole index sits in one ordered bucket the expiry sweep can walk in order.
pub fn record_prefix(record_key: &[u8]) -> &[u8] {
    let len = match record_key.first() {
        Some(&DATA) => DATA_PREFIX_LEN,
        _ => 1,
    };
    &record_key[..len.min(record_key.len())]
}

/// A key's position in its shard's scan order: its placement hash, so the lock stripe, the
/// shard and the order of a key a write group gathers all come from one hash.
#[inline]
pub fn order_of(key: &[u8]) -> u64 {
    stable_hash(key)
}

/// Record keys up to this length are built on the stack; longer ones allocate.
const INLINE_KEY: usize = 128;

/// A data record key. Every GET and SET builds one, so short keys (nearly all of them) are
/// assembled in place instead of on the heap.
pub enum DataKey {
    /// Prefix and key in a fixed buffer: the first `len` bytes are the record key.
    Inline { buf: [u8; INLINE_KEY], len: usize },
    /// A record key too long for the buffer.
    Heap(Vec<u8>),
}

impl std::ops::Deref for DataKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            DataKey::Inline { buf, len } => &buf[..*len],
            DataKey::Heap(v) => v,
        }
    }
}

impl AsRef<[u8]> for DataKey {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The data record key for a user key.
pub fn data_key(key: &[u8]) -> DataKey {
    let len = DATA_PREFIX_LEN + key.len();
    let prefix = data_seek(order_of(key));
    if len <= INLINE_KEY {
        let mut buf = [0u8; INLINE_KEY];
        buf[..DATA_PREFIX_LEN].copy_from_slice(&prefix);
        buf[DATA_PREFIX_LEN..len].copy_from_slice(key);
        return DataKey::Inline { buf, len };
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(key);
    DataKey::Heap(out)
}

/// What comes before a user key whose hash is `order` in its data record key, for writers that
/// copy the parts straight into a batch; also the first data record key at or after scan
/// position `order`.
pub fn data_seek(order: u64) -> [u8; DATA_PREFIX_LEN] {
    let mut out = [0u8; DATA_PREFIX_LEN];
    out[0] = DATA;
    out[1..].copy_from_slice(&order.to_be_bytes());
    out
}

/// Splits a data record key into (order, user key).
pub fn split_data_key(record_key: &[u8]) -> Option<(u64, &[u8])> {
    if record_key.len() < DATA_PREFIX_LEN || record_key[0] != DATA {
        return None;
    }
    let mut order = [0u8; 8];
    order.copy_from_slice(&record_key[1..9]);
    Some((u64::from_be_bytes(order), &record_key[DATA_PREFIX_LEN..]))
}

/// What comes before the user key in its expiry-index key.
pub fn expiry_prefix(expire_at: i64) -> [u8; EXPIRY_PREFIX_LEN] {
    let mut out = [0u8; EXPIRY_PREFIX_LEN];
    out[0] = EXPIRY;
    out[1..].copy_from_slice(&(expire_at.max(0) as u64).to_be_bytes());
    out
}

/// Splits an expiry-index key into (expire_at, user key).
pub fn split_expiry_key(record_key: &[u8]) -> Option<(i64, &[u8])> {
    if record_key.len() < EXPIRY_PREFIX_LEN || record_key[0] != EXPIRY {
        return None;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&record_key[1..EXPIRY_PREFIX_LEN]);
    Some((
        u64::from_be_bytes(at) as i64,
        &record_key[EXPIRY_PREFIX_LEN..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_sort_by_hash_and_split_back() {
        let record = data_key(b"user:1");
        let (order, key) = split_data_key(&record).expect("data key");
        assert_eq!(order, order_of(b"user:1"));
        assert_eq!(key, b"user:1");
        assert!(data_seek(order).as_slice() <= &record[..]);
    }

    #[test]
    fn long_keys_build_the_same_record_key_on_the_heap() {
        let long = vec![b'x'; 500];
        let record = data_key(&long);
        assert!(matches!(record, DataKey::Heap(_)));
        assert_eq!(split_data_key(&record), Some((order_of(&long), &long[..])));
        assert!(matches!(data_key(b"short"), DataKey::Inline { .. }));
    }

    /// An expiry-index key as `Engine::put` writes it: prefix, then the user key.
    fn expiry_key(expire_at: i64, key: &[u8]) -> Vec<u8> {
        [&expiry_prefix(expire_at)[..], key].concat()
    }

    #[test]
    fn expiry_keys_sort_by_time() {
        assert!(expiry_key(5, b"zzz") < expiry_key(6, b"aaa"));
        assert!(expiry_key(i64::MAX, b"k") < data_seek(0).to_vec());
        assert_eq!(
            split_expiry_key(&expiry_key(42, b"k")),
            Some((42, &b"k"[..]))
        );
    }
}
