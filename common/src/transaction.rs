//! MULTI/EXEC's shared pieces: a queued command, what WATCH saw of a key, and the form a
//! transaction travels in from a cluster proxy to the storage node of its shard.
//!
//! Inside a `SHARD` envelope (see [`crate::internal`]):
//!
//! ```text
//! WATCHING <key>                                  → the key's digest (16 bytes) or nil
//! TRANSACTION <n> (<key> <seen>)×n (<argc> <arg>…)…  → EXEC's array, or nil when a watched
//!                                                    key changed (<seen> empty: absent)
//! ```
//!
//! Both sides use this module, so the words and their parsing exist once.

use bytes::Bytes;

use crate::command::{self, CommandSpec};
use crate::resp::request::parse_i64;
use crate::resp::Reply;

/// What WATCH saw of a key: a digest of its live value and expiry, or `None` when the key did
/// not exist (or had expired). EXEC runs only if every watched key still reads the same.
pub type Seen = Option<u128>;

/// A command a client sent between MULTI and EXEC: resolved and arity-checked when queued,
/// run at EXEC.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Its table entry.
    pub spec: &'static CommandSpec,
    /// Its arguments, name first.
    pub args: Vec<Bytes>,
}

/// The inner command of WATCH's read at a storage node.
pub const WATCHING: &[u8] = b"WATCHING";

/// The inner command of a transaction sent to a storage node.
pub const TRANSACTION: &[u8] = b"TRANSACTION";

/// EXEC after a command failed to queue (unknown, wrong arity, not permitted).
pub const EXECABORT: Reply =
    Reply::error("EXECABORT Transaction discarded because of previous errors.");

/// EXEC without MULTI.
pub const EXEC_WITHOUT_MULTI: Reply = Reply::error("ERR EXEC without MULTI");

/// DISCARD without MULTI.
pub const DISCARD_WITHOUT_MULTI: Reply = Reply::error("ERR DISCARD without MULTI");

/// MULTI inside MULTI (the transaction is kept, as in Redis).
pub const NESTED_MULTI: Reply = Reply::error("ERR MULTI calls can not be nested");

/// WATCH inside MULTI (the transaction is kept, as in Redis).
pub const WATCH_INSIDE_MULTI: Reply = Reply::error("ERR WATCH inside MULTI is not allowed");

/// A digest as WATCHING answers it and TRANSACTION carries it: 16 bytes, or empty for
/// absent.
pub fn seen_bytes(seen: Seen) -> Bytes {
    match seen {
        Some(digest) => Bytes::copy_from_slice(&digest.to_be_bytes()),
        None => Bytes::new(),
    }
}

/// A digest field that is neither empty nor 16 bytes.
#[derive(Debug, thiserror::Error)]
#[error("a WATCH digest is 16 bytes or empty, not {0}")]
pub struct BadDigest(usize);

/// Reads back [`seen_bytes`].
pub fn parse_seen(bytes: &[u8]) -> Result<Seen, BadDigest> {
    match bytes.len() {
        0 => Ok(None),
        16 => {
            let mut digest = [0u8; 16];
            digest.copy_from_slice(bytes);
            Ok(Some(u128::from_be_bytes(digest)))
        }
        n => Err(BadDigest(n)),
    }
}

/// The `TRANSACTION` request (without its envelope) for these watched keys and commands.
pub fn encode(watched: &[(Bytes, Seen)], queued: &[Queued]) -> Vec<Bytes> {
    let count = |n: usize| Bytes::from(n.to_string());
    let mut out = Vec::with_capacity(
        2 + 2 * watched.len() + queued.iter().map(|q| 1 + q.args.len()).sum::<usize>(),
    );
    out.push(Bytes::from_static(TRANSACTION));
    out.push(count(watched.len()));
    for (key, seen) in watched {
        out.push(key.clone());
        out.push(seen_bytes(*seen));
    }
    for q in queued {
        out.push(count(q.args.len()));
        out.extend(q.args.iter().cloned());
    }
    out
}

/// A decoded `TRANSACTION`: the watched keys with what was seen, and the commands.
pub type Decoded = (Vec<(Bytes, Seen)>, Vec<Queued>);

/// Reads a `TRANSACTION` request (`args[0]` is the word). Every command is resolved and
/// arity-checked as the proxy did; an error names what is malformed.
pub fn decode(args: &[Bytes]) -> Result<Decoded, Reply> {
    let malformed = |what: &str| Reply::error_owned(format!("ERR malformed TRANSACTION: {what}"));
    let number = |arg: Option<&Bytes>| {
        arg.and_then(|a| parse_i64(a))
            .and_then(|n| usize::try_from(n).ok())
    };
    let watches = number(args.get(1)).ok_or_else(|| malformed("watched key count"))?;
    let mut at = 2;
    let mut watched = Vec::with_capacity(watches.min(args.len()));
    for _ in 0..watches {
        let (Some(key), Some(seen)) = (args.get(at), args.get(at + 1)) else {
            return Err(malformed("missing watched key"));
        };
        let seen = parse_seen(seen).map_err(|e| malformed(&e.to_string()))?;
        watched.push((key.clone(), seen));
        at += 2;
    }
    let mut queued = Vec::new();
    while at < args.len() {
        let argc = number(args.get(at)).ok_or_else(|| malformed("argument count"))?;
        let end = at + 1 + argc;
        if argc == 0 || end > args.len() {
            return Err(malformed("argument count"));
        }
        let command = &args[at + 1..end];
        let spec = command::resolve(command)?;
        queued.push(Queued {
            spec,
            args: command.to_vec(),
        });
        at = end;
    }
    Ok((watched, queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(args: &[&'static str]) -> Queued {
        let args: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::from_static(a.as_bytes()))
            .collect();
        Queued {
            spec: command::resolve(&args).expect("known command"),
            args,
        }
    }

    #[test]
    fn a_transaction_reads_back_as_it_was_written() {
        let watched = vec![
            (Bytes::from_static(b"a"), Some(u128::MAX - 7)),
            (Bytes::from_static(b""), None),
        ];
        let commands = [queued(&["SET", "a", ""]), queued(&["INCR", "b"])];
        let wire = encode(&watched, &commands);
        let (back_watched, back) = decode(&wire).expect("well formed");
        assert_eq!(back_watched, watched);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].args, commands[0].args);
        assert_eq!(back[1].spec.name, "incr");
    }

    #[test]
    fn malformed_transactions_are_refused_with_what_is_wrong() {
        let b = |parts: &[&'static str]| -> Vec<Bytes> {
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect()
        };
        for (wire, says) in [
            (b(&["TRANSACTION"]), "watched key count"),
            (b(&["TRANSACTION", "1", "k"]), "missing watched key"),
            (
                b(&["TRANSACTION", "1", "k", "xyz"]),
                "digest is 16 bytes or empty, not 3",
            ),
            (b(&["TRANSACTION", "0", "3", "SET", "a"]), "argument count"),
            (b(&["TRANSACTION", "0", "0"]), "argument count"),
        ] {
            match decode(&wire) {
                Err(Reply::Error(text)) => assert!(
                    String::from_utf8_lossy(&text).contains(says),
                    "{wire:?}: {text:?}"
                ),
                other => panic!("{wire:?} decoded: {other:?}"),
            }
        }
        match decode(&b(&["TRANSACTION", "0", "2", "SET", "a"])) {
            Err(Reply::Error(text)) => {
                assert_eq!(
                    &text[..],
                    b"ERR wrong number of arguments for 'set' command"
                )
            }
            other => panic!("decoded: {other:?}"),
        }
    }
}
