//! INFO's commandstats and errorstats: calls, time, rejections and failures per command, and
//! error replies per error code, counted as redis-server counts them.
//!
//! Every command adds to these, so each thread (an event loop) keeps its own counts and INFO
//! sums them: a loop writes only its own cache lines, with a plain load and store and no
//! locked instruction. CONFIG RESETSTAT cannot zero another thread's counts without racing
//! its stores, so it takes a baseline that later sums subtract. Error replies are rare next
//! to commands; each thread keeps its codes behind its own, uncontended, lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ringkv_common::command::{all_specs, command_slots, CommandSpec};
use ringkv_common::resp::Reply;
use thread_local::ThreadLocal;

/// Distinct error codes errorstats lists, Redis's own limit: a code first seen past it is not
/// listed (its replies still count in total_error_replies).
const ERROR_CODES_KEPT: usize = 128;

/// How far into an error message its code may end: Redis takes the first word only when a
/// space comes within this many bytes, and counts the reply as `ERR` otherwise.
const ERROR_CODE_SCAN: usize = 32;

/// One command's figures since start (or CONFIG RESETSTAT).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommandCounts {
    /// Times it ran, failed runs included.
    pub calls: u64,
    /// Time spent on it, summed over its calls.
    pub nanos: u64,
    /// Times it was refused before running: wrong arity, NOAUTH, NOPERM.
    pub rejected: u64,
    /// Runs whose reply was an error.
    pub failed: u64,
}

impl CommandCounts {
    /// Redis's `cmdstat_<name>` value: `calls=…,usec=…,usec_per_call=…,rejected_calls=…,failed_calls=…`.
    pub fn render(&self) -> String {
        let usec = self.nanos / 1000;
        let per_call = if self.calls == 0 {
            0.0
        } else {
            self.nanos as f64 / 1000.0 / self.calls as f64
        };
        format!(
            "calls={},usec={usec},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}",
            self.calls, self.rejected, self.failed
        )
    }

    fn minus(self, base: CommandCounts) -> CommandCounts {
        CommandCounts {
            calls: self.calls.saturating_sub(base.calls),
            nanos: self.nanos.saturating_sub(base.nanos),
            rejected: self.rejected.saturating_sub(base.rejected),
            failed: self.failed.saturating_sub(base.failed),
        }
    }

    fn is_empty(&self) -> bool {
        self.calls == 0 && self.rejected == 0
    }
}

/// One thread's error replies by code, in first-seen order.
type ErrorCounts = Mutex<Vec<(Box<str>, u64)>>;

/// One thread's counts of one command.
#[derive(Default)]
struct Slot {
    calls: AtomicU64,
    nanos: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

impl Slot {
    fn load(&self) -> CommandCounts {
        CommandCounts {
            calls: self.calls.load(Relaxed),
            nanos: self.nanos.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// Adds to a count that only the calling thread writes: no locked instruction is needed.
#[inline]
fn bump(count: &AtomicU64, by: u64) {
    count.store(count.load(Relaxed).wrapping_add(by), Relaxed);
}

/// Every command and subcommand, at the index of its `Cmd`.
fn specs() -> &'static [Option<&'static CommandSpec>] {
    static SPECS: OnceLock<Vec<Option<&'static CommandSpec>>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut specs = vec![None; command_slots()];
        for spec in all_specs() {
            specs[spec.cmd as usize] = Some(spec);
        }
        specs
    })
}

/// The counts behind INFO commandstats and errorstats, for one server. Aligned so that no
/// counter the loops write shares a cache line with the table each command reads to find its
/// thread's counts (it sits beside the server's shared counters).
#[derive(Default)]
#[repr(align(128))]
pub struct CommandStats {
    /// Each thread's counts, indexed by `Cmd`.
    threads: ThreadLocal<Box<[Slot]>>,
    /// The sums at the last CONFIG RESETSTAT, indexed by `Cmd` (empty before the first).
    baseline: Mutex<Vec<CommandCounts>>,
    /// Each thread's error replies.
    errors: ThreadLocal<ErrorCounts>,
}

impl std::fmt::Debug for CommandStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandStats").finish_non_exhaustive()
    }
}

/// The calling thread's counts, looked up once for a group of commands.
pub struct LocalCounts<'a>(&'a [Slot]);

impl LocalCounts<'_> {
    /// Counts one run of `spec` that took `took`; `failed` when its reply was an error.
    #[inline]
    pub fn record(&self, spec: &CommandSpec, failed: bool, took: Duration) {
        if let Some(slot) = self.0.get(spec.cmd as usize) {
            bump(&slot.calls, 1);
            bump(&slot.failed, u64::from(failed));
            bump(
                &slot.nanos,
                u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            );
        }
    }
}

impl CommandStats {
    /// The calling thread's counts (made on its first command).
    #[inline]
    pub fn local(&self) -> LocalCounts<'_> {
        LocalCounts(
            self.threads
                .get_or(|| (0..specs().len()).map(|_| Slot::default()).collect()),
        )
    }

    /// Counts one run of `spec` that took `took`; `failed` when its reply was an error.
    #[inline]
    pub fn record(&self, spec: &CommandSpec, failed: bool, took: Duration) {
        self.local().record(spec, failed, took);
    }

    /// Counts a request for `spec` refused before it ran (wrong arity, NOAUTH, NOPERM).
    pub fn reject(&self, spec: &CommandSpec) {
        if let Some(slot) = self.local().0.get(spec.cmd as usize) {
            bump(&slot.rejected, 1);
        }
    }

    /// Counts an error reply under its code: the message's first word when a space comes
    /// within its first 32 bytes, otherwise `ERR`, as Redis does. Other replies are ignored.
    pub fn error(&self, reply: &Reply) {
        let Reply::Error(text) = reply else {
            return;
        };
        let head = &text[..text.len().min(ERROR_CODE_SCAN)];
        let code = match head.iter().position(|&b| b == b' ') {
            Some(end) => &text[..end],
            None => b"ERR".as_slice(),
        };
        let mut codes = self
            .errors
            .get_or_default()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = codes.iter_mut().find(|(c, _)| c.as_bytes() == code) {
            *count += 1;
        } else if codes.len() < ERROR_CODES_KEPT {
            codes.push((String::from_utf8_lossy(code).into(), 1));
        }
    }

    /// Every command that ran or was refused since start (or CONFIG RESETSTAT), by name.
    pub fn commands(&self) -> Vec<(&'static str, CommandCounts)> {
        let baseline = self.baseline.lock().unwrap_or_else(PoisonError::into_inner);
        let mut listed: Vec<(&'static str, CommandCounts)> = self
            .sums()
            .into_iter()
            .enumerate()
            .filter_map(|(i, sum)| {
                let counts = sum.minus(baseline.get(i).copied().unwrap_or_default());
                let spec = specs().get(i).copied().flatten()?;
                (!counts.is_empty()).then_some((spec.name, counts))
            })
            .collect();
        listed.sort_unstable_by_key(|(name, _)| *name);
        listed
    }

    /// Error replies by code since start (or CONFIG RESETSTAT), by code.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let mut merged: Vec<(String, u64)> = Vec::new();
        for codes in self.errors.iter() {
            let codes = codes.lock().unwrap_or_else(PoisonError::into_inner);
            for (code, count) in codes.iter() {
                match merged.iter_mut().find(|(c, _)| **c == **code) {
                    Some((_, total)) => *total += count,
                    None => merged.push((code.to_string(), *count)),
                }
            }
        }
        merged.sort_unstable();
        merged.truncate(ERROR_CODES_KEPT);
        merged
    }

    /// CONFIG RESETSTAT: later figures count from now.
    pub fn reset(&self) {
        let sums = self.sums();
        *self.baseline.lock().unwrap_or_else(PoisonError::into_inner) = sums;
        for codes in self.errors.iter() {
            codes.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Every thread's counts added up, indexed by `Cmd`.
    fn sums(&self) -> Vec<CommandCounts> {
        let mut sums = vec![CommandCounts::default(); specs().len()];
        for slots in self.threads.iter() {
            for (sum, slot) in sums.iter_mut().zip(slots.iter()) {
                let counts = slot.load();
                sum.calls += counts.calls;
                sum.nanos = sum.nanos.saturating_add(counts.nanos);
                sum.rejected += counts.rejected;
                sum.failed += counts.failed;
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_common::command::lookup;

    fn spec(name: &str) -> &'static CommandSpec {
        lookup(name.as_bytes()).expect("a known command")
    }

    #[test]
    fn sums_every_threads_calls_and_counts_from_a_reset() {
        let stats = CommandStats::default();
        let get = spec("get");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..1000 {
                        stats.record(get, i % 10 == 0, Duration::from_micros(2));
                    }
                });
            }
        });
        stats.reject(spec("set"));
        let listed = stats.commands();
        assert_eq!(
            listed,
            vec![
                (
                    "get",
                    CommandCounts {
                        calls: 4000,
                        nanos: 8_000_000,
                        rejected: 0,
                        failed: 400,
                    }
                ),
                (
                    "set",
                    CommandCounts {
                        rejected: 1,
                        ..CommandCounts::default()
                    }
                ),
            ]
        );
        assert_eq!(
            listed[0].1.render(),
            "calls=4000,usec=8000,usec_per_call=2.00,rejected_calls=0,failed_calls=400"
        );
        stats.reset();
        assert!(stats.commands().is_empty());
        stats.record(get, false, Duration::from_nanos(1500));
        assert_eq!(
            stats.commands()[0].1.render(),
            "calls=1,usec=1,usec_per_call=1.50,rejected_calls=0,failed_calls=0"
        );
    }

    #[test]
    fn errors_count_by_their_first_word_as_redis_does() {
        let stats = CommandStats::default();
        for text in [
            "ERR syntax error",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR value is not an integer or out of range",
            // No space in the first 32 bytes: Redis counts it as ERR.
            "NOSPACEINTHEFIRSTTHIRTYTWOBYTES_AT_ALL here",
        ] {
            stats.error(&Reply::error_owned(text.to_string()));
        }
        stats.error(&Reply::Ok);
        std::thread::scope(|s| {
            s.spawn(|| stats.error(&Reply::error("NOAUTH Authentication required.")));
        });
        assert_eq!(
            stats.errors(),
            vec![
                ("ERR".to_string(), 3),
                ("NOAUTH".to_string(), 1),
                ("WRONGTYPE".to_string(), 1)
            ]
        );
        stats.reset();
        assert!(stats.errors().is_empty());
    }

    #[test]
    fn error_codes_past_the_limit_are_not_listed() {
        let stats = CommandStats::default();
        for i in 0..ERROR_CODES_KEPT + 10 {
            stats.error(&Reply::error_owned(format!("E{i} message")));
        }
        assert_eq!(stats.errors().len(), ERROR_CODES_KEPT);
    }
}
