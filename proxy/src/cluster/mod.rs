//! The cluster backend: routes each command to the storage node that is its shard's primary
//! in the map the proxy follows, over that node's pooled, pipelined connections.
//!
//! - [`config`]: the `ringkv-proxy` command line.
//! - `routes`: one epoch's table (shard → node → pool).
//! - `follow`: the etcd follower that rebuilds the table on every map or node change.
//! - `frame`: storage replies as client replies.
//! - `transaction`: a client's WATCH and EXEC, sent whole to the node of their one shard.
//!
//! How commands go out, by their table route:
//! - one key: to the key's shard, whole;
//! - several keys (MGET, MSET, DEL, EXISTS, UNLINK, TOUCH): one request per storage node
//!   (a `SHARDS` envelope, whatever the number of its shards the keys are in), sent
//!   together, merged back in key order; when every key is in one shard, the command goes
//!   whole. A node part that is refused is sent again per shard. MSETNX, RENAME, RENAMENX,
//!   COPY and LCS must run whole, so across shards they are refused with Redis Cluster's
//!   CROSSSLOT error (hash tags keep keys together);
//! - every shard (DBSIZE, KEYS, FLUSHALL, RANDOMKEY): one request per shard, merged; SCAN
//!   walks the shards in order, its cursor naming shard and position.
//!
//! A node refusing a request (MOVED: not its shard at its epoch; STALE: its map is older) is
//! never seen by the client: the proxy waits for a newer map or for the node to catch up and
//! sends again, a bounded number of times. A node that does not answer makes its shards fail
//! with a `CLUSTERDOWN` error within the request timeout; other shards are unaffected.

pub mod config;
mod envelope;
mod follow;
mod frame;
/// One epoch's routing table, public for the routing micro-benchmarks (`proxy/benches`).
pub mod routes;
mod transaction;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use rand::Rng;
use ringkv_common::command::{Cmd, CommandSpec, Route};
use ringkv_common::cursor::{self, parse_cursor};
use ringkv_common::etcd::ClusterStore;
use ringkv_common::internal::Refusal;
use ringkv_common::metrics::names;
use ringkv_common::placement::shard_of;
use ringkv_common::resp::Reply;
use ringkv_common::shardmap::ClusterConfig;
use ringkv_storage::StorageStats;
use tokio::task::JoinHandle;

use crate::pool::{Pending, PoolConfig, PoolError};
use follow::Follower;
pub use follow::Shared;
use routes::Routes;
pub use transaction::transaction_refusal;

/// Redis Cluster's reply to a multi-key command whose keys are in different slots.
const CROSSSLOT: Reply = Reply::error("CROSSSLOT Keys in request don't hash to the same slot");

/// Before the first map: nothing can be routed.
const NO_MAP: Reply =
    Reply::error("CLUSTERDOWN The cluster is down (no shard map yet: run `ringkv-admin assign`)");

/// How many times a request refused with MOVED or STALE is sent again.
const MAX_ATTEMPTS: u32 = 6;

/// How long a request refused with MOVED waits for the newer map before trying again.
const MAP_WAIT: Duration = Duration::from_secs(1);

/// Most shards one SCAN call walks before handing a cursor back, so a sparse keyspace does
/// not make one call visit every node.
const SCAN_SHARDS_PER_CALL: u32 = 16;

/// Shards asked at once by RANDOMKEY.
const RANDOMKEY_FANOUT: usize = 16;

/// How often the pools' figures are copied to the metrics exporter.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// The cluster as INFO describes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterStatus {
    /// The map epoch routed by (0: no map yet).
    pub epoch: u64,
    /// Shard count.
    pub shards: u32,
    /// Storage nodes the map names.
    pub map_nodes: usize,
    /// How many of those are registered in etcd (their lease is alive).
    pub registered_nodes: usize,
    /// Whether etcd answered the last read or watch event.
    pub etcd_up: bool,
}

/// The proxy's view of the cluster, shared by every client connection.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    shards: u32,
    follower: JoinHandle<()>,
    exporter: JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.follower.abort();
        self.exporter.abort();
    }
}

impl Cluster {
    /// Starts following `store`'s cluster (whose config is `config`); requests are routed as
    /// soon as the first map is read.
    pub fn start(store: ClusterStore, config: ClusterConfig, pool: PoolConfig) -> Cluster {
        let shared = Arc::new(Shared::new());
        let shards = config.shards;
        let follower = tokio::spawn(Follower::new(store, config, pool, Arc::clone(&shared)).run());
        let exporter = tokio::spawn(export_pools(Arc::clone(&shared)));
        Cluster {
            shared,
            shards,
            follower,
            exporter,
        }
    }

    /// What INFO's `# Cluster` section shows.
    pub fn status(&self) -> ClusterStatus {
        let routes = self.shared.routes.load_full();
        let (map_nodes, registered) = routes.as_ref().map_or((0, 0), |routes| {
            (
                routes.nodes.len(),
                routes.nodes.iter().filter(|n| n.registered).count(),
            )
        });
        ClusterStatus {
            epoch: routes.as_ref().map_or(0, |r| r.epoch),
            shards: self.shards,
            map_nodes,
            registered_nodes: registered,
            etcd_up: self
                .shared
                .etcd_up
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The engine figures of INFO, summed over every node of the map (`keys` only with
    /// `count_keys`, which makes each node walk its shards).
    pub async fn stats(&self, count_keys: bool) -> StorageStats {
        let mut args = vec![Bytes::from_static(b"INFO")];
        if count_keys {
            args.push(Bytes::from_static(b"keyspace"));
        }
        let mut total = StorageStats::default();
        for (id, reply) in self.ask_nodes(&args).await {
            let text = match reply {
                Reply::Verbatim(text) | Reply::Bulk(text) => text,
                other => {
                    tracing::warn!(node = %id, ?other, "INFO of a storage node failed");
                    continue;
                }
            };
            add_node_info(&mut total, &String::from_utf8_lossy(&text));
        }
        total
    }

    /// Sends a command outside any shard envelope (INFO) to every node of the current map,
    /// and returns each node's id with its reply.
    pub async fn ask_nodes(&self, args: &[Bytes]) -> Vec<(String, Reply)> {
        let Some(routes) = self.shared.routes.load_full() else {
            return Vec::new();
        };
        join_all(routes.nodes.iter().map(|node| async move {
            let reply = match &node.pool {
                Some(pool) => match pool.call(args.to_vec()).await {
                    Ok(frame) => frame::to_reply(frame),
                    Err(err) => Reply::error_owned(format!("ERR {err}")),
                },
                None => Reply::error("ERR no known address"),
            };
            (node.id.clone(), reply)
        }))
        .await
    }

    /// The cluster's shard count.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The epoch of the map requests are routed by (0 before the first).
    pub fn epoch(&self) -> u64 {
        *self.shared.epoch.borrow()
    }

    /// Runs one data command.
    pub async fn execute(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        match spec.route {
            Route::SingleShard => match spec.key_indexes(args.len()).next() {
                Some(i) => self.call(shard_of(&args[i], self.shards), args).await,
                None => Reply::error("ERR command has no key to route by"),
            },
            Route::MultiKey => self.multi_key(spec, args).await,
            Route::AllShards => self.all_shards(spec, args).await,
            Route::Local => Reply::error("ERR command is not routed to storage"),
        }
    }

    /// Sends `args` to shard `shard`'s primary; retries refusals; turns failures into
    /// CLUSTERDOWN replies.
    async fn call(&self, shard: u32, args: &[Bytes]) -> Reply {
        self.call_from(0, shard, args).await
    }

    /// [`call`](Self::call), with `attempt` tries already made.
    async fn call_from(&self, mut attempt: u32, shard: u32, args: &[Bytes]) -> Reply {
        loop {
            attempt += 1;
            let Some(routes) = self.shared.routes.load_full() else {
                return NO_MAP;
            };
            let reply = send(&routes, shard, args).await;
            let Some(refusal) = refusal_of(&reply) else {
                return reply;
            };
            if let Err(reply) = self.wait_out(refusal, routes.epoch, shard, attempt).await {
                return reply;
            }
        }
    }

    /// After a refusal of try `attempt` of a request routed at map `epoch`: waits for the
    /// newer map (MOVED) or a while (STALE) before the next try, or gives up with TRYAGAIN.
    async fn wait_out(
        &self,
        refusal: Refusal,
        epoch: u64,
        shard: u32,
        attempt: u32,
    ) -> Result<(), Reply> {
        if attempt >= MAX_ATTEMPTS {
            return Err(Reply::error_owned(format!(
                "TRYAGAIN shard {shard} is changing hands; try again"
            )));
        }
        count_retry(refusal);
        match refusal {
            Refusal::Moved { epoch: theirs, .. } => self.await_map(theirs.max(epoch + 1)).await,
            Refusal::Stale { .. } => tokio::time::sleep(Duration::from_millis(5 << attempt)).await,
        }
        Ok(())
    }

    /// Sends a command to its node at once, when that needs no waiting (a map, a serving
    /// connection with queue room), so that the caller can keep it in flight without a future
    /// of its own: a single-key command, or a multi-key one whose keys all go down one
    /// connection of one node (in a `SHARD` envelope if they are in one shard, else one
    /// `SHARDS` part). `None` otherwise, and nothing is sent: run it with
    /// [`execute`](Self::execute). Requests a caller sends now reach each connection in the
    /// order they are sent, as `execute` would send them. `now` is when the request arrived:
    /// its timeout runs from then (the caller reads the clock once for a batch).
    pub fn send_now(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        now: Instant,
    ) -> Option<Started> {
        let routes = self.shared.routes.load();
        let routes = routes.as_ref()?;
        match spec.route {
            Route::SingleShard => {
                let key = spec.key_indexes(args.len()).next()?;
                let shard = shard_of(&args[key], self.shards);
                let request = envelope::shard(shard, routes.epoch, args);
                start(routes, shard, request, Sent::Shard, now)
            }
            Route::MultiKey => self.send_keys_now(routes, spec, args, now),
            Route::AllShards | Route::Local => None,
        }
    }

    /// [`send_now`](Self::send_now) for a multi-key command, as [`multi_key`](Self::multi_key)
    /// would send it when it makes one request.
    fn send_keys_now(
        &self,
        routes: &Routes,
        spec: &'static CommandSpec,
        args: &[Bytes],
        now: Instant,
    ) -> Option<Started> {
        if spec.cmd == Cmd::Lcs {
            // Its IDX reply is a map the node's RESP2 flattens: `multi_key` restores it.
            return None;
        }
        let first = shard_of(&args[spec.key_indexes(args.len()).next()?], self.shards);
        let node = *routes.primaries.get(first as usize)?;
        let pool = routes.nodes.get(node)?.pool.as_ref()?;
        let lane = pool.lane(first as usize);
        let mut single = true;
        for i in spec.key_indexes(args.len()) {
            let shard = shard_of(&args[i], self.shards);
            if shard != first {
                single = false;
                let same_node = routes.primaries.get(shard as usize) == Some(&node);
                if !same_node || pool.lane(shard as usize) != lane {
                    return None;
                }
            }
        }
        if single {
            let request = envelope::shard(first, routes.epoch, args);
            return start(routes, first, request, Sent::Shard, now);
        }
        // Refused whole (CROSSSLOT) or malformed: `multi_key` answers those.
        if spec.cmd.all_or_nothing()
            || (spec.cmd == Cmd::Mset && !(args.len() - 1).is_multiple_of(2))
        {
            return None;
        }
        let request = envelope::shards(routes.epoch, args);
        start(routes, first, request, Sent::Keys(spec), now)
    }

    /// Runs a command its node refused after [`send_now`](Self::send_now) sent it, as
    /// [`execute`](Self::execute) would have: a single shard's request waits and is sent
    /// again; a `SHARDS` part is sent again per shard.
    pub async fn retry(&self, refused: Refused, args: &[Bytes]) -> Reply {
        let Refused {
            shard,
            refusal,
            epoch,
            sent,
        } = refused;
        match sent {
            Sent::Shard => {
                if let Err(reply) = self.wait_out(refusal, epoch, shard, 1).await {
                    return reply;
                }
                self.call_from(1, shard, args).await
            }
            Sent::Keys(spec) => {
                count_retry(refusal);
                self.per_shard(spec, args).await
            }
        }
    }

    /// Waits (bounded) until the map is at least `epoch`, asking the follower to read it.
    async fn await_map(&self, epoch: u64) {
        self.shared.nudge.notify_one();
        let mut receiver = self.shared.epoch.subscribe();
        let _ = tokio::time::timeout(MAP_WAIT, receiver.wait_for(|&e| e >= epoch)).await;
    }

    /// MGET, MSET, DEL, EXISTS, UNLINK, TOUCH split per node; MSETNX, RENAME, RENAMENX, COPY
    /// and LCS whole or refused ([`Cmd::all_or_nothing`]).
    async fn multi_key(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        // BITOP's first key is its third argument.
        let Some(first) = spec.key_indexes(args.len()).next() else {
            return Reply::error("ERR command has no key to route by");
        };
        let first = shard_of(&args[first], self.shards);
        let single = spec
            .key_indexes(args.len())
            .all(|i| shard_of(&args[i], self.shards) == first);
        if single {
            let reply = self.call(first, args).await;
            return match spec.cmd {
                Cmd::Lcs => frame::lcs_reply(reply),
                _ => reply,
            };
        }
        if spec.cmd.all_or_nothing() {
            return CROSSSLOT;
        }
        if matches!(spec.cmd, Cmd::Mset) && !(args.len() - 1).is_multiple_of(2) {
            return ringkv_common::command::wrong_arity(spec.name);
        }
        let Some(routes) = self.shared.routes.load_full() else {
            return NO_MAP;
        };
        // One request per node (and per connection lane to it, which keeps a pipeline's
        // requests on each key in order), whatever the number of shards its keys are in.
        let parts = split_keys(spec, args, |key| {
            let shard = shard_of(key, self.shards);
            let node = routes.primaries.get(shard as usize).copied();
            match node.and_then(|n| Some((n, routes.nodes.get(n)?.pool.as_ref()?))) {
                Some((n, pool)) => (n as u64) << 32 | pool.lane(shard as usize) as u64,
                None => UNROUTED,
            }
        });
        let replies = join_all(
            parts
                .iter()
                .map(|part| self.send_node_part(&routes, spec, part)),
        )
        .await;
        merge_parts(spec, args, &parts, replies)
    }

    /// Sends one node's part of a multi-key command in a `SHARDS` envelope. A part the node
    /// refuses (a shard moved, or the node's map is behind) or that the table cannot route
    /// is sent again per shard, where each shard's request waits for the map it needs.
    async fn send_node_part(
        &self,
        routes: &Routes,
        spec: &'static CommandSpec,
        part: &Part,
    ) -> Reply {
        let node = (part.to != UNROUTED)
            .then(|| routes.nodes.get((part.to >> 32) as usize))
            .flatten();
        if let Some((node, pool)) = node.and_then(|n| Some((n, n.pool.as_ref()?))) {
            let shard = shard_of(&part.args[1], self.shards);
            let request = envelope::shards(routes.epoch, &part.args);
            let reply = match pool.call_on(shard as usize, request).await {
                Ok(frame) => frame::to_reply(frame),
                Err(err) => return node_down(shard, &node.id, node.registered, &err),
            };
            match refusal_of(&reply) {
                None => return reply,
                Some(refusal) => count_retry(refusal),
            }
        }
        self.per_shard(spec, &part.args).await
    }

    /// A multi-key command split per shard, each shard's request retried on its own.
    async fn per_shard(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        let parts = split_keys(spec, args, |key| u64::from(shard_of(key, self.shards)));
        let replies = join_all(
            parts
                .iter()
                .map(|part| self.call(part.to as u32, &part.args)),
        )
        .await;
        merge_parts(spec, args, &parts, replies)
    }

    /// DBSIZE, KEYS, FLUSHALL, FLUSHDB, RANDOMKEY over every shard; SCAN shard by shard.
    async fn all_shards(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        match spec.cmd {
            Cmd::Scan => return self.scan(args).await,
            Cmd::Randomkey => return self.random_key(args).await,
            _ => {}
        }
        let replies = join_all((0..self.shards).map(|shard| self.call(shard, args))).await;
        if let Some(error) = replies.iter().find(|r| r.is_error()) {
            return error.clone();
        }
        match spec.cmd {
            Cmd::Dbsize => sum(replies),
            Cmd::Keys => {
                let mut keys = Vec::new();
                for reply in replies {
                    match reply {
                        Reply::Array(found) => keys.extend(found),
                        other => return unexpected(&other),
                    }
                }
                Reply::Array(keys)
            }
            _ => Reply::Ok,
        }
    }

    /// SCAN: asks the cursor's shard, moving on to the next shards while the page is short.
    async fn scan(&self, args: &[Bytes]) -> Reply {
        let Some(mut cursor) = parse_cursor(&args[1]) else {
            return Reply::error("ERR invalid cursor");
        };
        let count = scan_count(args);
        let mut found: Vec<Reply> = Vec::new();
        let mut request = args.to_vec();
        for _ in 0..SCAN_SHARDS_PER_CALL {
            let shard = cursor::shard_of(cursor);
            if shard >= u64::from(self.shards) {
                return scan_page(0, found);
            }
            let shard = shard as u32;
            request[1] = Bytes::copy_from_slice(itoa::Buffer::new().format(cursor).as_bytes());
            let reply = self.call(shard, &request).await;
            let Some((next, keys)) = split_scan_page(reply.clone()) else {
                return if reply.is_error() {
                    reply
                } else {
                    unexpected(&reply)
                };
            };
            found.extend(keys);
            if next != 0 {
                return scan_page(next, found);
            }
            if shard + 1 >= self.shards {
                return scan_page(0, found);
            }
            cursor = cursor::start_of(shard + 1);
            if found.len() as u64 >= count {
                break;
            }
        }
        scan_page(cursor, found)
    }

    /// RANDOMKEY: asks shards in a random order, a few at a time, until one has a key.
    async fn random_key(&self, args: &[Bytes]) -> Reply {
        let start = rand::thread_rng().gen_range(0..self.shards);
        let order: Vec<u32> = (0..self.shards)
            .map(|i| (start + i) % self.shards)
            .collect();
        for chunk in order.chunks(RANDOMKEY_FANOUT) {
            let replies = join_all(chunk.iter().map(|&shard| self.call(shard, args))).await;
            for reply in replies {
                match reply {
                    Reply::Nil => continue,
                    other => return other,
                }
            }
        }
        Reply::Nil
    }
}

/// One request to shard `shard`'s primary at the table's epoch.
async fn send(routes: &Routes, shard: u32, args: &[Bytes]) -> Reply {
    let Some(node) = routes.primary(shard) else {
        return Reply::error_owned(format!(
            "CLUSTERDOWN Hash slot not served (shard {shard} has no primary in map epoch {})",
            routes.epoch
        ));
    };
    let Some(pool) = &node.pool else {
        return Reply::error_owned(format!(
            "CLUSTERDOWN Hash slot not served (shard {shard}: storage node {} has no known \
             address; it has not registered in etcd)",
            node.id
        ));
    };
    let request = envelope::shard(shard, routes.epoch, args);
    match pool.call_on(shard as usize, request).await {
        Ok(frame) => frame::to_reply(frame),
        Err(err) => node_down(shard, &node.id, node.registered, &err),
    }
}

/// Queues `request` for shard `shard`'s primary (on the shard's connection), if that needs no
/// waiting.
fn start(
    routes: &Routes,
    shard: u32,
    request: Vec<Bytes>,
    sent: Sent,
    now: Instant,
) -> Option<Started> {
    let node = routes.primary(shard)?;
    let pending = node.pool.as_ref()?.start_on(shard as usize, request, now)?;
    Some(Started {
        shard,
        epoch: routes.epoch,
        pending,
        sent,
    })
}

/// How a command went out.
#[derive(Clone, Copy)]
enum Sent {
    /// Whole, to one shard (`SHARD`).
    Shard,
    /// A multi-key command's keys in one `SHARDS` part.
    Keys(&'static CommandSpec),
}

/// A command [`Cluster::send_now`] sent; its reply on the way. It holds no handle on its
/// node (a reference count both event loops would update per request): a failure finds the
/// node again by address ([`Cluster::poll_answer`]).
pub struct Started {
    /// Its (first key's) shard.
    shard: u32,
    /// The map epoch it was routed by.
    epoch: u64,
    pending: Pending,
    sent: Sent,
}

/// What a [`Started`] command came to.
pub enum Answer {
    /// The client's reply (a node's failure already turned into CLUSTERDOWN).
    Reply(Reply),
    /// The node refused it, so it did not run: [`Cluster::retry`] runs it.
    Refused(Refused),
}

/// A refusal of a [`Started`] command, for [`Cluster::retry`].
pub struct Refused {
    shard: u32,
    refusal: Refusal,
    epoch: u64,
    sent: Sent,
}

impl Cluster {
    /// Polls for the answer to `started`.
    pub fn poll_answer(&self, started: &mut Started, cx: &mut Context<'_>) -> Poll<Answer> {
        let result = ready!(Pin::new(&mut started.pending).poll(cx));
        let reply = match result {
            Ok(frame) => frame::to_reply(frame),
            Err(err) => return Poll::Ready(Answer::Reply(self.failed(started.shard, &err))),
        };
        Poll::Ready(match (refusal_of(&reply), started.sent) {
            (None, Sent::Shard) => Answer::Reply(reply),
            (None, Sent::Keys(spec)) => Answer::Reply(merge_whole(spec, reply)),
            (Some(refusal), sent) => Answer::Refused(Refused {
                shard: started.shard,
                refusal,
                epoch: started.epoch,
                sent,
            }),
        })
    }

    /// The reply to a request for `shard` whose node failed with `err`, counted in that
    /// node's figures. The node is found by address in the current map (a node the map has
    /// dropped meanwhile is named by its address).
    fn failed(&self, shard: u32, err: &PoolError) -> Reply {
        let addr = err.addr();
        let routes = self.shared.routes.load();
        let node = routes
            .as_ref()
            .and_then(|routes| routes.nodes.iter().find(|n| n.addr == Some(addr)));
        match node {
            Some(node) => {
                if let Some(pool) = &node.pool {
                    pool.count_failure(err);
                }
                node_down(shard, &node.id, node.registered, err)
            }
            None => node_down(shard, &addr.to_string(), true, err),
        }
    }
}

/// The refusal (MOVED, STALE) a node's reply carries, if it is one.
fn refusal_of(reply: &Reply) -> Option<Refusal> {
    match reply {
        Reply::Error(text) => Refusal::parse(text),
        _ => None,
    }
}

/// Counts a request sent again because a node refused it.
fn count_retry(refusal: Refusal) {
    let reason = match refusal {
        Refusal::Moved { .. } => "moved",
        Refusal::Stale { .. } => "stale",
    };
    metrics::counter!(names::BACKEND_RETRIES, "reason" => reason).increment(1);
}

/// The client's reply when shard `shard`'s node did not answer.
fn node_down(shard: u32, id: &str, registered: bool, err: &PoolError) -> Reply {
    let reason = match err {
        PoolError::Timeout { .. } => "timeout",
        _ => "node_down",
    };
    metrics::counter!(names::BACKEND_FAILURES, "node" => id.to_string(), "reason" => reason)
        .increment(1);
    let lease = if registered {
        ""
    } else {
        "; its etcd lease has expired"
    };
    Reply::error_owned(
        format!(
            "CLUSTERDOWN Hash slot not served (shard {shard}: storage node {id}: {err}{lease})"
        )
        .replace(['\r', '\n'], " "),
    )
}

/// Copies every pool's figures to the metrics exporter, once a second.
async fn export_pools(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(EXPORT_EVERY);
    loop {
        tick.tick().await;
        let Some(routes) = shared.routes.load_full() else {
            continue;
        };
        for node in &routes.nodes {
            let Some(pool) = &node.pool else { continue };
            let stats = pool.stats();
            let id = node.id.clone();
            metrics::gauge!(names::BACKEND_CONNECTIONS, "node" => id.clone())
                .set(stats.connections_up as f64);
            metrics::gauge!(names::BACKEND_IN_FLIGHT, "node" => id.clone())
                .set(stats.in_flight as f64);
            metrics::counter!(names::BACKEND_BATCHES, "node" => id.clone()).absolute(stats.batches);
            metrics::counter!(names::BACKEND_BATCHED_REQUESTS, "node" => id.clone())
                .absolute(stats.batched_requests);
            metrics::counter!(names::BACKEND_RECONNECTS, "node" => id).absolute(stats.reconnects);
        }
    }
}

/// Adds the figures of one storage node's INFO text to `total`.
fn add_node_info(total: &mut StorageStats, text: &str) {
    let number = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
    for line in text.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        match field {
            "keyspace_hits" => total.keyspace_hits += number(value),
            "keyspace_misses" => total.keyspace_misses += number(value),
            "expired_keys" => total.expired_keys += number(value),
            "db0" => {
                for pair in value.split(',') {
                    match pair.split_once('=') {
                        Some(("keys", n)) => total.keys += number(n),
                        Some(("expires", n)) => total.expires += number(n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// A part of a multi-key command with no node to go to in the table (sent per shard, which
/// reports why).
const UNROUTED: u64 = u64::MAX;

/// One destination's share of a multi-key command: a command of its own (the name, then its
/// keys, with their values for MSET) and where each of its keys is in the client's command.
struct Part {
    /// The destination: a shard, or a node and lane.
    to: u64,
    args: Vec<Bytes>,
    positions: Vec<usize>,
}

/// Splits a multi-key command by the destination of each key, keeping the keys' order.
fn split_keys(
    spec: &CommandSpec,
    args: &[Bytes],
    mut destination: impl FnMut(&Bytes) -> u64,
) -> Vec<Part> {
    let step = spec.keys.step.max(1) as usize;
    let mut parts: Vec<Part> = Vec::new();
    for (position, i) in (1..args.len()).step_by(step).enumerate() {
        let to = destination(&args[i]);
        let part = match parts.iter().position(|p| p.to == to) {
            Some(p) => &mut parts[p],
            None => {
                parts.push(Part {
                    to,
                    args: vec![args[0].clone()],
                    positions: Vec::new(),
                });
                parts.last_mut().expect("just pushed")
            }
        };
        part.args.extend_from_slice(&args[i..i + step]);
        part.positions.push(position);
    }
    parts
}

/// The client's reply to a multi-key command from its parts' replies: the first error, or
/// MGET's values back in key order, MSET's OK, the others' counts summed.
fn merge_parts(spec: &CommandSpec, args: &[Bytes], parts: &[Part], replies: Vec<Reply>) -> Reply {
    if let Some(error) = replies.iter().find(|r| r.is_error()) {
        return error.clone();
    }
    match spec.cmd {
        Cmd::Mget => {
            let step = spec.keys.step.max(1) as usize;
            let mut merged = vec![Reply::Nil; (args.len() - 1) / step];
            for (part, reply) in parts.iter().zip(replies) {
                let Reply::Array(values) = reply else {
                    return unexpected(&reply);
                };
                for (position, value) in part.positions.iter().zip(values) {
                    merged[*position] = value;
                }
            }
            Reply::Array(merged)
        }
        Cmd::Mset => Reply::Ok,
        _ => sum(replies),
    }
}

/// The client's reply to a multi-key command from the reply of one part that carried every
/// key in order: as [`merge_parts`] would make it.
fn merge_whole(spec: &CommandSpec, reply: Reply) -> Reply {
    match (spec.cmd, &reply) {
        (_, Reply::Error(_)) | (Cmd::Mget, Reply::Array(_)) => reply,
        (Cmd::Mget, _) => unexpected(&reply),
        (Cmd::Mset, _) => Reply::Ok,
        (_, Reply::Int(_)) => reply,
        _ => unexpected(&reply),
    }
}

/// The sum of integer replies (DEL, EXISTS, DBSIZE…).
fn sum(replies: Vec<Reply>) -> Reply {
    let mut total: i64 = 0;
    for reply in replies {
        match reply {
            Reply::Int(n) => total = total.saturating_add(n),
            other => return unexpected(&other),
        }
    }
    Reply::Int(total)
}

/// A storage reply of the wrong shape: a bug or a version mismatch, reported, not panicked on.
fn unexpected(reply: &Reply) -> Reply {
    tracing::error!(?reply, "unexpected reply from a storage node");
    Reply::error("ERR unexpected reply from a storage node")
}

/// SCAN's COUNT option (10 when absent or unreadable: the node reports bad values).
fn scan_count(args: &[Bytes]) -> u64 {
    let options = args.get(2..).unwrap_or_default();
    options
        .chunks_exact(2)
        .rev()
        .find(|pair| pair[0].eq_ignore_ascii_case(b"count"))
        .and_then(|pair| ringkv_common::resp::request::parse_i64(&pair[1]))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(10)
}

/// A SCAN reply's cursor and keys.
fn split_scan_page(reply: Reply) -> Option<(u64, Vec<Reply>)> {
    let Reply::Array(mut parts) = reply else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let keys = match parts.pop()? {
        Reply::Array(keys) => keys,
        _ => return None,
    };
    let next = match parts.pop()? {
        Reply::Bulk(text) => parse_cursor(&text)?,
        _ => return None,
    };
    Some((next, keys))
}

/// A SCAN reply.
fn scan_page(cursor: u64, keys: Vec<Reply>) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Bytes::copy_from_slice(
            itoa::Buffer::new().format(cursor).as_bytes(),
        )),
        Reply::Array(keys),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_figures_add_up() {
        let mut total = StorageStats::default();
        let one = "# Stats\r\nexpired_keys:2\r\nkeyspace_hits:10\r\nkeyspace_misses:3\r\n\
                   \r\n# Keyspace\r\ndb0:keys=7,expires=1,avg_ttl=0\r\n";
        add_node_info(&mut total, one);
        add_node_info(
            &mut total,
            "keyspace_hits:5\r\nbogus\r\nkeyspace_misses:x\r\n",
        );
        assert_eq!(total.keyspace_hits, 15);
        assert_eq!(total.keyspace_misses, 3);
        assert_eq!(total.expired_keys, 2);
        assert_eq!((total.keys, total.expires), (7, 1));
    }

    #[test]
    fn scan_count_reads_the_last_count_option() {
        let args = |words: &[&str]| -> Vec<Bytes> {
            words
                .iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect()
        };
        assert_eq!(scan_count(&args(&["SCAN", "0"])), 10);
        assert_eq!(scan_count(&args(&["SCAN", "0", "COUNT", "50"])), 50);
        assert_eq!(
            scan_count(&args(&["SCAN", "0", "MATCH", "count", "count", "7"])),
            7
        );
    }
}
