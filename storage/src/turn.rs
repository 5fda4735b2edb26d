//! An event loop's turn: the write groups of every connection the loop ran since its last
//! engine write, applied together as one write.
//!
//! Each connection that was ready in a turn used to make its own engine write. At
//! `redis-benchmark -P 1` a loop so made a dozen RocksDB writes per turn, and the two loops
//! kept meeting in RocksDB's write thread, where the later writer spins, yields and sleeps on
//! a futex until the earlier one's write is done: about a fifth of MSET -P 1's CPU went to
//! that and the context switches. Now a group run on an event-loop thread is checked and
//! answered at once, but its records wait in the thread's [`Turn`]; the first connection of
//! the turn to end its batch ([`Storage::end_batch`], after the yield that lets every ready
//! connection run) applies them all with one write, and writes the log for them.
//!
//! Why no client can tell:
//! - A group keeps its key-lock stripes until the turn is applied (shared for blind writes,
//!   exclusive for increments: see `locks`), so no other writer of its keys runs in between.
//!   A group whose stripes are not free at once applies the turn first, releasing this
//!   thread's stripes, and only then waits for them: a loop never waits while holding a turn.
//! - No reply leaves before the write it acknowledges is applied and in the log
//!   (`end_batch`); a failed turn fails the batch of every connection that was in it.
//! - A command that is not gathered (a GET after the SETs of its pipeline, INFO, FLUSHALL…)
//!   applies the turn before it runs, so it sees every write before it.
//!
//! Only groups run on an event-loop thread wait in a turn (each thread has its own, and a
//! connection never leaves its loop), and only when writes need not reach the disk one by one
//! (`--fsync always` writes go straight to the engine, as they did).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use thread_local::ThreadLocal;

use crate::counters::Counter;
use crate::engine::{EngineError, Writes};
use crate::locks::Taken;
use crate::Storage;

/// Failed turns a thread remembers for the connections that were in them (a failed turn
/// stops the deferring of writes, so there are seldom more than one or two).
const FAILED_KEPT: usize = 64;

/// Exclusive stripes past which a turn is applied at once: the other loop's increments wait
/// for any of them they meet until the whole turn is applied. With 65,536 stripes a turn of
/// 25 connections' 16 INCRs (400 stripes) seldom meets the other loop's, and a bound of 48
/// applied such a turn in eight engine writes where the loops met in RocksDB's write thread
/// (`sched_yield` and its scheduling: ~9% of standalone INCR -P 16's CPU); 512 takes ~8% off
/// the server's CPU per INCR there.
const EXCLUSIVE_PER_TURN: usize = 512;

/// Every event-loop thread's turn, and whether turns are failing.
#[derive(Default)]
pub(crate) struct Turns {
    threads: ThreadLocal<RefCell<Turn>>,
    /// Set when applying a turn or writing the log failed (a full disk): groups then write
    /// at once, so that each is answered with its own error rather than the connection
    /// closing; cleared by the first such write that succeeds.
    failing: AtomicBool,
}

/// One thread's writes waiting for its turn to end.
#[derive(Default)]
struct Turn {
    /// The number of the pending turn; a batch's [`Deferred`] names the first it joined.
    number: u64,
    /// The gathered records, `None` when no group is waiting.
    writes: Option<Writes>,
    /// The stripes the waiting groups hold.
    taken: Taken,
    /// The integers the waiting increments wrote (key, its hash, value), for the counter
    /// cache once applied.
    counters: Vec<(Bytes, u64, Counter)>,
    /// The log position after the last turn this thread applied: the log must reach it
    /// before the replies of its writes leave.
    applied_through: u64,
    /// The numbers of turns that failed, oldest first, with the reason.
    failed: VecDeque<(u64, String)>,
}

/// The turns a batch's gathered writes were left in (the first of them): [`Storage::end_batch`]
/// makes sure they were applied and fails the batch if one was not. A connection keeps one
/// per batch, empty until a group of the batch is deferred.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deferred(Option<u64>);

impl Deferred {
    /// Whether no group of the batch waits in a turn.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// Applies its thread's pending turn when dropped: a connection task keeps one, so that its
/// writes do not hold their key locks until the loop's next batch if it ends without ending
/// its batch (a panic).
pub struct EndsTurn<'a>(&'a Storage);

impl Drop for EndsTurn<'_> {
    fn drop(&mut self) {
        self.0.end_turn();
    }
}

/// The reason given to the connections of a turn whose write failed.
#[derive(Debug, thiserror::Error)]
#[error("a write of this batch failed: {0}")]
pub struct TurnFailed(String);

impl Storage {
    /// Whether a group run now may wait for the end of its thread's turn.
    pub(crate) fn defers_writes(&self) -> bool {
        ringkv_common::event_loops::current_loop().is_some()
            && !self.writes_may_block()
            && !self.end_batch_blocks()
            && !self.turns.failing.load(Ordering::Relaxed)
    }

    /// Leaves a group's checked writes, the stripes they hold and the counters they set in
    /// this thread's turn, and notes the turn in `deferred`.
    pub(crate) fn defer(
        &self,
        writes: Writes,
        taken: Taken,
        counters: impl Iterator<Item = (Bytes, u64, Counter)>,
        deferred: &mut Deferred,
    ) {
        let mut turn = self.turns.threads.get_or_default().borrow_mut();
        match &mut turn.writes {
            Some(pending) => pending.append(writes),
            none => *none = Some(writes),
        }
        turn.taken.absorb(taken);
        turn.counters.extend(counters);
        deferred.0.get_or_insert(turn.number);
        let full = turn.taken.exclusive_count() >= EXCLUSIVE_PER_TURN;
        drop(turn);
        if full {
            self.end_turn();
        }
    }

    /// Applies this thread's pending turn, if there is one: call before anything that must
    /// see the writes before it or may wait for a key lock. A failure is kept for the
    /// batches that were in the turn (they fail at [`Storage::end_batch`]), not returned.
    pub fn end_turn(&self) {
        let Some(cell) = self.turns.threads.get() else {
            return;
        };
        let (number, writes, mut taken, mut counters) = {
            let mut turn = cell.borrow_mut();
            let Some(writes) = turn.writes.take() else {
                return;
            };
            let number = turn.number;
            turn.number += 1;
            let taken = std::mem::take(&mut turn.taken);
            (number, writes, taken, std::mem::take(&mut turn.counters))
        };
        let written = self.engine.write(writes);
        if written.is_ok() {
            // With the keys' stripes still held: see `counters`.
            for (key, hash, counter) in counters.drain(..) {
                self.engine.remember_counter(&key, hash, counter);
            }
        }
        self.locks.release(&mut taken);
        // Both emptied, their room kept for the next turn.
        counters.clear();
        let mut turn = cell.borrow_mut();
        turn.taken = taken;
        turn.counters = counters;
        match written {
            Ok(()) => turn.applied_through = self.engine.write_mark(),
            Err(err) => {
                tracing::error!(%err, "applying a loop turn's writes failed");
                self.turns.failing.store(true, Ordering::Relaxed);
                if turn.failed.len() == FAILED_KEPT {
                    turn.failed.pop_front();
                }
                turn.failed.push_back((number, err.to_string()));
            }
        }
    }

    /// A guard that applies this thread's turn when dropped (see [`EndsTurn`]).
    pub fn ends_turn(&self) -> EndsTurn<'_> {
        EndsTurn(self)
    }

    /// Applies the turns `deferred` names if they are still pending; returns how far the log
    /// must reach for their writes, or why one of them failed.
    pub(crate) fn settle(&self, deferred: Deferred) -> Result<u64, EngineError> {
        let Some(first) = deferred.0 else {
            return Ok(0);
        };
        self.end_turn();
        let Some(cell) = self.turns.threads.get() else {
            return Ok(0);
        };
        let turn = cell.borrow();
        // A turn from `first` on failed: it may not be this batch's (another connection's
        // group can have started it), but a batch cannot tell, and closing a connection
        // whose writes did reach the log only costs the client a retry.
        match turn.failed.iter().find(|(number, _)| *number >= first) {
            Some((_, reason)) => Err(EngineError::Turn(TurnFailed(reason.clone()))),
            None => Ok(turn.applied_through),
        }
    }

    /// Notes that writing the log failed, or that a write at once succeeded again.
    pub(crate) fn note_writes_failing(&self, failing: bool) {
        if self.turns.failing.load(Ordering::Relaxed) != failing {
            self.turns.failing.store(failing, Ordering::Relaxed);
        }
    }
}
