//! SLOWLOG: the last commands that took at least `slowlog-log-slower-than` microseconds, as
//! Redis keeps them (at most `slowlog-max-len`, newest first), for SLOWLOG GET / LEN / RESET.
//!
//! What a request pays is one relaxed load and a comparison with the time it already measured
//! for INFO commandstats; only a slow command takes the log's lock and copies its arguments
//! (at most 32, each cut at 128 bytes, as Redis cuts them). The time is the one commandstats
//! records: from dispatch to reply, which through a cluster includes the trip to the storage
//! node, and for a pipeline's gathered writes (plain SET, MSET, INCR…) the whole group's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ringkv_common::clock::now_ms;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::resp::Reply;

use crate::session::Session;

/// Redis's default `slowlog-log-slower-than`, in microseconds.
pub const DEFAULT_SLOWER_THAN_US: i64 = 10_000;

/// Redis's default `slowlog-max-len`.
pub const DEFAULT_MAX_LEN: usize = 128;

/// Arguments an entry keeps; past it the last one says how many more there were.
const MAX_ARGS: usize = 32;

/// Bytes an argument keeps; past it the rest is summarised.
const MAX_ARG_BYTES: usize = 128;

/// The slow log of one server (each proxy keeps its own).
#[derive(Debug)]
pub struct SlowLog {
    /// `slowlog-log-slower-than`: negative turns the log off, 0 logs every command.
    slower_than_us: AtomicI64,
    /// `slowlog-max-len`.
    max_len: AtomicUsize,
    /// The next entry's id (ids keep growing across RESET, as Redis's).
    next_id: AtomicU64,
    entries: Mutex<VecDeque<Entry>>,
}

/// One logged command.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    /// Unix seconds when it was logged.
    at: i64,
    micros: u64,
    args: Vec<Bytes>,
    peer: Bytes,
    name: Bytes,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            slower_than_us: AtomicI64::new(DEFAULT_SLOWER_THAN_US),
            max_len: AtomicUsize::new(DEFAULT_MAX_LEN),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
        }
    }
}

impl SlowLog {
    /// `slowlog-log-slower-than`, for CONFIG GET.
    pub fn slower_than_us(&self) -> i64 {
        self.slower_than_us.load(Ordering::Relaxed)
    }

    /// CONFIG SET slowlog-log-slower-than (checked by the caller: -1 or more).
    pub fn set_slower_than_us(&self, micros: i64) {
        self.slower_than_us.store(micros, Ordering::Relaxed);
    }

    /// `slowlog-max-len`, for CONFIG GET.
    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    /// CONFIG SET slowlog-max-len: older entries past it go at once.
    pub fn set_max_len(&self, max_len: usize) {
        self.max_len.store(max_len, Ordering::Relaxed);
        let mut entries = self.lock();
        entries.truncate(max_len);
    }

    /// Whether a command that took `took` goes in the log.
    #[inline]
    pub fn is_slow(&self, took: Duration) -> bool {
        let threshold = self.slower_than_us.load(Ordering::Relaxed);
        threshold >= 0 && took.as_micros() >= threshold.unsigned_abs().into()
    }

    /// Logs `spec` run with `args` (its name first, as sent) by `session`'s client if it
    /// took long enough. EXEC is not logged (as in Redis), and passwords never are.
    #[inline]
    pub fn note(&self, spec: &CommandSpec, args: &[Bytes], took: Duration, session: &Session) {
        if self.is_slow(took) && spec.cmd != Cmd::Exec {
            self.push(spec, None, args, took, session);
        }
    }

    /// Logs a command whose name is not among `args` (a gathered write: its arguments were
    /// moved into the group), naming it as the table does.
    pub fn note_named(
        &self,
        spec: &CommandSpec,
        args: &[Bytes],
        took: Duration,
        session: &Session,
    ) {
        if self.is_slow(took) {
            let name = Bytes::from_static(spec.name.as_bytes());
            self.push(spec, Some(name), args, took, session);
        }
    }

    /// Logs the command `name` (when not among `args`) and `args`.
    fn push(
        &self,
        spec: &CommandSpec,
        name: Option<Bytes>,
        args: &[Bytes],
        took: Duration,
        session: &Session,
    ) {
        let max_len = self.max_len();
        if max_len == 0 {
            return;
        }
        // `secrets` counts from the name: a command named apart from its arguments (a gathered
        // write) has none.
        let secrets = if name.is_none() {
            secrets(spec, args)
        } else {
            Vec::new()
        };
        let argc = args.len() + usize::from(name.is_some());
        let kept = argc.min(MAX_ARGS);
        let args = name
            .iter()
            .chain(args)
            .take(kept)
            .enumerate()
            .map(|(i, arg)| {
                if kept != argc && i == kept - 1 {
                    Bytes::from(format!("... ({} more arguments)", argc - kept + 1))
                } else if secrets.contains(&i) {
                    Bytes::from_static(b"(redacted)")
                } else {
                    shortened(arg)
                }
            })
            .collect();
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at: now_ms() / 1000,
            micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            args,
            peer: Bytes::from(session.peer.to_string()),
            name: session.name.clone().unwrap_or_default(),
        };
        let mut entries = self.lock();
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    /// SLOWLOG GET: the newest `count` entries (all of them for `None`).
    pub fn get(&self, count: Option<usize>) -> Reply {
        let entries = self.lock();
        let shown = count.unwrap_or(entries.len());
        Reply::Array(
            entries
                .iter()
                .take(shown)
                .map(|e| {
                    Reply::Array(vec![
                        Reply::Int(i64::try_from(e.id).unwrap_or(i64::MAX)),
                        Reply::Int(e.at),
                        Reply::Int(i64::try_from(e.micros).unwrap_or(i64::MAX)),
                        Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                        Reply::Bulk(e.peer.clone()),
                        Reply::Bulk(e.name.clone()),
                    ])
                })
                .collect(),
        )
    }

    /// SLOWLOG LEN.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is logged.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// SLOWLOG RESET.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// The entries' lock. A panic while it was held left whole entries behind, so a poisoned
    /// lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The places in `argv` of the secrets Redis logs as `(redacted)`: every argument of AUTH,
/// the user and password after HELLO's `AUTH`.
fn secrets(spec: &CommandSpec, argv: &[Bytes]) -> Vec<usize> {
    match spec.cmd {
        Cmd::Auth => (1..argv.len()).collect(),
        Cmd::Hello => (2..argv.len())
            .find(|&j| argv[j].eq_ignore_ascii_case(b"auth") && argv.len() - 1 - j >= 2)
            .map_or_else(Vec::new, |j| vec![j + 1, j + 2]),
        _ => Vec::new(),
    }
}

/// An argument as an entry keeps it: at most 128 bytes, then how many more there were. Always
/// a copy: an argument shares the client's read buffer, which an entry must not pin.
fn shortened(arg: &Bytes) -> Bytes {
    if arg.len() <= MAX_ARG_BYTES {
        return Bytes::copy_from_slice(arg);
    }
    let more = format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES);
    let mut short = BytesMut::with_capacity(MAX_ARG_BYTES + more.len());
    short.put_slice(&arg[..MAX_ARG_BYTES]);
    short.put_slice(more.as_bytes());
    short.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::session::test_session as session;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn spec(words: &[&str]) -> &'static CommandSpec {
        ringkv_common::command::resolve(&args(words)).expect("a known command")
    }

    fn logged_args(log: &SlowLog) -> Vec<Vec<String>> {
        let Reply::Array(entries) = log.get(None) else {
            panic!("not an array")
        };
        entries
            .iter()
            .map(|entry| match entry {
                Reply::Array(fields) => match &fields[3] {
                    Reply::Array(args) => args
                        .iter()
                        .map(|a| match a {
                            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                            other => panic!("{other:?}"),
                        })
                        .collect(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn only_commands_at_or_over_the_threshold_are_logged_newest_first() {
        let log = SlowLog::default();
        let s = session();
        let get = args(&["GET", "k"]);
        log.note(spec(&["GET", "k"]), &get, Duration::from_micros(9_999), &s);
        assert!(log.is_empty());
        log.note(spec(&["GET", "k"]), &get, Duration::from_micros(10_000), &s);
        log.note_named(
            spec(&["SET", "k", "v"]),
            &args(&["k", "v"]),
            Duration::from_millis(11),
            &s,
        );
        assert_eq!(logged_args(&log), [vec!["set", "k", "v"], vec!["GET", "k"]]);
        log.set_slower_than_us(-1);
        log.note(spec(&["GET", "k"]), &get, Duration::from_secs(1), &s);
        assert_eq!(log.len(), 2, "a negative threshold logs nothing");
        log.reset();
        assert!(log.is_empty());
    }

    #[test]
    fn long_arguments_and_passwords_are_cut_as_redis_cuts_them() {
        let log = SlowLog::default();
        log.set_slower_than_us(0);
        let s = session();
        let long = "a".repeat(200);
        log.note(
            spec(&["SET", "k", "v"]),
            &args(&["SET", "k", &long]),
            Duration::ZERO,
            &s,
        );
        let many: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let mut del = vec!["DEL"];
        del.extend(many.iter().map(String::as_str));
        log.note(spec(&del), &args(&del), Duration::ZERO, &s);
        log.note(
            spec(&["AUTH", "x"]),
            &args(&["AUTH", "secret"]),
            Duration::ZERO,
            &s,
        );
        let logged = logged_args(&log);
        assert_eq!(logged[0], ["AUTH", "(redacted)"]);
        assert_eq!(logged[1].len(), 32);
        assert_eq!(logged[1][31], "... (10 more arguments)");
        assert_eq!(logged[1][30], "k29");
        assert_eq!(
            logged[2][2],
            format!("{}... (72 more bytes)", "a".repeat(128))
        );
        let hello = ["HELLO", "3", "AUTH", "u", "p", "SETNAME", "n"];
        log.note(spec(&hello), &args(&hello), Duration::ZERO, &s);
        assert_eq!(
            logged_args(&log)[0],
            [
                "HELLO",
                "3",
                "AUTH",
                "(redacted)",
                "(redacted)",
                "SETNAME",
                "n"
            ]
        );
    }

    #[test]
    fn the_log_keeps_at_most_max_len_entries() {
        let log = SlowLog::default();
        log.set_slower_than_us(0);
        let s = session();
        for i in 0..5 {
            let key = format!("k{i}");
            log.note(
                spec(&["GET", "k"]),
                &args(&["GET", &key]),
                Duration::ZERO,
                &s,
            );
        }
        log.set_max_len(3);
        assert_eq!(log.len(), 3);
        assert_eq!(logged_args(&log)[0], ["GET", "k4"]);
        log.set_max_len(0);
        log.note(
            spec(&["GET", "k"]),
            &args(&["GET", "k"]),
            Duration::ZERO,
            &s,
        );
        assert!(log.is_empty());
    }
}
