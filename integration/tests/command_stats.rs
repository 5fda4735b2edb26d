//! INFO commandstats and errorstats against a real redis-server: `redis-cli info
//! commandstats`, redis_exporter and dashboards read calls, rejected and failed calls per
//! command and error replies per code, so ringkv must count them as Redis does.
//!
//! The same requests go to both servers after a CONFIG RESETSTAT, one by one and then as a
//! pipeline (which ringkv runs gathered into one write, a path of its own), and the two
//! INFO texts must list the same commands with the same counts (time aside) and the same
//! error codes. The same holds through a cluster proxy, whose own connections count them.

use std::collections::BTreeMap;

use ringkv_integration::cluster::{info_text, Cluster};
use ringkv_integration::{encode_command, RespClient, Server};

/// Requests that run, fail as they run (`failed_calls`), are refused before running (wrong
/// arity: `rejected_calls`) or name no command at all (errorstats only).
const REQUESTS: &[&[&str]] = &[
    &["SET", "k", "v"],
    &["GET", "k"],
    &["GET", "nokey"],
    &["GET"],
    &["SET", "k"],
    &["SET", "k", "v", "BADOPTION"],
    &["INCR", "k"],
    &["INCRBYFLOAT", "k", "x"],
    &["EXPIRE", "k", "soon"],
    &["EXPIRE", "k", "100"],
    &["TTL", "k"],
    &["DEL", "k", "nokey"],
    &["MSET", "{t}a", "1", "{t}b"],
    &["MSET", "{t}a", "1", "{t}b", "2"],
    &["PING"],
    &["ECHO", "hello"],
    &["CLIENT", "SETNAME", "stats"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "NOSUCHSUB"],
    &["NOSUCHCOMMAND", "x"],
    // A transaction with a command that fails as it runs, one that fails to queue
    // (EXECABORT), and EXEC and DISCARD without MULTI.
    &["MULTI"],
    &["SET", "k", "v"],
    &["INCRBYFLOAT", "k", "x"],
    &["PING"],
    &["EXEC"],
    &["MULTI"],
    &["STRLEN"],
    &["EXEC"],
    &["EXEC"],
    &["DISCARD"],
];

/// Gathered by ringkv into one write when pipelined; one INCR fails.
const PIPELINE: &[&[&str]] = &[
    &["INCR", "c"],
    &["INCR", "c"],
    &["SET", "p", "text"],
    &["INCR", "p"],
    &["INCRBY", "c", "5"],
    &["SET", "q", "1"],
    &["GET", "c"],
];

/// `cmdstat_<name>` → (calls, rejected_calls, failed_calls), and `errorstat_<code>` → count,
/// from one INFO reply.
type Listed = (BTreeMap<String, (u64, u64, u64)>, BTreeMap<String, u64>);

fn listed(client: &mut RespClient, who: &str) -> Listed {
    let info =
        info_text(client, &["commandstats", "errorstats"]).unwrap_or_else(|e| panic!("{who}: {e}"));
    let mut commands = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for line in info.lines() {
        if let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        {
            let field = |key: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{who}: no {key} in {line:?}"))
            };
            // usec and usec_per_call are there too, but times differ between servers.
            field("usec");
            commands.insert(
                name.to_string(),
                (
                    field("calls"),
                    field("rejected_calls"),
                    field("failed_calls"),
                ),
            );
        } else if let Some((code, count)) = line
            .strip_prefix("errorstat_")
            .and_then(|rest| rest.split_once(':'))
        {
            let count = count
                .trim()
                .strip_prefix("count=")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{who}: bad errorstat line {line:?}"));
            errors.insert(code.to_string(), count);
        }
    }
    (commands, errors)
}

/// Sends every request one by one, then the pipeline, and lists what INFO counted.
fn run(client: &mut RespClient, who: &str) -> (Listed, Vec<bool>) {
    assert!(!client.cmd(&["CONFIG", "RESETSTAT"]).is_error());
    let mut failed = Vec::new();
    for request in REQUESTS {
        failed.push(client.cmd(request).is_error());
    }
    let bytes: Vec<u8> = PIPELINE.iter().flat_map(|c| encode_command(c)).collect();
    client.send_raw(&bytes).expect("write the pipeline");
    for _ in PIPELINE {
        failed.push(client.read_reply().expect("a reply").is_error());
    }
    (listed(client, who), failed)
}

fn count_as_redis(ringkv: &mut RespClient, redis: &mut RespClient) {
    let (ours, our_errors) = run(ringkv, "ringkv");
    let (theirs, their_errors) = run(redis, "redis-server");
    assert_eq!(
        our_errors, their_errors,
        "the requests failed differently (true = error reply)"
    );
    assert_eq!(
        ours.0, theirs.0,
        "INFO commandstats (calls, rejected_calls, failed_calls) differ from redis-server's"
    );
    assert_eq!(
        ours.1, theirs.1,
        "INFO errorstats differ from redis-server's"
    );
    // Non-empty sections: the comparison above compared something.
    assert_eq!(ours.0.get("get"), Some(&(3, 1, 0)), "{:?}", ours.0);
    assert_eq!(ours.0.get("incr"), Some(&(4, 0, 2)), "{:?}", ours.0);
    // EXECABORT and EXEC without MULTI count as failed calls.
    assert_eq!(ours.0.get("exec"), Some(&(3, 0, 2)), "{:?}", ours.0);
}

/// The section headers of `INFO <sections>`.
fn sections(client: &mut RespClient, sections: &[&str]) -> Vec<String> {
    let text = info_text(client, sections).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn commandstats_and_errorstats_count_as_redis_servers() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    count_as_redis(&mut ringkv.connect(), &mut redis.connect());
}

#[test]
fn commandstats_and_errorstats_count_as_redis_servers_through_a_cluster_proxy() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let redis = Server::redis(&[]);
    count_as_redis(&mut cluster.proxy(0), &mut redis.connect());
}

#[test]
fn commands_refused_for_authentication_count_as_rejected() {
    let ringkv = Server::ringkv(&["--requirepass", "sekret"]);
    let redis = Server::redis(&["--requirepass", "sekret"]);
    let mut counted = Vec::new();
    for (server, who) in [(&ringkv, "ringkv"), (&redis, "redis-server")] {
        let mut admin = server.connect();
        assert!(!admin.cmd(&["AUTH", "sekret"]).is_error());
        assert!(!admin.cmd(&["CONFIG", "RESETSTAT"]).is_error());
        let mut stranger = server.connect();
        for request in [&["GET", "k"][..], &["SET", "k", "v"], &["GET", "k"]] {
            let reply = stranger.cmd(request);
            assert!(reply.is_error(), "{who}: {request:?} before AUTH: {reply}");
        }
        counted.push(listed(&mut admin, who));
    }
    assert_eq!(counted[0], counted[1]);
    assert_eq!(counted[0].0.get("get"), Some(&(0, 2, 0)));
    assert_eq!(counted[0].1.get("NOAUTH"), Some(&3));
}

#[test]
fn default_info_has_errorstats_and_all_adds_commandstats_as_in_redis() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    for args in [&[][..], &["default"], &["all"]] {
        let has = |client: &mut RespClient| {
            let listed = sections(client, args);
            (
                listed.iter().any(|s| s == "Commandstats"),
                listed.iter().any(|s| s == "Errorstats"),
            )
        };
        assert_eq!(
            has(&mut ringkv.connect()),
            has(&mut redis.connect()),
            "{args:?}: (Commandstats, Errorstats) listed"
        );
    }
}
