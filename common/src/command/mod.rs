//! Commands: their identities ([`Cmd`]), their declarations ([`table`]), and resolving a
//! request's first arguments to a declaration with Redis's exact errors.

pub mod docs;
pub mod table;

use std::sync::OnceLock;

use ahash::AHashMap;
use bytes::Bytes;

use crate::resp::Reply;
pub use table::{flag, CommandSpec, KeyRange, Route, COMMANDS};

/// Every command (and subcommand) ringkv knows; the handler matches on it.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    Auth,
    Ping,
    Echo,
    Hello,
    Quit,
    Reset,
    Select,
    Client,
    ClientSetname,
    ClientGetname,
    ClientId,
    ClientSetinfo,
    ClientInfo,
    ClientList,
    ClientKill,
    ClientHelp,
    Command,
    CommandCount,
    CommandInfo,
    CommandDocs,
    CommandList,
    CommandGetkeys,
    CommandHelp,
    Config,
    ConfigGet,
    ConfigSet,
    ConfigResetstat,
    ConfigHelp,
    Slowlog,
    SlowlogGet,
    SlowlogLen,
    SlowlogReset,
    SlowlogHelp,
    Info,
    Time,
    Dbsize,
    Flushall,
    Flushdb,
    Get,
    Set,
    Setnx,
    Setex,
    Psetex,
    Getset,
    Getdel,
    Getex,
    Mget,
    Mset,
    Msetnx,
    Append,
    Strlen,
    Incr,
    Decr,
    Incrby,
    Decrby,
    Incrbyfloat,
    Getrange,
    Setrange,
    Del,
    Unlink,
    Exists,
    Touch,
    Type,
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
    Ttl,
    Pttl,
    Expiretime,
    Pexpiretime,
    Persist,
    Scan,
    Keys,
    Randomkey,
    Rename,
    Renamenx,
    Copy,
    Substr,
    Lcs,
    Object,
    ObjectEncoding,
    ObjectFreq,
    ObjectIdletime,
    ObjectRefcount,
    ObjectHelp,
    Setbit,
    Getbit,
    Bitcount,
    Bitpos,
    Bitop,
    Bitfield,
    BitfieldRo,
    Memory,
    MemoryUsage,
    MemoryHelp,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// Which data-type family a command belongs to (its Redis group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Works on string values.
    String,
    /// Works on string values as arrays of bits (Redis's bitmap group).
    Bitmap,
    /// Works on any key, or on no key.
    Other,
}

impl Family {
    /// Redis's command group of the family: `string`, `bitmap` or `generic`.
    pub const fn group(self) -> &'static str {
        match self {
            Family::String => "string",
            Family::Bitmap => "bitmap",
            Family::Other => "generic",
        }
    }
}

impl Cmd {
    /// The family, which gives the Redis group and ACL category.
    pub const fn family(self) -> Family {
        use Cmd::*;
        match self {
            Get | Set | Setnx | Setex | Psetex | Getset | Getdel | Getex | Mget | Mset | Msetnx
            | Append | Strlen | Incr | Decr | Incrby | Decrby | Incrbyfloat | Getrange
            | Setrange | Substr | Lcs => Family::String,
            Setbit | Getbit | Bitcount | Bitpos | Bitop | Bitfield | BitfieldRo => Family::Bitmap,
            _ => Family::Other,
        }
    }

    /// Whether a command with keys in several shards must run whole or not at all: in a
    /// cluster such a request is refused with CROSSSLOT instead of split per shard.
    pub const fn all_or_nothing(self) -> bool {
        matches!(
            self,
            Cmd::Msetnx | Cmd::Rename | Cmd::Renamenx | Cmd::Copy | Cmd::Lcs | Cmd::Bitop
        )
    }
}

/// Longest command name worth looking up; longer names cannot match.
const MAX_NAME: usize = 32;

fn index() -> &'static AHashMap<&'static [u8], &'static CommandSpec> {
    static INDEX: OnceLock<AHashMap<&'static [u8], &'static CommandSpec>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map = AHashMap::new();
        for spec in COMMANDS {
            map.insert(spec.name.as_bytes(), spec);
            for sub in spec.subcommands {
                map.insert(sub.name.as_bytes(), sub);
            }
        }
        map
    })
}

/// Every command and subcommand of the table, for tables that cover them all (ACL rights,
/// metrics handles, INFO commandstats).
pub fn all_specs() -> impl Iterator<Item = &'static CommandSpec> {
    COMMANDS
        .iter()
        .chain(COMMANDS.iter().flat_map(|c| c.subcommands.iter()))
}

/// Size of a table indexed by `Cmd as usize`: every command and subcommand has its slot.
pub fn command_slots() -> usize {
    all_specs().map(|s| s.cmd as usize + 1).max().unwrap_or(0)
}

/// Looks a name up case-insensitively without allocating; `None` for unknown names.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    index().get(&*lower).copied()
}

/// What a gathered request does; see [`gatherable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// A blind write: plain `SET key value` or a well-formed `MSET`. It reads nothing and
    /// answers `+OK`.
    Put,
    /// `INCR` / `DECR` / `INCRBY` / `DECRBY` with a valid delta: adds this to the key's
    /// number and answers the sum.
    Add(i64),
}

/// Whether a request may run together with its neighbours of the same batch as one engine
/// write under one round of key locks (the standalone connection and the storage node both
/// gather them): blind writes and integer increments. Each still takes effect between its
/// arrival and its reply, in order. Returns its table entry and what it does, or `None` for
/// anything else (SET with options, a malformed MSET, INCRBY with a bad delta, other
/// commands), which then runs on its own and answers its own errors.
pub fn gatherable(args: &[Bytes]) -> Option<(&'static CommandSpec, Gathered)> {
    let name = args.first()?;
    let gathered = match (name.len(), args.len()) {
        (3, 3) if name.eq_ignore_ascii_case(b"set") => Gathered::Put,
        (4, n) if n >= 3 && n % 2 == 1 && name.eq_ignore_ascii_case(b"mset") => Gathered::Put,
        (4, 2) if name.eq_ignore_ascii_case(b"incr") => Gathered::Add(1),
        (4, 2) if name.eq_ignore_ascii_case(b"decr") => Gathered::Add(-1),
        (6, 3) if name.eq_ignore_ascii_case(b"incrby") => {
            Gathered::Add(crate::resp::request::parse_i64(&args[2])?)
        }
        (6, 3) if name.eq_ignore_ascii_case(b"decrby") => {
            Gathered::Add(crate::resp::request::parse_i64(&args[2])?.checked_neg()?)
        }
        _ => return None,
    };
    Some((lookup(name)?, gathered))
}

/// Finds the command a request names and checks its arity, answering exactly as Redis 7 does
/// when the command or subcommand is unknown or the argument count is wrong.
pub fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
    let spec = named(args)?;
    if !spec.arity_ok(args.len()) {
        return Err(wrong_arity(spec.name));
    }
    Ok(spec)
}

/// The command (or subcommand) a request names, its arity unchecked; Redis's unknown-command
/// or unknown-subcommand error otherwise. When [`resolve`] refuses a request this still
/// finds, the arity was wrong: INFO counts that against the command (`rejected_calls`).
pub fn named(args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
    let name = &args[0];
    let Some(base) = lookup(name) else {
        return Err(unknown_command(args));
    };
    let spec = if base.subcommands.is_empty() || args.len() == 1 {
        base
    } else {
        let sub = &args[1];
        let found = base.subcommands.iter().find(|s| {
            let short = &s.name[base.name.len() + 1..];
            short.as_bytes().eq_ignore_ascii_case(sub)
        });
        match found {
            Some(spec) => spec,
            None => {
                return Err(Reply::error_owned(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    truncated(sub, 128),
                    base.name.to_ascii_uppercase()
                )))
            }
        }
    };
    Ok(spec)
}

/// Redis's wrong-arity error for a command's full name.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::error_owned(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis's unknown-command error: the name and the first arguments, 128 bytes at most.
fn unknown_command(args: &[Bytes]) -> Reply {
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&truncated(arg, room));
        listed.push_str("' ");
    }
    let message = format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        truncated(&args[0], 128)
    );
    Reply::error_owned(message.replace(['\r', '\n'], " "))
}

/// At most `max` bytes of `arg` as text, stopping at a NUL as C's `%.*s` does.
fn truncated(arg: &[u8], max: usize) -> String {
    let end = arg
        .iter()
        .take(max)
        .position(|&b| b == 0)
        .unwrap_or(arg.len().min(max));
    String::from_utf8_lossy(&arg[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn err_text(reply: Reply) -> String {
        match reply {
            Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn only_plain_writes_and_valid_increments_gather() {
        let what = |words: &[&str]| gatherable(&args(words)).map(|(spec, w)| (spec.cmd, w));
        assert_eq!(what(&["set", "k", "v"]), Some((Cmd::Set, Gathered::Put)));
        assert_eq!(
            what(&["MSET", "a", "1", "b", "2"]),
            Some((Cmd::Mset, Gathered::Put))
        );
        assert_eq!(what(&["Incr", "k"]), Some((Cmd::Incr, Gathered::Add(1))));
        assert_eq!(what(&["decr", "k"]), Some((Cmd::Decr, Gathered::Add(-1))));
        assert_eq!(
            what(&["incrby", "k", "-5"]),
            Some((Cmd::Incrby, Gathered::Add(-5)))
        );
        assert_eq!(
            what(&["decrby", "k", "5"]),
            Some((Cmd::Decrby, Gathered::Add(-5)))
        );
        // Options, bad arity or a bad delta: run alone, which answers the error.
        assert_eq!(what(&["set", "k", "v", "NX"]), None);
        assert_eq!(what(&["mset", "a", "1", "b"]), None);
        assert_eq!(what(&["incr", "k", "x"]), None);
        assert_eq!(what(&["incrby", "k", "1.5"]), None);
        assert_eq!(what(&["decrby", "k", "-9223372036854775808"]), None);
        assert_eq!(what(&["get", "k"]), None);
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup(b"gEt").map(|s| s.cmd), Some(Cmd::Get));
        assert!(lookup(b"nosuch").is_none());
    }

    #[test]
    fn unknown_command_lists_its_first_args() {
        let e = resolve(&args(&["foo", "a", "b"])).expect_err("unknown");
        assert_eq!(
            err_text(e),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        let e = resolve(&args(&["foo"])).expect_err("unknown");
        assert_eq!(
            err_text(e),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn wrong_arity_names_the_command() {
        let e = resolve(&args(&["GET"])).expect_err("arity");
        assert_eq!(
            err_text(e),
            "ERR wrong number of arguments for 'get' command"
        );
        let e = resolve(&args(&["client", "setname"])).expect_err("arity");
        assert_eq!(
            err_text(e),
            "ERR wrong number of arguments for 'client|setname' command"
        );
        let e = resolve(&args(&["client"])).expect_err("arity");
        assert_eq!(
            err_text(e),
            "ERR wrong number of arguments for 'client' command"
        );
    }

    #[test]
    fn unknown_subcommand_suggests_help() {
        let e = resolve(&args(&["client", "bogus"])).expect_err("unknown sub");
        assert_eq!(
            err_text(e),
            "ERR unknown subcommand 'bogus'. Try CLIENT HELP."
        );
    }

    #[test]
    fn key_positions_come_from_the_table() {
        let mset = lookup(b"mset").expect("mset");
        assert_eq!(mset.key_indexes(5).collect::<Vec<_>>(), vec![1, 3]);
        let get = lookup(b"get").expect("get");
        assert_eq!(get.key_indexes(2).collect::<Vec<_>>(), vec![1]);
        let ping = lookup(b"ping").expect("ping");
        assert_eq!(ping.key_indexes(1).count(), 0);
        let rename = lookup(b"rename").expect("rename");
        assert_eq!(rename.key_indexes(3).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn every_command_name_is_unique_and_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for spec in all_specs() {
            assert!(seen.insert(spec.name), "duplicate {}", spec.name);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
        }
    }
}
