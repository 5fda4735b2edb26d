//! Per-connection state: what HELLO, CLIENT and SELECT change, what CLIENT INFO shows, and the
//! transaction MULTI and WATCH start.
//!
//! A session belongs to its connection's task alone, so none of it is shared or locked; what
//! CLIENT LIST shows of it to other connections is published to its [`Listed`] entry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringkv_common::acl::User;
use ringkv_common::command::CommandSpec;
use ringkv_common::resp::{Protocol, Reply};
use ringkv_common::transaction::{Queued, Seen};

use crate::clients::Listed;

/// The next client id. Ids are never reused within a process, as Redis's, so CLIENT ID is a
/// safe handle for a connection.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// The state of one client connection.
#[derive(Debug)]
pub struct Session {
    /// Unique id (CLIENT ID, HELLO's `id`).
    pub id: u64,
    /// The protocol replies are encoded in: RESP2 until `HELLO 3`.
    pub protocol: Protocol,
    /// CLIENT SETNAME / HELLO SETNAME; `None` when unset.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
    /// The selected database: always 0, the only one there is.
    pub db: u32,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// The socket's file descriptor, shown by CLIENT INFO.
    pub fd: i32,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// Set by QUIT: close once the replies so far are written.
    pub closing: bool,
    /// The authenticated user; `None` until AUTH when the default user needs a password.
    pub user: Option<Arc<User>>,
    /// The commands queued since MULTI; `None` outside a transaction.
    pub transaction: Option<Transaction>,
    /// WATCH's keys and what each held then, until EXEC, DISCARD, UNWATCH or RESET.
    pub watched: Vec<(Bytes, Seen)>,
    /// The last command the client sent (CLIENT INFO's and CLIENT LIST's `cmd`).
    pub last_command: Option<&'static CommandSpec>,
    /// This client in the server's registry (CLIENT LIST, CLIENT KILL); `None` for a session
    /// that is not a connection's.
    pub listed: Option<Arc<Listed>>,
}

/// A transaction being queued: what EXEC will run.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The commands, in order.
    pub queued: Vec<Queued>,
    /// Whether a command failed to queue (unknown, wrong arity, not permitted, over
    /// [`MAX_QUEUED_BYTES`]): EXEC then runs nothing and answers EXECABORT, as in Redis.
    pub failed: bool,
    /// What the queued commands hold, as [`queued_cost`] counts it.
    pub bytes: usize,
}

/// Most memory one transaction's queued commands may hold: Redis's default
/// `client-query-buffer-limit`. Redis bounds a transaction only by the server's memory; a
/// client that forgot its EXEC would otherwise grow without end.
pub const MAX_QUEUED_BYTES: usize = 1 << 30;

/// The answer to a command that would take a transaction over [`MAX_QUEUED_BYTES`].
pub const TOO_LARGE: Reply =
    Reply::error("ERR the transaction's queued commands exceed 1 GiB: EXEC will discard it");

/// What a queued command holds: its arguments and their bookkeeping.
pub fn queued_cost(args: &[Bytes]) -> usize {
    const PER_ARG: usize = std::mem::size_of::<Bytes>();
    const PER_COMMAND: usize = std::mem::size_of::<Queued>();
    PER_COMMAND + args.iter().map(|a| PER_ARG + a.len()).sum::<usize>()
}

impl Transaction {
    /// Marks it failed (EXEC will answer EXECABORT) and drops what was queued.
    pub fn fail(&mut self) {
        self.failed = true;
        self.queued = Vec::new();
        self.bytes = 0;
    }

    /// Queues `queued` unless the transaction already failed (then nothing runs, so nothing
    /// is kept) or it would go over `max` bytes (then it fails, and the error is returned).
    pub fn push(&mut self, queued: Queued, max: usize) -> Result<(), Reply> {
        if self.failed {
            return Ok(());
        }
        let cost = queued_cost(&queued.args);
        if self.bytes + cost > max {
            self.fail();
            return Err(TOO_LARGE);
        }
        self.bytes += cost;
        self.queued.push(queued);
        Ok(())
    }
}

impl Session {
    /// A fresh session with the next client id.
    pub fn new(peer: SocketAddr, local: SocketAddr, fd: i32) -> Session {
        Session {
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            db: 0,
            peer,
            local,
            fd,
            connected_at: Instant::now(),
            closing: false,
            user: None,
            transaction: None,
            watched: Vec::new(),
            last_command: None,
            listed: None,
        }
    }

    /// Shows other connections (CLIENT LIST) what this session is now: call after a command
    /// that changed its name, library, user, protocol or transaction.
    pub fn publish(&self) {
        if let Some(listed) = &self.listed {
            listed.publish(self);
        }
    }

    /// RESET: back to RESP2, database 0, no name, no transaction or watched key, and the
    /// user a new connection gets (`initial`: the default user if it needs no password, else
    /// none until AUTH). The library name and version stay, as in Redis, since they still
    /// describe the client.
    pub fn reset(&mut self, initial: Option<Arc<User>>) {
        self.transaction = None;
        self.watched.clear();
        self.protocol = Protocol::Resp2;
        self.name = None;
        self.db = 0;
        self.user = initial;
    }

    /// Sets (or, with an empty value, clears) the name. Validate first with
    /// [`valid_client_attr`]. The bytes are copied so the name does not pin the read buffer.
    pub fn set_name(&mut self, name: &[u8]) {
        self.name = stored(name);
    }
}

/// A session of a client at 127.0.0.1:5000 connected to 127.0.0.1:6379 on descriptor 9, for
/// unit tests.
#[cfg(test)]
pub(crate) fn test_session() -> Session {
    Session::new(
        SocketAddr::from(([127, 0, 0, 1], 5000)),
        SocketAddr::from(([127, 0, 0, 1], 6379)),
        9,
    )
}

/// Whether a client name, library name or library version can be shown by CLIENT INFO /
/// CLIENT LIST, whose fields are split on spaces: only printable ASCII without spaces, as
/// Redis checks.
pub fn valid_client_attr(value: &[u8]) -> bool {
    value.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// An attribute as stored: `None` for the empty string (which clears it), else an owned copy.
pub fn stored(value: &[u8]) -> Option<Bytes> {
    (!value.is_empty()).then(|| Bytes::copy_from_slice(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        Session::new(addr, addr, 3)
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let (a, b) = (session(), session());
        assert!(b.id > a.id);
    }

    #[test]
    fn client_names_allow_printable_ascii_only() {
        assert!(valid_client_attr(b"my-app:worker_1"));
        assert!(valid_client_attr(b""));
        for bad in [
            &b"a b"[..],
            b"a\nb",
            b"tab\t",
            b"\x7f",
            "é".as_bytes(),
            b"\0",
        ] {
            assert!(!valid_client_attr(bad), "{bad:?}");
        }
    }

    #[test]
    fn reset_keeps_library_info() {
        let mut s = session();
        s.protocol = Protocol::Resp3;
        s.set_name(b"n");
        s.lib_name = stored(b"redis-py");
        s.reset(None);
        assert_eq!((s.protocol, s.name.is_none()), (Protocol::Resp2, true));
        assert_eq!(s.lib_name.as_deref(), Some(&b"redis-py"[..]));
    }

    #[test]
    fn a_transaction_over_its_bound_fails_and_keeps_nothing() {
        let queued = |value: &'static [u8]| {
            let args = vec![
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"k"),
                Bytes::from_static(value),
            ];
            Queued {
                spec: ringkv_common::command::resolve(&args).expect("SET"),
                args,
            }
        };
        let one = queued_cost(&queued(&[0; 100]).args);
        let mut t = Transaction::default();
        t.push(queued(&[0; 100]), 2 * one).expect("under the bound");
        t.push(queued(&[0; 100]), 2 * one).expect("at the bound");
        assert_eq!(t.push(queued(b"x"), 2 * one), Err(TOO_LARGE));
        assert!(t.failed && t.queued.is_empty());
        // A failed transaction keeps nothing more, and answers QUEUED as Redis does.
        assert_eq!(t.push(queued(b"x"), 2 * one), Ok(()));
        assert!(t.queued.is_empty());
    }

    #[test]
    fn empty_name_clears() {
        let mut s = session();
        s.set_name(b"x");
        s.set_name(b"");
        assert!(s.name.is_none());
    }
}
