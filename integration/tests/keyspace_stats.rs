//! INFO's `keyspace_hits` and `keyspace_misses`, command by command, against a real
//! redis-server: dashboards compute a hit ratio from them, so a command must move them
//! exactly as Redis does. Redis counts its read lookups (GET, MGET, STRLEN, SET … GET,
//! EXISTS, TOUCH, TYPE, TTL…) and not its write lookups (INCR, APPEND, SETRANGE, SET NX…).
//!
//! Each command runs on both servers, and the two counters' change across it must be the same
//! (a transaction's queued reads count at EXEC, WATCH's never).
//! INFO itself counts nothing, so no reset is needed, and the same holds through a cluster
//! proxy, whose INFO sums its storage nodes' counters.

use ringkv_integration::cluster::{info_field, info_text, Cluster};
use ringkv_integration::{encode_command, RespClient, Server};

/// Commands in order, over keys that exist and keys that do not. The keys RENAME, RENAMENX,
/// MSETNX, COPY, LCS and BITOP take share a hash tag, so a cluster runs them (one shard); EXISTS and TOUCH
/// take keys of different shards.
const COMMANDS: &[&[&str]] = &[
    &["GET", "k"],
    &["GET", "nokey"],
    &["MGET", "k", "nokey", "k"],
    &["STRLEN", "k"],
    &["GETRANGE", "k", "0", "1"],
    &["GETEX", "k"],
    &["GETEX", "nokey"],
    &["SET", "k", "v", "NX"],
    &["SET", "k", "v", "XX"],
    &["SET", "k", "v", "GET"],
    &["SET", "nokey2", "v", "GET"],
    &["SET", "k", "v", "KEEPTTL"],
    &["SET", "nokey3", "v", "XX"],
    &["GETSET", "k", "v"],
    &["GETDEL", "k"],
    &["GETDEL", "k"],
    &["SET", "k", "v"],
    &["SET", "c", "1"],
    &["INCR", "c"],
    &["INCR", "newc"],
    &["DECRBY", "c", "2"],
    &["INCRBY", "newc2", "5"],
    &["INCRBYFLOAT", "c", "1.5"],
    &["INCRBYFLOAT", "newf", "1"],
    &["APPEND", "c", "x"],
    &["APPEND", "newa", "x"],
    &["SETRANGE", "c", "0", "z"],
    &["SETRANGE", "newr", "0", "z"],
    &["EXISTS", "k", "nokey", "c", "newa"],
    &["TOUCH", "k", "nokey"],
    &["TYPE", "k"],
    &["TYPE", "nokey"],
    &["TTL", "k"],
    &["TTL", "nokey"],
    &["PTTL", "k"],
    &["EXPIRETIME", "k"],
    &["PEXPIRETIME", "nokey"],
    &["EXPIRE", "k", "1000"],
    &["PERSIST", "k"],
    &["MSET", "{t}a", "1", "{t}b", "2"],
    &["MSETNX", "{t}a", "1", "{t}c", "2"],
    &["RENAME", "{t}a", "{t}d"],
    &["RENAMENX", "{t}d", "{t}b"],
    &["COPY", "{t}b", "{t}e"],
    &["COPY", "{t}nokey", "{t}e"],
    &["COPY", "{t}b", "{t}e", "REPLACE"],
    &["LCS", "{t}b", "{t}nokey"],
    &["LCS", "{t}b", "{t}e", "LEN", "IDX"],
    &["SUBSTR", "k", "0", "1"],
    &["OBJECT", "ENCODING", "k"],
    &["OBJECT", "REFCOUNT", "nokey"],
    &["OBJECT", "FREQ", "k"],
    &["MEMORY", "USAGE", "k"],
    &["MEMORY", "USAGE", "nokey", "SAMPLES", "5"],
    &["SETBIT", "{t}bits", "7", "1"],
    &["GETBIT", "{t}bits", "7"],
    &["GETBIT", "nokey", "7"],
    &["BITCOUNT", "{t}bits"],
    &["BITCOUNT", "nokey", "0", "-1"],
    &["BITPOS", "{t}bits", "1"],
    &["BITPOS", "nokey", "0"],
    &["BITOP", "OR", "{t}dest", "{t}bits", "{t}nokey"],
    &["BITFIELD", "{t}bits", "GET", "u8", "0"],
    &["BITFIELD", "nokey", "GET", "u8", "0"],
    &[
        "BITFIELD", "{t}bits", "INCRBY", "u8", "0", "1", "GET", "u8", "0",
    ],
    &["BITFIELD_RO", "{t}bits", "GET", "u8", "0"],
    // WATCH reads without counting; queued reads count when EXEC runs them.
    &["WATCH", "{t}b", "{t}nokey"],
    &["MULTI"],
    &["GET", "{t}b"],
    &["MGET", "{t}b", "{t}nokey"],
    &["EXEC"],
    &["DEL", "k", "nokey"],
    &["DBSIZE"],
    &["KEYS", "*"],
];

/// The two counters from INFO stats.
fn hits_and_misses(client: &mut RespClient, who: &str) -> (u64, u64) {
    let info = info_text(client, &["stats"]).unwrap_or_else(|e| panic!("{who}: {e}"));
    let field = |name: &str| -> u64 {
        info_field(&info, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{who}: INFO stats has no {name}:\n{info}"))
    };
    (field("keyspace_hits"), field("keyspace_misses"))
}

/// Runs every command on both and compares the counters' change across each. The counters
/// are read on a second connection to each (`*_info`): a transaction's connection would
/// queue INFO.
fn count_as_redis(
    ringkv: &mut RespClient,
    ringkv_info: &mut RespClient,
    redis: &mut RespClient,
    redis_info: &mut RespClient,
) {
    for client in [&mut *ringkv, &mut *redis] {
        assert!(!client.cmd(&["SET", "k", "v"]).is_error());
    }
    let mut mismatches = Vec::new();
    for command in COMMANDS {
        let before = (
            hits_and_misses(ringkv_info, "ringkv"),
            hits_and_misses(redis_info, "redis-server"),
        );
        let replies = (ringkv.cmd(command), redis.cmd(command));
        assert_eq!(
            replies.0.is_error(),
            replies.1.is_error(),
            "{command:?}: ringkv answered {}, redis-server {}",
            replies.0,
            replies.1
        );
        let after = (
            hits_and_misses(ringkv_info, "ringkv"),
            hits_and_misses(redis_info, "redis-server"),
        );
        let moved = |(h0, m0): (u64, u64), (h1, m1): (u64, u64)| (h1 - h0, m1 - m0);
        let ours = moved(before.0, after.0);
        let theirs = moved(before.1, after.1);
        if ours != theirs {
            mismatches.push(format!(
                "{command:?}: (hits, misses) +{ours:?}, redis-server +{theirs:?}"
            ));
        }
    }
    // Pipelined, the increments and SETs run gathered into one write: still not counted.
    let pipeline: &[&[&str]] = &[
        &["INCR", "c2"],
        &["INCR", "c2"],
        &["SET", "p", "1"],
        &["INCRBY", "p", "2"],
        &["GET", "p"],
        &["GET", "nop"],
    ];
    let bytes: Vec<u8> = pipeline.iter().flat_map(|c| encode_command(c)).collect();
    let mut moved = Vec::new();
    for (client, who) in [(&mut *ringkv, "ringkv"), (&mut *redis, "redis-server")] {
        let (h0, m0) = hits_and_misses(client, who);
        client.send_raw(&bytes).expect("write the pipeline");
        for command in pipeline {
            let reply = client.read_reply().expect("a reply");
            assert!(!reply.is_error(), "{who}: {command:?} answered {reply}");
        }
        let (h1, m1) = hits_and_misses(client, who);
        moved.push((h1 - h0, m1 - m0));
    }
    if moved[0] != moved[1] {
        mismatches.push(format!(
            "pipeline {pipeline:?}: (hits, misses) +{:?}, redis-server +{:?}",
            moved[0], moved[1]
        ));
    }
    assert!(
        mismatches.is_empty(),
        "keyspace counters moved unlike redis-server's:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn keyspace_hits_and_misses_count_as_redis_servers() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    count_as_redis(
        &mut ringkv.connect(),
        &mut ringkv.connect(),
        &mut redis.connect(),
        &mut redis.connect(),
    );
}

#[test]
fn keyspace_hits_and_misses_count_as_redis_servers_through_a_cluster_proxy() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let redis = Server::redis(&[]);
    count_as_redis(
        &mut cluster.proxy(0),
        &mut cluster.proxy(0),
        &mut redis.connect(),
        &mut redis.connect(),
    );
}
