//! The documents a cluster keeps in etcd: its fixed settings ([`ClusterConfig`]), each live
//! storage node ([`NodeInfo`]), and the versioned [`ShardMap`] every process routes by.
//!
//! The map is explicit rather than recomputed by each process from the ring so that a shard can
//! be in a transitional state (migrating, promoting) that everybody sees the same way, and so
//! that the epoch orders every change: a node refuses requests stamped with an older epoch.
//! All three serialise as JSON (serde), the format an operator can read with `etcdctl get`.

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::balance::{self, AssignError};
use crate::ring::{Ring, RingNode, MAX_WEIGHT};

/// The name of the key hash ([`crate::placement::stable_hash`]) as recorded in the config.
/// A process that finds another name refuses the cluster rather than re-home every key.
pub const HASH_NAME: &str = "xxh3-64";

/// Shards of a new cluster unless told otherwise (DESIGN.md).
pub const DEFAULT_SHARDS: u32 = 256;

/// Replication factor of a new cluster unless told otherwise (DESIGN.md).
pub const DEFAULT_REPLICAS: u32 = 3;

/// The most shards a cluster may have: each is a RocksDB column family on every replica, and
/// the map lists them all, so tens of thousands is already beyond reason.
pub const MAX_SHARDS: u32 = 65_536;

/// The largest replication factor: every write waits for all in-sync replicas.
pub const MAX_REPLICAS: u32 = 9;

/// The longest node id: ids appear in keys, maps and every status line.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Why a config, node record or map is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A config field out of range or unknown.
    #[error("invalid cluster config: {field} {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A node id that cannot be used in keys and maps.
    #[error("invalid node id {id:?}: {reason}")]
    NodeId {
        /// The id.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A node record field out of range.
    #[error("invalid node {id:?}: {reason}")]
    Node {
        /// The node.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A map that does not fit the cluster or contradicts itself.
    #[error("invalid shard map (epoch {epoch}): {reason}")]
    Map {
        /// The map's epoch.
        epoch: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A cluster's settings, fixed when it is created: changing the shard count or hash would
/// re-home every key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Number of shards S (`shard = hash(key) mod S`).
    pub shards: u32,
    /// Replication factor R: replicas per shard, primary included.
    pub replicas: u32,
    /// Name of the key hash; always [`HASH_NAME`] today.
    pub hash: String,
    /// When the cluster was created, Unix milliseconds.
    pub created_at_ms: u64,
    /// The secret proxies present to storage nodes (`AUTH <secret>` on every connection),
    /// made at random by `ringkv-admin init`. Empty in a cluster created without one: its
    /// nodes then accept any peer unless given `--secret-file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
}

impl ClusterConfig {
    /// A config for a new cluster, validated.
    pub fn new(shards: u32, replicas: u32, created_at_ms: u64) -> Result<ClusterConfig, MapError> {
        let config = ClusterConfig {
            shards,
            replicas,
            hash: HASH_NAME.to_string(),
            created_at_ms,
            secret: String::new(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges, and that the hash is the one this build places keys with.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(MapError::Config {
                field: "shards",
                reason: format!("must be between 1 and {MAX_SHARDS}, not {}", self.shards),
            });
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(MapError::Config {
                field: "replicas",
                reason: format!(
                    "must be between 1 and {MAX_REPLICAS}, not {}",
                    self.replicas
                ),
            });
        }
        if self.hash != HASH_NAME {
            return Err(MapError::Config {
                field: "hash",
                reason: format!(
                    "is {:?}, but this build places keys with {HASH_NAME:?}",
                    self.hash
                ),
            });
        }
        Ok(())
    }
}

fn default_weight() -> u32 {
    1
}

/// A storage node as it registers itself under `nodes/<id>`: the record exists exactly as
/// long as the node keeps its lease alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id, stable across restarts (it names the node's ring points).
    pub id: String,
    /// Where proxies and peers reach it, `host:port`.
    pub addr: String,
    /// Failure domain; empty when the cluster has none.
    #[serde(default)]
    pub zone: String,
    /// Relative capacity (see [`RingNode::weight`]); 0 drains the node.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

impl NodeInfo {
    /// Checks the id and weight.
    pub fn validate(&self) -> Result<(), MapError> {
        validate_node_id(&self.id)?;
        if self.weight > MAX_WEIGHT {
            return Err(MapError::Node {
                id: self.id.clone(),
                reason: format!("weight {} is above {MAX_WEIGHT}", self.weight),
            });
        }
        Ok(())
    }

    /// The node as the ring needs it.
    pub fn ring_node(&self) -> RingNode {
        RingNode {
            id: self.id.clone(),
            zone: self.zone.clone(),
            weight: self.weight,
        }
    }
}

/// Checks that `id` can be a node id: 1 to [`MAX_NODE_ID_LEN`] bytes of ASCII letters, digits,
/// `-`, `_`, `.` or `:`, so it is safe as the last segment of an etcd key, in a map, and on a
/// status line.
pub fn validate_node_id(id: &str) -> Result<(), MapError> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_NODE_ID_LEN {
        "is longer than 64 bytes"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        "may only hold ASCII letters, digits, '-', '_', '.' and ':'"
    } else {
        return Ok(());
    };
    Err(MapError::NodeId {
        id: id.to_string(),
        reason,
    })
}

/// Where a shard is in its life: serving normally, or in the middle of a change that every
/// process must see the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShardState {
    /// The replicas listed serve the shard; nothing is moving.
    Stable,
    /// Node `to` (not yet in `replicas`) is receiving a copy of the shard; it becomes a
    /// replica at the epoch that ends the move.
    Migrating {
        /// The node being filled.
        to: String,
    },
    /// Replica `to` is being made primary (failover or rebalancing); writes wait until the
    /// epoch that ends the promotion.
    Promoting {
        /// The replica becoming primary.
        to: String,
    },
}

/// One shard's placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAssignment {
    /// Every node holding the shard, the primary first.
    pub replicas: Vec<String>,
    /// The node that orders the shard's writes and serves its reads; always in `replicas`.
    pub primary: String,
    /// Whether the shard is changing hands.
    pub state: ShardState,
}

/// How many shards a node holds, by role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeShardCounts {
    /// Shards it is primary of.
    pub primary: usize,
    /// Shards it holds as a non-primary replica.
    pub replica: usize,
}

/// What changed between two maps, for operators and the "shards moved" line of `assign`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapChanges {
    /// Shards whose replica list or primary differs.
    pub shards_changed: usize,
    /// Shards whose primary differs.
    pub primaries_changed: usize,
    /// Replicas placed on a node that did not hold that shard before: the copies to make.
    pub replicas_added: usize,
}

/// The cluster's placement at one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Version of the map; every change increases it by one, written by compare-and-swap.
    pub epoch: u64,
    /// Placement of shard `i` at index `i`; exactly `config.shards` entries.
    pub shards: Vec<ShardAssignment>,
}

impl ShardMap {
    /// The map the ring and the balancer give for `config` on the ring's nodes, moving as
    /// little as possible from `previous` (see [`crate::balance`]). Every shard is
    /// [`ShardState::Stable`]: moving the data is the controller's business.
    pub fn from_ring(
        epoch: u64,
        ring: &Ring,
        config: &ClusterConfig,
        previous: Option<&ShardMap>,
    ) -> Result<ShardMap, AssignError> {
        let previous = previous.map(ShardMap::placement);
        let placement = balance::assign(
            ring,
            config.shards,
            config.replicas as usize,
            previous.as_deref(),
        )?;
        Ok(ShardMap {
            epoch,
            shards: placement
                .into_iter()
                .map(|replicas| ShardAssignment {
                    primary: replicas[0].clone(),
                    replicas,
                    state: ShardState::Stable,
                })
                .collect(),
        })
    }

    /// Each shard's replicas, primary first, as [`balance::assign`] takes them.
    pub fn placement(&self) -> Vec<Vec<String>> {
        self.shards
            .iter()
            .map(|shard| {
                let mut replicas = Vec::with_capacity(shard.replicas.len());
                replicas.push(shard.primary.clone());
                replicas.extend(
                    shard
                        .replicas
                        .iter()
                        .filter(|r| **r != shard.primary)
                        .cloned(),
                );
                replicas
            })
            .collect()
    }

    /// Shards per node by role, for status and balance checks. Sorted by node id.
    pub fn counts(&self) -> BTreeMap<String, NodeShardCounts> {
        let mut counts: BTreeMap<String, NodeShardCounts> = BTreeMap::new();
        for shard in &self.shards {
            for replica in &shard.replicas {
                let entry = counts.entry(replica.clone()).or_default();
                if *replica == shard.primary {
                    entry.primary += 1;
                } else {
                    entry.replica += 1;
                }
            }
        }
        counts
    }

    /// Every node the map mentions.
    pub fn nodes(&self) -> BTreeSet<&str> {
        self.shards
            .iter()
            .flat_map(|s| s.replicas.iter().map(String::as_str))
            .collect()
    }

    /// True when both maps put every shard on the same nodes with the same primary and state
    /// (epochs aside): writing such a map would only bump the epoch.
    pub fn same_placement(&self, other: &ShardMap) -> bool {
        self.shards == other.shards
    }

    /// What changes from `self` to `newer`.
    pub fn changes_to(&self, newer: &ShardMap) -> MapChanges {
        let mut changes = MapChanges::default();
        for (i, new) in newer.shards.iter().enumerate() {
            let Some(old) = self.shards.get(i) else {
                changes.shards_changed += 1;
                changes.primaries_changed += 1;
                changes.replicas_added += new.replicas.len();
                continue;
            };
            if old.replicas != new.replicas || old.primary != new.primary {
                changes.shards_changed += 1;
            }
            if old.primary != new.primary {
                changes.primaries_changed += 1;
            }
            changes.replicas_added += new
                .replicas
                .iter()
                .filter(|r| !old.replicas.contains(r))
                .count();
        }
        changes
    }

    /// Checks the map against the cluster: one entry per shard, each with 1 to R distinct
    /// valid node ids, the primary among them. Maps read from etcd are checked before use,
    /// since anything could have written the key.
    pub fn validate(&self, config: &ClusterConfig) -> Result<(), MapError> {
        let bad = |reason: String| MapError::Map {
            epoch: self.epoch,
            reason,
        };
        if self.shards.len() != config.shards as usize {
            return Err(bad(format!(
                "has {} shards, the cluster has {}",
                self.shards.len(),
                config.shards
            )));
        }
        for (i, shard) in self.shards.iter().enumerate() {
            if shard.replicas.is_empty() || shard.replicas.len() > config.replicas as usize {
                return Err(bad(format!(
                    "shard {i} has {} replicas, expected 1 to {}",
                    shard.replicas.len(),
                    config.replicas
                )));
            }
            let distinct: BTreeSet<&String> = shard.replicas.iter().collect();
            if distinct.len() != shard.replicas.len() {
                return Err(bad(format!("shard {i} lists a node twice")));
            }
            for id in &shard.replicas {
                validate_node_id(id).map_err(|e| bad(format!("shard {i}: {e}")))?;
            }
            if !shard.replicas.contains(&shard.primary) {
                return Err(bad(format!(
                    "shard {i}'s primary {:?} is not one of its replicas",
                    shard.primary
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeInfo> {
        (0..n)
            .map(|i| NodeInfo {
                id: format!("n{i}"),
                addr: format!("127.0.0.1:{}", 7000 + i),
                zone: format!("z{}", i % 3),
                weight: 1,
            })
            .collect()
    }

    fn ring(nodes: &[NodeInfo]) -> Ring {
        Ring::new(nodes.iter().map(NodeInfo::ring_node)).expect("ring")
    }

    #[test]
    fn config_is_validated_and_names_the_field() {
        let config = ClusterConfig::new(256, 3, 1).expect("valid");
        assert_eq!(config.hash, "xxh3-64");
        for (shards, replicas, field) in [
            (0, 3, "shards"),
            (256, 0, "replicas"),
            (1 << 20, 3, "shards"),
        ] {
            match ClusterConfig::new(shards, replicas, 0) {
                Err(MapError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{shards}/{replicas}: {other:?}"),
            }
        }
        let foreign = ClusterConfig {
            hash: "crc16".into(),
            ..config
        };
        assert!(foreign.validate().is_err());
    }

    #[test]
    fn json_forms_are_stable() {
        let config = ClusterConfig::new(256, 3, 1_700_000_000_000).expect("valid");
        assert_eq!(
            serde_json::to_string(&config).expect("json"),
            r#"{"shards":256,"replicas":3,"hash":"xxh3-64","created_at_ms":1700000000000}"#
        );
        let node: NodeInfo =
            serde_json::from_str(r#"{"id":"n1","addr":"10.0.0.1:7000"}"#).expect("json");
        assert_eq!((node.zone.as_str(), node.weight), ("", 1));
        let map = ShardMap {
            epoch: 7,
            shards: vec![
                ShardAssignment {
                    replicas: vec!["a".into(), "b".into()],
                    primary: "a".into(),
                    state: ShardState::Stable,
                },
                ShardAssignment {
                    replicas: vec!["b".into()],
                    primary: "b".into(),
                    state: ShardState::Migrating { to: "c".into() },
                },
            ],
        };
        let json = serde_json::to_string(&map).expect("json");
        assert_eq!(
            json,
            r#"{"epoch":7,"shards":[{"replicas":["a","b"],"primary":"a","state":{"kind":"stable"}},{"replicas":["b"],"primary":"b","state":{"kind":"migrating","to":"c"}}]}"#
        );
        assert_eq!(serde_json::from_str::<ShardMap>(&json).expect("parse"), map);
    }

    #[test]
    fn node_ids_must_be_key_safe() {
        for good in ["n1", "storage-3.rack2", "10.0.0.1:7000", "a_b"] {
            assert!(validate_node_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "with space", "é", &"x".repeat(65)] {
            assert!(validate_node_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn from_ring_counts_and_changes() {
        let config = ClusterConfig::new(256, 3, 0).expect("config");
        let five = nodes(6)[..5].to_vec();
        let map = ShardMap::from_ring(1, &ring(&five), &config, None).expect("map");
        map.validate(&config).expect("valid map");
        let counts = map.counts();
        assert_eq!(counts.len(), 5);
        assert_eq!(counts.values().map(|c| c.primary).sum::<usize>(), 256);
        assert_eq!(counts.values().map(|c| c.replica).sum::<usize>(), 512);
        assert!(counts.values().all(|c| (46..=56).contains(&c.primary)));

        let same = ShardMap::from_ring(2, &ring(&five), &config, Some(&map)).expect("map");
        assert!(same.same_placement(&map));
        assert_eq!(map.changes_to(&same), MapChanges::default());

        let grown = ShardMap::from_ring(2, &ring(&nodes(6)), &config, Some(&map)).expect("map");
        let changes = map.changes_to(&grown);
        let n5 = grown.counts()["n5"];
        assert_eq!(changes.primaries_changed, n5.primary);
        assert_eq!(changes.replicas_added, n5.primary + n5.replica);
        assert!(changes.shards_changed > 0 && changes.shards_changed <= 256);
    }

    #[test]
    fn validate_rejects_inconsistent_maps() {
        let config = ClusterConfig::new(2, 2, 0).expect("config");
        let shard = |replicas: &[&str], primary: &str| ShardAssignment {
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
            primary: primary.to_string(),
            state: ShardState::Stable,
        };
        let map = |shards| ShardMap { epoch: 1, shards };
        assert!(map(vec![shard(&["a", "b"], "a"), shard(&["b"], "b")])
            .validate(&config)
            .is_ok());
        for broken in [
            map(vec![shard(&["a"], "a")]),
            map(vec![shard(&["a"], "a"), shard(&["a", "a"], "a")]),
            map(vec![shard(&["a"], "a"), shard(&["b"], "a")]),
            map(vec![shard(&["a"], "a"), shard(&[], "a")]),
            map(vec![shard(&["a"], "a"), shard(&["a", "b", "c"], "a")]),
            map(vec![shard(&["a"], "a"), shard(&["a/b"], "a/b")]),
        ] {
            assert!(broken.validate(&config).is_err(), "{broken:?}");
        }
    }
}
