//! The node's life in etcd: its registration under a lease (re-made if the lease is lost,
//! e.g. after etcd was away for longer than the TTL), and the shard map it follows.
//!
//! Applying a map opens the column family of every shard the map places here (creating it
//! when new) and only then publishes the new view, so a request the view admits always finds
//! its family open. While etcd is unreachable nothing changes: the node keeps serving by the
//! last map it applied, and the watch resumes where it stopped when etcd returns.

use std::sync::Arc;
use std::time::Duration;

use ringkv_common::etcd::{ClusterStore, LeaseState, MapEvent, NodeLease, DEFAULT_NODE_TTL};
use ringkv_common::metrics::{self as m, names};
use ringkv_common::shardmap::{ClusterConfig, NodeInfo, ShardMap};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use super::ownership::{Ownership, View};
use crate::Storage;

/// Fewest time between two map reads prompted by requests carrying a newer epoch.
const STALE_READ_EVERY: Duration = Duration::from_millis(50);

/// Longest pause between attempts to reach etcd.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What the membership task needs.
pub struct Membership {
    /// etcd, scoped to the cluster.
    pub store: ClusterStore,
    /// The record this node registers.
    pub node: NodeInfo,
    /// The cluster's fixed settings (shard count…).
    pub config: ClusterConfig,
    /// The engine, to open shards.
    pub storage: Arc<Storage>,
    /// The view requests are checked against.
    pub ownership: Arc<Ownership>,
}

impl Membership {
    /// Registers the node, retrying until etcd answers. Returns the lease, which must be kept
    /// (dropping it stops the keep-alive).
    pub async fn register(&self) -> NodeLease {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.store.register_node(&self.node, DEFAULT_NODE_TTL).await {
                Ok(lease) => {
                    tracing::info!(id = %self.node.id, addr = %self.node.addr, "registered in etcd");
                    return lease;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot register in etcd; retrying in {pause:?}");
                    sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Follows the map and keeps the registration alive until `stop` turns true; then
    /// revokes the lease, so the node's record vanishes at once.
    pub async fn run(self, mut lease: NodeLease, mut stop: watch::Receiver<bool>) {
        let mut lease_state = lease.subscribe();
        let mut revision = self.read_and_apply().await;
        let mut watch = self.store.watch_map(revision + 1);
        let mut last_stale_read = Instant::now() - STALE_READ_EVERY;
        loop {
            tokio::select! {
                () = stopped(&mut stop) => {
                    if let Err(err) = lease.revoke().await {
                        tracing::warn!(%err, "cannot revoke the lease; the record expires with it");
                    }
                    return;
                }
                event = watch.next() => match event.inspect(count_event) {
                    Some(MapEvent::Changed(stored)) => {
                        revision = revision.max(stored.mod_revision);
                        self.apply(stored.map).await;
                    }
                    Some(MapEvent::Deleted { revision: at }) => {
                        tracing::warn!(revision = at, "the shard map was deleted in etcd; serving by the last one");
                    }
                    Some(MapEvent::Invalid { revision: at, reason }) => {
                        tracing::error!(revision = at, %reason, "ignoring an invalid shard map");
                    }
                    Some(MapEvent::Interrupted { reason }) => {
                        tracing::warn!(%reason, "lost the map watch; serving by the last map until etcd is back");
                    }
                    None => {
                        tracing::error!("the map watch ended; watching again");
                        watch = self.store.watch_map(revision + 1);
                    }
                },
                changed = lease_state.changed() => {
                    let lost = changed.is_err() || matches!(*lease_state.borrow(), LeaseState::Lost { .. });
                    if lost {
                        tracing::warn!("lost the etcd lease; registering again");
                        lease = self.register().await;
                        lease_state = lease.subscribe();
                    }
                }
                () = self.ownership.stale_seen() => {
                    if last_stale_read.elapsed() >= STALE_READ_EVERY {
                        last_stale_read = Instant::now();
                        if let Ok(read) = self.store.read_map().await {
                            if let Some(stored) = read.current {
                                self.apply(stored.map).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the current map and applies it, retrying until etcd answers; returns the store
    /// revision to watch from.
    async fn read_and_apply(&self) -> i64 {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.store.read_map().await {
                Ok(read) => {
                    m::etcd_up(true);
                    match read.current {
                        Some(stored) => self.apply(stored.map).await,
                        None => tracing::info!(
                            "no shard map yet: serving nothing until `ringkv-admin assign`"
                        ),
                    }
                    return read.revision;
                }
                Err(err) => {
                    m::etcd_up(false);
                    tracing::warn!(%err, "cannot read the shard map; retrying in {pause:?}");
                    sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Opens the shards `map` places here, then serves those it makes this node primary of.
    /// Maps not newer than the current one, or inconsistent with the cluster, are ignored.
    async fn apply(&self, map: ShardMap) {
        let current = self.ownership.view();
        if map.epoch <= current.epoch {
            return;
        }
        if let Err(err) = map.validate(&self.config) {
            tracing::error!(%err, "ignoring an invalid shard map");
            return;
        }
        let id = &self.node.id;
        let held: Vec<u32> = (0..map.shards.len() as u32)
            .filter(|&s| map.shards[s as usize].replicas.contains(id))
            .collect();
        let storage = Arc::clone(&self.storage);
        let opened = tokio::task::spawn_blocking(move || storage.host(&held)).await;
        let created = match opened {
            Ok(Ok(created)) => created,
            Ok(Err(err)) => {
                tracing::error!(epoch = map.epoch, %err, "cannot open the shards of the new map; keeping the old one");
                return;
            }
            Err(err) => {
                tracing::error!(epoch = map.epoch, %err, "opening shards failed");
                return;
            }
        };
        let served: Box<[bool]> = map.shards.iter().map(|s| s.primary == *id).collect();
        let view = View::new(map.epoch, served);
        tracing::info!(
            epoch = map.epoch,
            served = view.served_count(),
            was = current.served_count(),
            created,
            "applied shard map"
        );
        metrics::gauge!(names::MAP_EPOCH).set(map.epoch as f64);
        metrics::gauge!(names::SERVED_SHARDS).set(view.served_count() as f64);
        self.ownership.publish(view);
    }
}

/// Counts a map watch event for the metrics endpoint.
fn count_event(event: &MapEvent) {
    m::watch_event("map", event.kind());
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
