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
//! A read of several keys holds their stripes, so it waits for an EXEC that holds any of them.
//! A read of one key takes no lock, so a transaction counts itself as running from its first
//! write to its last, and a read that overlaps one runs again holding its key's stripe shared,
//! after the EXEC that holds it (`Storage::run_read`): no client sees some of a transaction's
//! writes and not the others, as in Redis.
//!
//! WATCH keeps a digest of the key's value and expiry (xxh3-128), not a version: a version
//! would cost every write an update, watched or not. EXEC runs if each watched key still
//! reads the same, so a write that leaves a key as it was (SET of the same value; a SET and
//! then a DEL of a key that did not exist) does not abort it, where Redis would.

use std::sync::atomic::{fence, AtomicU64, Ordering::Acquire, Ordering::SeqCst};
use std::sync::Arc;

use bytes::Bytes;
use ringkv_common::clock::now_ms;
use ringkv_common::command::{flag, Cmd, CommandSpec};
use ringkv_common::resp::Reply;
use ringkv_common::transaction::{Queued, Seen};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::engine::EngineError;
use crate::locks::Mode;
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

/// How many EXECs have begun and how many have ended, for reads that take no lock to tell
/// whether one ran meanwhile (see [`Storage::run_read`]).
#[derive(Default)]
pub(crate) struct Running {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Storage {
    /// Runs a read-only command (`execute_in` checked its scope) so that it reads its keys at
    /// one point in time, as Redis does.
    ///
    /// A read of several keys (MGET, EXISTS of several, LCS) holds their stripes exclusively
    /// while it reads: writes take their keys' stripes (blind writes shared, until their loop's
    /// turn is applied), so no write of its keys lands between two of its reads, a
    /// transaction's included. A read of one key sees one whole record, so it takes no lock
    /// when no EXEC was running as it began and none began before it ended (two loads before
    /// and one after, on a line only EXEC writes, whose commands' writes are applied one after
    /// another); otherwise it runs again holding its key's stripe shared, which waits for an
    /// EXEC that holds it. (A read run twice counts its keyspace hits twice.)
    pub(crate) fn run_read(
        &self,
        scope: Scope,
        shard: Option<u32>,
        spec: &'static CommandSpec,
        args: &[Bytes],
    ) -> Reply {
        let keys = || spec.key_indexes(args.len()).map(|i| &args[i][..]);
        if keys().nth(1).is_some() {
            let _held = self.locks.hold_for_read(keys(), Mode::Exclusive);
            return self.run_command(scope, shard, spec, args);
        }
        let begun = self.running.begun.load(SeqCst);
        if begun == self.running.ended.load(SeqCst) {
            let reply = self.run_command(scope, shard, spec, args);
            // The read's loads stay before the check (as in a seqlock's reader).
            fence(Acquire);
            if self.running.begun.load(SeqCst) == begun {
                return reply;
            }
        }
        let _held = self.locks.hold_for_read(keys(), Mode::Shared);
        self.run_command(scope, shard, spec, args)
    }

    /// [`Storage::exec`] as an event loop calls it: inline, or, when its writes may wait for
    /// a disk sync (`--fsync always`), on a blocking thread after this loop's pending writes,
    /// as a single write runs, so that concurrent writers share one sync.
    pub async fn exec_from_loop(
        self: &Arc<Self>,
        scope: Scope,
        watched: Vec<(Bytes, Seen)>,
        queued: Vec<Queued>,
    ) -> Result<Executed, Reply> {
        if !(self.writes_may_block() && queued.iter().any(|q| q.spec.has(flag::WRITE))) {
            return self.exec(scope, &watched, &queued);
        }
        self.end_turn();
        let storage = Arc::clone(self);
        tokio::task::spawn_blocking(move || storage.exec(scope, &watched, &queued))
            .await
            .unwrap_or_else(|err| {
                tracing::error!(%err, "storage engine failed");
                Err(Reply::error("ERR internal error in the storage engine"))
            })
    }

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
        // Begun before the first write, ended after the last, both under the locks.
        self.running.begun.fetch_add(1, SeqCst);
        let _ended = Ended(&self.running.ended);
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
}

/// Counts an EXEC ended when dropped, so that a panic inside one cannot leave every later
/// read taking locks.
struct Ended<'a>(&'a AtomicU64);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}
