//! EXEC: the commands a client queued after MULTI, run as one step, and WATCH's check.
//!
//! EXEC takes the lock stripes of every key the transaction names (its commands' keys and the
//! watched keys; every stripe when it holds FLUSHALL or FLUSHDB) exclusively, all before
//! running anything and in stripe order, like any multi-key write. No other write to those
//! keys lands between its commands, and none between WATCH's check and the first command.
//! With them held it compares each watched key with what WATCH saw, then runs the commands
//! one after another on this thread, each as it runs alone, except that they take no lock of
//! their own (`KeyLocks::lock_for_transaction`). Their writes reach the log with the batch
//! that answers EXEC (see `Storage::end_batch`), in one write to the OS.
//!
//! WATCH keeps a digest of the key's value and expiry (xxh3-128), not a version: a version
//! would cost every write an update, watched or not. EXEC runs if each watched key still
//! reads the same, so a write that leaves a key as it was (SET of the same value; a SET and
//! then a DEL of a key that did not exist) does not abort it, where Redis would.

use bytes::Bytes;
use ringkv_common::clock::now_ms;
use ringkv_common::command::Cmd;
use ringkv_common::resp::Reply;
use ringkv_common::transaction::{Queued, Seen};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::engine::EngineError;
use crate::{storage_error, Scope, Storage};

/// What EXEC did.
#[derive(Debug)]
pub enum Executed {
    /// Every command ran: their replies, in order (errors included, as Redis runs the rest
    /// of a transaction after a command fails).
    Ran(Vec<Reply>),
    /// A watched key no longer reads as WATCH saw it: nothing ran.
    Aborted,
}

impl Storage {
    /// WATCH: what `key` holds now, to compare at EXEC. With [`Scope::Shard`] the key must
    /// belong to that shard, hosted here. Like Redis's WATCH, it counts no keyspace hit or
    /// miss.
    pub fn watch(&self, scope: Scope, key: &Bytes) -> Result<Seen, Reply> {
        // A SET pipelined before the WATCH may still wait in this thread's turn.
        self.end_turn();
        if let Scope::Shard(shard) = scope {
            self.keys_in_scope(shard, std::iter::once(key))?;
        }
        self.seen(key).map_err(|e| storage_error("watch", e))
    }

    /// EXEC of `queued` (data commands only: the connection answers the others) once each
    /// watched key is checked against what WATCH saw. With [`Scope::Shard`] every key must
    /// belong to that shard, or nothing runs and the reply is the error.
    pub fn exec(
        &self,
        scope: Scope,
        watched: &[(Bytes, Seen)],
        queued: &[Queued],
    ) -> Result<Executed, Reply> {
        // This thread's turn may hold stripes the transaction is about to wait for.
        self.end_turn();
        if let Scope::Shard(shard) = scope {
            self.keys_in_scope(shard, watched.iter().map(|(key, _)| key))?;
            for q in queued {
                self.in_scope(shard, q.spec, &q.args)?;
            }
        }
        let every_stripe = queued
            .iter()
            .any(|q| matches!(q.spec.cmd, Cmd::Flushall | Cmd::Flushdb));
        let keys = watched.iter().map(|(key, _)| &key[..]).chain(
            queued
                .iter()
                .flat_map(|q| q.spec.key_indexes(q.args.len()).map(|i| &q.args[i][..])),
        );
        let _locks = self.locks.lock_for_transaction(keys, every_stripe);
        for (key, seen) in watched {
            if self.seen(key).map_err(|e| storage_error("exec", e))? != *seen {
                return Ok(Executed::Aborted);
            }
        }
        let replies = queued
            .iter()
            .map(|q| {
                let shard = match scope {
                    Scope::Shard(shard) => Some(shard),
                    Scope::All => q
                        .spec
                        .key_indexes(q.args.len())
                        .next()
                        .map(|i| self.shard(&q.args[i])),
                };
                self.run_command(scope, shard, q.spec, &q.args)
            })
            .collect();
        Ok(Executed::Ran(replies))
    }

    /// The digest of a key's live value and expiry; `None` when it is absent or expired.
    fn seen(&self, key: &[u8]) -> Result<Seen, EngineError> {
        self.engine
            .read_live(self.shard(key), key, now_ms(), |expire_at, payload| {
                xxh3_128_with_seed(payload, expire_at as u64)
            })
    }

    /// Refuses keys outside shard `shard` (or a shard not hosted here), as
    /// [`Storage::in_scope`] refuses a command's.
    fn keys_in_scope<'k>(
        &self,
        shard: u32,
        mut keys: impl Iterator<Item = &'k Bytes>,
    ) -> Result<(), Reply> {
        if !self.engine.hosts(shard) {
            return Err(Reply::error_owned(format!(
                "ERR shard {shard} is not hosted here"
            )));
        }
        match keys.find(|key| self.shard(key) != shard) {
            Some(_) => Err(Reply::error_owned(format!(
                "ERR a key of this request does not belong to shard {shard}"
            ))),
            None => Ok(()),
        }
    }
}
