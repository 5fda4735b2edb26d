//! Where commands that are not answered by the connection itself go: the storage engine in
//! this process (standalone `ringkv`), or the storage nodes of a cluster (`ringkv-proxy`,
//! pooled pipelined connections chosen by the shard map). Every caller goes through these
//! methods, so this is the only seam between the two. An enum rather than a trait object:
//! the set is closed, and a match is cheaper than a virtual async call on the hot path.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use ringkv_common::command::CommandSpec;
use ringkv_common::resp::Reply;
use ringkv_common::transaction::{Queued, Seen};
use ringkv_storage::{
    Deferred, EndsTurn, Executed, Scope, Storage, StorageError, StorageStats, WriteGroup,
};

use crate::cluster::{Answer, Cluster, Refused, Started};

/// The engine behind the proxy.
#[derive(Clone)]
pub enum Backend {
    /// The storage engine in this process (the standalone `ringkv`).
    Local(Arc<Storage>),
    /// The storage nodes of a cluster (`ringkv-proxy`).
    Remote(Arc<Cluster>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Local(_) => f.write_str("Backend::Local"),
            Backend::Remote(_) => f.write_str("Backend::Remote"),
        }
    }
}

/// The reply when the engine failed inside (a panic on a blocking thread): the client gets an
/// error for that one command and the connection lives on.
const INTERNAL: Reply = Reply::error("ERR internal error in the storage engine");

impl Backend {
    /// Runs one resolved, arity-checked command. A command that may wait for a disk sync
    /// runs on a blocking thread, so concurrent writers share one sync and the runtime's
    /// workers keep serving other connections meanwhile; the others run inline, which costs
    /// no thread hop.
    pub async fn execute(&self, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
        match self {
            Backend::Remote(cluster) => cluster.execute(spec, args).await,
            Backend::Local(storage) => {
                if !storage.may_block(spec) {
                    return storage.execute(spec, args);
                }
                // It runs on another thread: this one's pending writes go first.
                storage.end_turn();
                let storage = Arc::clone(storage);
                let args = args.to_vec();
                tokio::task::spawn_blocking(move || storage.execute(spec, &args))
                    .await
                    .unwrap_or_else(|err| {
                        tracing::error!(command = spec.name, %err, "storage engine failed");
                        INTERNAL
                    })
            }
        }
    }

    /// Sends a single-shard command to its storage node without a future of its own, when
    /// nothing would wait ([`Cluster::send_now`]); `None` for the local engine, and whenever
    /// the command must go through [`Backend::execute`].
    pub fn send_now(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        now: Instant,
    ) -> Option<Started> {
        match self {
            Backend::Remote(cluster) => cluster.send_now(spec, args, now),
            Backend::Local(_) => None,
        }
    }

    /// Polls for the answer to a command [`Backend::send_now`] sent.
    pub fn poll_answer(&self, started: &mut Started, cx: &mut Context<'_>) -> Poll<Answer> {
        match self {
            Backend::Remote(cluster) => cluster.poll_answer(started, cx),
            // `send_now` sends nothing to the local engine.
            Backend::Local(_) => Poll::Ready(Answer::Reply(INTERNAL)),
        }
    }

    /// Runs again a command [`Backend::send_now`] sent and its node refused.
    pub async fn retry(&self, refused: Refused, args: &[Bytes]) -> Reply {
        match self {
            Backend::Remote(cluster) => cluster.retry(refused, args).await,
            // `send_now` sends nothing to the local engine.
            Backend::Local(_) => INTERNAL,
        }
    }

    /// Runs the requests a connection gathered (see `WriteGroup`) and pushes their replies
    /// in order; the group keeps its requests until the caller clears it (the slow log reads
    /// them), and its writes may wait for the end of the loop's
    /// turn (`deferred` says so, for [`Backend::end_batch`]). Only the local engine gathers;
    /// like [`Backend::execute`], it moves to a blocking thread when writes may wait for a
    /// sync.
    pub async fn execute_group(
        &self,
        group: &mut WriteGroup,
        replies: &mut Vec<Reply>,
        deferred: &mut Deferred,
    ) {
        let Backend::Local(storage) = self else {
            replies.extend((0..group.len()).map(|_| INTERNAL));
            group.clear();
            return;
        };
        if !storage.writes_may_block() {
            storage.execute_group(group, replies, deferred);
            return;
        }
        storage.end_turn();
        let storage = Arc::clone(storage);
        let requests = group.len();
        let mut moved = std::mem::take(group);
        let ran = tokio::task::spawn_blocking(move || {
            let mut replies = Vec::with_capacity(requests);
            // A blocking thread has no turn: the group is applied before this returns.
            storage.execute_group(&mut moved, &mut replies, &mut Deferred::default());
            (moved, replies)
        })
        .await;
        match ran {
            Ok((ran_group, ran_replies)) => {
                *group = ran_group;
                replies.extend(ran_replies);
            }
            Err(err) => {
                tracing::error!(%err, "storage engine failed");
                replies.extend((0..requests).map(|_| INTERNAL));
            }
        }
    }

    /// WATCH of one key: what it holds now, for EXEC to compare.
    pub async fn watch(&self, key: &Bytes) -> Result<Seen, Reply> {
        match self {
            Backend::Remote(cluster) => cluster.watch(key).await,
            Backend::Local(storage) => storage.watch(Scope::All, key),
        }
    }

    /// EXEC of a transaction's data commands (`queued`; the connection answers the others)
    /// once the watched keys are checked. Like [`Backend::execute`], it moves to a blocking
    /// thread when its writes may wait for a sync.
    pub async fn exec(
        &self,
        watched: Vec<(Bytes, Seen)>,
        queued: Vec<Queued>,
    ) -> Result<Executed, Reply> {
        match self {
            Backend::Remote(cluster) => cluster.exec(&watched, &queued).await,
            Backend::Local(storage) => storage.exec_from_loop(Scope::All, watched, queued).await,
        }
    }

    /// Why `spec` cannot be queued in a transaction here, if it cannot: through a cluster,
    /// a command that walks or clears every shard (see `transaction_refusal`).
    pub fn transaction_refusal(&self, spec: &CommandSpec) -> Option<Reply> {
        match self {
            Backend::Remote(_) => crate::cluster::transaction_refusal(spec),
            Backend::Local(_) => None,
        }
    }

    /// The engine's figures for INFO, or `None` if they could not be had. Counting keys walks
    /// the shards, so it runs on a blocking thread.
    pub async fn stats(&self) -> Option<StorageStats> {
        match self {
            Backend::Remote(cluster) => Some(cluster.stats(true).await),
            Backend::Local(storage) => {
                // The walk runs on another thread: this one's pending writes go first.
                storage.end_turn();
                let storage = Arc::clone(storage);
                match tokio::task::spawn_blocking(move || storage.stats()).await {
                    Ok(stats) => Some(stats),
                    Err(err) => {
                        tracing::error!(%err, "storage stats failed");
                        None
                    }
                }
            }
        }
    }

    /// Makes everything acknowledged durable: called once on shutdown, after the last reply.
    pub async fn flush(&self) -> Result<(), String> {
        match self {
            // Storage nodes flush themselves; every reply the proxy sent was already durable
            // by the node's fsync policy.
            Backend::Remote(_) => Ok(()),
            Backend::Local(storage) => {
                storage.end_turn();
                let storage = Arc::clone(storage);
                match tokio::task::spawn_blocking(move || storage.flush()).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                }
            }
        }
    }

    /// Makes a batch's writes survive a killed process before its replies go out. The
    /// engine write and the log write are made once for many batches (group commit): the
    /// connection first lets the other connections that are ready on its thread run their
    /// batches, and the first of them to come back applies the loop's turn (the groups
    /// `deferred` names among them) and writes the log for all; the others find their
    /// writes already applied and covered and make no syscall. Redis does the same, writing
    /// its AOF once per event-loop turn before any reply. An error means the batch's writes
    /// are in memory only, or not even there (a full disk, say): its replies must not go out.
    pub async fn end_batch(&self, deferred: Deferred) -> Result<(), StorageError> {
        let Backend::Local(storage) = self else {
            return Ok(());
        };
        let mark = storage.write_mark();
        tokio::task::yield_now().await;
        storage.end_batch(mark, deferred)
    }

    /// A guard that applies the calling thread's pending turn when dropped, for a connection
    /// task to hold (see `EndsTurn`); `None` through a cluster.
    pub fn ends_turn(&self) -> Option<EndsTurn<'_>> {
        match self {
            Backend::Local(storage) => Some(storage.ends_turn()),
            Backend::Remote(_) => None,
        }
    }

    /// CONFIG RESETSTAT: zeroes the engine's hit, miss and expiry counters.
    pub fn reset_stats(&self) {
        match self {
            Backend::Local(storage) => storage.reset_stats(),
            Backend::Remote(_) => {}
        }
    }

    /// The cluster's state for INFO, or `None` when standalone.
    pub fn cluster_status(&self) -> Option<crate::cluster::ClusterStatus> {
        match self {
            Backend::Local(_) => None,
            Backend::Remote(cluster) => Some(cluster.status()),
        }
    }

    /// Whether consecutive gatherable requests of a pipeline (blind writes, increments) run
    /// as one group ([`Backend::execute_group`]). In process they share one engine write;
    /// through a cluster a failed shard would fail the requests of every other shard in the
    /// group, so each request goes on its own (and the storage node gathers them).
    pub fn coalesces_writes(&self) -> bool {
        matches!(self, Backend::Local(_))
    }
}
