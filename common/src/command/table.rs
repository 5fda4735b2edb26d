//! The command table: the one declaration of every command's name, arity, flags, key
//! positions and documentation.
//!
//! Dispatch, the arity check, `COMMAND INFO/DOCS/COUNT`, and routing (which arguments are
//! keys, so which shard a command goes to) all read this table, the way Redis and Kvrocks
//! declare commands once. Adding a command is one entry here plus one handler.

use super::Cmd;

/// Which arguments of a command are keys, as Redis's legacy (first, last, step) triple:
/// `last` negative counts from the end (`-1` is the last argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    /// Index of the first key (0 when the command takes no key).
    pub first: i32,
    /// Index of the last key; negative counts from the end.
    pub last: i32,
    /// Distance between keys (2 for MSET's key/value pairs).
    pub step: i32,
}

/// Command flags, as COMMAND INFO names them.
pub mod flag {
    /// Modifies the keyspace.
    pub const WRITE: u32 = 1;
    /// Only reads.
    pub const READONLY: u32 = 1 << 1;
    /// May grow memory use.
    pub const DENYOOM: u32 = 1 << 2;
    /// Constant or log time.
    pub const FAST: u32 = 1 << 3;
    /// Administrative.
    pub const ADMIN: u32 = 1 << 4;
    /// Allowed before authentication.
    pub const NO_AUTH: u32 = 1 << 5;
    /// Allowed while loading.
    pub const LOADING: u32 = 1 << 6;
    /// Allowed on a stale replica.
    pub const STALE: u32 = 1 << 7;
    /// Not allowed from scripts.
    pub const NOSCRIPT: u32 = 1 << 8;
    /// Allowed while the server is busy.
    pub const ALLOW_BUSY: u32 = 1 << 9;
    /// Reply order is not deterministic (KEYS, SCAN…), in the ACL sense of "dangerous" when
    /// paired with a full keyspace walk.
    pub const DANGEROUS: u32 = 1 << 10;

    /// Flag bits with their COMMAND INFO names, in Redis's order.
    pub const NAMES: [(u32, &str); 10] = [
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (NOSCRIPT, "noscript"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (ALLOW_BUSY, "allow_busy"),
    ];
}

/// How the proxy routes a command once its arguments are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered by the connection itself (PING, HELLO, CLIENT…): no shard involved.
    Local,
    /// All keys must be in one shard; sent whole to it.
    SingleShard,
    /// Keys may span shards; split per shard and merged back in key order.
    MultiKey,
    /// Touches every shard (SCAN, DBSIZE, FLUSHALL…).
    AllShards,
}

/// One command's declaration.
#[derive(Debug)]
pub struct CommandSpec {
    /// What handles it.
    pub cmd: Cmd,
    /// Lower-case name; subcommands are `container|sub` as Redis 7 names them in errors.
    pub name: &'static str,
    /// Redis arity: positive is exact (counting the name), negative is a minimum.
    pub arity: i32,
    /// `flag::*` bits.
    pub flags: u32,
    /// Where the keys are.
    pub keys: KeyRange,
    /// How the proxy routes it.
    pub route: Route,
    /// Redis's command group (string, generic, connection, server).
    pub group: &'static str,
    /// The Redis version that introduced it.
    pub since: &'static str,
    /// One-line summary for COMMAND DOCS and redis-cli's help.
    pub summary: &'static str,
    /// Argument syntax after the name, in Redis's documentation notation; drives redis-cli's
    /// hints through COMMAND DOCS.
    pub syntax: &'static str,
    /// Extra ACL categories beyond those implied by flags and group.
    pub extra_acl: &'static [&'static str],
    /// Subcommands of a container command (CLIENT, COMMAND, CONFIG, OBJECT, MEMORY).
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// Whether `argc` arguments (counting the name) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// Indexes of the key arguments in a request of `argc` arguments.
    pub fn key_indexes(&self, argc: usize) -> impl Iterator<Item = usize> {
        let KeyRange { first, last, step } = self.keys;
        let argc = argc as i32;
        let last = if last < 0 {
            argc + last
        } else {
            last.min(argc - 1)
        };
        let (first, step) = (first.max(0), step.max(1));
        let (first, last) = if first == 0 { (1, 0) } else { (first, last) };
        let range = first..=last;
        range.step_by(step as usize).map(|i| i as usize)
    }

    /// Whether it has the given `flag::*` bit.
    pub fn has(&self, bit: u32) -> bool {
        self.flags & bit != 0
    }

    /// ACL categories as COMMAND INFO lists them, in Redis's order.
    pub fn acl_categories(&self) -> Vec<&'static str> {
        // A container alone (CLIENT, CONFIG, OBJECT) only ever answers a wrong arity; Redis
        // lists it as slow and puts the categories on its subcommands.
        if self.arity == -2 && !self.subcommands.is_empty() {
            return vec!["@slow"];
        }
        let mut cats = Vec::new();
        if self.group == "generic" {
            cats.push("@keyspace");
        }
        if self.has(flag::READONLY) {
            cats.push("@read");
        }
        if self.has(flag::WRITE) {
            cats.push("@write");
        }
        if self.group == "string" {
            cats.push("@string");
        }
        if self.group == "bitmap" {
            cats.push("@bitmap");
        }
        if self.has(flag::ADMIN) {
            cats.push("@admin");
        }
        cats.push(if self.has(flag::FAST) {
            "@fast"
        } else {
            "@slow"
        });
        if self.has(flag::ADMIN) || self.has(flag::DANGEROUS) {
            cats.push("@dangerous");
        }
        if self.group == "connection" {
            cats.push("@connection");
        }
        if self.group == "transactions" {
            cats.push("@transaction");
        }
        cats.extend_from_slice(self.extra_acl);
        cats
    }
}

const NO_KEYS: KeyRange = KeyRange {
    first: 0,
    last: 0,
    step: 0,
};
const ONE_KEY: KeyRange = KeyRange {
    first: 1,
    last: 1,
    step: 1,
};
const ALL_KEYS: KeyRange = KeyRange {
    first: 1,
    last: -1,
    step: 1,
};
const KEY_VALUE_PAIRS: KeyRange = KeyRange {
    first: 1,
    last: -1,
    step: 2,
};
/// BITOP's destination, then its sources.
const DEST_THEN_KEYS: KeyRange = KeyRange {
    first: 2,
    last: -1,
    step: 1,
};
const TWO_KEYS: KeyRange = KeyRange {
    first: 1,
    last: 2,
    step: 1,
};

use flag::*;

#[allow(clippy::too_many_arguments)]
const fn spec(
    cmd: Cmd,
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeyRange,
    route: Route,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    syntax: &'static str,
) -> CommandSpec {
    CommandSpec {
        cmd,
        name,
        arity,
        flags,
        keys,
        route,
        group,
        since,
        summary,
        syntax,
        extra_acl: &[],
        subcommands: &[],
    }
}

#[allow(clippy::too_many_arguments)]
const fn keyed(
    cmd: Cmd,
    name: &'static str,
    arity: i32,
    flags: u32,
    since: &'static str,
    summary: &'static str,
    syntax: &'static str,
) -> CommandSpec {
    let group = cmd.family().group();
    spec(
        cmd,
        name,
        arity,
        flags,
        ONE_KEY,
        Route::SingleShard,
        group,
        since,
        summary,
        syntax,
    )
}

#[allow(clippy::too_many_arguments)]
const fn multi(
    cmd: Cmd,
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeyRange,
    since: &'static str,
    summary: &'static str,
    syntax: &'static str,
) -> CommandSpec {
    let group = cmd.family().group();
    spec(
        cmd,
        name,
        arity,
        flags,
        keys,
        Route::MultiKey,
        group,
        since,
        summary,
        syntax,
    )
}

#[allow(clippy::too_many_arguments)]
const fn local(
    cmd: Cmd,
    name: &'static str,
    arity: i32,
    flags: u32,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    syntax: &'static str,
) -> CommandSpec {
    spec(
        cmd,
        name,
        arity,
        flags,
        NO_KEYS,
        Route::Local,
        group,
        since,
        summary,
        syntax,
    )
}

#[allow(clippy::too_many_arguments)]
const fn all_shards(
    cmd: Cmd,
    name: &'static str,
    arity: i32,
    flags: u32,
    group: &'static str,
    summary: &'static str,
    syntax: &'static str,
) -> CommandSpec {
    spec(
        cmd,
        name,
        arity,
        flags,
        NO_KEYS,
        Route::AllShards,
        group,
        "1.0.0",
        summary,
        syntax,
    )
}

const CONN: u32 = NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY;

#[rustfmt::skip]
static CLIENT_SUBCOMMANDS: [CommandSpec; 8] = [
    local(Cmd::ClientSetname, "client|setname", 3, NOSCRIPT | LOADING | STALE, "connection", "2.6.9", "Sets the connection name.", "connection-name"),
    local(Cmd::ClientGetname, "client|getname", 2, NOSCRIPT | LOADING | STALE, "connection", "2.6.9", "Returns the name of the connection.", ""),
    local(Cmd::ClientId, "client|id", 2, NOSCRIPT | LOADING | STALE, "connection", "5.0.0", "Returns the unique client ID of the connection.", ""),
    local(Cmd::ClientSetinfo, "client|setinfo", 4, NOSCRIPT | LOADING | STALE, "connection", "7.2.0", "Sets information specific to the client or connection.", "LIB-NAME libname | LIB-VER libver"),
    local(Cmd::ClientInfo, "client|info", 2, NOSCRIPT | LOADING | STALE, "connection", "6.2.0", "Returns information about the connection.", ""),
    local(Cmd::ClientList, "client|list", -2, ADMIN | NOSCRIPT | LOADING | STALE, "connection", "2.4.0", "Lists open connections.", "[TYPE <NORMAL | MASTER | REPLICA | PUBSUB>] [ID client-id [client-id ...]]"),
    local(Cmd::ClientKill, "client|kill", -3, ADMIN | NOSCRIPT | LOADING | STALE, "connection", "2.4.0", "Terminates open connections.", "<ip:port | <[ID client-id] | [TYPE <NORMAL | MASTER | SLAVE | REPLICA | PUBSUB>] | [USER username] | [ADDR ip:port] | [LADDR ip:port] | [SKIPME <YES | NO>]> [[ID client-id] | [TYPE <NORMAL | MASTER | SLAVE | REPLICA | PUBSUB>] | [USER username] | [ADDR ip:port] | [LADDR ip:port] | [SKIPME <YES | NO>] ...]>"),
    local(Cmd::ClientHelp, "client|help", 2, LOADING | STALE, "connection", "5.0.0", "Returns helpful text about the different subcommands.", ""),
];

#[rustfmt::skip]
static SLOWLOG_SUBCOMMANDS: [CommandSpec; 4] = [
    local(Cmd::SlowlogGet, "slowlog|get", -2, ADMIN | LOADING | STALE, "server", "2.2.12", "Returns the slow log's entries.", "[count]"),
    local(Cmd::SlowlogLen, "slowlog|len", 2, ADMIN | LOADING | STALE, "server", "2.2.12", "Returns the number of entries in the slow log.", ""),
    local(Cmd::SlowlogReset, "slowlog|reset", 2, ADMIN | LOADING | STALE, "server", "2.2.12", "Clears all entries from the slow log.", ""),
    local(Cmd::SlowlogHelp, "slowlog|help", 2, LOADING | STALE, "server", "6.2.0", "Show helpful text about the different subcommands", ""),
];

#[rustfmt::skip]
static COMMAND_SUBCOMMANDS: [CommandSpec; 6] = [
    local(Cmd::CommandCount, "command|count", 2, LOADING | STALE, "server", "2.8.13", "Returns a count of commands.", ""),
    local(Cmd::CommandInfo, "command|info", -2, LOADING | STALE, "server", "2.8.13", "Returns information about one, multiple or all commands.", "[command-name [command-name ...]]"),
    local(Cmd::CommandDocs, "command|docs", -2, LOADING | STALE, "server", "7.0.0", "Returns documentary information about one, multiple or all commands.", "[command-name [command-name ...]]"),
    local(Cmd::CommandList, "command|list", -2, LOADING | STALE, "server", "7.0.0", "Returns a list of command names.", "[FILTERBY MODULE module-name | ACLCAT category | PATTERN pattern]"),
    local(Cmd::CommandGetkeys, "command|getkeys", -4, LOADING | STALE, "server", "2.8.13", "Extracts the key names from an arbitrary command.", "command [arg [arg ...]]"),
    local(Cmd::CommandHelp, "command|help", 2, LOADING | STALE, "server", "5.0.0", "Returns helpful text about the different subcommands.", ""),
];

#[rustfmt::skip]
static CONFIG_SUBCOMMANDS: [CommandSpec; 4] = [
    local(Cmd::ConfigGet, "config|get", -3, ADMIN | NOSCRIPT | LOADING | STALE, "server", "2.0.0", "Returns the effective values of configuration parameters.", "parameter [parameter ...]"),
    local(Cmd::ConfigSet, "config|set", -4, ADMIN | NOSCRIPT | LOADING | STALE, "server", "2.0.0", "Sets configuration parameters in-flight.", "parameter value [parameter value ...]"),
    local(Cmd::ConfigResetstat, "config|resetstat", 2, ADMIN | NOSCRIPT | LOADING | STALE, "server", "2.0.0", "Resets the server's statistics.", ""),
    local(Cmd::ConfigHelp, "config|help", 2, LOADING | STALE, "server", "5.0.0", "Returns helpful text about the different subcommands.", ""),
];

/// The key of OBJECT's and MEMORY's subcommands: their third argument.
const SUBCOMMAND_KEY: KeyRange = KeyRange {
    first: 2,
    last: 2,
    step: 1,
};

#[rustfmt::skip]
static MEMORY_SUBCOMMANDS: [CommandSpec; 2] = [
    spec(Cmd::MemoryUsage, "memory|usage", -3, READONLY, SUBCOMMAND_KEY, Route::SingleShard, "server", "4.0.0", "Estimates the memory usage of a key.", "key [SAMPLES count]"),
    local(Cmd::MemoryHelp, "memory|help", 2, LOADING | STALE, "server", "4.0.0", "Returns helpful text about the different subcommands.", ""),
];

const fn object_sub(
    cmd: Cmd,
    name: &'static str,
    since: &'static str,
    summary: &'static str,
) -> CommandSpec {
    spec(
        cmd,
        name,
        3,
        READONLY,
        SUBCOMMAND_KEY,
        Route::SingleShard,
        "generic",
        since,
        summary,
        "key",
    )
}

#[rustfmt::skip]
static OBJECT_SUBCOMMANDS: [CommandSpec; 5] = [
    object_sub(Cmd::ObjectEncoding, "object|encoding", "2.2.3", "Returns the internal encoding of a Redis object."),
    object_sub(Cmd::ObjectFreq, "object|freq", "4.0.0", "Returns the logarithmic access frequency counter of a Redis object."),
    object_sub(Cmd::ObjectIdletime, "object|idletime", "2.2.3", "Returns the time since the last access to a Redis object."),
    object_sub(Cmd::ObjectRefcount, "object|refcount", "2.2.3", "Returns the reference count of a value of a key."),
    local(Cmd::ObjectHelp, "object|help", 2, LOADING | STALE, "generic", "6.2.0", "Returns helpful text about the different subcommands.", ""),
];

#[allow(clippy::too_many_arguments)]
const fn container(
    cmd: Cmd,
    name: &'static str,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    subcommands: &'static [CommandSpec],
) -> CommandSpec {
    let mut spec = local(cmd, name, -2, 0, group, since, summary, "");
    spec.subcommands = subcommands;
    spec
}

const fn with_arity(mut spec: CommandSpec, arity: i32) -> CommandSpec {
    spec.arity = arity;
    spec
}

const fn dangerous(mut spec: CommandSpec) -> CommandSpec {
    spec.flags |= DANGEROUS;
    spec
}

/// Every command ringkv serves.
#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    // connection
    local(Cmd::Ping, "ping", -1, FAST, "connection", "1.0.0", "Returns the server's liveliness response.", "[message]"),
    local(Cmd::Echo, "echo", 2, FAST, "connection", "1.0.0", "Returns the given string.", "message"),
    local(Cmd::Auth, "auth", -2, CONN | NO_AUTH, "connection", "1.0.0", "Authenticates the connection.", "[username] password"),
    local(Cmd::Hello, "hello", -1, CONN | NO_AUTH, "connection", "6.0.0", "Handshakes with the Redis server.", "[protover [AUTH username password] [SETNAME clientname]]"),
    local(Cmd::Quit, "quit", -1, CONN | NO_AUTH, "connection", "1.0.0", "Closes the connection.", ""),
    local(Cmd::Reset, "reset", 1, CONN | NO_AUTH, "connection", "6.2.0", "Resets the connection.", ""),
    local(Cmd::Select, "select", 2, LOADING | STALE | FAST, "connection", "1.0.0", "Changes the selected database.", "index"),
    container(Cmd::Client, "client", "connection", "2.4.0", "A container for client connection commands.", &CLIENT_SUBCOMMANDS),
    // transactions: answered by the connection, which queues the commands between MULTI and
    // EXEC (WATCH's keys are keys for ACL rules and COMMAND GETKEYS, but it is not routed)
    local(Cmd::Multi, "multi", 1, CONN, "transactions", "1.2.0", "Starts a transaction.", ""),
    local(Cmd::Exec, "exec", 1, NOSCRIPT | LOADING | STALE, "transactions", "1.2.0", "Executes all commands in a transaction.", ""),
    local(Cmd::Discard, "discard", 1, CONN, "transactions", "2.0.0", "Discards a transaction.", ""),
    spec(Cmd::Watch, "watch", -2, CONN, ALL_KEYS, Route::Local, "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.", "key [key ...]"),
    local(Cmd::Unwatch, "unwatch", 1, CONN, "transactions", "2.2.0", "Forgets about watched keys of a transaction.", ""),
    // server
    // Unlike CLIENT and CONFIG, COMMAND alone is a command (every INFO entry): arity -1.
    with_arity(container(Cmd::Command, "command", "server", "2.8.13", "Returns detailed information about all commands.", &COMMAND_SUBCOMMANDS), -1),
    container(Cmd::Config, "config", "server", "2.0.0", "A container for server configuration commands.", &CONFIG_SUBCOMMANDS),
    container(Cmd::Slowlog, "slowlog", "server", "2.2.12", "A container for slow log commands.", &SLOWLOG_SUBCOMMANDS),
    local(Cmd::Info, "info", -1, LOADING | STALE, "server", "1.0.0", "Returns information and statistics about the server.", "[section [section ...]]"),
    local(Cmd::Time, "time", 1, LOADING | STALE | FAST, "server", "2.6.0", "Returns the server time.", ""),
    all_shards(Cmd::Dbsize, "dbsize", 1, READONLY | FAST, "server", "Returns the number of keys in the database.", ""),
    all_shards(Cmd::Flushall, "flushall", -1, WRITE | DANGEROUS, "server", "Removes all keys from all databases.", "[ASYNC | SYNC]"),
    all_shards(Cmd::Flushdb, "flushdb", -1, WRITE | DANGEROUS, "server", "Remove all keys from the current database.", "[ASYNC | SYNC]"),
    container(Cmd::Memory, "memory", "server", "4.0.0", "A container for memory diagnostics commands.", &MEMORY_SUBCOMMANDS),
    // strings
    keyed(Cmd::Get, "get", 2, READONLY | FAST, "1.0.0", "Returns the string value of a key.", "key"),
    keyed(Cmd::Set, "set", -3, WRITE | DENYOOM, "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", "key value [NX | XX] [GET] [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]"),
    keyed(Cmd::Setnx, "setnx", 3, WRITE | DENYOOM | FAST, "1.0.0", "Set the string value of a key only when the key doesn't exist.", "key value"),
    keyed(Cmd::Setex, "setex", 4, WRITE | DENYOOM, "2.0.0", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", "key seconds value"),
    keyed(Cmd::Psetex, "psetex", 4, WRITE | DENYOOM, "2.6.0", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", "key milliseconds value"),
    keyed(Cmd::Getset, "getset", 3, WRITE | DENYOOM | FAST, "1.0.0", "Returns the previous string value of a key after setting it to a new value.", "key value"),
    keyed(Cmd::Getdel, "getdel", 2, WRITE | FAST, "6.2.0", "Returns the string value of a key after deleting the key.", "key"),
    keyed(Cmd::Getex, "getex", -2, WRITE | FAST, "6.2.0", "Returns the string value of a key after setting its expiration time.", "key [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds | PERSIST]"),
    multi(Cmd::Mget, "mget", -2, READONLY | FAST, ALL_KEYS, "1.0.0", "Atomically returns the string values of one or more keys.", "key [key ...]"),
    multi(Cmd::Mset, "mset", -3, WRITE | DENYOOM, KEY_VALUE_PAIRS, "1.0.1", "Atomically creates or modifies the string values of one or more keys.", "key value [key value ...]"),
    multi(Cmd::Msetnx, "msetnx", -3, WRITE | DENYOOM, KEY_VALUE_PAIRS, "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist.", "key value [key value ...]"),
    keyed(Cmd::Append, "append", 3, WRITE | DENYOOM | FAST, "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.", "key value"),
    keyed(Cmd::Strlen, "strlen", 2, READONLY | FAST, "2.2.0", "Returns the length of a string value.", "key"),
    keyed(Cmd::Incr, "incr", 2, WRITE | DENYOOM | FAST, "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "key"),
    keyed(Cmd::Decr, "decr", 2, WRITE | DENYOOM | FAST, "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "key"),
    keyed(Cmd::Incrby, "incrby", 3, WRITE | DENYOOM | FAST, "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "key increment"),
    keyed(Cmd::Decrby, "decrby", 3, WRITE | DENYOOM | FAST, "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", "key decrement"),
    keyed(Cmd::Incrbyfloat, "incrbyfloat", 3, WRITE | DENYOOM | FAST, "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "key increment"),
    keyed(Cmd::Getrange, "getrange", 4, READONLY, "2.4.0", "Returns a substring of the string stored at a key.", "key start end"),
    keyed(Cmd::Setrange, "setrange", 4, WRITE | DENYOOM, "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", "key offset value"),
    // bitmaps
    keyed(Cmd::Setbit, "setbit", 4, WRITE | DENYOOM, "2.2.0", "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.", "key offset value"),
    keyed(Cmd::Getbit, "getbit", 3, READONLY | FAST, "2.2.0", "Returns a bit value by offset.", "key offset"),
    keyed(Cmd::Bitcount, "bitcount", -2, READONLY, "2.6.0", "Counts the number of set bits (population counting) in a string.", "key [start end [BYTE | BIT]]"),
    keyed(Cmd::Bitpos, "bitpos", -3, READONLY, "2.8.7", "Finds the first set (1) or clear (0) bit in a string.", "key bit [start [end [BYTE | BIT]]]"),
    multi(Cmd::Bitop, "bitop", -4, WRITE | DENYOOM, DEST_THEN_KEYS, "2.6.0", "Performs bitwise operations on multiple strings, and stores the result.", "operation destkey key [key ...]"),
    keyed(Cmd::Bitfield, "bitfield", -2, WRITE | DENYOOM, "3.2.0", "Performs arbitrary bitfield integer operations on strings.", "key [GET encoding offset | [OVERFLOW WRAP | SAT | FAIL] SET encoding offset value | INCRBY encoding offset increment [GET encoding offset ...]]"),
    keyed(Cmd::BitfieldRo, "bitfield_ro", -2, READONLY | FAST, "6.0.0", "Performs arbitrary read-only bitfield integer operations on strings.", "key [GET encoding offset [GET encoding offset ...]]"),
    // strings, continued
    keyed(Cmd::Substr, "substr", 4, READONLY, "1.0.0", "Returns a substring from a string value.", "key start end"),
    multi(Cmd::Lcs, "lcs", -3, READONLY, TWO_KEYS, "7.0.0", "Finds the longest common substring.", "key1 key2 [LEN] [IDX] [MINMATCHLEN min-match-len] [WITHMATCHLEN]"),
    // keyspace
    multi(Cmd::Del, "del", -2, WRITE, ALL_KEYS, "1.0.0", "Deletes one or more keys.", "key [key ...]"),
    multi(Cmd::Unlink, "unlink", -2, WRITE | FAST, ALL_KEYS, "4.0.0", "Asynchronously deletes one or more keys.", "key [key ...]"),
    multi(Cmd::Exists, "exists", -2, READONLY | FAST, ALL_KEYS, "1.0.0", "Determines whether one or more keys exist.", "key [key ...]"),
    multi(Cmd::Touch, "touch", -2, READONLY | FAST, ALL_KEYS, "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", "key [key ...]"),
    keyed(Cmd::Type, "type", 2, READONLY | FAST, "1.0.0", "Determines the type of value stored at a key.", "key"),
    keyed(Cmd::Expire, "expire", -3, WRITE | FAST, "1.0.0", "Sets the expiration time of a key in seconds.", "key seconds [NX | XX | GT | LT]"),
    keyed(Cmd::Pexpire, "pexpire", -3, WRITE | FAST, "2.6.0", "Sets the expiration time of a key in milliseconds.", "key milliseconds [NX | XX | GT | LT]"),
    keyed(Cmd::Expireat, "expireat", -3, WRITE | FAST, "1.2.0", "Sets the expiration time of a key to a Unix timestamp.", "key unix-time-seconds [NX | XX | GT | LT]"),
    keyed(Cmd::Pexpireat, "pexpireat", -3, WRITE | FAST, "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.", "key unix-time-milliseconds [NX | XX | GT | LT]"),
    keyed(Cmd::Ttl, "ttl", 2, READONLY | FAST, "1.0.0", "Returns the expiration time in seconds of a key.", "key"),
    keyed(Cmd::Pttl, "pttl", 2, READONLY | FAST, "2.6.0", "Returns the expiration time in milliseconds of a key.", "key"),
    keyed(Cmd::Expiretime, "expiretime", 2, READONLY | FAST, "7.0.0", "Returns the expiration time of a key as a Unix timestamp.", "key"),
    keyed(Cmd::Pexpiretime, "pexpiretime", 2, READONLY | FAST, "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp.", "key"),
    keyed(Cmd::Persist, "persist", 2, WRITE | FAST, "2.2.0", "Removes the expiration time of a key.", "key"),
    all_shards(Cmd::Scan, "scan", -2, READONLY, "generic", "Iterates over the key names in the database.", "cursor [MATCH pattern] [COUNT count] [TYPE type]"),
    dangerous(all_shards(Cmd::Keys, "keys", 2, READONLY, "generic", "Returns all key names that match a pattern.", "pattern")),
    all_shards(Cmd::Randomkey, "randomkey", 1, READONLY, "generic", "Returns a random key name from the database.", ""),
    multi(Cmd::Rename, "rename", 3, WRITE, TWO_KEYS, "1.0.0", "Renames a key and overwrites the destination.", "key newkey"),
    multi(Cmd::Renamenx, "renamenx", 3, WRITE | FAST, TWO_KEYS, "1.0.0", "Renames a key only when the target key name doesn't exist.", "key newkey"),
    multi(Cmd::Copy, "copy", -3, WRITE | DENYOOM, TWO_KEYS, "6.2.0", "Copies the value of a key to a new key.", "source destination [DB destination-db] [REPLACE]"),
    container(Cmd::Object, "object", "generic", "2.2.3", "A container for object introspection commands.", &OBJECT_SUBCOMMANDS),
];
