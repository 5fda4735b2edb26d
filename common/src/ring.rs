//! The consistent-hash ring: each shard's order of preference over the storage nodes.
//!
//! The ring answers "which nodes would this shard like, best first?" from nothing but the node
//! list, so every process that builds it from the same nodes gets the same answer, and adding
//! or removing one node only changes the answers that involve that node. It is the input of
//! [`crate::balance`], which turns the preferences into the assignment that is written to etcd.
//!
//! # Specification (frozen: the golden tests below pin it)
//!
//! - **Hash**: [`stable_hash`], xxh3-64 with seed 0, for points and shards alike.
//! - **Points**: a node with weight `w` puts `V = vnodes × w` points on the 64-bit circle.
//!   Point `i` (`0 ≤ i < V`) of node `id` sits at `stable_hash(format!("{id}#{i}"))`: the node
//!   id's UTF-8 bytes, `#`, then `i` in decimal without padding ([`point_name`]). Node `n1`'s
//!   first points are `n1#0`, `n1#1`, …. A node with weight 0 has no points (it is being
//!   drained) and is never chosen.
//! - **Order of points**: by position, then by node id when two positions are equal, so the ring
//!   never depends on the order the nodes were given in.
//! - **Shards**: shard `s` (a `u32`) sits at `stable_hash(s.to_be_bytes())`, the hash of its
//!   four big-endian bytes ([`shard_position`]).
//! - **Preference**: walk clockwise from the shard: start at the first point whose position is
//!   `≥` the shard's, go towards larger positions, wrap from the largest to the smallest, and
//!   list each node the first time one of its points is met. That list is the shard's
//!   preference ([`Ring::preference`]); its head is the shard's primary.
//! - **Replicas** ([`Ring::replicas`]): the first `R` nodes of the preference in distinct zones:
//!   pass 1 takes, in preference order, each node whose zone no earlier pick has; if that gives
//!   fewer than `R` (fewer zones than `R`), pass 2 takes the nodes not yet picked, in preference
//!   order, until there are `R` (or no more nodes). A node whose zone is the empty string is a
//!   zone of its own.
//!
//! # Default virtual nodes, and why balance is not the ring's job
//!
//! [`DEFAULT_VNODES`] stays at 128 as DESIGN.md says, because raising it does not buy the
//! balance the cluster needs: measured over 400 random clusters of 3 to 10 nodes per figure
//! (`ring_balance_report`), the busiest or idlest node is more than 20% off the mean in 70% of
//! 256-shard rings at 128 vnodes and still in 58% at 4096, and in 33% (128 vnodes) / 11% (4096)
//! of 1024-shard rings. The error is dominated by sampling, not by the vnodes: a node's count is
//! binomial in S shards, with a relative standard deviation of `sqrt((N-1)/S)`, 19% for
//! S = 256, N = 10, whatever V is. Adding a node likewise moves more than `1.3·S/(N+1)` shards
//! in 3% of 256-shard rings. So the ring only orders preferences, and [`crate::balance`] holds
//! every node to its share and moves shards only towards the node that changed.

#![warn(missing_docs)]

use crate::placement::stable_hash;

/// Virtual points per unit of weight. 128 keeps a node's share of the circle within about
/// `1/sqrt(128)` ≈ 9% of its weight; more points would not help the per-node shard counts
/// (see the module documentation), and every process holds `128 × total weight` points.
pub const DEFAULT_VNODES: u32 = 128;

/// The largest weight a node may have. Weights are relative capacities; a factor of 1000
/// between two nodes is already beyond any sensible cluster, and the bound keeps a typo from
/// allocating billions of points.
pub const MAX_WEIGHT: u32 = 1000;

/// A node as the ring sees it: identity, failure domain, relative capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingNode {
    /// Unique node id; it names the node's points, so renaming a node re-homes its shards.
    pub id: String,
    /// Failure domain (rack, availability zone). Replicas of a shard go to distinct zones
    /// where there are enough; empty means "a zone of its own".
    pub zone: String,
    /// Relative capacity: a node of weight 2 gets twice the points and twice the shards of a
    /// node of weight 1. Weight 0 drains the node.
    pub weight: u32,
}

/// Why a ring cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Two nodes with the same id would share points and make the ring ambiguous.
    #[error("node {0:?} appears twice in the node list")]
    DuplicateNode(String),
    /// A weight above [`MAX_WEIGHT`].
    #[error("node {id:?} has weight {weight}; the largest allowed is {MAX_WEIGHT}")]
    WeightTooLarge {
        /// The node.
        id: String,
        /// Its weight.
        weight: u32,
    },
    /// Zero virtual points per weight would put no node on the ring.
    #[error("virtual nodes per unit of weight must be at least 1")]
    ZeroVnodes,
}

/// The name of node `node_id`'s point `index`, the bytes whose hash is its position:
/// `"{node_id}#{index}"` (see the module specification).
pub fn point_name(node_id: &str, index: u32) -> String {
    format!("{node_id}#{index}")
}

/// Where node `node_id`'s point `index` sits on the circle.
pub fn point_position(node_id: &str, index: u32) -> u64 {
    stable_hash(point_name(node_id, index).as_bytes())
}

/// Where shard `shard` sits on the circle: the hash of its four big-endian bytes.
pub fn shard_position(shard: u32) -> u64 {
    stable_hash(&shard.to_be_bytes())
}

/// The consistent-hash ring over a set of nodes.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Sorted by id, so a node's index is also its rank in id order (the tie-break).
    nodes: Vec<RingNode>,
    /// (position, index into `nodes`), sorted: ties broken by node id through the index.
    points: Vec<(u64, u32)>,
    /// Nodes with at least one point (weight > 0).
    placed: usize,
    /// Zone number per node; nodes with an empty zone get a number of their own.
    zone_ids: Vec<u32>,
    /// Distinct zones among placed nodes.
    placed_zones: usize,
}

impl Ring {
    /// Builds the ring with [`DEFAULT_VNODES`] points per unit of weight.
    pub fn new(nodes: impl IntoIterator<Item = RingNode>) -> Result<Ring, RingError> {
        Ring::with_vnodes(nodes, DEFAULT_VNODES)
    }

    /// Builds the ring with `vnodes` points per unit of weight (tests and measurements use
    /// other values; clusters use [`DEFAULT_VNODES`]).
    pub fn with_vnodes(
        nodes: impl IntoIterator<Item = RingNode>,
        vnodes: u32,
    ) -> Result<Ring, RingError> {
        if vnodes == 0 {
            return Err(RingError::ZeroVnodes);
        }
        let mut nodes: Vec<RingNode> = nodes.into_iter().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        for pair in nodes.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(RingError::DuplicateNode(pair[0].id.clone()));
            }
        }
        if let Some(node) = nodes.iter().find(|n| n.weight > MAX_WEIGHT) {
            return Err(RingError::WeightTooLarge {
                id: node.id.clone(),
                weight: node.weight,
            });
        }
        let total: usize = nodes
            .iter()
            .map(|n| n.weight as usize * vnodes as usize)
            .sum();
        let mut points = Vec::with_capacity(total);
        for (index, node) in nodes.iter().enumerate() {
            for i in 0..node.weight * vnodes {
                points.push((point_position(&node.id, i), index as u32));
            }
        }
        points.sort_unstable();
        let placed = nodes.iter().filter(|n| n.weight > 0).count();
        let zone_ids = zone_numbers(&nodes);
        let mut placed_zone_ids: Vec<u32> = nodes
            .iter()
            .zip(&zone_ids)
            .filter(|(n, _)| n.weight > 0)
            .map(|(_, z)| *z)
            .collect();
        placed_zone_ids.sort_unstable();
        placed_zone_ids.dedup();
        Ok(Ring {
            nodes,
            points,
            placed,
            zone_ids,
            placed_zones: placed_zone_ids.len(),
        })
    }

    /// The nodes, sorted by id. Indices used by [`Ring::preference_indices`] refer to this
    /// slice.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// The index of node `id` in [`Ring::nodes`].
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.as_str().cmp(id)).ok()
    }

    /// How many nodes can be chosen (weight > 0).
    pub fn placed_nodes(&self) -> usize {
        self.placed
    }

    /// How many distinct zones the choosable nodes span (an empty zone counts once per node).
    pub fn placed_zones(&self) -> usize {
        self.placed_zones
    }

    /// A number per node identifying its zone, equal for nodes of the same non-empty zone;
    /// lets callers compare zones without comparing strings.
    pub fn zone_id(&self, index: usize) -> u32 {
        self.zone_ids[index]
    }

    /// The total number of points on the circle.
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// The shard's preference: every node with weight > 0, best first (see the module
    /// specification), as indices into [`Ring::nodes`].
    pub fn preference_indices(&self, shard: u32) -> Preference<'_> {
        let position = shard_position(shard);
        let start = self.points.partition_point(|&(p, _)| p < position);
        Preference {
            ring: self,
            next: start,
            walked: 0,
            seen: vec![false; self.nodes.len()],
            found: 0,
        }
    }

    /// The shard's preference as nodes, best first.
    pub fn preference(&self, shard: u32) -> impl Iterator<Item = &RingNode> + '_ {
        self.preference_indices(shard).map(|i| &self.nodes[i])
    }

    /// The node the ring alone would make the shard's primary; `None` if no node has a
    /// positive weight.
    pub fn primary(&self, shard: u32) -> Option<&RingNode> {
        self.preference(shard).next()
    }

    /// The `r` nodes the ring alone would give the shard, primary first, in distinct zones
    /// where there are enough (see the module specification). Fewer than `r` only when fewer
    /// nodes have a positive weight.
    pub fn replicas(&self, shard: u32, r: usize) -> Vec<&RingNode> {
        let preference: Vec<usize> = self.preference_indices(shard).collect();
        let mut picked: Vec<usize> = Vec::with_capacity(r);
        let mut zones_taken: Vec<u32> = Vec::with_capacity(r);
        for &i in &preference {
            if picked.len() == r {
                break;
            }
            if !zones_taken.contains(&self.zone_ids[i]) {
                zones_taken.push(self.zone_ids[i]);
                picked.push(i);
            }
        }
        for &i in &preference {
            if picked.len() == r {
                break;
            }
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked.into_iter().map(|i| &self.nodes[i]).collect()
    }
}

/// Gives every distinct non-empty zone a number, and every zone-less node a number of its own.
fn zone_numbers(nodes: &[RingNode]) -> Vec<u32> {
    let mut names: Vec<&str> = nodes
        .iter()
        .map(|n| n.zone.as_str())
        .filter(|z| !z.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut next_private = names.len() as u32;
    nodes
        .iter()
        .map(|n| {
            if n.zone.is_empty() {
                next_private += 1;
                next_private - 1
            } else {
                names
                    .binary_search(&n.zone.as_str())
                    .map(|i| i as u32)
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Iterator over a shard's preference (node indices, best first); see
/// [`Ring::preference_indices`].
pub struct Preference<'a> {
    ring: &'a Ring,
    next: usize,
    walked: usize,
    seen: Vec<bool>,
    found: usize,
}

impl Iterator for Preference<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let points = &self.ring.points;
        while self.found < self.ring.placed && self.walked < points.len() {
            let (_, node) = points[self.next % points.len()];
            self.next = (self.next + 1) % points.len();
            self.walked += 1;
            let node = node as usize;
            if !self.seen[node] {
                self.seen[node] = true;
                self.found += 1;
                return Some(node);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn node(id: &str, zone: &str, weight: u32) -> RingNode {
        RingNode {
            id: id.to_string(),
            zone: zone.to_string(),
            weight,
        }
    }

    fn plain(ids: &[String]) -> Vec<RingNode> {
        ids.iter().map(|id| node(id, "", 1)).collect()
    }

    /// Golden vectors of the point-naming and shard-position spec: if these change, every
    /// deployed cluster's ring changes.
    #[test]
    fn point_and_shard_positions_golden_vectors() {
        assert_eq!(point_name("n1", 0), "n1#0");
        assert_eq!(point_name("node-a", 127), "node-a#127");
        assert_eq!(point_position("n1", 0), stable_hash(b"n1#0"));
        assert_eq!(point_position("n1", 0), 0x517c_1227_c974_04af);
        assert_eq!(point_position("n1", 1), 0xbd5d_018c_f3ad_0f47);
        assert_eq!(point_position("node-a", 127), 0x1481_836f_adef_edb4);
        assert_eq!(shard_position(0), stable_hash(&[0, 0, 0, 0]));
        assert_eq!(shard_position(0), 0x48b2_c926_16fc_193d);
        assert_eq!(shard_position(1), 0x0da1_a814_1638_550f);
        assert_eq!(shard_position(255), 0x8fca_00be_6737_6a7d);
    }

    /// Golden placement of a small ring: pins the walk (start point, wrap, tie order) and the
    /// zone rule together. The expected values were cross-checked against a separate
    /// brute-force implementation of the specification (sort all points, scan linearly).
    #[test]
    fn small_ring_golden_placement() {
        let ring = Ring::new([
            node("n1", "a", 1),
            node("n2", "a", 1),
            node("n3", "b", 1),
            node("n4", "c", 2),
        ])
        .expect("valid ring");
        let primaries: Vec<&str> = (0..12)
            .map(|s| ring.primary(s).map(|n| n.id.as_str()).unwrap_or(""))
            .collect();
        assert_eq!(
            primaries,
            ["n4", "n3", "n3", "n4", "n4", "n2", "n2", "n2", "n1", "n3", "n2", "n4"]
        );
        let replicas: Vec<Vec<&str>> = (0..4)
            .map(|s| ring.replicas(s, 3).iter().map(|n| n.id.as_str()).collect())
            .collect();
        assert_eq!(
            replicas,
            [
                vec!["n4", "n1", "n3"],
                vec!["n3", "n2", "n4"],
                vec!["n3", "n4", "n2"],
                vec!["n4", "n3", "n2"],
            ]
        );
    }

    #[test]
    fn preference_is_independent_of_input_order() {
        let ids: Vec<String> = (0..6).map(|i| format!("node-{i}")).collect();
        let forward = Ring::new(plain(&ids)).expect("ring");
        let mut reversed_ids = ids.clone();
        reversed_ids.reverse();
        let backward = Ring::new(plain(&reversed_ids)).expect("ring");
        for shard in 0..256 {
            let a: Vec<&str> = forward.preference(shard).map(|n| n.id.as_str()).collect();
            let b: Vec<&str> = backward.preference(shard).map(|n| n.id.as_str()).collect();
            assert_eq!(a, b, "shard {shard}");
            assert_eq!(a.len(), 6);
        }
    }

    #[test]
    fn weight_multiplies_points_and_zero_weight_is_never_chosen() {
        let ring = Ring::with_vnodes([node("a", "", 1), node("b", "", 3), node("c", "", 0)], 16)
            .expect("ring");
        assert_eq!(ring.point_count(), 64);
        assert_eq!(ring.placed_nodes(), 2);
        for shard in 0..256 {
            let preference: Vec<&str> = ring.preference(shard).map(|n| n.id.as_str()).collect();
            assert_eq!(preference.len(), 2);
            assert!(!preference.contains(&"c"));
        }
    }

    #[test]
    fn bad_node_lists_are_refused() {
        assert_eq!(
            Ring::new([node("a", "", 1), node("a", "", 1)]).err(),
            Some(RingError::DuplicateNode("a".into()))
        );
        assert!(matches!(
            Ring::new([node("a", "", MAX_WEIGHT + 1)]),
            Err(RingError::WeightTooLarge { .. })
        ));
        assert_eq!(
            Ring::with_vnodes([node("a", "", 1)], 0).err(),
            Some(RingError::ZeroVnodes)
        );
        let empty = Ring::new(Vec::new()).expect("an empty ring is valid");
        assert!(empty.primary(0).is_none());
        assert!(empty.replicas(0, 3).is_empty());
    }

    #[test]
    fn replicas_use_distinct_zones_and_fall_back_when_zones_run_out() {
        let three_zones = Ring::new([
            node("a1", "a", 1),
            node("a2", "a", 1),
            node("b1", "b", 1),
            node("b2", "b", 1),
            node("c1", "c", 1),
        ])
        .expect("ring");
        let two_zones =
            Ring::new([node("a1", "a", 1), node("a2", "a", 1), node("b1", "b", 1)]).expect("ring");
        for shard in 0..512 {
            let picked = three_zones.replicas(shard, 3);
            let zones: HashSet<&str> = picked.iter().map(|n| n.zone.as_str()).collect();
            assert_eq!(zones.len(), 3, "shard {shard}: {picked:?}");
            assert_eq!(picked[0], three_zones.primary(shard).expect("primary"));

            let picked = two_zones.replicas(shard, 3);
            let ids: HashSet<&str> = picked.iter().map(|n| n.id.as_str()).collect();
            let zones: HashSet<&str> = picked.iter().map(|n| n.zone.as_str()).collect();
            assert_eq!(
                (ids.len(), zones.len()),
                (3, 2),
                "shard {shard}: {picked:?}"
            );
        }
    }

    fn node_ids(n: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::hash_set("[a-z][a-z0-9-]{0,11}", n + 1)
            .prop_map(|set| set.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The property the balancer builds on: adding one node only ever changes a shard's
        /// preference by inserting that node, so the pure ring moves shards only to it.
        #[test]
        fn adding_a_node_only_inserts_it_into_preferences(
            (n, ids) in (3usize..=10).prop_flat_map(|n| (Just(n), node_ids(n))),
            zoned in any::<bool>(),
        ) {
            let with_zone = |ids: &[String]| -> Vec<RingNode> {
                ids.iter().enumerate()
                    .map(|(i, id)| node(id, if zoned { ["a", "b", "c"][i % 3] } else { "" }, 1))
                    .collect()
            };
            let before = Ring::new(with_zone(&ids[..n])).expect("ring");
            let after = Ring::new(with_zone(&ids)).expect("ring");
            let added = &ids[n];
            for shard in 0..256 {
                let old: Vec<&str> = before.preference(shard).map(|x| x.id.as_str()).collect();
                let new: Vec<&str> = after
                    .preference(shard)
                    .map(|x| x.id.as_str())
                    .filter(|id| id != added)
                    .collect();
                prop_assert_eq!(&old, &new);
                let old_set: HashSet<&str> =
                    before.replicas(shard, 3).iter().map(|x| x.id.as_str()).collect();
                for member in after.replicas(shard, 3) {
                    prop_assert!(
                        old_set.contains(member.id.as_str()) || &member.id == added,
                        "shard {} gained {} which is not the added node", shard, member.id
                    );
                }
            }
        }
    }

    /// Measures the pure ring (no balancing) and prints the figures quoted in the module
    /// documentation: `cargo test --release -p ringkv-common ring_balance_report -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check; run it by name"]
    fn ring_balance_report() {
        for shards in [256u32, 1024] {
            for vnodes in [128u32, 512, 4096] {
                let (mut unbalanced, mut overmoved, mut total) = (0, 0, 0);
                let (mut worst_balance, mut worst_move) = (0f64, 0f64);
                for trial in 0..50 {
                    for n in 3..=10usize {
                        let ids: Vec<String> =
                            (0..=n).map(|i| format!("t{trial}-node{i}")).collect();
                        let before = Ring::with_vnodes(plain(&ids[..n]), vnodes).expect("ring");
                        let after = Ring::with_vnodes(plain(&ids), vnodes).expect("ring");
                        let mut counts = vec![0usize; n];
                        let mut moved = 0usize;
                        for shard in 0..shards {
                            let old = before.preference_indices(shard).next().unwrap_or(0);
                            counts[old] += 1;
                            let new = after.primary(shard).map(|x| x.id.as_str());
                            if new != Some(before.nodes()[old].id.as_str()) {
                                moved += 1;
                            }
                        }
                        let mean = f64::from(shards) / n as f64;
                        let deviation = counts
                            .iter()
                            .map(|&c| (c as f64 - mean).abs() / mean)
                            .fold(0.0, f64::max);
                        let move_ratio = moved as f64 / (f64::from(shards) / (n as f64 + 1.0));
                        unbalanced += usize::from(deviation > 0.2);
                        overmoved += usize::from(move_ratio > 1.3);
                        total += 1;
                        worst_balance = worst_balance.max(deviation);
                        worst_move = worst_move.max(move_ratio);
                    }
                }
                println!(
                    "pure ring S={shards:4} V={vnodes:4}: off by >20% in {unbalanced:3}/{total} \
                     (worst {:.0}%), moved >1.3·S/(N+1) in {overmoved:2}/{total} (worst {:.2}×)",
                    worst_balance * 100.0,
                    worst_move
                );
            }
        }
    }
}
