//! Per-key write serialization with a fixed set of lock stripes.
//!
//! Every write takes its key's stripe, so a read-modify-write (INCR, APPEND, SET NX…) and any
//! other write to the same key never interleave: no lost update, whatever the number of
//! clients. A read of one key takes no lock (a RocksDB read sees one whole record); a read of
//! several (MGET, EXISTS of several, LCS) holds their stripes exclusively while it reads, so
//! that no write, blind or not, lands between two of its reads. A fixed stripe count
//! bounds memory whatever the number of keys; multi-key writes lock their stripes in index
//! order so two of them can never deadlock.
//!
//! Blind writes (SET, MSET: nothing read) take their stripes shared: two of them may be
//! applied in either order, each is still one point in the key's history, so they need not
//! exclude each other, only a read-modify-write of the same key, which takes its stripes
//! exclusively. A loop turn's gathered writes keep their stripes until the turn's one engine
//! write is applied (see `turn`): they are then held as [`Taken`] stripes, not guards.
//!
//! EXEC takes the stripes of all its transaction's keys exclusively before running any of
//! its commands, which then take none of their own on that thread
//! ([`KeyLocks::lock_for_transaction`]); a read that overlapped an EXEC runs again holding its
//! keys' stripes shared ([`KeyLocks::hold_for_read`], see `transaction`).

use std::cell::Cell;

use parking_lot::{RwLock, RwLockWriteGuard};
use ringkv_common::placement::stable_hash;
use smallvec::SmallVec;

/// Number of stripes: enough that unrelated keys rarely share one, even between two large
/// groups. A pipeline's group holds the stripes of all its keys (160 for 16 MSETs of 10 keys)
/// until its engine write is applied; with 4,096 stripes two event loops' groups almost
/// always shared one, so one loop slept until the other's write was done (standalone MSET
/// -P 16 87k → 109k requests/s with 65,536). A stripe is 8 bytes: 512 KiB.
const STRIPES: usize = 1 << 16;

/// Stripes a multi-key lock holds without allocating: a pipeline of 16 INCRs, an MSET of
/// 10 keys. Larger sets go to the heap.
const INLINE_STRIPES: usize = 16;

thread_local! {
    /// Whether this thread is running a transaction's commands (EXEC), whose stripes the
    /// transaction took before running any: a command's own lock would wait for its own
    /// transaction, so it takes none.
    static IN_TRANSACTION: Cell<bool> = const { Cell::new(false) };
}

/// The stripes of a transaction's keys, held while its commands run on this thread; dropping
/// it gives them back.
pub struct TransactionLocks<'a> {
    _held: Held<'a>,
}

impl Drop for TransactionLocks<'_> {
    fn drop(&mut self) {
        IN_TRANSACTION.set(false);
    }
}

/// Stripes held shared by a read ([`KeyLocks::hold_for_read`]); released on drop.
pub struct ReadHold<'a> {
    locks: &'a KeyLocks,
    taken: Taken,
}

impl Drop for ReadHold<'_> {
    fn drop(&mut self) {
        self.locks.release(&mut self.taken);
    }
}

/// The stripes.
pub struct KeyLocks {
    stripes: Box<[RwLock<()>]>,
}

/// Held stripes; released on drop.
#[derive(Default)]
pub struct Held<'a> {
    _guards: SmallVec<[RwLockWriteGuard<'a, ()>; INLINE_STRIPES]>,
}

/// How a group holds its stripes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Blind writes: other blind writes of the same stripes may run meanwhile.
    Shared,
    /// A read-modify-write: nothing else writes the stripes meanwhile.
    Exclusive,
}

/// The stripes of a set of keys, each once, in index order: what [`KeyLocks::try_take`] and
/// [`KeyLocks::take`] take, and [`KeyLocks::release`] gives back.
#[derive(Debug, Default)]
pub struct Stripes(SmallVec<[u32; INLINE_STRIPES]>);

impl Stripes {
    /// The stripes of `keys`.
    pub fn of<'k>(keys: impl Iterator<Item = &'k [u8]>) -> Stripes {
        Stripes::of_hashes(keys.map(stable_hash))
    }

    /// The stripes of the keys whose [`stable_hash`]es these are.
    pub fn of_hashes(hashes: impl Iterator<Item = u64>) -> Stripes {
        let mut indexes: SmallVec<[u32; INLINE_STRIPES]> = hashes
            .map(|hash| KeyLocks::stripe_of(hash) as u32)
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        Stripes(indexes)
    }
}

/// Stripes taken with [`KeyLocks::try_take`] or [`KeyLocks::take`] and not released yet. They
/// stay taken until [`KeyLocks::release`] gets them back: a `Taken` that is dropped instead
/// leaves its stripes locked for good, which a debug build reports.
#[must_use = "taken stripes stay locked until released"]
#[derive(Debug, Default)]
pub struct Taken {
    shared: SmallVec<[u32; INLINE_STRIPES]>,
    exclusive: SmallVec<[u32; INLINE_STRIPES]>,
}

impl Taken {
    /// Moves `more`'s stripes into this set (a turn collects its groups' stripes).
    pub fn absorb(&mut self, mut more: Taken) {
        self.shared.extend(more.shared.drain(..));
        self.exclusive.extend(more.exclusive.drain(..));
    }

    /// How many stripes are held exclusively.
    pub fn exclusive_count(&self) -> usize {
        self.exclusive.len()
    }

    /// Whether no stripe is held.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty() && self.exclusive.is_empty()
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        debug_assert!(
            self.is_empty() || std::thread::panicking(),
            "{} key-lock stripes dropped without being released",
            self.shared.len() + self.exclusive.len()
        );
    }
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }
}

impl KeyLocks {
    fn stripe(key: &[u8]) -> usize {
        Self::stripe_of(stable_hash(key))
    }

    /// The stripe of the key whose [`stable_hash`] is `hash`.
    fn stripe_of(hash: u64) -> usize {
        (hash >> 20) as usize % STRIPES
    }

    /// Locks one key's stripe (`None`: this thread's transaction holds it already).
    pub fn lock(&self, key: &[u8]) -> Option<RwLockWriteGuard<'_, ()>> {
        if IN_TRANSACTION.get() {
            return None;
        }
        Some(self.stripes[Self::stripe(key)].write())
    }

    /// Locks every stripe, in order: no write runs until the guard drops (FLUSHALL).
    pub fn lock_all(&self) -> Held<'_> {
        if IN_TRANSACTION.get() {
            return Held::default();
        }
        Held {
            _guards: self.stripes.iter().map(RwLock::write).collect(),
        }
    }

    /// Locks the stripes of several keys, in stripe order, each once.
    pub fn lock_many<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Held<'_> {
        if IN_TRANSACTION.get() {
            return Held::default();
        }
        Held {
            _guards: Stripes::of(keys)
                .0
                .into_iter()
                .map(|i| self.stripes[i as usize].write())
                .collect(),
        }
    }

    /// Locks the stripes of a transaction's keys (every stripe with `all`, for FLUSHALL),
    /// waiting in stripe order, and lets the commands run on this thread until the result
    /// drops take no lock of their own. The caller holds no other stripe (its turn applied).
    pub fn lock_for_transaction<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
        all: bool,
    ) -> TransactionLocks<'_> {
        let held = if all {
            self.lock_all()
        } else {
            self.lock_many(keys)
        };
        IN_TRANSACTION.set(true);
        TransactionLocks { _held: held }
    }

    /// Takes the stripes of `keys` in `mode`, waiting in stripe order, until the result
    /// drops: a read that must see its keys at one point in time (exclusively, against blind
    /// writes too) or not see a transaction in the middle (shared; see `transaction`). The
    /// caller holds no other stripe.
    pub fn hold_for_read<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
        mode: Mode,
    ) -> ReadHold<'_> {
        ReadHold {
            locks: self,
            taken: self.take(&Stripes::of(keys), mode),
        }
    }

    /// Takes every stripe of `stripes` in `mode` if none has to be waited for; otherwise
    /// takes none and returns `None`. A stripe this thread already holds exclusively, or
    /// holds at all when asked for it exclusively, counts as one to wait for.
    pub fn try_take(&self, stripes: &Stripes, mode: Mode) -> Option<Taken> {
        let mut taken = Taken::default();
        for &i in &stripes.0 {
            let stripe = &self.stripes[i as usize];
            let got = match mode {
                Mode::Shared => stripe.try_read().map(std::mem::forget).is_some(),
                Mode::Exclusive => stripe.try_write().map(std::mem::forget).is_some(),
            };
            if !got {
                self.release(&mut taken);
                return None;
            }
            match mode {
                Mode::Shared => taken.shared.push(i),
                Mode::Exclusive => taken.exclusive.push(i),
            }
        }
        Some(taken)
    }

    /// Takes every stripe of `stripes` in `mode`, waiting for each in stripe order. The
    /// caller must hold no other [`Taken`] stripes, or two threads could wait for each other.
    pub fn take(&self, stripes: &Stripes, mode: Mode) -> Taken {
        let mut taken = Taken::default();
        for &i in &stripes.0 {
            let stripe = &self.stripes[i as usize];
            match mode {
                Mode::Shared => {
                    std::mem::forget(stripe.read());
                    taken.shared.push(i);
                }
                Mode::Exclusive => {
                    std::mem::forget(stripe.write());
                    taken.exclusive.push(i);
                }
            }
        }
        taken
    }

    /// Gives back stripes [`KeyLocks::try_take`] or [`KeyLocks::take`] took, leaving `taken`
    /// empty (its room kept for the next stripes).
    pub fn release(&self, taken: &mut Taken) {
        for i in taken.shared.drain(..) {
            // SAFETY: a `Taken` is only filled by `try_take` and `take` of this set (or by
            // `absorb` from another `Taken`), each entry right after a read guard of that
            // stripe was forgotten, and each entry is drained here once: each call gives back
            // one read lock this code holds.
            unsafe { self.stripes[i as usize].force_unlock_read() };
        }
        for i in taken.exclusive.drain(..) {
            // SAFETY: as above, for a forgotten write guard.
            unsafe { self.stripes[i as usize].force_unlock_write() };
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

    #[test]
    fn blind_writes_share_a_stripe_that_a_read_modify_write_excludes() {
        let locks = KeyLocks::default();
        let keys = || Stripes::of([&b"k"[..], b"k2"].into_iter());
        let mut first = locks.try_take(&keys(), Mode::Shared).expect("free stripes");
        let mut second = locks
            .try_take(&keys(), Mode::Shared)
            .expect("shared stripes can be shared");
        assert!(
            locks.try_take(&keys(), Mode::Exclusive).is_none(),
            "an exclusive take of shared stripes succeeded"
        );
        locks.release(&mut first);
        assert!(locks.try_take(&keys(), Mode::Exclusive).is_none());
        locks.release(&mut second);
        let mut exclusive = locks
            .try_take(&keys(), Mode::Exclusive)
            .expect("released stripes are free");
        assert!(locks.try_take(&keys(), Mode::Shared).is_none());
        locks.release(&mut exclusive);
        drop(locks.lock(b"k"));
    }

    #[test]
    fn a_failed_try_take_holds_nothing() {
        let locks = KeyLocks::default();
        let mut held = locks.take(&Stripes::of([&b"b"[..]].into_iter()), Mode::Exclusive);
        let both = || Stripes::of([&b"a"[..], b"b", b"c"].into_iter());
        assert!(locks.try_take(&both(), Mode::Exclusive).is_none());
        // Whatever it took before meeting "b" was given back: "a" and "c" are free.
        drop(locks.lock(b"a"));
        drop(locks.lock(b"c"));
        locks.release(&mut held);
        let mut all = locks
            .try_take(&both(), Mode::Exclusive)
            .expect("all free now");
        locks.release(&mut all);
    }
}
