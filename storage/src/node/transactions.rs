//! A proxy client's transaction at the node of its shard: WATCH's read (`WATCHING`) and
//! EXEC (`TRANSACTION`), both inside a `SHARD` envelope (see
//! [`ringkv_common::transaction`]). The proxy queues MULTI's commands and sends them here
//! whole at EXEC, once it knows every key is in one shard.

use bytes::Bytes;
use ringkv_common::command::{self, flag};
use ringkv_common::internal::Envelope;
use ringkv_common::resp::Reply;
use ringkv_common::transaction::{self, seen_bytes, TRANSACTION, WATCHING};

use super::server::{refused, NodeContext};
use crate::{Executed, Scope};

/// Whether `inner` (an enveloped request) is a transaction's `WATCHING` or `TRANSACTION`.
pub(super) fn is_transactional(inner: &[Bytes]) -> bool {
    inner[0].eq_ignore_ascii_case(TRANSACTION) || inner[0].eq_ignore_ascii_case(WATCHING)
}

/// Runs `WATCHING` or `TRANSACTION` in shard `shard` if this node serves it at `epoch`;
/// returns the reply and whether it may have written (see `end_batch`).
pub(super) async fn run(
    ctx: &NodeContext,
    shard: u32,
    epoch: u64,
    inner: &[Bytes],
) -> (Reply, bool) {
    if let Err(refusal) = ctx.ownership.check(Envelope { shard, epoch }) {
        return (refused(ctx, refusal), false);
    }
    let scope = Scope::Shard(shard);
    if inner[0].eq_ignore_ascii_case(WATCHING) {
        if inner.len() != 2 {
            return (command::wrong_arity("watching"), false);
        }
        ctx.commands.add(1);
        let reply = match ctx.storage.watch(scope, &inner[1]) {
            Ok(None) => Reply::Nil,
            Ok(seen) => Reply::Bulk(seen_bytes(seen)),
            Err(reply) => reply,
        };
        return (reply, false);
    }
    let (watched, queued) = match transaction::decode(inner) {
        Ok(decoded) => decoded,
        Err(reply) => return (reply, false),
    };
    ctx.commands.add(queued.len() as u64);
    let writes = queued.iter().any(|q| q.spec.has(flag::WRITE));
    match ctx.storage.exec_from_loop(scope, watched, queued).await {
        Ok(Executed::Ran(replies)) => (Reply::Array(replies), writes),
        Ok(Executed::Aborted) => (Reply::NilArray, false),
        Err(reply) => (reply, false),
    }
}
