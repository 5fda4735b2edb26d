//! The proxy's routing table at one map epoch: which storage node is each shard's primary,
//! and the connection pool to reach it.
//!
//! A table is immutable once built; the follower builds a new one for every map or node
//! change and swaps it in whole, so a request reads one consistent table with one atomic
//! load. Pools outlive tables: a node whose address did not change keeps its connections.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::pool::NodePool;

/// A storage node as the proxy reaches it.
#[derive(Debug)]
pub struct Node {
    /// The node's id in the map.
    pub id: String,
    /// Where it listens, from its etcd record; `None` if etcd held no record of it when this
    /// proxy adopted a map naming it (requests for its shards then fail at once).
    pub addr: Option<SocketAddr>,
    /// Its connections; `None` exactly when `addr` is.
    pub pool: Option<Arc<NodePool>>,
    /// Whether its etcd record exists (its lease is alive): for error messages only, since a
    /// node that lost its lease may well still serve.
    pub registered: bool,
}

/// Where each shard goes at one epoch.
#[derive(Debug)]
pub struct Routes {
    /// The map's epoch, sent with every request.
    pub epoch: u64,
    /// `primaries[s]`: index into `nodes` of shard `s`'s primary.
    pub primaries: Box<[usize]>,
    /// The nodes the map names.
    pub nodes: Vec<Arc<Node>>,
}

impl Routes {
    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.primaries.len() as u32
    }

    /// Shard `shard`'s primary.
    pub fn primary(&self, shard: u32) -> Option<&Arc<Node>> {
        self.nodes.get(*self.primaries.get(shard as usize)?)
    }
}
