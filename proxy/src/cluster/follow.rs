//! Follows the cluster in etcd: the shard map and the live nodes, each read once and then
//! watched, rebuilding the routing table on every change.
//!
//! While etcd is unreachable nothing changes here: the proxy routes by the last table, and
//! the watches resume where they stopped when etcd returns. A node whose record vanished
//! (its lease expired) keeps its last known address: if it still answers, its shards still
//! work; if it does not, its requests fail with CLUSTERDOWN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use ringkv_common::etcd::{ClusterStore, MapEvent, NodeEvent};
use ringkv_common::metrics::{self as m, names};
use ringkv_common::shardmap::{ClusterConfig, NodeInfo, ShardMap};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, Instant};

use super::routes::{Node, Routes};
use crate::pool::{NodePool, PoolConfig};

/// Fewest time between two map reads asked for by requests that met a newer epoch.
const NUDGE_EVERY: Duration = Duration::from_millis(50);

/// Longest pause between attempts to reach etcd at start.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What the follower publishes and what requests use to ask it for a fresh map.
#[derive(Debug)]
pub struct Shared {
    /// The current table; `None` until the first map.
    pub routes: ArcSwapOption<Routes>,
    /// The current epoch, for requests waiting for a newer map.
    pub epoch: watch::Sender<u64>,
    /// Woken by a request that met a node with a newer map than ours.
    pub nudge: Notify,
    /// Whether the last etcd read or watch event succeeded.
    pub etcd_up: AtomicBool,
}

impl Shared {
    /// Nothing known yet.
    pub fn new() -> Shared {
        Shared {
            routes: ArcSwapOption::empty(),
            epoch: watch::Sender::new(0),
            nudge: Notify::new(),
            etcd_up: AtomicBool::new(false),
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// The follower's state.
pub struct Follower {
    store: ClusterStore,
    config: ClusterConfig,
    pool_config: PoolConfig,
    shared: Arc<Shared>,
    /// Registered nodes, by id.
    registered: HashMap<String, NodeInfo>,
    /// Every address a node id was last seen at, kept after its record vanishes.
    known: HashMap<String, Arc<Node>>,
    map: Option<ShardMap>,
}

impl Follower {
    /// A follower of `store`'s cluster, whose config is `config`.
    pub fn new(
        store: ClusterStore,
        config: ClusterConfig,
        pool_config: PoolConfig,
        shared: Arc<Shared>,
    ) -> Follower {
        Follower {
            store,
            config,
            pool_config,
            shared,
            registered: HashMap::new(),
            known: HashMap::new(),
            map: None,
        }
    }

    /// Reads nodes and map (retrying until etcd answers), then follows both forever.
    pub async fn run(mut self) {
        let (nodes_revision, map_revision) = self.read_all().await;
        let mut nodes = self.store.watch_nodes(nodes_revision + 1);
        let mut maps = self.store.watch_map(map_revision + 1);
        let mut last_nudge = Instant::now() - NUDGE_EVERY;
        loop {
            tokio::select! {
                event = nodes.next() => match event {
                    Some(event) => self.node_event(event),
                    None => nodes = self.store.watch_nodes(0),
                },
                event = maps.next() => match event {
                    Some(event) => self.map_event(event).await,
                    None => maps = self.store.watch_map(0),
                },
                () = self.shared.nudge.notified() => {
                    if last_nudge.elapsed() >= NUDGE_EVERY {
                        last_nudge = Instant::now();
                        match self.store.read_map().await {
                            Ok(read) => {
                                self.etcd_seen(true);
                                if let Some(stored) = read.current {
                                    self.take_map(stored.map).await;
                                }
                            }
                            Err(_) => self.etcd_seen(false),
                        }
                    }
                }
            }
        }
    }

    /// The first read of nodes and map; returns the revisions to watch from.
    async fn read_all(&mut self) -> (i64, i64) {
        let mut pause = Duration::from_millis(100);
        loop {
            let read = async {
                let nodes = self.store.list_nodes().await?;
                let map = self.store.read_map().await?;
                Ok::<_, ringkv_common::etcd::EtcdError>((nodes, map))
            };
            match read.await {
                Ok((nodes, map)) => {
                    self.etcd_seen(true);
                    for node in nodes.nodes {
                        self.registered.insert(node.id.clone(), node);
                    }
                    match map.current {
                        Some(stored) => self.take_map(stored.map).await,
                        None => tracing::warn!(
                            "no shard map yet: data commands fail until `ringkv-admin assign`"
                        ),
                    }
                    return (nodes.revision, map.revision);
                }
                Err(err) => {
                    self.etcd_seen(false);
                    tracing::warn!(%err, "cannot read the cluster from etcd; retrying in {pause:?}");
                    sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Adds every node record in etcd to the registered nodes (the watch still brings the
    /// removals); on failure they stay as they are.
    async fn read_nodes(&mut self) {
        match self.store.list_nodes().await {
            Ok(list) => {
                for node in list.nodes {
                    self.registered.insert(node.id.clone(), node);
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the node records for a new map"),
        }
    }

    /// Records whether etcd is reachable, for INFO and the metrics.
    fn etcd_seen(&self, up: bool) {
        self.shared.etcd_up.store(up, Ordering::Relaxed);
        m::etcd_up(up);
    }

    fn node_event(&mut self, event: NodeEvent) {
        m::watch_event("nodes", event.kind());
        self.etcd_seen(!matches!(event, NodeEvent::Interrupted { .. }));
        match event {
            NodeEvent::Up(node) => {
                tracing::info!(id = %node.id, addr = %node.addr, "storage node up");
                self.registered.insert(node.id.clone(), node);
            }
            NodeEvent::Down { id } => {
                tracing::warn!(%id, "storage node left etcd (lease expired or revoked)");
                self.registered.remove(&id);
            }
            NodeEvent::Resync(list) => {
                self.registered = list.nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
            }
            NodeEvent::Invalid { key, reason } => {
                tracing::error!(%key, %reason, "ignoring an invalid node record");
                return;
            }
            NodeEvent::Interrupted { reason } => {
                tracing::warn!(%reason, "lost the node watch; routing by the last table");
                return;
            }
        }
        self.publish();
    }

    async fn map_event(&mut self, event: MapEvent) {
        m::watch_event("map", event.kind());
        self.etcd_seen(!matches!(event, MapEvent::Interrupted { .. }));
        match event {
            MapEvent::Changed(stored) => self.take_map(stored.map).await,
            MapEvent::Deleted { revision } => {
                tracing::warn!(
                    revision,
                    "the shard map was deleted; routing by the last one"
                );
            }
            MapEvent::Invalid { revision, reason } => {
                tracing::error!(revision, %reason, "ignoring an invalid shard map");
            }
            MapEvent::Interrupted { reason } => {
                tracing::warn!(%reason, "lost the map watch; routing by the last map");
            }
        }
    }

    /// Adopts `map` if it is newer than the current one and consistent with the cluster.
    async fn take_map(&mut self, map: ShardMap) {
        if self.map.as_ref().is_some_and(|m| m.epoch >= map.epoch) {
            return;
        }
        if let Err(err) = map.validate(&self.config) {
            tracing::error!(%err, "ignoring an invalid shard map");
            return;
        }
        // A map only names nodes that registered before it was written. If one has no record
        // here, the node watch is behind the map watch (the two reconnect on their own after
        // etcd comes back), and its shards would have no address until the watch catches up:
        // read the records once instead.
        if map
            .shards
            .iter()
            .any(|shard| !self.registered.contains_key(&shard.primary))
        {
            self.read_nodes().await;
        }
        tracing::info!(epoch = map.epoch, "routing by a new shard map");
        self.map = Some(map);
        self.publish();
    }

    /// Builds and swaps in the table for the current map and nodes.
    fn publish(&mut self) {
        let Some(map) = self.map.take() else {
            return;
        };
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut primaries = Vec::with_capacity(map.shards.len());
        for shard in &map.shards {
            let id = shard.primary.as_str();
            let i = match index.get(id) {
                Some(&i) => i,
                None => {
                    let node = node_for(
                        id,
                        self.registered.get(id),
                        self.known.get(id),
                        &self.pool_config,
                    );
                    self.known.insert(id.to_string(), Arc::clone(&node));
                    nodes.push(node);
                    index.insert(id, nodes.len() - 1);
                    nodes.len() - 1
                }
            };
            primaries.push(i);
        }
        let epoch = map.epoch;
        self.map = Some(map);
        let routes = Routes {
            epoch,
            primaries: primaries.into(),
            nodes,
        };
        self.shared.routes.store(Some(Arc::new(routes)));
        self.shared.epoch.send_replace(epoch);
        metrics::gauge!(names::MAP_EPOCH).set(epoch as f64);
        metrics::gauge!(names::CLUSTER_NODES).set(self.registered.len() as f64);
    }
}

/// The node `id` as routes should hold it: the previous one if its address and registration
/// are unchanged (keeping its connections), else a new one.
fn node_for(
    id: &str,
    record: Option<&NodeInfo>,
    previous: Option<&Arc<Node>>,
    pool_config: &PoolConfig,
) -> Arc<Node> {
    let addr: Option<SocketAddr> = match record {
        Some(info) => match info.addr.parse() {
            Ok(addr) => Some(addr),
            Err(err) => {
                tracing::error!(%id, addr = %info.addr, %err, "node address is not ip:port");
                None
            }
        },
        None => previous.and_then(|p| p.addr),
    };
    let registered = record.is_some();
    if let Some(previous) = previous {
        if previous.addr == addr && previous.registered == registered {
            return Arc::clone(previous);
        }
    }
    let pool = match previous {
        Some(p) if p.addr == addr => p.pool.clone(),
        _ => addr.map(|addr| Arc::new(NodePool::new(addr, pool_config.clone()))),
    };
    Arc::new(Node {
        id: id.to_string(),
        addr,
        pool,
        registered,
    })
}

#[cfg(test)]
mod tests {
    use ringkv_common::ring::Ring;
    use ringkv_integration::etcd::Etcd;

    use super::*;

    /// The map watch can deliver a map before the node watch has delivered a node it names:
    /// both reconnect on their own after an etcd outage. The node's shards must still route
    /// to the address it registered, not fail for want of one.
    #[tokio::test]
    async fn a_map_naming_a_node_the_watch_has_not_brought_routes_to_its_address() {
        let etcd = Etcd::start();
        let store = ClusterStore::connect(&[etcd.url()], "follow")
            .await
            .expect("connect to etcd");
        let config = ClusterConfig::new(4, 1, 0).expect("config");
        store.init_config(&config).await.expect("init");
        let node = NodeInfo {
            id: "n1".to_string(),
            addr: "127.0.0.1:7001".to_string(),
            zone: String::new(),
            weight: 1,
        };
        let _lease = store
            .register_node(&node, Duration::from_secs(60))
            .await
            .expect("register n1");
        let ring = Ring::new([node.ring_node()]).expect("ring");
        let map = ShardMap::from_ring(1, &ring, &config, None).expect("map");
        let shared = Arc::new(Shared::new());
        // No watch runs: the follower has heard of no node when the map arrives.
        let mut follower = Follower::new(store, config, PoolConfig::default(), Arc::clone(&shared));
        follower.take_map(map).await;

        let routes = shared.routes.load_full().expect("the map was adopted");
        let addrs: Vec<(&str, Option<SocketAddr>)> = routes
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.addr))
            .collect();
        let registered = node.addr.parse().ok();
        assert_eq!(addrs, vec![("n1", registered)]);
        assert!(routes.nodes[0].registered, "n1 reads as registered");
    }
}
