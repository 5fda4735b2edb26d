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
use crate::locks::{Mode, Stripes};
use crate::strings::{incremented, read_incremented};
use crate::turn::Deferred;
use crate::{reply_of, Failure, Storage};

/// Counters a group sets without allocating: a pipeline of 16 INCRs.
const INLINE_COUNTERS: usize = 16;

/// Gathered requests, waiting for [`Storage::execute_group`].
#[derive(Default)]
pub struct WriteGroup {
    /// Every request's arguments after its name (keys, values, deltas), sharing the request
    /// buffers (no copy).
    args: Vec<Bytes>,
    ops: Vec<Op>,
}

/// One gathered request.
struct Op {
    spec: &'static CommandSpec,
    what: Gathered,
    /// Its arguments in `WriteGroup::args`.
    args: Range<usize>,
    /// The shard a storage node checked it against, for the per-shard metrics.
    shard: Option<u32>,
}

impl WriteGroup {
    /// Adds a request (`args[0]` is its name) that [`ringkv_common::command::gatherable`]
    /// accepted; `shard` is the shard a storage node checked its keys against.
    pub fn push(
        &mut self,
        spec: &'static CommandSpec,
        what: Gathered,
        args: &[Bytes],
        shard: Option<u32>,
    ) {
        let start = self.args.len();
        self.args.extend_from_slice(&args[1..]);
        self.ops.push(Op {
            spec,
            what,
            args: start..self.args.len(),
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

    /// Forgets every request (their buffers are kept for the next group).
    pub fn clear(&mut self) {
        self.args.clear();
        self.ops.clear();
    }

    /// Every key the group writes, for the locks.
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.ops.iter().flat_map(|op| {
            let args = &self.args[op.args.clone()];
            let step = if op.what == Gathered::Put {
                2
            } else {
                args.len()
            };
            args.iter().step_by(step).map(|k| &k[..])
        })
    }
}

/// A value the group has written, as later requests of the group must see it.
enum Pending {
    Bytes(Bytes),
    Int(i64),
}

impl Storage {
    /// Runs a group's requests in order and pushes one reply per request onto `replies`, in
    /// order; the group is left empty. On an event loop the group's writes then wait for the
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
            let shard = op
                .shard
                .or_else(|| group.args.get(op.args.start).map(|key| self.shard(key)));
            self.record(op.spec, shard, took);
        }
        if let Err(failure) = outcome {
            let reply = reply_of(group.ops[0].spec, Err(failure));
            replies.truncate(first);
            replies.extend(group.ops.iter().map(|_| reply.clone()));
        }
        group.clear();
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
        let stripes = Stripes::of(group.keys());
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
            for (key, counter) in &counters {
                self.engine.remember_counter(key, *counter);
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
        counters: &mut SmallVec<[(Bytes, Counter); INLINE_COUNTERS]>,
    ) -> Result<(), Failure> {
        // Blind writes only: nothing reads, the pairs go straight into the batch.
        if blind {
            for pair in group.args.chunks_exact(2) {
                self.engine
                    .put(batch, self.shard(&pair[0]), &pair[0], 0, &pair[1])?;
            }
            replies.extend(group.ops.iter().map(|_| Reply::Ok));
            return Ok(());
        }
        // What the group has written so far: key → (expiry, value). Sized once for the
        // group (growing it step by step was four allocations for 16 INCRs).
        let mut written: AHashMap<&Bytes, (i64, Pending)> =
            AHashMap::with_capacity(group.args.len());
        let now = now_ms();
        for op in &group.ops {
            let args = &group.args[op.args.clone()];
            match op.what {
                Gathered::Put => {
                    for pair in args.chunks_exact(2) {
                        written.insert(&pair[0], (0, Pending::Bytes(pair[1].clone())));
                    }
                    replies.push(Reply::Ok);
                }
                Gathered::Add(by) => {
                    let key = &args[0];
                    let (expire_at, sum) = match written.get(key) {
                        Some(&(at, Pending::Int(n))) => (at, n.checked_add(by).ok_or(OVERFLOW)),
                        Some((at, Pending::Bytes(b))) => (*at, incremented(Some(b), by)),
                        None => read_incremented(self, key, now, by)?,
                    };
                    replies.push(match sum {
                        Ok(sum) => {
                            written.insert(key, (expire_at, Pending::Int(sum)));
                            Reply::Int(sum)
                        }
                        Err(error) => error,
                    });
                }
            }
        }
        let mut digits = itoa::Buffer::new();
        for (&key, &(expire_at, ref value)) in &written {
            let shard = self.shard(key);
            match value {
                Pending::Bytes(b) => self.engine.put(batch, shard, key, expire_at, b)?,
                &Pending::Int(value) => {
                    let payload = digits.format(value).as_bytes();
                    self.engine
                        .put_increment(batch, shard, key, expire_at, payload)?;
                    counters.push((key.clone(), Counter { expire_at, value }));
                }
            }
        }
        Ok(())
    }
}
