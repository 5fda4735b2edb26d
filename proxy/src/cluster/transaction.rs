//! A client's WATCH and EXEC through the cluster: the transaction runs at the storage node
//! of its keys' shard, whole (see [`ringkv_common::transaction`] for the wire form), so all
//! of its keys, watched ones included, must be in one shard, as Redis Cluster requires them
//! in one slot. The node takes their locks and runs the commands as the standalone server
//! does.

use bytes::Bytes;
use ringkv_common::command::{Cmd, CommandSpec, Route};
use ringkv_common::placement::shard_of;
use ringkv_common::resp::Reply;
use ringkv_common::transaction::{self, parse_seen, Queued, Seen, WATCHING};
use ringkv_storage::Executed;

use super::{frame, unexpected, Cluster, CROSSSLOT};

impl Cluster {
    /// WATCH of one key: what its node reads of it now.
    pub async fn watch(&self, key: &Bytes) -> Result<Seen, Reply> {
        let shard = shard_of(key, self.shards);
        let args = [Bytes::from_static(WATCHING), key.clone()];
        match self.call(shard, &args).await {
            Reply::Nil => Ok(None),
            Reply::Bulk(digest) => {
                parse_seen(&digest).map_err(|_| unexpected(&Reply::Bulk(digest.clone())))
            }
            Reply::Error(e) => Err(Reply::Error(e)),
            other => Err(unexpected(&other)),
        }
    }

    /// EXEC of `queued` (data commands only) once the watched keys are checked, at the node
    /// of the one shard all their keys are in; CROSSSLOT, and nothing runs, when they span
    /// shards.
    pub async fn exec(
        &self,
        watched: &[(Bytes, Seen)],
        queued: &[Queued],
    ) -> Result<Executed, Reply> {
        let keys = watched.iter().map(|(key, _)| key).chain(
            queued
                .iter()
                .flat_map(|q| q.spec.key_indexes(q.args.len()).map(|i| &q.args[i])),
        );
        let mut shard = None;
        for key in keys {
            let of = shard_of(key, self.shards);
            if *shard.get_or_insert(of) != of {
                return Err(CROSSSLOT);
            }
        }
        let Some(shard) = shard else {
            // Nothing to lock or check: the commands need no node (keyless ones are not
            // sent here; see `transaction_refusal`).
            return Ok(Executed::Ran(Vec::new()));
        };
        match self
            .call(shard, &transaction::encode(watched, queued))
            .await
        {
            Reply::Array(replies) if replies.len() == queued.len() => Ok(Executed::Ran(
                replies
                    .into_iter()
                    .zip(queued)
                    .map(|(reply, q)| match q.spec.cmd {
                        Cmd::Lcs => frame::lcs_reply(reply),
                        _ => reply,
                    })
                    .collect(),
            )),
            Reply::Nil | Reply::NilArray => Ok(Executed::Aborted),
            Reply::Error(e) => Err(Reply::Error(e)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Why a command cannot be queued in a transaction through the cluster, if it cannot: a
/// command that walks or clears every shard has no one node to run at.
pub fn transaction_refusal(q: &CommandSpec) -> Option<Reply> {
    (q.route == Route::AllShards).then(|| {
        Reply::error_owned(format!(
            "ERR '{}' cannot run in a transaction through a ringkv cluster proxy: a \
             transaction runs at the one storage node of its keys",
            q.name
        ))
    })
}
