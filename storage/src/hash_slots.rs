//! An open-addressing table keyed by a 64-bit hash, whose slot for a hash can be prefetched
//! before it is looked up.
//!
//! The counter cache's lookups were two dependent cache misses each (a hash map's control
//! bytes, then its entry), and the segment lock taken around each one kept a group's lookups
//! from overlapping. Here a hash's first slot is at an address known from the hash and the
//! table's shape alone, so a group of increments can ask for all of its slots first and find
//! them in cache when it looks them up one by one.
//!
//! Linear probing, at most three quarters full, each slot one cache line; removal shifts the
//! slots after it back (no tombstones), so a lookup stops at the first empty slot.

/// One slot: a cache line holding the hash and its value, or nothing.
#[repr(align(64))]
struct Slot<V>(Option<(u64, V)>);

/// The table. Empty until the first insert.
pub struct HashSlots<V> {
    slots: Vec<Slot<V>>,
    len: usize,
}

/// Where a table's slots are, for [`prefetch`] without holding the table: its first slot and
/// its mask (0 for an empty table).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub first: *const u8,
    pub mask: usize,
}

/// The slot a hash's probe starts at. The hash is mixed first: a caller may pick among
/// tables by some of its bits, which would then be the same for every hash of a table.
#[inline]
fn home(hash: u64, mask: usize) -> usize {
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

/// Asks the CPU to start loading `hash`'s first slot in a `HashSlots<V>` of `shape`. The
/// shape may be stale (read without the table's lock): a prefetch of an address no longer in
/// use is only wasted, never a fault.
#[inline]
pub fn prefetch<V>(shape: Shape, hash: u64) {
    if shape.first.is_null() {
        return;
    }
    let at = shape
        .first
        .wrapping_add(home(hash, shape.mask) * std::mem::size_of::<Slot<V>>());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint reads nothing architecturally and cannot fault, whatever the
    // address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl<V> Default for HashSlots<V> {
    fn default() -> Self {
        HashSlots {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V> HashSlots<V> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Where the slots are (see [`prefetch`]); changes when the table grows or shrinks.
    pub fn shape(&self) -> Shape {
        if self.slots.is_empty() {
            return Shape {
                first: std::ptr::null(),
                mask: 0,
            };
        }
        Shape {
            first: self.slots.as_ptr().cast(),
            mask: self.slots.len() - 1,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The index of `hash`'s slot, if it holds an entry.
    fn find(&self, hash: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = home(hash, mask);
        loop {
            match &self.slots[i].0 {
                None => return None,
                Some((h, _)) if *h == hash => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// The entry of `hash`.
    pub fn get(&self, hash: u64) -> Option<&V> {
        let i = self.find(hash)?;
        self.slots[i].0.as_ref().map(|(_, v)| v)
    }

    /// The entry of `hash`, to change in place.
    pub fn get_mut(&mut self, hash: u64) -> Option<&mut V> {
        let i = self.find(hash)?;
        self.slots[i].0.as_mut().map(|(_, v)| v)
    }

    /// Puts `value` as `hash`'s entry, returning the one it replaces.
    pub fn insert(&mut self, hash: u64, value: V) -> Option<V> {
        if let Some(i) = self.find(hash) {
            return self.slots[i].0.replace((hash, value)).map(|(_, v)| v);
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(8));
        }
        self.place(hash, value);
        self.len += 1;
        None
    }

    /// Puts an entry whose hash is not in the table into the first free slot of its probe.
    fn place(&mut self, hash: u64, value: V) {
        let mask = self.mask();
        let mut i = home(hash, mask);
        while self.slots[i].0.is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i].0 = Some((hash, value));
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, (0..capacity).map(|_| Slot(None)).collect());
        for (hash, value) in old.into_iter().filter_map(|slot| slot.0) {
            self.place(hash, value);
        }
    }

    /// Takes `hash`'s entry out. The entries after it in its run move back, so that every
    /// entry stays reachable from its home slot without a gap.
    pub fn remove(&mut self, hash: u64) -> Option<V> {
        let mut hole = self.find(hash)?;
        let removed = self.slots[hole].0.take().map(|(_, v)| v);
        self.len -= 1;
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        while let Some((h, _)) = &self.slots[next].0 {
            let from_home = next.wrapping_sub(home(*h, mask)) & mask;
            let from_hole = next.wrapping_sub(hole) & mask;
            // An entry whose home is at or before the hole (cyclically) may fill it.
            if from_home >= from_hole {
                self.slots[hole].0 = self.slots[next].0.take();
                hole = next;
            }
            next = (next + 1) & mask;
        }
        removed
    }

    /// Keeps the entries `keep` says yes to, in a table sized for them.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let old = std::mem::take(&mut self.slots);
        self.len = 0;
        let kept: Vec<(u64, V)> = old
            .into_iter()
            .filter_map(|slot| slot.0)
            .filter(|(_, v)| keep(v))
            .collect();
        if kept.is_empty() {
            return;
        }
        let capacity = (kept.len() * 2).next_power_of_two().max(8);
        self.slots = (0..capacity).map(|_| Slot(None)).collect();
        self.len = kept.len();
        for (hash, value) in kept {
            self.place(hash, value);
        }
    }

    /// Drops every entry and the slots' memory.
    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn behaves_as_a_map_through_growth_and_removals() {
        // Hashes chosen to collide on their home slots often (few distinct mixed values).
        let mut table = HashSlots::default();
        let mut model = HashMap::new();
        let mut state = 0x1234_5678_u64;
        for step in 0..20_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let hash = (state >> 40) % 512;
            match step % 3 {
                0 | 1 => assert_eq!(table.insert(hash, step), model.insert(hash, step)),
                _ => assert_eq!(table.remove(hash), model.remove(&hash)),
            }
            assert_eq!(table.len(), model.len());
            if step % 997 == 0 {
                for h in 0..512 {
                    assert_eq!(table.get(h), model.get(&h), "hash {h} at step {step}");
                }
            }
        }
        for h in 0..512 {
            assert_eq!(table.get(h), model.get(&h));
        }
        table.retain(|v| v % 2 == 0);
        model.retain(|_, v| *v % 2 == 0);
        assert_eq!(table.len(), model.len());
        for h in 0..512 {
            assert_eq!(table.get(h), model.get(&h));
        }
        if let Some(v) = table.get_mut(model.keys().next().copied().unwrap_or(0)) {
            *v += 1;
        }
        table.clear();
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(1), None);
        assert!(table.shape().first.is_null());
    }

    #[test]
    fn prefetching_any_shape_is_harmless() {
        let mut table: HashSlots<char> = HashSlots::default();
        prefetch::<char>(table.shape(), 7);
        table.insert(7, 'x');
        let stale = table.shape();
        for h in 0..100 {
            table.insert(h, 'y');
        }
        prefetch::<char>(stale, 7);
        prefetch::<char>(table.shape(), 7);
        assert_eq!(table.get(7), Some(&'y'));
    }
}
