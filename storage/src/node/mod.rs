//! A storage node of a cluster (`ringkv-storage`): the engine of this crate behind a port that
//! proxies reach, following the shard map in etcd.
//!
//! - [`config`]: the command line.
//! - `ownership`: which shards are served at which map epoch; the MOVED / STALE check.
//! - `membership`: registration under an etcd lease, and the map watch that opens shards.
//! - `server`: the connections from proxies (the internal protocol of
//!   [`ringkv_common::internal`]).
//! - `transactions`: a proxy client's WATCH and EXEC, run in the shard of its keys.
//!
//! [`run`] ties them together and returns after a clean shutdown.

pub mod config;
mod membership;
mod ownership;
mod server;
mod transactions;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ringkv_common::etcd::ClusterStore;
use ringkv_common::event_loops::EventLoops;
use ringkv_common::internal::cluster_secret;
use ringkv_common::shardmap::{ClusterConfig, NodeInfo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tally::Tally;
use crate::{Hosting, Storage, StorageConfig};
pub use config::{FlagError, NodeConfig};
use membership::Membership;
use ownership::Ownership;
use server::NodeContext;

/// How long shutdown lets connections finish the batch they are running.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How long shutdown waits for etcd to revoke the lease (the record then vanishes at once
/// rather than after the TTL).
const REVOKE_DEADLINE: Duration = Duration::from_secs(2);

/// Metadata keys recording whose data a directory holds.
const NODE_ID_META: &[u8] = b"ringkv.node_id";
const CLUSTER_META: &[u8] = b"ringkv.cluster";

/// Why the node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A flag's value cannot be used (exit code 2).
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// Anything else (exit code 1).
    #[error("{0}")]
    Fatal(String),
}

/// Runs the node until `stop` completes, then drains and flushes.
pub async fn run(config: NodeConfig, stop: impl Future<Output = ()>) -> Result<(), NodeError> {
    config.validate()?;
    let store = ClusterStore::connect(&config.etcd, &config.cluster)
        .await
        .map_err(|err| FlagError {
            flag: "--etcd",
            value: config.etcd.join(","),
            reason: err.to_string(),
        })?;
    if let Some(addr) = config.metrics_addr {
        ringkv_common::metrics::install(addr, "storage").map_err(|err| FlagError {
            flag: "--metrics-addr",
            value: addr.to_string(),
            reason: err.reason,
        })?;
    }
    let cluster = read_cluster_config(&store, &config.cluster).await?;
    let secret =
        cluster_secret(config.secret_file.as_deref(), &cluster.secret).map_err(|reason| {
            FlagError {
                flag: "--secret-file",
                value: config
                    .secret_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                reason,
            }
        })?;
    if secret.is_none() {
        if !config.listen.ip().is_loopback() {
            return Err(FlagError {
                flag: "--listen",
                value: config.listen.to_string(),
                reason: "a storage node without a cluster secret only listens on loopback: \
                         give --secret-file (or create the cluster with a current ringkv-admin)"
                    .into(),
            }
            .into());
        }
        tracing::warn!("no cluster secret: any local process can reach this node's data");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|err| FlagError {
            flag: "--listen",
            value: config.listen.to_string(),
            reason: err.to_string(),
        })?;
    let addr = advertised(&config, &listener)?;
    let storage = open_storage(&config, cluster.shards).await?;

    let ownership = Arc::new(Ownership::new(cluster.shards));
    let ctx = Arc::new(NodeContext {
        id: config.id.clone(),
        storage: Arc::clone(&storage),
        ownership: Arc::clone(&ownership),
        connections: AtomicU64::new(0),
        commands: Tally::default(),
        refused: AtomicU64::new(0),
        secret,
    });
    let membership = Membership {
        store,
        node: NodeInfo {
            id: config.id.clone(),
            addr: addr.to_string(),
            zone: config.zone.clone(),
            weight: config.weight,
        },
        config: cluster,
        storage: Arc::clone(&storage),
        ownership,
    };
    let exporter = tokio::spawn(export_forever(Arc::clone(&ctx)));
    let lease = membership.register().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut follower = tokio::spawn(membership.run(lease, stop_rx.clone()));
    tracing::info!(
        id = %config.id,
        %addr,
        shards = ctx.storage.shards(),
        "ringkv-storage {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr().map_or(addr, |a| a),
    );

    // Connections run on event loops, one per core by default: a proxy's connection is only
    // ever polled by one thread, and a loop turn ends in one log write for every connection
    // that was ready (see `server::end_batch`).
    let loops = EventLoops::count_or_per_core(config.event_loops.map(usize::from))
        .map_err(|err| NodeError::Fatal(format!("cannot start the event-loop threads: {err}")))?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (ctx, stop) = (Arc::clone(&ctx), stop_rx.clone());
                    loops.serve(stream, move |stream| server::serve(stream, ctx, stop));
                }
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    exporter.abort();
    tracing::info!("shutting down: leaving the cluster, finishing requests in progress");
    // The membership task revokes the lease: the record vanishes now, not after the TTL.
    let _ = stop_tx.send(true);
    if tokio::time::timeout(REVOKE_DEADLINE, &mut follower)
        .await
        .is_err()
    {
        follower.abort();
        tracing::warn!("etcd did not answer; the node record expires with its lease");
    }
    // Every connection holds a receiver of the stop signal until it ends: once they are all
    // gone, the batches in progress are done.
    drop(stop_rx);
    if tokio::time::timeout(DRAIN_GRACE, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?DRAIN_GRACE, "some connections did not finish in time");
    }
    drop(loops);
    let flushed = tokio::task::spawn_blocking(move || storage.flush()).await;
    match flushed {
        Ok(Ok(())) => {
            tracing::info!("storage flushed, bye");
            Ok(())
        }
        Ok(Err(err)) => Err(NodeError::Fatal(format!(
            "flushing the storage failed: {err}"
        ))),
        Err(err) => Err(NodeError::Fatal(format!(
            "flushing the storage failed: {err}"
        ))),
    }
}

/// Copies the node's figures to the metrics exporter, forever.
async fn export_forever(ctx: Arc<NodeContext>) {
    let connections = tokio::spawn({
        let ctx = Arc::clone(&ctx);
        async move {
            let mut tick = tokio::time::interval(crate::metrics::EXPORT_EVERY);
            loop {
                tick.tick().await;
                let open = ctx.connections.load(std::sync::atomic::Ordering::Relaxed);
                metrics::gauge!(ringkv_common::metrics::names::CONNECTED_CLIENTS).set(open as f64);
            }
        }
    });
    crate::metrics::export_forever(Arc::clone(&ctx.storage)).await;
    connections.abort();
}

/// The cluster's config from etcd, waiting for etcd if it is not reachable yet.
async fn read_cluster_config(store: &ClusterStore, name: &str) -> Result<ClusterConfig, NodeError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match store.read_config().await {
            Ok(Some(config)) => return Ok(config),
            Ok(None) => {
                return Err(NodeError::Fatal(format!(
                    "cluster {name:?} does not exist in etcd: create it with `ringkv-admin init`"
                )))
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the cluster config; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The address proxies are told to use.
fn advertised(config: &NodeConfig, listener: &TcpListener) -> Result<SocketAddr, NodeError> {
    if let Some(addr) = config.advertise {
        return Ok(addr);
    }
    let local = listener
        .local_addr()
        .map_err(|err| NodeError::Fatal(format!("cannot read the listening address: {err}")))?;
    if local.ip().is_unspecified() {
        return Err(FlagError {
            flag: "--advertise",
            value: String::new(),
            reason: format!(
                "required when listening on {local}: the address proxies should connect to"
            ),
        }
        .into());
    }
    Ok(local)
}

/// Opens the engine with the shards on disk, refusing a directory of another node or cluster.
async fn open_storage(config: &NodeConfig, shards: u32) -> Result<Arc<Storage>, NodeError> {
    let mut storage_config =
        StorageConfig::new(&config.dir, shards, config.in_memory, config.fsync);
    storage_config.hosting = Hosting::Assigned;
    storage_config.sync_per_batch = true;
    let opened = tokio::task::spawn_blocking(move || Storage::open(storage_config)).await;
    let storage = match opened {
        Ok(Ok(storage)) => storage,
        Ok(Err(err)) => {
            return Err(FlagError {
                flag: "--dir",
                value: config.dir.display().to_string(),
                reason: err.to_string(),
            }
            .into())
        }
        Err(err) => {
            return Err(NodeError::Fatal(format!(
                "opening the storage failed: {err}"
            )))
        }
    };
    for (key, mine, what) in [
        (NODE_ID_META, &config.id, "node"),
        (CLUSTER_META, &config.cluster, "cluster"),
    ] {
        let recorded = storage
            .meta(key)
            .map_err(|err| NodeError::Fatal(err.to_string()))?;
        match recorded {
            Some(theirs) if theirs != mine.as_bytes() => {
                return Err(FlagError {
                    flag: "--dir",
                    value: config.dir.display().to_string(),
                    reason: format!(
                        "holds the data of {what} {:?}, not {mine:?}",
                        String::from_utf8_lossy(&theirs)
                    ),
                }
                .into())
            }
            Some(_) => {}
            None => storage
                .put_meta(key, mine.as_bytes())
                .map_err(|err| NodeError::Fatal(err.to_string()))?,
        }
    }
    Ok(storage)
}
