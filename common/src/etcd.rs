//! etcd: where a cluster's documents live ([`Layout`], the one place key names are spelled),
//! and thin async helpers over `etcd-client` to read, write and watch them ([`ClusterStore`]).
//!
//! Layout under `/ringkv/<cluster>/`:
//!
//! | key | holds | written |
//! |---|---|---|
//! | `config` | [`ClusterConfig`] (JSON) | once, by `init`, only if absent |
//! | `nodes/<id>` | [`NodeInfo`] (JSON) | by the storage node, bound to its lease |
//! | `map` | [`ShardMap`] (JSON) | only by compare-and-swap on the key's mod revision |
//! | `controller` | election key prefix | by the controller election |
//!
//! Why compare the map's mod revision rather than its epoch: etcd transactions compare whole
//! values or revisions, not a field inside JSON, and the mod revision changes on every write
//! to the key, so "the map is still the one I read" is exactly `mod_revision == what I read`.
//! Two writers that read the same map therefore cannot both succeed. A first write compares
//! `create_revision == 0`, which etcd evaluates as true only for an absent key.
//!
//! Every unary request runs under a deadline, so an unreachable etcd is one clear error, not a
//! hang. Watches reconnect on their own and resume from the next revision; they report the
//! gap ([`MapEvent::Interrupted`]) so a process can log it while it keeps serving the last map
//! it saw, as DESIGN.md asks.

#![warn(missing_docs)]

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use crate::shardmap::{validate_node_id, ClusterConfig, MapError, NodeInfo, ShardMap};

/// The prefix every ringkv key lives under; clusters are subdirectories of it.
pub const ROOT: &str = "/ringkv/";

/// How long one etcd request may take before it counts as failed. Long enough for a loaded
/// etcd to fsync, short enough that an operator is not left staring at a hung command.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to an endpoint may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The lease TTL a storage node registers with: after this long without a keep-alive its key
/// vanishes and the controller treats it as failed. Shorter detects failures sooner; longer
/// rides out GC pauses and etcd leader changes.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(10);

/// Buffer of a watch's channel: a consumer that falls this far behind holds the watch back
/// (backpressure) rather than growing memory.
const WATCH_BUFFER: usize = 64;

/// The longest pause between attempts to re-open a broken watch or keep-alive stream.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Why an etcd operation failed, naming the operation and key.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The cluster name cannot be part of a key.
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidCluster {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No etcd endpoint answered (connection refused, DNS, TLS, no leader…).
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the transport said.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd {op} of {key} failed: {source}")]
    Request {
        /// The operation (get, put, txn, lease grant…).
        op: &'static str,
        /// The key it was about.
        key: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer within the request deadline.
    #[error("etcd at {endpoints} did not answer {op} of {key} within {after:?}")]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// The deadline.
        after: Duration,
    },
    /// A key holds something that is not the document it should be.
    #[error("{key} does not hold a valid {what}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// The document expected there.
        what: &'static str,
        /// The decoding or validation error.
        reason: String,
    },
    /// `init` on a cluster that already has a config.
    #[error("cluster {cluster:?} already exists ({key} is set)")]
    AlreadyInitialised {
        /// The cluster.
        cluster: String,
        /// Its config key.
        key: String,
    },
    /// A node record that must not be registered.
    #[error(transparent)]
    InvalidNode(#[from] MapError),
    /// A map write whose epoch does not follow the map it replaces.
    #[error("the new map's epoch {proposed} does not follow the stored epoch {stored}")]
    EpochNotIncreasing {
        /// The stored map's epoch.
        stored: u64,
        /// The proposed map's epoch.
        proposed: u64,
    },
    /// Serialising one of our own documents failed (never expected).
    #[error("cannot encode the {what}: {source}")]
    Encode {
        /// The document.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// The key names of one cluster: the single source of truth for the etcd layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    cluster: String,
    prefix: String,
}

impl Layout {
    /// The layout of cluster `cluster`, whose name follows the node-id rules (ASCII letters,
    /// digits, `-_.:`), so it can never reach outside its own prefix.
    pub fn new(cluster: &str) -> Result<Layout, EtcdError> {
        validate_node_id(cluster).map_err(|e| EtcdError::InvalidCluster {
            name: cluster.to_string(),
            reason: match e {
                MapError::NodeId { reason, .. } => reason,
                _ => "is not a valid name",
            },
        })?;
        Ok(Layout {
            cluster: cluster.to_string(),
            prefix: format!("{ROOT}{cluster}/"),
        })
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `/ringkv/<cluster>/`: everything of this cluster lives under it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `/ringkv/<cluster>/config`: the [`ClusterConfig`].
    pub fn config(&self) -> String {
        format!("{}config", self.prefix)
    }

    /// `/ringkv/<cluster>/nodes/`: the prefix of the live nodes' records.
    pub fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// `/ringkv/<cluster>/nodes/<id>`: one live node's [`NodeInfo`], bound to its lease.
    pub fn node(&self, id: &str) -> String {
        format!("{}nodes/{id}", self.prefix)
    }

    /// The node id in a `nodes/<id>` key, if `key` is one.
    pub fn node_id_of<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let key = std::str::from_utf8(key).ok()?;
        let id = key.strip_prefix(&self.prefix)?.strip_prefix("nodes/")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    /// `/ringkv/<cluster>/map`: the current [`ShardMap`].
    pub fn map(&self) -> String {
        format!("{}map", self.prefix)
    }

    /// `/ringkv/<cluster>/controller`: the election the controllers campaign in.
    pub fn controller(&self) -> String {
        format!("{}controller", self.prefix)
    }
}

/// The map as stored, with the revision a compare-and-swap must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMap {
    /// The map.
    pub map: ShardMap,
    /// The key's mod revision: what [`ClusterStore::write_map`] compares against.
    pub mod_revision: i64,
}

/// The result of reading the map.
#[derive(Clone, Debug)]
pub struct MapRead {
    /// The map, or `None` before the first `assign`.
    pub current: Option<StoredMap>,
    /// The store's revision when it was read: watch from `revision + 1` to miss nothing.
    pub revision: i64,
}

/// The live nodes at one revision.
#[derive(Clone, Debug)]
pub struct NodeList {
    /// Valid records, sorted by id.
    pub nodes: Vec<NodeInfo>,
    /// Records that could not be used, one message each (key and reason).
    pub invalid: Vec<String>,
    /// The store's revision when listed: watch from `revision + 1` to miss nothing.
    pub revision: i64,
}

/// How a compare-and-swap of the map ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The new map is stored, at this revision.
    Written {
        /// The store revision of the write (the map's new mod revision).
        revision: i64,
    },
    /// Someone changed the map since it was read; nothing was written.
    Conflict {
        /// The map that is stored now (read in the same transaction).
        current: Option<StoredMap>,
    },
}

/// A change to the map, in revision order.
#[derive(Clone, Debug)]
pub enum MapEvent {
    /// A new map was written (or, after the watch had to start over, the current map).
    Changed(StoredMap),
    /// The map key was deleted.
    Deleted {
        /// The revision of the deletion.
        revision: i64,
    },
    /// The key holds something that is not a map; keep the last good one.
    Invalid {
        /// The revision of the bad write.
        revision: i64,
        /// Why it was refused.
        reason: String,
    },
    /// The watch lost etcd and is reconnecting; changes will resume where they stopped.
    Interrupted {
        /// What broke.
        reason: String,
    },
}

impl MapEvent {
    /// The event's name, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            MapEvent::Changed(_) => "changed",
            MapEvent::Deleted { .. } => "deleted",
            MapEvent::Invalid { .. } => "invalid",
            MapEvent::Interrupted { .. } => "interrupted",
        }
    }
}

/// A change to the live nodes, in revision order.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// A node registered, or changed its record.
    Up(NodeInfo),
    /// A node's record vanished: its lease expired or was revoked.
    Down {
        /// The node.
        id: String,
    },
    /// A record that cannot be used.
    Invalid {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The watch had to start over (history compacted): this is the whole current list;
    /// replace what you had.
    Resync(NodeList),
    /// The watch lost etcd and is reconnecting.
    Interrupted {
        /// What broke.
        reason: String,
    },
}

impl NodeEvent {
    /// The event's name, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeEvent::Up(_) => "up",
            NodeEvent::Down { .. } => "down",
            NodeEvent::Resync(_) => "resync",
            NodeEvent::Invalid { .. } => "invalid",
            NodeEvent::Interrupted { .. } => "interrupted",
        }
    }
}

/// The life of a node's lease, as its keep-alive task sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Refreshed within the TTL.
    Alive,
    /// Gone: the node's record has been (or will be) deleted; register again.
    Lost {
        /// Why.
        reason: String,
    },
}

/// A stream of watch events; dropping it stops the watch.
pub struct Watch<T> {
    events: mpsc::Receiver<T>,
    task: JoinHandle<()>,
}

impl<T> Watch<T> {
    /// The next event; `None` only if the watch task ended, which it does not on its own.
    pub async fn next(&mut self) -> Option<T> {
        self.events.recv().await
    }
}

impl<T> Drop for Watch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A node's registration: its record lives as long as this keeps the lease alive.
/// Dropping it stops the keep-alive (the record vanishes after the TTL);
/// [`NodeLease::revoke`] removes it at once.
pub struct NodeLease {
    id: i64,
    key: String,
    state: watch::Receiver<LeaseState>,
    task: JoinHandle<()>,
    store: ClusterStore,
}

impl NodeLease {
    /// The etcd lease id.
    pub fn lease_id(&self) -> i64 {
        self.id
    }

    /// The node's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current state of the lease.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the lease state (to stop serving when it is
    /// lost).
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Revokes the lease: the node's record is deleted now, as on a clean shutdown.
    pub async fn revoke(self) -> Result<(), EtcdError> {
        self.task.abort();
        let mut client = self.store.client.clone();
        let id = self.id;
        self.store
            .call("lease revoke", &self.key, async move {
                client.lease_revoke(id).await
            })
            .await
            .map(|_| ())
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection to etcd scoped to one cluster's keys.
#[derive(Clone)]
pub struct ClusterStore {
    client: Client,
    layout: Layout,
    endpoints: String,
    timeout: Duration,
}

impl ClusterStore {
    /// Connects to `endpoints` (`http://host:port`, several for an etcd cluster) for the
    /// cluster `cluster`, with the default deadlines. Connecting is lazy: an unreachable etcd
    /// shows on the first request, as [`EtcdError::Unreachable`] or [`EtcdError::Timeout`].
    pub async fn connect(endpoints: &[String], cluster: &str) -> Result<ClusterStore, EtcdError> {
        ClusterStore::connect_with(
            endpoints,
            cluster,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
    }

    /// [`ClusterStore::connect`] with explicit deadlines.
    pub async fn connect_with(
        endpoints: &[String],
        cluster: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<ClusterStore, EtcdError> {
        let layout = Layout::new(cluster)?;
        let joined = endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            // HTTP/2 pings find a dead connection under a long-lived watch.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let client = match timeout(connect_timeout, Client::connect(endpoints, Some(options))).await
        {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                return Err(EtcdError::Unreachable {
                    endpoints: joined,
                    reason: err.to_string(),
                })
            }
            Err(_) => {
                return Err(EtcdError::Unreachable {
                    endpoints: joined,
                    reason: format!("no connection within {connect_timeout:?}"),
                })
            }
        };
        Ok(ClusterStore {
            client,
            layout,
            endpoints: joined,
            timeout: request_timeout,
        })
    }

    /// The cluster's key names.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The endpoints, comma-separated, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Runs one request under the deadline and names what failed.
    async fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.classify(op, key, err)),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                op,
                key: key.to_string(),
                after: self.timeout,
            }),
        }
    }

    /// Transport failures mean "etcd is not there"; anything else is etcd's answer.
    fn classify(&self, op: &'static str, key: &str, err: etcd_client::Error) -> EtcdError {
        let unreachable = match &err {
            etcd_client::Error::TransportError(_) => true,
            etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
            _ => false,
        };
        if unreachable {
            let reason = match &err {
                etcd_client::Error::GRpcStatus(status) => with_causes(status.message(), status),
                other => with_causes(&other.to_string(), other),
            };
            EtcdError::Unreachable {
                endpoints: self.endpoints.clone(),
                reason,
            }
        } else {
            EtcdError::Request {
                op,
                key: key.to_string(),
                source: err,
            }
        }
    }

    /// The cluster's config, or `None` if the cluster was never initialised.
    pub async fn read_config(&self) -> Result<Option<ClusterConfig>, EtcdError> {
        let key = self.layout.config();
        let mut client = self.client.clone();
        let request_key = key.clone();
        let response = self
            .call(
                "get",
                &key,
                async move { client.get(request_key, None).await },
            )
            .await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let config: ClusterConfig = decode(&key, "cluster config", kv.value())?;
        config.validate().map_err(|e| EtcdError::Corrupt {
            key: key.clone(),
            what: "cluster config",
            reason: e.to_string(),
        })?;
        Ok(Some(config))
    }

    /// Creates the cluster by writing its config, only if there is none: a second `init`
    /// fails with [`EtcdError::AlreadyInitialised`] and changes nothing.
    pub async fn init_config(&self, config: &ClusterConfig) -> Result<(), EtcdError> {
        let key = self.layout.config();
        let value = encode("cluster config", config)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)]);
        let mut client = self.client.clone();
        let response = self
            .call(
                "txn (create config)",
                &key,
                async move { client.txn(txn).await },
            )
            .await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::AlreadyInitialised {
                cluster: self.layout.cluster().to_string(),
                key,
            })
        }
    }

    /// Registers `node` under a lease of `ttl` (whole seconds, at least 1) and keeps the lease
    /// alive from a background task until the returned handle is dropped or revoked. An
    /// existing record with the same id (a previous run whose lease has not expired yet) is
    /// replaced; it no longer belongs to the old lease, so that lease's expiry leaves it alone.
    pub async fn register_node(
        &self,
        node: &NodeInfo,
        ttl: Duration,
    ) -> Result<NodeLease, EtcdError> {
        node.validate()?;
        let key = self.layout.node(&node.id);
        let value = encode("node record", node)?;
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let mut client = self.client.clone();
        let lease = self
            .call("lease grant", &key, async move {
                client.lease_grant(ttl_secs, None).await
            })
            .await?;
        let lease_id = lease.id();
        let mut client = self.client.clone();
        let put_key = key.clone();
        self.call("put", &key, async move {
            client
                .put(put_key, value, Some(PutOptions::new().with_lease(lease_id)))
                .await
        })
        .await?;
        let (state_tx, state_rx) = watch::channel(LeaseState::Alive);
        let task = tokio::spawn(keep_alive(
            self.clone(),
            lease_id,
            Duration::from_secs(ttl_secs as u64),
            state_tx,
        ));
        Ok(NodeLease {
            id: lease_id,
            key,
            state: state_rx,
            task,
            store: self.clone(),
        })
    }

    /// The live nodes: every record under `nodes/`.
    pub async fn list_nodes(&self) -> Result<NodeList, EtcdError> {
        let prefix = self.layout.nodes_prefix();
        let mut client = self.client.clone();
        let request_prefix = prefix.clone();
        let response = self
            .call("get (prefix)", &prefix, async move {
                client
                    .get(request_prefix, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut nodes = Vec::new();
        let mut invalid = Vec::new();
        for kv in response.kvs() {
            match self.node_record(kv.key(), kv.value()) {
                Ok(node) => nodes.push(node),
                Err(err) => invalid.push(err.to_string()),
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(NodeList {
            nodes,
            invalid,
            revision,
        })
    }

    /// Decodes a `nodes/<id>` record and checks that it describes the node its key names.
    fn node_record(&self, key: &[u8], value: &[u8]) -> Result<NodeInfo, EtcdError> {
        let key_text = String::from_utf8_lossy(key).into_owned();
        let node: NodeInfo = decode(&key_text, "node record", value)?;
        let corrupt = |reason: String| EtcdError::Corrupt {
            key: key_text.clone(),
            what: "node record",
            reason,
        };
        node.validate().map_err(|e| corrupt(e.to_string()))?;
        if self.layout.node_id_of(key) != Some(node.id.as_str()) {
            return Err(corrupt(format!(
                "its id {:?} does not match the key",
                node.id
            )));
        }
        Ok(node)
    }

    /// The current map (with the revision a compare-and-swap needs), or `None` before the
    /// first assignment. The map is decoded but not checked against the config: callers
    /// do that with [`ShardMap::validate`].
    pub async fn read_map(&self) -> Result<MapRead, EtcdError> {
        let key = self.layout.map();
        let mut client = self.client.clone();
        let request_key = key.clone();
        let response = self
            .call(
                "get",
                &key,
                async move { client.get(request_key, None).await },
            )
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let current = match response.kvs().first() {
            Some(kv) => Some(StoredMap {
                map: decode(&key, "shard map", kv.value())?,
                mod_revision: kv.mod_revision(),
            }),
            None => None,
        };
        Ok(MapRead { current, revision })
    }

    /// Writes `map` if and only if the stored map is still `base` (`None`: if there is no map
    /// yet). `map.epoch` must be above `base`'s. Of two writers holding the same `base`,
    /// exactly one gets [`CasOutcome::Written`]; the other gets [`CasOutcome::Conflict`] with
    /// the map that won.
    pub async fn write_map(
        &self,
        base: Option<&StoredMap>,
        map: &ShardMap,
    ) -> Result<CasOutcome, EtcdError> {
        let key = self.layout.map();
        let compare = match base {
            Some(base) => {
                if map.epoch <= base.map.epoch {
                    return Err(EtcdError::EpochNotIncreasing {
                        stored: base.map.epoch,
                        proposed: map.epoch,
                    });
                }
                Compare::mod_revision(key.clone(), CompareOp::Equal, base.mod_revision)
            }
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        };
        let value = encode("shard map", map)?;
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut client = self.client.clone();
        let response = self
            .call("txn (compare-and-swap map)", &key, async move {
                client.txn(txn).await
            })
            .await?;
        if response.succeeded() {
            return Ok(CasOutcome::Written {
                revision: response.header().map_or(0, |h| h.revision()),
            });
        }
        let mut current = None;
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    current = Some(StoredMap {
                        map: decode(&key, "shard map", kv.value())?,
                        mod_revision: kv.mod_revision(),
                    });
                }
            }
        }
        Ok(CasOutcome::Conflict { current })
    }

    /// Watches the map from `from_revision` (use [`MapRead::revision`] + 1).
    pub fn watch_map(&self, from_revision: i64) -> Watch<MapEvent> {
        spawn_watch(self.clone(), MapTarget, from_revision)
    }

    /// Watches the live nodes from `from_revision` (use [`NodeList::revision`] + 1).
    pub fn watch_nodes(&self, from_revision: i64) -> Watch<NodeEvent> {
        spawn_watch(self.clone(), NodesTarget, from_revision)
    }
}

/// `message` followed by every distinct cause in `err`'s source chain, so that "tcp connect
/// error" says *why* ("Connection refused").
fn with_causes(message: &str, err: &dyn std::error::Error) -> String {
    let mut text = message.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        let line = source.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = source.source();
    }
    text
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, EtcdError> {
    serde_json::to_vec(value).map_err(|source| EtcdError::Encode { what, source })
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, EtcdError> {
    serde_json::from_slice(bytes).map_err(|e| EtcdError::Corrupt {
        key: key.to_string(),
        what,
        reason: e.to_string(),
    })
}

/// Keeps lease `lease` alive every third of its TTL, re-opening the keep-alive stream when
/// it breaks, and reports [`LeaseState::Lost`] once etcd says the lease is gone or a whole TTL
/// has passed without a refresh (by then etcd has expired it).
async fn keep_alive(
    store: ClusterStore,
    lease: i64,
    ttl: Duration,
    state: watch::Sender<LeaseState>,
) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let mut last_refresh = Instant::now();
    let mut pause = Duration::from_millis(100);
    let lost = |reason: String| {
        let _ = state.send(LeaseState::Lost { reason });
    };
    loop {
        let mut client = store.client.clone();
        match timeout(store.timeout, client.lease_keep_alive(lease)).await {
            Ok(Ok((mut keeper, mut responses))) => {
                last_refresh = Instant::now();
                pause = Duration::from_millis(100);
                loop {
                    sleep(every).await;
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match timeout(store.timeout, responses.message()).await {
                        Ok(Ok(Some(response))) if response.ttl() > 0 => {
                            last_refresh = Instant::now();
                        }
                        Ok(Ok(Some(_))) => {
                            lost(format!("lease {lease:x} expired"));
                            return;
                        }
                        _ => break,
                    }
                }
            }
            Ok(Err(err)) if lease_is_gone(&err) => {
                lost(format!("lease {lease:x} is gone: {err}"));
                return;
            }
            Ok(Err(_)) | Err(_) => {}
        }
        if last_refresh.elapsed() >= ttl {
            lost(format!(
                "lease {lease:x} not refreshed for {ttl:?}; etcd has expired it"
            ));
            return;
        }
        sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE).min(every);
    }
}

fn lease_is_gone(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::LeaseKeepAliveError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::NotFound,
        _ => false,
    }
}

/// What a watch watches and how its raw events become typed ones.
trait WatchTarget: Send + Sync + 'static {
    type Event: Send + 'static;
    /// The key (or prefix) and whether it is a prefix.
    fn key(&self, layout: &Layout) -> (String, bool);
    /// One etcd event as a typed event.
    fn convert(&self, store: &ClusterStore, event: &etcd_client::Event) -> Option<Self::Event>;
    /// The event telling the consumer the stream broke.
    fn interrupted(&self, reason: String) -> Self::Event;
    /// After history was compacted away: the whole current state, and its revision.
    fn resync(
        &self,
        store: &ClusterStore,
    ) -> impl Future<Output = Result<(Self::Event, i64), EtcdError>> + Send;
}

struct MapTarget;

impl WatchTarget for MapTarget {
    type Event = MapEvent;

    fn key(&self, layout: &Layout) -> (String, bool) {
        (layout.map(), false)
    }

    fn convert(&self, store: &ClusterStore, event: &etcd_client::Event) -> Option<MapEvent> {
        let kv = event.kv()?;
        Some(match event.event_type() {
            EventType::Delete => MapEvent::Deleted {
                revision: kv.mod_revision(),
            },
            EventType::Put => match decode(&store.layout.map(), "shard map", kv.value()) {
                Ok(map) => MapEvent::Changed(StoredMap {
                    map,
                    mod_revision: kv.mod_revision(),
                }),
                Err(err) => MapEvent::Invalid {
                    revision: kv.mod_revision(),
                    reason: err.to_string(),
                },
            },
        })
    }

    fn interrupted(&self, reason: String) -> MapEvent {
        MapEvent::Interrupted { reason }
    }

    async fn resync(&self, store: &ClusterStore) -> Result<(MapEvent, i64), EtcdError> {
        let read = store.read_map().await?;
        let event = match read.current {
            Some(stored) => MapEvent::Changed(stored),
            None => MapEvent::Deleted {
                revision: read.revision,
            },
        };
        Ok((event, read.revision))
    }
}

struct NodesTarget;

impl WatchTarget for NodesTarget {
    type Event = NodeEvent;

    fn key(&self, layout: &Layout) -> (String, bool) {
        (layout.nodes_prefix(), true)
    }

    fn convert(&self, store: &ClusterStore, event: &etcd_client::Event) -> Option<NodeEvent> {
        let kv = event.kv()?;
        Some(match event.event_type() {
            EventType::Delete => match store.layout.node_id_of(kv.key()) {
                Some(id) => NodeEvent::Down { id: id.to_string() },
                None => NodeEvent::Invalid {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: "not a nodes/<id> key".to_string(),
                },
            },
            EventType::Put => match store.node_record(kv.key(), kv.value()) {
                Ok(node) => NodeEvent::Up(node),
                Err(err) => NodeEvent::Invalid {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: err.to_string(),
                },
            },
        })
    }

    fn interrupted(&self, reason: String) -> NodeEvent {
        NodeEvent::Interrupted { reason }
    }

    async fn resync(&self, store: &ClusterStore) -> Result<(NodeEvent, i64), EtcdError> {
        let list = store.list_nodes().await?;
        let revision = list.revision;
        Ok((NodeEvent::Resync(list), revision))
    }
}

fn spawn_watch<W: WatchTarget>(
    store: ClusterStore,
    target: W,
    from_revision: i64,
) -> Watch<W::Event> {
    let (tx, events) = mpsc::channel(WATCH_BUFFER);
    let task = tokio::spawn(run_watch(store, target, from_revision, tx));
    Watch { events, task }
}

/// Follows the key from `next` on, forever: on a broken stream it reports
/// [`WatchTarget::interrupted`] and re-opens from the revision after the last event seen; if
/// etcd compacted that revision away, it reads the whole state again. Ends when the consumer
/// drops the [`Watch`].
async fn run_watch<W: WatchTarget>(
    store: ClusterStore,
    target: W,
    mut next: i64,
    tx: mpsc::Sender<W::Event>,
) {
    let (key, prefix) = target.key(&store.layout);
    let mut pause = Duration::from_millis(100);
    loop {
        let mut options = WatchOptions::new().with_start_revision(next.max(0));
        if prefix {
            options = options.with_prefix();
        }
        let mut client = store.client.clone();
        let reason = match timeout(store.timeout, client.watch(key.clone(), Some(options))).await {
            Err(_) => format!("opening the watch on {key} timed out"),
            Ok(Err(err)) => format!("opening the watch on {key}: {err}"),
            Ok(Ok(mut stream)) => loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if response.compact_revision() > 0 {
                            match target.resync(&store).await {
                                Ok((event, revision)) => {
                                    next = revision + 1;
                                    if tx.send(event).await.is_err() {
                                        return;
                                    }
                                    break format!(
                                        "history before revision {} was compacted; re-read",
                                        response.compact_revision()
                                    );
                                }
                                Err(err) => break err.to_string(),
                            }
                        }
                        if response.canceled() {
                            break format!(
                                "etcd cancelled the watch: {}",
                                response.cancel_reason()
                            );
                        }
                        pause = Duration::from_millis(100);
                        for event in response.events() {
                            if let Some(kv) = event.kv() {
                                next = kv.mod_revision() + 1;
                            }
                            if let Some(typed) = target.convert(&store, event) {
                                if tx.send(typed).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Ok(None) => break format!("etcd closed the watch on {key}"),
                    Err(err) => break format!("watch on {key}: {err}"),
                }
            },
        };
        if tx.send(target.interrupted(reason)).await.is_err() {
            return;
        }
        sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_spells_every_key_under_the_cluster_prefix() {
        let layout = Layout::new("prod-1").expect("valid name");
        assert_eq!(layout.prefix(), "/ringkv/prod-1/");
        assert_eq!(layout.config(), "/ringkv/prod-1/config");
        assert_eq!(layout.nodes_prefix(), "/ringkv/prod-1/nodes/");
        assert_eq!(layout.node("n1"), "/ringkv/prod-1/nodes/n1");
        assert_eq!(layout.map(), "/ringkv/prod-1/map");
        assert_eq!(layout.controller(), "/ringkv/prod-1/controller");
        assert_eq!(layout.node_id_of(b"/ringkv/prod-1/nodes/n1"), Some("n1"));
        assert_eq!(layout.node_id_of(b"/ringkv/prod-1/nodes/"), None);
        assert_eq!(layout.node_id_of(b"/ringkv/prod-2/nodes/n1"), None);
        assert_eq!(layout.node_id_of(b"/ringkv/prod-1/map"), None);
    }

    #[test]
    fn cluster_names_cannot_escape_their_prefix() {
        for bad in ["", "a/b", "../x", "with space"] {
            assert!(
                matches!(Layout::new(bad), Err(EtcdError::InvalidCluster { .. })),
                "{bad:?}"
            );
        }
        // A name that is a prefix of another must not see the other's keys.
        let short = Layout::new("a").expect("valid");
        assert_eq!(short.node_id_of(b"/ringkv/ab/nodes/n1"), None);
    }
}
