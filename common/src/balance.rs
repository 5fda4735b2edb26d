//! From preferences to an assignment: every shard's replicas, primary first, with every node
//! carrying its weight's share and as little as possible changed from the previous
//! assignment.
//!
//! Why not just take [`Ring::replicas`]: with S = 256 shards a node's count under pure
//! hashing is binomial, 19% relative deviation at 10 nodes whatever the virtual nodes (see
//! [`crate::ring`]), so some node is routinely 30–60% off the mean and one added node can take
//! 1.5× its share. The shard map is an explicit, versioned document in etcd, not something
//! each process recomputes, so the controller can afford to decide with the previous map in
//! hand. That makes two guarantees possible that hashing alone cannot give:
//!
//! - **Balance**: every node ends within `[lo, hi]` around its exact share `e`:
//!   `lo = min(⌊e⌋, ⌈0.9·e⌉)`, `hi = max(⌈e⌉, ⌊1.1·e⌋)` ([`BALANCE_TOLERANCE`]). For primaries
//!   `e` is the node's weight fraction of S. For replicas it is its share of `S × R` after the
//!   zones have had their say: with at least R zones a zone holds each shard at most once, with
//!   fewer every zone holds each shard at least once, so a node in a small zone carries more
//!   than one in a big zone, and its band says so.
//! - **Minimal movement**: a shard stays where it is unless its node left (or was drained to
//!   weight 0), or a node is outside its band. When one node joins, it is the only node below
//!   its band, so every moved primary and replica goes to it, and it takes at most `hi` of
//!   each (≈ 1.1·S/(N+1) primaries). When one node leaves, only its shards move. The
//!   property tests check both for S ∈ {256, 1024} and N ≤ 11; measured further, they still
//!   hold at 48 nodes for S = 1024, while with S = 256 and 24 or more nodes (about ten shards
//!   a node) balance occasionally wins and one or two shards move between old nodes.
//!
//! The ring still decides *which* shards. A shard without a primary takes its surviving
//! replica that the ring prefers, if that node is below its band (promoting a copy that
//! exists moves no data); otherwise the first node in its ring preference below its band, then
//! below its ceiling, then any. A node below its band takes, from the most loaded donors, the
//! shards whose preference ranks it highest, preferring shards and donors outside its own
//! zone: taking a shard a zone mate also holds pushes the mate's copy out (zones stay
//! distinct), and a mate pushed below its band would take a copy from another old node.
//! Replicas keep distinct zones where there are at least R zones, falling back to shared
//! zones when there are fewer, as [`Ring::replicas`] does.
//!
//! The procedure, for primaries and then for the whole replica sets: keep what is still
//! valid; fill vacancies in shard order; raise every node below `lo` by taking shards from
//! nodes above their `lo`; drain every node above `hi` into the node furthest below its share.
//! Each step moves one shard from a node above a bound to one below it and never pushes a node
//! across a bound, so the steps end, and the result is a pure function of (ring, S, R, previous
//! assignment).

#![warn(missing_docs)]

use std::cmp::Reverse;

use crate::ring::Ring;

/// How far from its exact share a node may be before shards move to or from it: ±10%, half
/// of the ±20% the cluster promises, so that rounding and zones have room. A tighter band
/// would move shards on every small change; a looser one would let nodes drift.
pub const BALANCE_TOLERANCE: f64 = 0.10;

/// Why no assignment can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// No live node with a positive weight.
    #[error("no live node with a positive weight to place shards on")]
    NoNodes,
    /// S = 0.
    #[error("the cluster has no shards")]
    NoShards,
    /// R = 0.
    #[error("the replication factor must be at least 1")]
    NoReplicas,
}

/// Every shard's replicas as node ids, primary first: `result[s][0]` is shard `s`'s primary.
/// A shard gets `min(replicas, nodes with weight > 0)` distinct nodes.
///
/// `previous` is the current assignment in the same form (shards beyond its length count as
/// unplaced; nodes no longer on the ring, or with weight 0, count as gone).
pub fn assign(
    ring: &Ring,
    shards: u32,
    replicas: usize,
    previous: Option<&[Vec<String>]>,
) -> Result<Vec<Vec<String>>, AssignError> {
    if shards == 0 {
        return Err(AssignError::NoShards);
    }
    if replicas == 0 {
        return Err(AssignError::NoReplicas);
    }
    if ring.placed_nodes() == 0 {
        return Err(AssignError::NoNodes);
    }
    let planner = Planner::new(ring, shards as usize);
    let alive = |id: &String| ring.index_of(id).filter(|&i| ring.nodes()[i].weight > 0);
    let previous = |s: usize| {
        previous
            .and_then(|p| p.get(s))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    // The old primary, if it is still there; and every surviving holder, primary first.
    let kept_primaries: Vec<Option<usize>> = (0..shards as usize)
        .map(|s| previous(s).first().and_then(alive))
        .collect();
    let survivors: Vec<Vec<usize>> = (0..shards as usize)
        .map(|s| previous(s).iter().filter_map(alive).collect())
        .collect();
    let primaries = planner.place_primaries(&kept_primaries, &survivors);
    let members = planner.place_members(&primaries, &survivors, replicas.min(ring.placed_nodes()));
    Ok(members
        .into_iter()
        .map(|set| {
            set.into_iter()
                .map(|i| ring.nodes()[i].id.clone())
                .collect()
        })
        .collect())
}

/// A node's target: its exact share and the band it must end in.
#[derive(Clone, Copy, Debug)]
struct Band {
    exact: f64,
    lo: usize,
    hi: usize,
}

/// Splits `total` in proportion to `weights`, no part above its cap: the excess of a capped
/// part is shared again among the others (water-filling). Parts of weight 0 get 0.
fn waterfill(total: f64, weights: &[f64], caps: &[f64]) -> Vec<f64> {
    let mut share = vec![0.0f64; weights.len()];
    let mut capped = vec![false; weights.len()];
    loop {
        let remaining = total
            - (0..weights.len())
                .filter(|&i| capped[i])
                .map(|i| caps[i])
                .sum::<f64>();
        let free: f64 = (0..weights.len())
            .filter(|&i| !capped[i])
            .map(|i| weights[i])
            .sum();
        let mut changed = false;
        for i in 0..weights.len() {
            share[i] = if capped[i] {
                caps[i]
            } else if weights[i] > 0.0 && free > 0.0 {
                remaining.max(0.0) * weights[i] / free
            } else {
                0.0
            };
            if !capped[i] && share[i] > caps[i] {
                capped[i] = true;
                changed = true;
            }
        }
        if !changed {
            return share;
        }
    }
}

/// The band around an exact share `exact`, at most `cap`.
fn band_of(exact: f64, cap: usize) -> Band {
    // Shares like 192.00000001 must not round up to 193.
    const SLACK: f64 = 1e-9;
    let floor = (exact + SLACK).floor() as usize;
    let ceil = (exact - SLACK).ceil().max(0.0) as usize;
    let low = (exact * (1.0 - BALANCE_TOLERANCE) - SLACK).ceil().max(0.0) as usize;
    let high = (exact * (1.0 + BALANCE_TOLERANCE) + SLACK).floor() as usize;
    Band {
        exact,
        lo: floor.min(low),
        hi: ceil.max(high).min(cap),
    }
}

/// Primaries: S split by weight.
fn primary_bands(ring: &Ring, shards: usize) -> Vec<Band> {
    let weights: Vec<f64> = ring.nodes().iter().map(|n| f64::from(n.weight)).collect();
    let caps = vec![shards as f64; weights.len()];
    waterfill(shards as f64, &weights, &caps)
        .into_iter()
        .map(|e| band_of(e, shards))
        .collect()
}

/// Replicas: `S × R` split first among zones, then within each zone by weight, no node
/// holding a shard twice. Zones come first because they bind: with Z ≥ R zones a zone holds
/// at most one replica of each shard, and with Z ≤ R every zone holds at least one, so a
/// small zone's nodes carry more than a big zone's and no band may ask otherwise.
fn member_bands(ring: &Ring, shards: usize, replicas: usize) -> Vec<Band> {
    let nodes = ring.nodes();
    let zone_count = (0..nodes.len())
        .map(|i| ring.zone_id(i))
        .max()
        .map_or(0, |z| z as usize + 1);
    let mut zone_weight = vec![0.0f64; zone_count];
    let mut zone_nodes = vec![0usize; zone_count];
    for (i, node) in nodes.iter().enumerate().filter(|(_, n)| n.weight > 0) {
        let z = ring.zone_id(i) as usize;
        zone_weight[z] += f64::from(node.weight);
        zone_nodes[z] += 1;
    }
    let s = shards as f64;
    let zones = ring.placed_zones();
    let zone_share: Vec<f64> = if zones >= replicas {
        let caps: Vec<f64> = zone_nodes
            .iter()
            .map(|&k| if k > 0 { s } else { 0.0 })
            .collect();
        waterfill(s * replicas as f64, &zone_weight, &caps)
    } else {
        // Every zone holds each shard once; the remaining R − Z copies go by weight, at most
        // R − Z + 1 per shard in a zone and one per node.
        let extra = replicas - zones;
        let caps: Vec<f64> = zone_nodes
            .iter()
            .map(|&k| {
                if k > 0 {
                    s * (k.min(extra + 1) - 1) as f64
                } else {
                    0.0
                }
            })
            .collect();
        waterfill(s * extra as f64, &zone_weight, &caps)
            .into_iter()
            .zip(&zone_nodes)
            .map(|(e, &k)| if k > 0 { e + s } else { 0.0 })
            .collect()
    };
    let mut exact = vec![0.0f64; nodes.len()];
    for (z, &total) in zone_share.iter().enumerate() {
        let members: Vec<usize> = (0..nodes.len())
            .filter(|&i| ring.zone_id(i) as usize == z)
            .collect();
        let weights: Vec<f64> = members
            .iter()
            .map(|&i| f64::from(nodes[i].weight))
            .collect();
        let caps = vec![s; members.len()];
        for (&i, e) in members.iter().zip(waterfill(total, &weights, &caps)) {
            exact[i] = e;
        }
    }
    exact.into_iter().map(|e| band_of(e, shards)).collect()
}

/// The ring's preferences, precomputed once per assignment.
struct Planner<'a> {
    ring: &'a Ring,
    shards: usize,
    nodes: usize,
    /// `rank[s * nodes + i]`: node i's place in shard s's preference (`u32::MAX` if it has no
    /// points).
    rank: Vec<u32>,
    /// `order[s]`: shard s's preference.
    order: Vec<Vec<usize>>,
}

impl<'a> Planner<'a> {
    fn new(ring: &'a Ring, shards: usize) -> Planner<'a> {
        let nodes = ring.nodes().len();
        let mut rank = vec![u32::MAX; shards * nodes];
        let mut order = Vec::with_capacity(shards);
        for s in 0..shards {
            let preference: Vec<usize> = ring.preference_indices(s as u32).collect();
            for (place, &i) in preference.iter().enumerate() {
                rank[s * nodes + i] = place as u32;
            }
            order.push(preference);
        }
        Planner {
            ring,
            shards,
            nodes,
            rank,
            order,
        }
    }

    fn rank(&self, shard: usize, node: usize) -> u32 {
        self.rank[shard * self.nodes + node]
    }

    fn zone(&self, node: usize) -> u32 {
        self.ring.zone_id(node)
    }

    fn distinct_zones(&self, set: impl Iterator<Item = usize>) -> usize {
        let mut zones: Vec<u32> = set.map(|i| self.zone(i)).collect();
        zones.sort_unstable();
        zones.dedup();
        zones.len()
    }

    /// May `node` join `set` without breaking "distinct zones while zones last"?
    fn can_add(&self, set: &[usize], node: usize) -> bool {
        !set.iter().any(|&m| self.zone(m) == self.zone(node))
            || self.distinct_zones(set.iter().copied()) >= self.ring.placed_zones()
    }

    /// Would `into` taking a shard's primary from `out` push out another of the shard's
    /// `holders`, one in `into`'s zone? Where zones must stay distinct, that holder loses its
    /// copy too, and if it falls below its band it takes a copy from another old node.
    fn evicts_zone_mate(&self, holders: &[usize], out: usize, into: usize) -> bool {
        holders
            .iter()
            .any(|&m| m != out && m != into && self.zone(m) == self.zone(into))
    }

    /// Is `set` with `out` replaced by `into` still zone-valid?
    fn can_replace(&self, set: &[usize], out: usize, into: usize) -> bool {
        let replaced = set.iter().map(|&m| if m == out { into } else { m });
        self.distinct_zones(replaced) == set.len().min(self.ring.placed_zones())
    }

    fn ratio(count: usize, band: &Band) -> f64 {
        if band.exact > 0.0 {
            count as f64 / band.exact
        } else {
            f64::INFINITY
        }
    }

    /// How much a donor can spare, best first: above its ceiling, above its exact share,
    /// above its floor. Taking from the most loaded first leaves no old node below its share
    /// when a node joins, so the later drain has only the newcomer to give to.
    fn tier(count: usize, band: &Band) -> u8 {
        if count > band.hi {
            2
        } else if count as f64 > band.exact {
            1
        } else {
            0
        }
    }

    /// The vacancy order for shard `s`: surviving previous holders first (promoting or keeping
    /// a copy that exists costs no data movement), then the rest of the ring's preference.
    fn candidates(&self, s: usize, previous: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = self.order[s]
            .iter()
            .copied()
            .filter(|i| previous.contains(i))
            .collect();
        order.extend(
            self.order[s]
                .iter()
                .copied()
                .filter(|i| !previous.contains(i)),
        );
        order
    }

    fn place_primaries(&self, kept: &[Option<usize>], previous: &[Vec<usize>]) -> Vec<usize> {
        let band = primary_bands(self.ring, self.shards);
        // A shard keeps its primary if that node is still there; otherwise it is vacant, and
        // its surviving replicas are the first candidates, subject to their bands.
        let mut primary: Vec<Option<usize>> = kept.to_vec();
        let mut count = vec![0usize; self.nodes];
        for &p in primary.iter().flatten() {
            count[p] += 1;
        }

        // Vacancies: first candidate below its band, then below its ceiling, then any.
        let passes: [&dyn Fn(usize, usize) -> bool; 3] = [
            &|node, c| c < band[node].lo,
            &|node, c| c < band[node].hi,
            &|_, _| true,
        ];
        for fits in passes {
            for s in 0..self.shards {
                if primary[s].is_some() {
                    continue;
                }
                let candidates = self.candidates(s, &previous[s]);
                if let Some(&node) = candidates.iter().find(|&&i| fits(i, count[i])) {
                    primary[s] = Some(node);
                    count[node] += 1;
                }
            }
        }
        // Every shard has a primary now: the last pass accepts any node, and there is one.
        let mut primary: Vec<usize> = primary.into_iter().map(|p| p.unwrap_or(0)).collect();

        // Raise: a node below its band takes, from the most loaded donors, the shards whose
        // preference ranks it highest.
        let mut stuck = vec![false; self.nodes];
        while let Some(u) = (0..self.nodes)
            .filter(|&i| !stuck[i] && count[i] < band[i].lo)
            .max_by_key(|&i| (band[i].lo - count[i], Reverse(i)))
        {
            let best = (0..self.shards)
                .filter(|&s| {
                    let v = primary[s];
                    v != u && count[v] > band[v].lo
                })
                .min_by_key(|&s| {
                    let v = primary[s];
                    (
                        Reverse(Self::tier(count[v], &band[v])),
                        self.evicts_zone_mate(&previous[s], v, u),
                        self.rank(s, u),
                        Reverse(count[v] - band[v].lo),
                        s,
                    )
                });
            match best {
                Some(s) => {
                    count[primary[s]] -= 1;
                    primary[s] = u;
                    count[u] += 1;
                }
                None => stuck[u] = true,
            }
        }

        // Drain: a node above its band gives shards to the node furthest below its share.
        let mut stuck = vec![false; self.nodes];
        while let Some(v) = (0..self.nodes)
            .filter(|&i| !stuck[i] && count[i] > band[i].hi)
            .max_by_key(|&i| (count[i] - band[i].hi, Reverse(i)))
        {
            let mut best: Option<(f64, u32, usize, usize)> = None;
            for s in (0..self.shards).filter(|&s| primary[s] == v) {
                for &u in &self.order[s] {
                    if u == v || count[u] >= band[u].hi {
                        continue;
                    }
                    let key = (Self::ratio(count[u], &band[u]), self.rank(s, u), s, u);
                    if best.is_none_or(|b| key_less(&key, &b)) {
                        best = Some(key);
                    }
                }
            }
            match best {
                Some((_, _, s, u)) => {
                    count[v] -= 1;
                    primary[s] = u;
                    count[u] += 1;
                }
                None => stuck[v] = true,
            }
        }
        primary
    }

    fn place_members(
        &self,
        primaries: &[usize],
        previous: &[Vec<usize>],
        replicas: usize,
    ) -> Vec<Vec<usize>> {
        let band = member_bands(self.ring, self.shards, replicas);
        let mut members: Vec<Vec<usize>> = Vec::with_capacity(self.shards);
        for s in 0..self.shards {
            let mut set = Vec::with_capacity(replicas);
            set.push(primaries[s]);
            for &m in &previous[s] {
                if set.len() == replicas {
                    break;
                }
                if !set.contains(&m) && self.can_add(&set, m) {
                    set.push(m);
                }
            }
            members.push(set);
        }
        let mut count = vec![0usize; self.nodes];
        for &m in members.iter().flatten() {
            count[m] += 1;
        }

        let passes: [&dyn Fn(usize, usize) -> bool; 3] = [
            &|node, c| c < band[node].lo,
            &|node, c| c < band[node].hi,
            &|_, _| true,
        ];
        for fits in passes {
            for (set, order) in members.iter_mut().zip(&self.order) {
                while set.len() < replicas {
                    let Some(&node) = order
                        .iter()
                        .find(|&&i| !set.contains(&i) && self.can_add(set, i) && fits(i, count[i]))
                    else {
                        break;
                    };
                    set.push(node);
                    count[node] += 1;
                }
            }
        }

        // Raise: a node below its band replaces a secondary of the most loaded donor.
        let mut stuck = vec![false; self.nodes];
        while let Some(u) = (0..self.nodes)
            .filter(|&i| !stuck[i] && count[i] < band[i].lo)
            .max_by_key(|&i| (band[i].lo - count[i], Reverse(i)))
        {
            type Key = (Reverse<u8>, bool, u32, Reverse<usize>, usize, usize);
            let mut best: Option<(Key, usize, usize)> = None;
            for (s, set) in members.iter().enumerate() {
                if set.contains(&u) {
                    continue;
                }
                for &v in &set[1..] {
                    if count[v] <= band[v].lo || !self.can_replace(set, v, u) {
                        continue;
                    }
                    let key = (
                        Reverse(Self::tier(count[v], &band[v])),
                        self.zone(v) == self.zone(u),
                        self.rank(s, u),
                        Reverse(count[v] - band[v].lo),
                        s,
                        v,
                    );
                    if best.as_ref().is_none_or(|b| key < b.0) {
                        best = Some((key, s, v));
                    }
                }
            }
            match best {
                Some((_, s, v)) => {
                    replace(&mut members[s], v, u);
                    count[v] -= 1;
                    count[u] += 1;
                }
                None => stuck[u] = true,
            }
        }

        // Drain: a node above its band hands a secondary to the node furthest below its share.
        let mut stuck = vec![false; self.nodes];
        while let Some(v) = (0..self.nodes)
            .filter(|&i| !stuck[i] && count[i] > band[i].hi)
            .max_by_key(|&i| (count[i] - band[i].hi, Reverse(i)))
        {
            let mut best: Option<(f64, u32, usize, usize)> = None;
            for (s, set) in members.iter().enumerate() {
                if !set[1..].contains(&v) {
                    continue;
                }
                for &u in &self.order[s] {
                    if set.contains(&u) || count[u] >= band[u].hi || !self.can_replace(set, v, u) {
                        continue;
                    }
                    let key = (Self::ratio(count[u], &band[u]), self.rank(s, u), s, u);
                    if best.is_none_or(|b| key_less(&key, &b)) {
                        best = Some(key);
                    }
                }
            }
            match best {
                Some((_, _, s, u)) => {
                    replace(&mut members[s], v, u);
                    count[v] -= 1;
                    count[u] += 1;
                }
                None => stuck[v] = true,
            }
        }
        members
    }
}

/// Orders drain candidates: lowest load ratio, then best rank, then shard, then node.
fn key_less(a: &(f64, u32, usize, usize), b: &(f64, u32, usize, usize)) -> bool {
    a.0.total_cmp(&b.0)
        .then(a.1.cmp(&b.1))
        .then(a.2.cmp(&b.2))
        .then(a.3.cmp(&b.3))
        .is_lt()
}

fn replace(set: &mut [usize], out: usize, into: usize) {
    for m in set.iter_mut() {
        if *m == out {
            *m = into;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingNode;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn ring_of(ids: &[String], zones: usize, weights: &[u32]) -> Ring {
        Ring::new(ids.iter().enumerate().map(|(i, id)| RingNode {
            id: id.clone(),
            zone: if zones == 0 {
                String::new()
            } else {
                format!("z{}", i % zones)
            },
            weight: weights.get(i).copied().unwrap_or(1),
        }))
        .expect("valid ring")
    }

    fn primary_counts(assignment: &[Vec<String>]) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for set in assignment {
            *counts.entry(set[0].as_str()).or_insert(0) += 1;
        }
        counts
    }

    fn member_counts(assignment: &[Vec<String>]) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for id in assignment.iter().flatten() {
            *counts.entry(id.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// The largest relative distance from `mean` over `ids` (a node with nothing counts as 0).
    fn worst_deviation(counts: &HashMap<&str, usize>, ids: &[String], mean: f64) -> f64 {
        ids.iter()
            .map(|id| (counts.get(id.as_str()).copied().unwrap_or(0) as f64 - mean).abs() / mean)
            .fold(0.0, f64::max)
    }

    fn check_valid(assignment: &[Vec<String>], ring: &Ring, replicas: usize) {
        let zones = ring.placed_zones();
        for (s, set) in assignment.iter().enumerate() {
            let distinct: HashSet<&str> = set.iter().map(String::as_str).collect();
            assert_eq!(
                distinct.len(),
                set.len(),
                "shard {s} repeats a node: {set:?}"
            );
            assert_eq!(
                set.len(),
                replicas.min(ring.placed_nodes()),
                "shard {s}: {set:?}"
            );
            let set_zones: HashSet<u32> = set
                .iter()
                .map(|id| ring.zone_id(ring.index_of(id).expect("node on the ring")))
                .collect();
            assert_eq!(
                set_zones.len(),
                set.len().min(zones),
                "shard {s} zones: {set:?}"
            );
        }
    }

    #[test]
    fn bands_split_by_weight_zone_and_cap_at_one_copy_per_shard() {
        let ids: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let b = primary_bands(&ring_of(&ids, 0, &[]), 256);
        assert!(b.iter().all(|b| (b.lo, b.hi) == (24, 28)), "{b:?}");
        let b = member_bands(&ring_of(&ids[..3], 0, &[]), 256, 3);
        assert!(b.iter().all(|b| b.exact == 256.0 && b.hi == 256), "{b:?}");
        // One heavy node cannot hold a shard twice: its excess goes to the others.
        let b = member_bands(&ring_of(&ids[..4], 0, &[10, 1, 1, 1]), 100, 3);
        assert_eq!(b[0].exact, 100.0);
        assert!((b[1].exact - 200.0 / 3.0).abs() < 1e-9, "{b:?}");
        let b = primary_bands(&ring_of(&ids[..2], 0, &[1, 0]), 10);
        assert_eq!((b[1].lo, b[1].hi), (0, 0));
        // Three zones, R = 3: each zone holds every shard once, split among its nodes.
        let zoned = Ring::new(["a1", "a2", "b1", "c1"].iter().map(|id| RingNode {
            id: id.to_string(),
            zone: id[..1].to_string(),
            weight: 1,
        }))
        .expect("ring");
        let b = member_bands(&zoned, 256, 3);
        let exact: Vec<f64> = b.iter().map(|b| b.exact).collect();
        assert_eq!(exact, [128.0, 128.0, 256.0, 256.0]);
        // Two zones, R = 3: each zone once per shard, the third copy by weight.
        let two = Ring::new(["a1", "a2", "b1", "b2"].iter().map(|id| RingNode {
            id: id.to_string(),
            zone: id[..1].to_string(),
            weight: 1,
        }))
        .expect("ring");
        let exact: Vec<f64> = member_bands(&two, 256, 3).iter().map(|b| b.exact).collect();
        assert_eq!(exact, [192.0, 192.0, 192.0, 192.0]);
    }

    #[test]
    fn refuses_impossible_requests() {
        let ring = ring_of(&["a".to_string()], 0, &[]);
        assert_eq!(assign(&ring, 0, 1, None), Err(AssignError::NoShards));
        assert_eq!(assign(&ring, 8, 0, None), Err(AssignError::NoReplicas));
        let drained = ring_of(&["a".to_string()], 0, &[0]);
        assert_eq!(assign(&drained, 8, 1, None), Err(AssignError::NoNodes));
    }

    #[test]
    fn fewer_nodes_than_replicas_gives_every_node_every_shard() {
        let ids: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let ring = ring_of(&ids, 0, &[]);
        let assignment = assign(&ring, 64, 3, None).expect("assignment");
        check_valid(&assignment, &ring, 3);
        assert!(assignment.iter().all(|set| set.len() == 2));
    }

    #[test]
    fn unchanged_nodes_keep_the_assignment() {
        let ids: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        let ring = ring_of(&ids, 0, &[]);
        let first = assign(&ring, 256, 3, None).expect("assignment");
        let again = assign(&ring, 256, 3, Some(&first)).expect("assignment");
        assert_eq!(first, again);
    }

    #[test]
    fn draining_a_node_moves_only_its_shards() {
        let ids: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
        let before = assign(&ring_of(&ids, 0, &[]), 256, 3, None).expect("assignment");
        let after = assign(
            &ring_of(&ids, 0, &[1, 1, 1, 1, 1, 0]),
            256,
            3,
            Some(&before),
        )
        .expect("assignment");
        for (old, new) in before.iter().zip(&after) {
            assert!(!new.contains(&"n5".to_string()));
            if !old.contains(&"n5".to_string()) {
                assert_eq!(old, new);
            }
        }
    }

    /// Found by `zones_are_respected_and_balanced`: the newcomer took primaries in shards a
    /// zone mate held, which pushed the mate's copies out, and the mate, below its band, then
    /// took a copy of shard 65 from node-1. Every change must go to the newcomer.
    #[test]
    fn a_join_moves_nothing_between_old_nodes_of_its_zone() {
        let ids: Vec<String> = (0..8).map(|i| format!("node-{i}")).collect();
        let before = assign(&ring_of(&ids, 4, &[]), 256, 3, None).expect("assignment");
        let mut grown = ids.clone();
        grown.push("xyc8".to_string());
        let ring = ring_of(&grown, 4, &[]);
        let after = assign(&ring, 256, 3, Some(&before)).expect("assignment");
        check_valid(&after, &ring, 3);
        for (s, (old, new)) in before.iter().zip(&after).enumerate() {
            for member in new {
                assert!(
                    old.contains(member) || member == "xyc8",
                    "shard {s}: {old:?} -> {new:?}"
                );
            }
        }
    }

    #[test]
    fn weights_scale_the_share() {
        let ids: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
        let ring = ring_of(&ids, 0, &[1, 1, 2, 4]);
        let assignment = assign(&ring, 1024, 2, None).expect("assignment");
        check_valid(&assignment, &ring, 2);
        let primaries = primary_counts(&assignment);
        for (id, weight) in ids.iter().zip([1.0, 1.0, 2.0, 4.0]) {
            let share = 1024.0 * weight / 8.0;
            let got = primaries.get(id.as_str()).copied().unwrap_or(0) as f64;
            assert!(
                (got - share).abs() <= share * 0.1 + 1.0,
                "{id}: {got} vs {share}"
            );
        }
    }

    fn node_ids(count: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::hash_set("[a-z][a-z0-9-]{0,11}", count)
            .prop_map(|set| set.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The property: adding one node to N (3..=10) moves at most 1.3·S/(N+1)
        /// primaries, every moved primary and replica goes to the new node, and every node
        /// stays within ±20% of the mean, before and after.
        #[test]
        fn adding_one_node_moves_little_and_only_to_it(
            (n, ids) in (3usize..=10).prop_flat_map(|n| (Just(n), node_ids(n + 1))),
            shards in prop::sample::select(vec![256u32, 1024]),
        ) {
            let replicas = 3;
            let before_ring = ring_of(&ids[..n], 0, &[]);
            let after_ring = ring_of(&ids, 0, &[]);
            let before = assign(&before_ring, shards, replicas, None).expect("assignment");
            let after = assign(&after_ring, shards, replicas, Some(&before)).expect("assignment");
            check_valid(&before, &before_ring, replicas);
            check_valid(&after, &after_ring, replicas);
            let added = &ids[n];

            let mut moved = 0usize;
            for (s, (old, new)) in before.iter().zip(&after).enumerate() {
                if old[0] != new[0] {
                    moved += 1;
                    prop_assert_eq!(&new[0], added, "shard {} primary moved to an old node", s);
                }
                for member in new {
                    prop_assert!(old.contains(member) || member == added,
                        "shard {} gained {} which is not the added node", s, member);
                }
            }
            let bound = 1.3 * f64::from(shards) / (n as f64 + 1.0);
            prop_assert!(moved as f64 <= bound, "moved {} > {:.1}", moved, bound);

            for (assignment, ids) in [(&before, &ids[..n]), (&after, &ids[..])] {
                let nodes = ids.len() as f64;
                let primary_mean = f64::from(shards) / nodes;
                let dev = worst_deviation(&primary_counts(assignment), ids, primary_mean);
                prop_assert!(dev <= 0.2, "primaries {:.1}% off the mean", dev * 100.0);
                let member_mean = f64::from(shards) * (replicas as f64).min(nodes) / nodes;
                let dev = worst_deviation(&member_counts(assignment), ids, member_mean);
                prop_assert!(dev <= 0.2, "replicas {:.1}% off the mean", dev * 100.0);
            }
        }

        /// Removing a node moves only the shards it held; every other replica stays put.
        #[test]
        fn removing_a_node_moves_only_its_shards(
            (ids, gone) in (4usize..=11).prop_flat_map(|n| (node_ids(n), 0..n)),
            shards in prop::sample::select(vec![256u32, 1024]),
        ) {
            let before = assign(&ring_of(&ids, 0, &[]), shards, 3, None).expect("assignment");
            let remaining: Vec<String> =
                ids.iter().enumerate().filter(|&(i, _)| i != gone).map(|(_, id)| id.clone()).collect();
            let ring = ring_of(&remaining, 0, &[]);
            let after = assign(&ring, shards, 3, Some(&before)).expect("assignment");
            check_valid(&after, &ring, 3);
            let gone = &ids[gone];
            for (s, (old, new)) in before.iter().zip(&after).enumerate() {
                if !old.contains(gone) {
                    prop_assert_eq!(old, new, "shard {} did not hold the removed node", s);
                } else {
                    if &old[0] != gone {
                        prop_assert_eq!(&old[0], &new[0], "shard {} primary moved", s);
                    }
                    for member in old.iter().filter(|m| *m != gone) {
                        prop_assert!(new.contains(member), "shard {} lost {}", s, member);
                    }
                }
            }
        }

        /// With zones, replicas span min(R, zones) zones; with equal-sized zones the load is
        /// still within ±20%; and adding a node still only moves shards to it.
        #[test]
        fn zones_are_respected_and_balanced(
            groups in 1usize..=3,
            zones in 2usize..=4,
            extra in node_ids(1),
            shards in prop::sample::select(vec![256u32, 1024]),
        ) {
            let n = groups * zones;
            let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let ring = ring_of(&ids, zones, &[]);
            let assignment = assign(&ring, shards, 3, None).expect("assignment");
            check_valid(&assignment, &ring, 3);
            let mean = f64::from(shards) / n as f64;
            let dev = worst_deviation(&primary_counts(&assignment), &ids, mean);
            prop_assert!(dev <= 0.2, "primaries {:.1}% off the mean", dev * 100.0);
            let member_mean = f64::from(shards) * 3f64.min(n as f64) / n as f64;
            let dev = worst_deviation(&member_counts(&assignment), &ids, member_mean);
            prop_assert!(dev <= 0.2, "replicas {:.1}% off the mean", dev * 100.0);

            let mut grown = ids.clone();
            grown.push(format!("x{}", extra[0]));
            let grown_ring = ring_of(&grown, zones, &[]);
            let after = assign(&grown_ring, shards, 3, Some(&assignment)).expect("assignment");
            check_valid(&after, &grown_ring, 3);
            let added = &grown[n];
            for (old, new) in assignment.iter().zip(&after) {
                for member in new {
                    prop_assert!(old.contains(member) || member == added);
                }
            }
        }

        /// Any sequence of joins and departures, each assignment built on the previous one,
        /// keeps every map valid and every node within ±20% of the mean.
        #[test]
        fn sequences_of_changes_stay_valid_and_balanced(
            start in 3usize..=6,
            steps in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..8),
        ) {
            let shards = 256u32;
            let mut next_id = start;
            let mut ids: Vec<String> = (0..start).map(|i| format!("node-{i}")).collect();
            let mut current = assign(&ring_of(&ids, 0, &[]), shards, 3, None).expect("assignment");
            for (join, which) in steps {
                if join || ids.len() <= 3 {
                    ids.push(format!("node-{next_id}"));
                    next_id += 1;
                } else {
                    ids.remove(which.index(ids.len()));
                }
                let ring = ring_of(&ids, 0, &[]);
                current = assign(&ring, shards, 3, Some(&current)).expect("assignment");
                check_valid(&current, &ring, 3);
                let nodes = ids.len() as f64;
                let dev = worst_deviation(&primary_counts(&current), &ids, f64::from(shards) / nodes);
                prop_assert!(dev <= 0.2, "{} nodes: primaries {:.1}% off", ids.len(), dev * 100.0);
                let mean = f64::from(shards) * 3f64.min(nodes) / nodes;
                let dev = worst_deviation(&member_counts(&current), &ids, mean);
                prop_assert!(dev <= 0.2, "{} nodes: replicas {:.1}% off", ids.len(), dev * 100.0);
            }
        }

        /// Mixed weights: every node within ±20% of its weight's share (+1 for rounding).
        #[test]
        fn weighted_nodes_get_their_share(
            weights in prop::collection::vec(1u32..=4, 3..=8),
            shards in prop::sample::select(vec![256u32, 1024]),
        ) {
            let ids: Vec<String> = (0..weights.len()).map(|i| format!("w{i}")).collect();
            let ring = ring_of(&ids, 0, &weights);
            let assignment = assign(&ring, shards, 3, None).expect("assignment");
            check_valid(&assignment, &ring, 3);
            let total: u32 = weights.iter().sum();
            let primaries = primary_counts(&assignment);
            for (id, &w) in ids.iter().zip(&weights) {
                let share = f64::from(shards) * f64::from(w) / f64::from(total);
                let got = primaries.get(id.as_str()).copied().unwrap_or(0) as f64;
                prop_assert!((got - share).abs() <= 0.2 * share + 1.0, "{}: {} vs {:.1}", id, got, share);
            }
        }
    }

    /// Prints the movement and balance figures of the balanced assignment for the report:
    /// `cargo test --release -p ringkv-common balance_report -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check; run it by name"]
    fn balance_report() {
        for shards in [256u32, 1024] {
            for n in 3..=10usize {
                let (mut worst_move, mut worst_primary, mut worst_member) = (0f64, 0f64, 0f64);
                let mut ring_primary_kept = 0usize;
                for trial in 0..20 {
                    let ids: Vec<String> = (0..=n).map(|i| format!("t{trial}-n{i}")).collect();
                    let ring = ring_of(&ids[..n], 0, &[]);
                    let before = assign(&ring, shards, 3, None).expect("assignment");
                    let after = assign(&ring_of(&ids, 0, &[]), shards, 3, Some(&before))
                        .expect("assignment");
                    let moved = before
                        .iter()
                        .zip(&after)
                        .filter(|(a, b)| a[0] != b[0])
                        .count();
                    worst_move =
                        worst_move.max(moved as f64 / (f64::from(shards) / (n as f64 + 1.0)));
                    for (assignment, ids) in [(&before, &ids[..n]), (&after, &ids[..])] {
                        let k = ids.len() as f64;
                        worst_primary = worst_primary.max(worst_deviation(
                            &primary_counts(assignment),
                            ids,
                            f64::from(shards) / k,
                        ));
                        worst_member = worst_member.max(worst_deviation(
                            &member_counts(assignment),
                            ids,
                            f64::from(shards) * 3f64.min(k) / k,
                        ));
                    }
                    ring_primary_kept += (0..shards)
                        .filter(|&s| ring.primary(s).map(|x| &x.id) == Some(&before[s as usize][0]))
                        .count();
                }
                println!(
                    "balanced S={shards:4} N={n:2}→{}: moved primaries ≤ {worst_move:.2}·S/(N+1), \
                     worst primary {:.1}% / replica {:.1}% off the mean, {:.1}% of primaries as the ring",
                    n + 1,
                    worst_primary * 100.0,
                    worst_member * 100.0,
                    100.0 * ring_primary_kept as f64 / (20.0 * f64::from(shards)),
                );
            }
        }
    }
}
