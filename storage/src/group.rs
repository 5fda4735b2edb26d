//! Consecutive gatherable requests of one batch (blind writes and integer increments, see
//! [`ringkv_common::command::gatherable`]) run as one engine write under one round of key
//! locks, instead of a lock, a read and a write group each.
//!
//! A group holds every key lock it needs from before its first read until its write is
//! applied (on an event loop, with the rest of the loop's turn: see `turn`), and its requests
//! run in arrival order against what the group itself has written so far, so each request
//! takes effect between its arrival and its reply exactly as if it had run alone. The locks
//! are taken all at once: without waiting if they are free, otherwise in stripe order once
//! the thread's turn is applied (see `locks`), so groups cannot deadlock with each other or
//! with multi-key commands.

use std::ops::Range;

use ahash::AHashMap;
use bytes::Bytes;
use ringkv_common::args::OVERFLOW;
use ringkv_common::clock::now_ms;
use ringkv_common::command::{CommandSpec, Gathered};
use ringkv_common::resp::Reply;
use smallvec::SmallVec;

use crate::counters::Counter;
use crate::engine::Writes;
use crate::layout;
use crate::locks::{Mode, Stripes};
use crate::strings::{incremented, read_incremented};
use crate::turn::Deferred;
use crate::{reply_of, Failure, Storage};

/// Counters a group sets without allocating: a pipeline of 16 INCRs.
const INLINE_COUNTERS: usize = 16;

/// Gathered requests, waiting for [`Storage::execute_group`].
#[derive(Default)]
pub struct WriteGroup {
    /// Every request's arguments after its name (keys, values, deltas), moved out of the
    /// parsed request (no copy, no reference count taken).
    args: Vec<Bytes>,
    /// Every key's [`layout::order_of`] (its placement hash), in the keys' order in `args`:
    /// its lock stripe, its shard and its scan order all come from this one hash.
    hashes: Vec<u64>,
    ops: Vec<Op>,
}

/// One gathered request.
struct Op {
    spec: &'static CommandSpec,
    what: Gathered,
    /// Its arguments in `WriteGroup::args`.
    args: Range<usize>,
    /// Its keys' hashes in `WriteGroup::hashes`.
    hashes: Range<usize>,
    /// The shard a storage node checked it against, for the per-shard metrics.
    shard: Option<u32>,
}

/// Every how many of a request's arguments (after its name) a key comes: the pairs of a
/// blind write, the one key of an increment.
fn key_step(what: Gathered, args: usize) -> usize {
    if what == Gathered::Put {
        2
    } else {
        args.max(1)
    }
}

impl WriteGroup {
    /// Adds the request `args[from..]` (`args[from]` is its name) that
    /// [`ringkv_common::command::gatherable`] accepted, moving its arguments out of `args`
    /// (what is left is the caller's to clear); `shard` is the shard a storage node checked
    /// its keys against.
    pub fn push(
        &mut self,
        spec: &'static CommandSpec,
        what: Gathered,
        args: &mut Vec<Bytes>,
        from: usize,
        shard: Option<u32>,
    ) {
        let start = self.args.len();
        let first_hash = self.hashes.len();
        self.args.extend(args.drain(from + 1..));
        let moved = &self.args[start..];
        let step = key_step(what, moved.len());
        self.hashes
            .extend(moved.iter().step_by(step).map(|key| layout::order_of(key)));
        self.ops.push(Op {
            spec,
            what,
            args: start..self.args.len(),
            hashes: first_hash..self.hashes.len(),
            shard,
        });
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Every request's arguments after its name, in order (for the slow log).
    pub fn requests(&self) -> impl Iterator<Item = &[Bytes]> {
        self.ops.iter().map(|op| &self.args[op.args.clone()])
    }

    /// Forgets every request (their buffers are kept for the next group).
    pub fn clear(&mut self) {
        self.args.clear();
        self.hashes.clear();
        self.ops.clear();
    }

    /// A request's keys, each with its hash.
    fn keys(&self, op: &Op) -> impl Iterator<Item = (&Bytes, u64)> {
        let args = &self.args[op.args.clone()];
        args.iter()
            .step_by(key_step(op.what, args.len()))
            .zip(self.hashes[op.hashes.clone()].iter().copied())
    }
}

/// A value the group has written, as later requests of the group must see it.
enum Pending {
    Bytes(Bytes),
    Int(i64),
}

impl Storage {
    /// Runs a group's requests in order and pushes one reply per request onto `replies`, in
    /// order; the group keeps its requests (readable for the slow log) until the caller
    /// clears it. On an event loop the group's writes then wait for the
    /// end of the loop's turn (see `turn`), and `deferred` notes that the batch must settle
    /// them before its replies leave ([`Storage::end_batch`]); otherwise they are applied at
    /// once. If the group cannot be written, every request is answered with its error, and
    /// none took effect.
    pub fn execute_group(
        &self,
        group: &mut WriteGroup,
        replies: &mut Vec<Reply>,
        deferred: &mut Deferred,
    ) {
        if group.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let first = replies.len();
        let outcome = self.run_group(group, replies, deferred);
        let took = started.elapsed() / u32::try_from(group.ops.len().max(1)).unwrap_or(u32::MAX);
        for op in &group.ops {
            let shard = op.shard.or_else(|| {
                let (key, hash) = group.keys(op).next()?;
                Some(self.shard_hashed(key, hash))
            });
            self.record(op.spec, shard, took);
        }
        if let Err(failure) = outcome {
            let reply = reply_of(group.ops[0].spec, Err(failure));
            replies.truncate(first);
            replies.extend(group.ops.iter().map(|_| reply.clone()));
        }
    }

    fn run_group(
        &self,
        group: &WriteGroup,
        replies: &mut Vec<Reply>,
        deferred: &mut Deferred,
    ) -> Result<(), Failure> {
        // Blind writes read nothing: they may share their stripes with each other.
        let blind = group.ops.iter().all(|op| op.what == Gathered::Put);
        let mode = if blind { Mode::Shared } else { Mode::Exclusive };
        let stripes = Stripes::of_hashes(group.hashes.iter().copied());
        let defers = self.defers_writes();
        let mut taken = match defers.then(|| self.locks.try_take(&stripes, mode)) {
            Some(Some(taken)) => taken,
            // Never wait for a stripe while this thread's turn holds some.
            _ => {
                self.end_turn();
                self.locks.take(&stripes, mode)
            }
        };
        let mut batch = self.engine.batch();
        let mut counters = SmallVec::new();
        if let Err(failure) = self.build_group(group, blind, replies, &mut batch, &mut counters) {
            self.locks.release(&mut taken);
            return Err(failure);
        }
        if batch.is_empty() {
            // Every request failed (INCR of a non-integer…): nothing to apply.
            self.locks.release(&mut taken);
            return Ok(());
        }
        if defers {
            self.defer(batch, taken, counters.into_iter(), deferred);
            return Ok(());
        }
        let written = self.engine.write(batch);
        if written.is_ok() {
            for (key, hash, counter) in &counters {
                self.engine.remember_counter(key, *hash, *counter);
            }
            self.note_writes_failing(false);
        }
        self.locks.release(&mut taken);
        Ok(written?)
    }

    /// Runs the group's requests against what it has itself written so far, pushing their
    /// replies, and puts its records into `batch` and the integers its increments leave into
    /// `counters` (for the counter cache once the batch is applied). `blind`: the group has
    /// only blind writes.
    fn build_group(
        &self,
        group: &WriteGroup,
        blind: bool,
        replies: &mut Vec<Reply>,
        batch: &mut Writes,
        counters: &mut SmallVec<[(Bytes, u64, Counter); INLINE_COUNTERS]>,
    ) -> Result<(), Failure> {
        // Blind writes only: nothing reads, the pairs go straight into the batch (one hash
        // per pair).
        if blind {
            for (pair, &hash) in group.args.chunks_exact(2).zip(&group.hashes) {
                let (key, value) = (&pair[0], &pair[1]);
                let shard = self.shard_hashed(key, hash);
                self.engine.put_ordered(batch, shard, key, hash, 0, value)?;
            }
            replies.extend(group.ops.iter().map(|_| Reply::Ok));
            return Ok(());
        }
        // What the group has written so far: key → (hash, expiry, value). Sized once for the
        // group (growing it step by step was four allocations for 16 INCRs).
        let mut written: AHashMap<&Bytes, (u64, i64, Pending)> =
            AHashMap::with_capacity(group.args.len());
        // Every increment's counter-cache slot is asked for before any is looked up, so that
        // their cache misses overlap (see `counters`).
        for op in group
            .ops
            .iter()
            .filter(|op| matches!(op.what, Gathered::Add(_)))
        {
            if let Some((_, hash)) = group.keys(op).next() {
                self.engine.prefetch_counter(hash);
            }
        }
        let now = now_ms();
        for op in &group.ops {
            match op.what {
                Gathered::Put => {
                    let pairs = group.args[op.args.clone()].chunks_exact(2);
                    for (pair, &hash) in pairs.zip(&group.hashes[op.hashes.clone()]) {
                        written.insert(&pair[0], (hash, 0, Pending::Bytes(pair[1].clone())));
                    }
                    replies.push(Reply::Ok);
                }
                Gathered::Add(by) => {
                    // `gatherable` takes an increment only with its key.
                    let Some((key, hash)) = group.keys(op).next() else {
                        replies.push(Reply::error("ERR wrong number of arguments"));
                        continue;
                    };
                    let (expire_at, sum) = match written.get(key) {
                        Some(&(_, at, Pending::Int(n))) => (at, n.checked_add(by).ok_or(OVERFLOW)),
                        Some((_, at, Pending::Bytes(b))) => (*at, incremented(Some(b), by)),
                        None => read_incremented(self, key, hash, now, by)?,
                    };
                    replies.push(match sum {
                        Ok(sum) => {
                            written.insert(key, (hash, expire_at, Pending::Int(sum)));
                            Reply::Int(sum)
                        }
                        Err(error) => error,
                    });
                }
            }
        }
        let mut digits = itoa::Buffer::new();
        for (&key, &(hash, expire_at, ref value)) in &written {
            let shard = self.shard_hashed(key, hash);
            match value {
                Pending::Bytes(b) => self
                    .engine
                    .put_ordered(batch, shard, key, hash, expire_at, b)?,
                &Pending::Int(value) => {
                    let payload = digits.format(value).as_bytes();
                    self.engine
                        .put_increment(batch, shard, key, hash, expire_at, payload)?;
                    counters.push((key.clone(), hash, Counter { expire_at, value }));
                }
            }
        }
        Ok(())
    }
}
