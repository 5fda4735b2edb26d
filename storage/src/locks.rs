//! Per-key write serialization with a fixed set of lock stripes.
//!
//! Every write takes its key's stripe, so a read-modify-write (INCR, APPEND, SET NX…) and any
//! other write to the same key never interleave: no lost update, whatever the number of
//! clients. Reads take no lock (a RocksDB read sees one whole record). A fixed stripe count
//! bounds memory whatever the number of keys; multi-key writes lock their stripes in index
//! order so two of them can never deadlock.

use parking_lot::{Mutex, MutexGuard};
use ringkv_common::placement::stable_hash;
use smallvec::SmallVec;

/// Number of stripes: enough that unrelated keys rarely share one, even between two large
/// groups. A pipeline's group holds the stripes of all its keys (160 for 16 MSETs of 10 keys)
/// for its whole engine write; with 4,096 stripes two event loops' groups almost always shared
/// one, so one loop slept until the other's write was done (standalone MSET -P 16 87k → 109k
/// requests/s with 65,536). A stripe is one byte: 64 KiB.
const STRIPES: usize = 1 << 16;

/// Stripes a multi-key lock holds without allocating: a pipeline of 16 INCRs, an MSET of
/// 10 keys. Larger sets go to the heap.
const INLINE_STRIPES: usize = 16;

/// The stripes.
pub struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
}

/// Held stripes; released on drop.
pub struct Held<'a> {
    _guards: SmallVec<[MutexGuard<'a, ()>; INLINE_STRIPES]>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl KeyLocks {
    fn stripe(key: &[u8]) -> usize {
        (stable_hash(key) >> 20) as usize % STRIPES
    }

    /// Locks one key's stripe.
    pub fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.stripes[Self::stripe(key)].lock()
    }

    /// Locks every stripe, in order: no write runs until the guard drops (FLUSHALL).
    pub fn lock_all(&self) -> Held<'_> {
        Held {
            _guards: self.stripes.iter().map(Mutex::lock).collect(),
        }
    }

    /// Locks the stripes of several keys, in stripe order, each once.
    pub fn lock_many<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Held<'_> {
        let mut indexes: SmallVec<[usize; INLINE_STRIPES]> = keys.map(Self::stripe).collect();
        indexes.sort_unstable();
        indexes.dedup();
        Held {
            _guards: indexes
                .into_iter()
                .map(|i| self.stripes[i].lock())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_many_tolerates_repeated_keys() {
        let locks = KeyLocks::default();
        let held = locks.lock_many([&b"a"[..], b"a", b"b"].into_iter());
        drop(held);
        let _one = locks.lock(b"a");
    }
}
