//! A real cluster (etcd, `ringkv-admin`, `ringkv-storage` nodes, `ringkv-proxy` processes)
//! driven by real clients: what issue 3 promises a cluster does.
//!
//! Every test starts its own cluster with [`Cluster`] (see `ringkv_integration::cluster`),
//! with few shards where the test does not need the default 256, because these tests run in
//! parallel with the rest of the suite on two cores. Tests find where a key lives the way the
//! cluster does: `ringkv_common::placement::shard_of` for the shard, and the map stored in
//! etcd (read with `ringkv_common::etcd::ClusterStore`) for its node.
//!
//! The binaries are found next to this test executable (build them with
//! `cargo build --release --workspace --bins`) or through `$RINGKV_STORAGE_BIN`,
//! `$RINGKV_PROXY_BIN`, `$RINGKV_ADMIN_BIN`; etcd through `$ETCD_BIN` or `$PATH`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig};
use ringkv_common::etcd::ClusterStore;
use ringkv_common::placement::shard_of;
use ringkv_common::shardmap::ShardMap;
use ringkv_integration::cluster::{info_field, Cluster};
use ringkv_integration::{raise_open_files_limit, Reply, RespClient};
use tokio::runtime::Runtime;

/// The redis crate's default response timeout (500 ms) is too tight for two busy cores; a
/// hang is still caught.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Issue 3: "A map change reaches every proxy through its etcd watch within a second."
const MAP_CHANGE_DEADLINE: Duration = Duration::from_secs(1);

/// How long proxies may take to catch up with a map written after etcd came back: their
/// watch has to notice the outage and reconnect (with backoff) first.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(20);

/// Redis Cluster's error for a multi-key command whose keys are in different slots.
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect_url(url: &str) -> MultiplexedConnection {
    let client =
        redis::Client::open(url).unwrap_or_else(|e| panic!("redis::Client::open({url}): {e}"));
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The shard map stored in etcd now.
fn read_map(rt: &Runtime, cluster: &Cluster) -> ShardMap {
    let store = rt
        .block_on(ClusterStore::connect(&[cluster.etcd_url()], cluster.name()))
        .unwrap_or_else(|e| panic!("connecting to etcd at {}: {e}", cluster.etcd_url()));
    rt.block_on(store.read_map())
        .unwrap_or_else(|e| panic!("reading the map: {e}"))
        .current
        .expect("a map is stored after assign")
        .map
}

/// The shards whose primary is `node` in `map`.
fn shards_of(map: &ShardMap, node: &str) -> Vec<u32> {
    map.shards
        .iter()
        .enumerate()
        .filter(|(_, a)| a.primary == node)
        .map(|(s, _)| u32::try_from(s).expect("shard index fits u32"))
        .collect()
}

/// The first key `<prefix><n>` that lives in `shard`.
fn key_in_shard(prefix: &str, shard: u32, shards: u32) -> String {
    (0u64..)
        .map(|n| format!("{prefix}{n}"))
        .find(|key| shard_of(key.as_bytes(), shards) == shard)
        .expect("some key lands in every shard")
}

fn ok() -> Reply {
    Reply::Simple(b"OK".to_vec())
}

/// The first of `<prefix>0`, `<prefix>1`… whose shard is not `than`'s.
fn key_in_another_shard(prefix: &str, than: &str, shards: u32) -> String {
    (0u64..)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| shard_of(k.as_bytes(), shards) != shard_of(than.as_bytes(), shards))
        .expect("a key in another shard")
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

/// The key names of a `KEYS` / `SCAN` page as strings.
fn strings(reply: &Reply) -> Vec<String> {
    reply
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {reply}"))
        .iter()
        .map(|k| {
            String::from_utf8_lossy(k.as_bytes().unwrap_or_else(|| panic!("not a string: {k}")))
                .into_owned()
        })
        .collect()
}

/// A full `SCAN` iteration over a raw connection with `COUNT count`, every key in the order
/// returned (duplicates kept, so the caller can look for them).
fn scan_all(client: &mut RespClient, count: usize) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let count = count.to_string();
    for _ in 0..1_000_000 {
        let reply = client.cmd(&["SCAN", &cursor, "COUNT", &count]);
        let parts = reply
            .as_array()
            .unwrap_or_else(|| panic!("SCAN answered {reply}"));
        assert_eq!(parts.len(), 2, "SCAN answered {reply}");
        cursor = String::from_utf8_lossy(parts[0].as_bytes().expect("cursor")).into_owned();
        keys.extend(strings(&parts[1]));
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN did not finish after a million pages");
}

/// Writes through every proxy in `clients` to a key of a shard that moved to node `new`, until
/// the storage side shows each write on that node (`SHARD <s> <epoch> GET` answers the value
/// just written), or panics after `deadline` from `since`. Every write must succeed: a map
/// change is not an error for clients.
fn wait_writes_land_on(
    cluster: &Cluster,
    clients: &mut [RespClient],
    new: usize,
    shard: u32,
    epoch: u64,
    since: Instant,
    deadline: Duration,
) {
    let shards = cluster.shards();
    let mut node = cluster.node_client(new);
    let keys: Vec<String> = (0..clients.len())
        .map(|p| key_in_shard(&format!("moved:{p}:"), shard, shards))
        .collect();
    let shard_arg = shard.to_string();
    let epoch_arg = epoch.to_string();
    let mut pending: BTreeSet<usize> = (0..clients.len()).collect();
    let mut last_seen: BTreeMap<usize, String> = BTreeMap::new();
    for round in 0u64.. {
        for &p in &pending.clone() {
            let value = format!("proxy{p}-round{round}");
            let reply = clients[p].cmd(&["SET", &keys[p], &value]);
            assert_eq!(
                reply,
                ok(),
                "SET {} through proxy {p} during the map change",
                keys[p]
            );
            let seen = node.cmd(&["SHARD", &shard_arg, &epoch_arg, "GET", &keys[p]]);
            if seen == bulk(&value) {
                pending.remove(&p);
            } else {
                last_seen.insert(p, seen.to_string());
            }
        }
        if pending.is_empty() {
            return;
        }
        assert!(
            since.elapsed() < deadline,
            "after {:?}, writes through proxies {pending:?} to shard {shard} still do not land \
             on {} (epoch {epoch}); that node's view of the keys: {last_seen:?}",
            since.elapsed(),
            cluster.node_id(new)
        );
        // Paces the loop; the deadline above is what decides.
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn keys_written_through_one_proxy_are_read_through_the_other() {
    let cluster = Cluster::builder().nodes(3).proxies(2).shards(256).start();
    let shards = cluster.shards();

    // Raw RESP: SET through proxy 0, GET through proxy 1.
    let mut a = cluster.proxy(0);
    let mut b = cluster.proxy(1);
    let raw: Vec<String> = (0..300).map(|i| format!("raw:{i}")).collect();
    let touched: BTreeSet<u32> = raw.iter().map(|k| shard_of(k.as_bytes(), shards)).collect();
    assert!(
        touched.len() > 150,
        "the keys must spread over many shards ({})",
        touched.len()
    );
    for key in &raw {
        assert_eq!(a.cmd(&["SET", key, &format!("value of {key}")]), ok());
    }
    for key in &raw {
        assert_eq!(b.cmd(&["GET", key]), bulk(&format!("value of {key}")));
    }

    let rt = runtime();
    rt.block_on(async {
        let mut ca = connect_url(&cluster.proxy_url(0)).await;
        let mut cb = connect_url(&cluster.proxy_url(1)).await;

        // MSET across shards through A, MGET (with missing keys between) through B: values
        // come back in key order.
        let pairs: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("m:{i}"), format!("v{i}")))
            .collect();
        let () = ca.mset(&pairs).await.expect("MSET through proxy 0");
        let mut asked = Vec::new();
        let mut expected = Vec::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            asked.push(k.clone());
            expected.push(Some(v.clone()));
            if i % 7 == 0 {
                asked.push(format!("missing:{i}"));
                expected.push(None);
            }
        }
        let got: Vec<Option<String>> = cb.mget(&asked).await.expect("MGET through proxy 1");
        assert!(
            got == expected,
            "MGET through proxy 1 differs from what was MSET"
        );

        // EXISTS counts every existing argument, repeats included.
        let n: i64 = redis::cmd("EXISTS")
            .arg(&["m:0", "m:0", "m:1", "missing:0", "raw:5", "m:999"])
            .query_async(&mut cb)
            .await
            .expect("EXISTS");
        assert_eq!(n, 5);

        // DEL through B counts what it deleted, across shards; the keys are gone through A.
        let mut doomed: Vec<String> = (0..100).map(|i| format!("m:{i}")).collect();
        doomed.extend((0..50).map(|i| format!("never:{i}")));
        let deleted: i64 = cb.del(&doomed).await.expect("DEL through proxy 1");
        assert_eq!(deleted, 100);
        let left: i64 = redis::cmd("EXISTS")
            .arg(&doomed)
            .query_async(&mut ca)
            .await
            .expect("EXISTS");
        assert_eq!(left, 0);
        let unlinked: i64 = redis::cmd("UNLINK")
            .arg(&["m:100", "m:101", "never:0"])
            .query_async(&mut ca)
            .await
            .expect("UNLINK");
        assert_eq!(unlinked, 2);

        let live: BTreeSet<String> = raw
            .iter()
            .cloned()
            .chain((102..1000).map(|i| format!("m:{i}")))
            .collect();

        // SCAN through a proxy (the redis crate's iterator) returns every key exactly once.
        let mut scanned: Vec<String> = Vec::new();
        {
            let mut iter = ca.scan::<String>().await.expect("SCAN through proxy 0");
            while let Some(key) = iter.next_item().await {
                scanned.push(key.expect("SCAN item"));
            }
        }
        let unique: BTreeSet<String> = scanned.iter().cloned().collect();
        assert_eq!(scanned.len(), unique.len(), "SCAN returned a key twice");
        assert!(
            unique == live,
            "SCAN through proxy 0 missed or invented keys"
        );

        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut cb)
            .await
            .expect("DBSIZE");
        assert_eq!(size, i64::try_from(live.len()).expect("fits"));
        let keys: Vec<String> = cb.keys("*").await.expect("KEYS *");
        let keys: BTreeSet<String> = keys.into_iter().collect();
        assert!(
            keys == live,
            "KEYS * through proxy 1 differs from the keys written"
        );

        for _ in 0..20 {
            let key: Option<String> = redis::cmd("RANDOMKEY")
                .query_async(&mut ca)
                .await
                .expect("RANDOMKEY");
            let key = key.expect("RANDOMKEY on a non-empty cluster");
            assert!(live.contains(&key), "RANDOMKEY returned {key:?}");
        }
    });

    // Small SCAN pages through the other proxy, raw: still every key once.
    let scanned = scan_all(&mut b, 7);
    let unique: BTreeSet<&String> = scanned.iter().collect();
    assert_eq!(
        scanned.len(),
        unique.len(),
        "SCAN COUNT 7 returned a key twice"
    );
    assert_eq!(unique.len(), 300 + 898);

    // FLUSHALL through one proxy empties the whole cluster for both.
    assert_eq!(a.cmd(&["FLUSHALL"]), ok());
    for client in [&mut a, &mut b] {
        assert_eq!(client.cmd(&["DBSIZE"]), Reply::Integer(0));
        assert_eq!(client.cmd(&["KEYS", "*"]), Reply::Array(vec![]));
        assert_eq!(client.cmd(&["RANDOMKEY"]), Reply::Null);
        assert!(scan_all(client, 100).is_empty());
        assert_eq!(client.cmd(&["GET", "raw:1"]), Reply::Null);
    }
}

#[test]
fn transactions_run_whole_at_the_node_of_their_one_shard() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let shards = cluster.shards();
    let mut c = cluster.proxy(0);
    let mut other = cluster.proxy(0);
    let queued = || Reply::Simple(b"QUEUED".to_vec());
    let (ta, tb) = ("{tx}:a", "{tx}:b");

    // Keys sharing a hash tag: the transaction runs at their node, keyless commands beside.
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", ta, "1"]), queued());
    assert_eq!(c.cmd(&["INCRBY", tb, "5"]), queued());
    assert_eq!(c.cmd(&["PING"]), queued());
    assert_eq!(c.cmd(&["MGET", ta, tb]), queued());
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![
            ok(),
            Reply::Integer(5),
            Reply::Simple(b"PONG".to_vec()),
            Reply::Array(vec![bulk("1"), bulk("5")]),
        ])
    );

    // WATCH: another client's write in between makes EXEC answer nil and run nothing; an
    // untouched watched key lets it run.
    assert_eq!(c.cmd(&["WATCH", ta]), ok());
    assert_eq!(other.cmd(&["SET", ta, "other"]), ok());
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", ta, "mine"]), queued());
    assert_eq!(c.cmd(&["EXEC"]), Reply::Null);
    assert_eq!(c.cmd(&["GET", ta]), bulk("other"));
    assert_eq!(c.cmd(&["WATCH", ta, tb]), ok());
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", ta, "mine"]), queued());
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![ok()]));
    assert_eq!(c.cmd(&["GET", ta]), bulk("mine"));

    // Keys in two shards, watched keys included: CROSSSLOT, nothing runs, and the
    // transaction is over.
    let a = "plain:a".to_string();
    let b = key_in_another_shard("plain:b", &a, shards);
    let crossslot = Reply::Error(CROSSSLOT.as_bytes().to_vec());
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", &a, "1"]), queued());
    assert_eq!(c.cmd(&["SET", &b, "2"]), queued());
    assert_eq!(c.cmd(&["EXEC"]), crossslot);
    assert_eq!(
        c.cmd(&["EXISTS", &a, &b]),
        Reply::Integer(0),
        "a refused EXEC wrote"
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Error(b"ERR EXEC without MULTI".to_vec())
    );
    assert_eq!(c.cmd(&["WATCH", &b]), ok());
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", &a, "1"]), queued());
    assert_eq!(c.cmd(&["EXEC"]), crossslot);
    assert_eq!(c.cmd(&["EXISTS", &a]), Reply::Integer(0));

    // A command that walks or clears every shard has no one node to run at: it fails to
    // queue, so EXEC discards the transaction.
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", ta, "2"]), queued());
    let refused = c.cmd(&["FLUSHALL"]);
    assert!(
        matches!(&refused, Reply::Error(e) if String::from_utf8_lossy(e).contains("cannot run in a transaction")),
        "{refused}"
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Error(b"EXECABORT Transaction discarded because of previous errors.".to_vec())
    );
    assert_eq!(c.cmd(&["GET", ta]), bulk("mine"));
}

/// A node reads the keys of its part of an MGET at one point in time, as one Redis server
/// does: here both keys are on one node but in two shards, so the proxy sends the MSETs and
/// MGETs as one `SHARDS` part, and no MGET may see one key from before an MSET and the other
/// from after it.
#[test]
fn a_node_reads_its_part_of_an_mget_at_one_point_in_time() {
    let cluster = Cluster::builder().nodes(1).proxies(1).shards(16).start();
    let a = "pair:a".to_string();
    let b = key_in_another_shard("pair:b", &a, cluster.shards());
    const WRITES: u64 = 5_000;
    let rt = runtime();
    rt.block_on(async {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for writer in 0..2u64 {
            let mut con = connect_url(&cluster.proxy_url(0)).await;
            let (a, b) = (a.clone(), b.clone());
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES {
                    let n = i * 2 + writer;
                    let () = con.mset(&[(&a, n), (&b, n)]).await.expect("MSET");
                }
            }));
        }
        let mut readers = Vec::new();
        for _ in 0..2 {
            let mut con = connect_url(&cluster.proxy_url(0)).await;
            let (a, b, done) = (a.clone(), b.clone(), Arc::clone(&done));
            readers.push(tokio::spawn(async move {
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (x, y): (Option<u64>, Option<u64>) =
                        con.mget(&[&a, &b]).await.expect("MGET");
                    assert_eq!(x, y, "MGET saw one key before an MSET and one after it");
                    reads += 1;
                }
                reads
            }));
        }
        for writer in writers {
            writer.await.expect("writer task");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(
                reader.await.expect("reader task") > 0,
                "a reader never read"
            );
        }
    });
}

#[test]
fn multi_key_commands_that_must_run_whole_are_refused_across_shards_unless_hash_tagged() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let shards = cluster.shards();
    let mut c = cluster.proxy(0);
    let a = "cross:a".to_string();
    let b = key_in_another_shard("cross:b", &a, shards);
    let crossslot = Reply::Error(CROSSSLOT.as_bytes().to_vec());

    // Byte-exact, as Redis Cluster sends it.
    let frame = c
        .command_frame(&["MSETNX", &a, "1", &b, "2"])
        .expect("MSETNX");
    assert_eq!(
        String::from_utf8_lossy(&frame.raw),
        format!("-{CROSSSLOT}\r\n")
    );
    assert_eq!(
        c.cmd(&["EXISTS", &a, &b]),
        Reply::Integer(0),
        "MSETNX wrote"
    );

    assert_eq!(c.cmd(&["SET", &a, "x"]), ok());
    assert_eq!(c.cmd(&["RENAME", &a, &b]), crossslot);
    assert_eq!(c.cmd(&["RENAMENX", &a, &b]), crossslot);
    assert_eq!(c.cmd(&["COPY", &a, &b]), crossslot);
    assert_eq!(c.cmd(&["LCS", &a, &b]), crossslot);
    assert_eq!(c.cmd(&["BITOP", "AND", &b, &a]), crossslot);
    assert_eq!(
        c.cmd(&["GET", &a]),
        bulk("x"),
        "a refused RENAME moved the key"
    );
    assert_eq!(c.cmd(&["EXISTS", &b]), Reply::Integer(0));

    // Commands that are split per shard work across shards.
    assert_eq!(c.cmd(&["MSET", &a, "1", &b, "2"]), ok());
    assert_eq!(
        c.cmd(&["MGET", &b, &a]),
        Reply::Array(vec![bulk("2"), bulk("1")])
    );
    assert_eq!(c.cmd(&["DEL", &a, &b]), Reply::Integer(2));

    // A shared hash tag keeps keys in one shard: then the same commands work.
    let (ta, tb, tc) = ("{cross}:a", "{cross}:b", "{cross}:c");
    assert_eq!(c.cmd(&["MSETNX", ta, "1", tb, "2"]), Reply::Integer(1));
    assert_eq!(c.cmd(&["MSETNX", ta, "9", tc, "9"]), Reply::Integer(0));
    assert_eq!(c.cmd(&["RENAME", ta, tc]), ok());
    assert_eq!(c.cmd(&["GET", tc]), bulk("1"));
    assert_eq!(c.cmd(&["RENAMENX", tc, tb]), Reply::Integer(0));
    assert_eq!(c.cmd(&["RENAMENX", tc, ta]), Reply::Integer(1));
    assert_eq!(c.cmd(&["COPY", ta, tc]), Reply::Integer(1));
    assert_eq!(c.cmd(&["LCS", tb, tc, "LEN"]), Reply::Integer(0));
    assert_eq!(c.cmd(&["COPY", tb, tc, "REPLACE"]), Reply::Integer(1));
    assert_eq!(c.cmd(&["BITOP", "OR", tc, ta, tb]), Reply::Integer(1));
    assert_eq!(c.cmd(&["GET", tc]), bulk("3"), "'1' | '2' is '3'");
    assert_eq!(c.cmd(&["DEL", tc]), Reply::Integer(1));
    assert_eq!(
        c.cmd(&["MGET", ta, tb, tc]),
        Reply::Array(vec![bulk("1"), bulk("2"), Reply::Null])
    );
    // Same-slot checks look at the tag, not at the key: a tagged key and an untagged one in
    // another shard are still refused.
    let untagged = key_in_another_shard("plain", ta, shards);
    assert_eq!(c.cmd(&["RENAME", ta, &untagged]), crossslot);
}

#[test]
fn a_map_change_reaches_every_proxy_within_a_second() {
    let mut cluster = Cluster::builder().nodes(2).proxies(2).shards(32).start();
    let rt = runtime();
    let shards = cluster.shards();
    let mut clients = vec![cluster.proxy(0), cluster.proxy(1)];
    // One key per shard before the change.
    let before: Vec<String> = (0..shards)
        .map(|s| key_in_shard("before:", s, shards))
        .collect();
    for key in &before {
        assert_eq!(clients[0].cmd(&["SET", key, key]), ok());
    }
    let old_map = read_map(&rt, &cluster);

    let new = cluster.add_node();
    let epoch = cluster.assign();
    let assigned = Instant::now();
    assert_eq!(epoch, old_map.epoch + 1);
    let map = read_map(&rt, &cluster);
    assert_eq!(map.epoch, epoch);
    let moved = shards_of(&map, cluster.node_id(new));
    assert!(!moved.is_empty(), "assign gave the new node no shard");

    wait_writes_land_on(
        &cluster,
        &mut clients,
        new,
        moved[0],
        epoch,
        assigned,
        MAP_CHANGE_DEADLINE,
    );

    // Shards that did not move keep their data, through both proxies.
    for (s, key) in before.iter().enumerate() {
        if map.shards[s].primary == old_map.shards[s].primary {
            for client in clients.iter_mut() {
                assert_eq!(
                    client.cmd(&["GET", key]),
                    bulk(key),
                    "shard {s} did not move"
                );
            }
        }
    }
    // And the new node serves exactly the shards the map gives it.
    let mut node = cluster.node_client(new);
    for s in 0..shards {
        let reply = node.cmd(&["SHARD", &s.to_string(), &epoch.to_string(), "DBSIZE"]);
        let serves = reply.as_int().is_some();
        assert_eq!(
            serves,
            moved.contains(&s),
            "node {} on shard {s} at epoch {epoch}: {reply}",
            cluster.node_id(new)
        );
    }
}

#[test]
fn proxies_keep_serving_while_etcd_is_down_and_catch_up_when_it_returns() {
    let mut cluster = Cluster::builder().nodes(2).proxies(2).shards(16).start();
    let rt = runtime();
    let mut clients = vec![cluster.proxy(0), cluster.proxy(1)];
    assert!(cluster.stop_etcd().is_some(), "etcd was running");
    let down = cluster.admin(&["--timeout", "1", "status"]);
    assert!(
        !down.status.success(),
        "ringkv-admin status still works: etcd is not down\n{}",
        String::from_utf8_lossy(&down.stdout)
    );

    // Traffic through both proxies, spread over at least two seconds of outage.
    let started = Instant::now();
    let mut requests = 0usize;
    let mut errors: Vec<String> = Vec::new();
    while requests < 400 || started.elapsed() < Duration::from_secs(2) {
        let p = requests % 2;
        let key = format!("outage:{}", requests % 64);
        let value = format!("v{requests}");
        let set = clients[p].cmd(&["SET", &key, &value]);
        if set != ok() {
            errors.push(format!("SET {key} via proxy {p}: {set}"));
        }
        let get = clients[1 - p].cmd(&["GET", &key]);
        if get != bulk(&value) {
            errors.push(format!("GET {key} via proxy {}: {get}", 1 - p));
        }
        requests += 2;
        // Spreads the requests over the outage; nothing waits for anything here.
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        errors.is_empty(),
        "{} of {requests} requests failed while etcd was down; first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    cluster.start_etcd();
    // The nodes are (still, or again) registered once etcd is back.
    let ids: Vec<String> = (0..cluster.node_count())
        .map(|i| cluster.node_id(i).to_string())
        .collect();
    cluster.wait_registered(&ids);
    let new = cluster.add_node();
    let epoch = cluster.assign();
    let assigned = Instant::now();
    let map = read_map(&rt, &cluster);
    let moved = shards_of(&map, cluster.node_id(new));
    assert!(!moved.is_empty(), "assign gave the new node no shard");
    wait_writes_land_on(
        &cluster,
        &mut clients,
        new,
        moved[0],
        epoch,
        assigned,
        CATCH_UP_DEADLINE,
    );
    // Every shard answers through both proxies at the new epoch.
    for s in 0..cluster.shards() {
        let key = key_in_shard("after:", s, cluster.shards());
        for (p, client) in clients.iter_mut().enumerate() {
            assert_eq!(
                client.cmd(&["SET", &key, "x"]),
                ok(),
                "shard {s}, proxy {p}"
            );
        }
    }
}

#[test]
fn a_killed_storage_node_fails_only_its_own_shards_with_clusterdown() {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .proxies(1)
        .shards(16)
        .proxy_args(&["--request-timeout-ms", "1000"])
        .start();
    let rt = runtime();
    let shards = cluster.shards();
    let map = read_map(&rt, &cluster);
    let victim = 1;
    let victim_id = cluster.node_id(victim).to_string();
    let dead: BTreeSet<u32> = shards_of(&map, &victim_id).into_iter().collect();
    assert!(!dead.is_empty(), "{victim_id} holds no shard");
    assert!(
        dead.len() < shards as usize,
        "{victim_id} holds every shard"
    );

    let keys: Vec<String> = (0..shards).map(|s| key_in_shard("k:", s, shards)).collect();
    let mut c = cluster.proxy(0);
    for key in &keys {
        assert_eq!(c.cmd(&["SET", key, key]), ok());
    }

    cluster.kill_node(victim);

    let is_clusterdown =
        |reply: &Reply| matches!(reply, Reply::Error(e) if e.starts_with(b"CLUSTERDOWN"));
    // Alternate dead and live shards, so a live shard is asked right after a dead one failed.
    for round in 0..2 {
        for (s, key) in keys.iter().enumerate() {
            let s = u32::try_from(s).expect("fits");
            if dead.contains(&s) {
                let get = c.cmd(&["GET", key]);
                assert!(
                    is_clusterdown(&get),
                    "GET of shard {s} on dead {victim_id}: {get}"
                );
                let set = c.cmd(&["SET", key, "new"]);
                assert!(
                    is_clusterdown(&set),
                    "SET of shard {s} on dead {victim_id}: {set}"
                );
            } else {
                let value = format!("{key}-{round}");
                assert_eq!(c.cmd(&["SET", key, &value]), ok(), "shard {s}");
                assert_eq!(c.cmd(&["GET", key]), bulk(&value), "shard {s}");
            }
        }
    }

    // Pipelined: a live shard's reply still comes, in order, behind a dead shard's error.
    let dead_key = &keys[*dead.iter().next().expect("a dead shard") as usize];
    let live_shard = (0..shards)
        .find(|s| !dead.contains(s))
        .expect("a live shard");
    let live_key = &keys[live_shard as usize];
    let mut batch = ringkv_integration::encode_command(&["GET", dead_key]);
    batch.extend(ringkv_integration::encode_command(&["GET", live_key]));
    c.send_raw(&batch).expect("pipeline");
    let first = c.read_reply().expect("reply to GET of the dead shard");
    let second = c.read_reply().expect("reply to GET of the live shard");
    assert!(is_clusterdown(&first), "{first}");
    assert_eq!(second, bulk(&format!("{live_key}-1")));

    // The node comes back on the same port and directory: the proxy reconnects, and every
    // write acknowledged before the kill -9 is there (the refused SETs did not happen).
    cluster.start_node(victim);
    for &s in &dead {
        let key = &keys[s as usize];
        assert_eq!(
            poll_get(&mut c, key),
            bulk(key),
            "shard {s} after {victim_id} restarted"
        );
    }
}

#[test]
fn a_hung_storage_node_fails_its_shards_with_clusterdown_after_the_request_timeout() {
    let mut cluster = Cluster::builder()
        .nodes(2)
        .proxies(1)
        .shards(8)
        .proxy_args(&["--request-timeout-ms", "1000"])
        .start();
    let rt = runtime();
    let shards = cluster.shards();
    let map = read_map(&rt, &cluster);
    let hung = 0;
    let hung_shards: BTreeSet<u32> = shards_of(&map, cluster.node_id(hung)).into_iter().collect();
    assert!(!hung_shards.is_empty() && hung_shards.len() < shards as usize);
    let keys: Vec<String> = (0..shards).map(|s| key_in_shard("h:", s, shards)).collect();
    let mut c = cluster.proxy(0);
    for key in &keys {
        assert_eq!(c.cmd(&["SET", key, key]), ok());
    }

    // SIGSTOP: connections stay open and the lease stays, but nothing answers. Only the
    // proxy's request timeout can turn that into an error (our read timeout is 10 s).
    cluster.pause_node(hung);
    for (s, key) in keys.iter().enumerate() {
        let s = u32::try_from(s).expect("fits");
        let get = c.cmd(&["GET", key]);
        if hung_shards.contains(&s) {
            // Naming the node that did not answer, by its id in the map.
            let names_node = |e: &[u8]| {
                let text = String::from_utf8_lossy(e);
                text.starts_with("CLUSTERDOWN")
                    && text.contains(&format!("storage node {}:", cluster.node_id(hung)))
            };
            assert!(
                matches!(&get, Reply::Error(e) if names_node(e)),
                "GET of shard {s} on a hung node: {get}"
            );
        } else {
            assert_eq!(get, bulk(key), "shard {s} on the live node");
        }
    }

    // Once it answers again, so do its shards.
    cluster.resume_node(hung);
    for &s in &hung_shards {
        let key = &keys[s as usize];
        assert_eq!(
            poll_get(&mut c, key),
            bulk(key),
            "shard {s} after the node resumed"
        );
    }
}

#[test]
fn a_thousand_clients_share_the_configured_connections_to_each_node() {
    raise_open_files_limit(4096);
    let cluster = Cluster::builder()
        .nodes(3)
        .proxies(1)
        .shards(16)
        .proxy_args(&["--node-connections", "2"])
        .start();
    const CLIENTS: usize = 1000;
    // One long-lived INFO connection per node: counted in connected_clients, and no
    // connection of ours is half-closed when we look.
    let mut observers: Vec<RespClient> = (0..cluster.node_count())
        .map(|i| cluster.node_client(i))
        .collect();
    let connected = |observers: &mut Vec<RespClient>| -> Vec<String> {
        observers
            .iter_mut()
            .map(|o| {
                let info = match o.cmd(&["INFO"]) {
                    Reply::Bulk(text) => String::from_utf8_lossy(&text).into_owned(),
                    other => panic!("INFO on a storage node answered {other}"),
                };
                info_field(&info, "connected_clients").expect("connected_clients in INFO")
            })
            .collect()
    };

    let rt = runtime();
    let url = cluster.proxy_url(0);
    let proxy_addr = cluster.proxy_addr(0);
    rt.block_on(async {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<usize>(CLIENTS);
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let url = Arc::new(url);
        let mut tasks = Vec::with_capacity(CLIENTS);
        for i in 0..CLIENTS {
            let (url, done_tx, mut release_rx) = (url.clone(), done_tx.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                let mut con = connect_url(&url).await;
                for j in 0..3 {
                    let key = format!("client:{i}:{j}");
                    let () = con.set(&key, i).await.expect("SET through the proxy");
                    let got: usize = con.get(&key).await.expect("GET through the proxy");
                    assert_eq!(got, i);
                }
                done_tx.send(i).await.expect("report done");
                // Keep the connection open until every client has done its work. (If the test
                // fails first, the sender is dropped and the task just ends.)
                let _ = release_rx.wait_for(|go| *go).await;
                drop(con);
            }));
        }
        drop(done_tx);
        for n in 0..CLIENTS {
            let got = tokio::time::timeout(Duration::from_secs(120), done_rx.recv()).await;
            assert!(
                matches!(got, Ok(Some(_))),
                "only {n} of {CLIENTS} clients finished their SET/GET"
            );
        }

        // All 1000 are connected now: the proxy sees them ...
        let mut proxy = RespClient::connect(proxy_addr).expect("connect to the proxy");
        let info = match proxy.cmd(&["INFO", "clients"]) {
            Reply::Bulk(text) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("INFO clients on the proxy answered {other}"),
        };
        let proxy_clients: usize = info_field(&info, "connected_clients")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no connected_clients in the proxy's INFO:\n{info}"));
        assert!(
            proxy_clients > CLIENTS,
            "the proxy reports {proxy_clients} clients with {CLIENTS} + 1 connected"
        );
        // ... and each storage node sees the proxy's 2 connections plus our INFO connection.
        let during = connected(&mut observers);
        assert!(
            during.iter().all(|n| n == "3"),
            "connected_clients on the storage nodes with {CLIENTS} clients on the proxy: \
             {during:?} (expected 2 from the proxy + 1 for INFO on each)"
        );

        release_tx.send(true).expect("release the clients");
        for task in tasks {
            task.await.expect("client task");
        }
    });
    let after = connected(&mut observers);
    assert!(
        after.iter().all(|n| n == "3"),
        "connected_clients on the storage nodes after the clients left: {after:?}"
    );
}

/// Threads of process `pid` that are event loops (`ringkv-loop-N`, as `top -H` shows them).
fn event_loop_threads(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("ringkv-loop-"))
        .count()
}

#[test]
fn event_loops_flags_set_the_loop_threads_and_the_proxys_connections_per_node() {
    let cluster = Cluster::builder()
        .nodes(1)
        .proxies(1)
        .shards(8)
        .storage_args(&["--event-loops", "5"])
        .proxy_args(&["--event-loops", "5"])
        .start();
    let mut c = cluster.proxy(0);
    assert_eq!(c.cmd(&["SET", "loops", "5"]), ok());
    assert_eq!(c.cmd(&["GET", "loops"]), Reply::Bulk(b"5".to_vec()));

    // Five loops each, not the default one per core ...
    let node_pid = cluster.node_pid(0).expect("the storage node runs");
    let proxy_pid = cluster.proxy_pid(0).expect("the proxy runs");
    assert_eq!(
        event_loop_threads(node_pid),
        5,
        "storage node's loop threads"
    );
    assert_eq!(event_loop_threads(proxy_pid), 5, "proxy's loop threads");
    // ... and without --node-connections, the proxy keeps one connection per loop to the node.
    let mut observer = cluster.node_client(0);
    ringkv_integration::poll_until(Duration::from_secs(30), "5 proxy connections + 1", || {
        let info = match observer.cmd(&["INFO"]) {
            Reply::Bulk(text) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("INFO on the storage node answered {other}"),
        };
        (info_field(&info, "connected_clients").as_deref() == Some("6")).then_some(())
    });
}

#[test]
fn storage_nodes_and_proxies_exit_0_on_sigterm_and_a_restarted_node_keeps_its_data() {
    let mut cluster = Cluster::builder().nodes(2).proxies(1).shards(8).start();
    let mut c = cluster.proxy(0);
    let keys: Vec<String> = (0..8).map(|s| key_in_shard("durable:", s, 8)).collect();
    for key in &keys {
        assert_eq!(c.cmd(&["SET", key, key]), ok());
    }
    let stopped = cluster.stop_node(0);
    assert!(
        stopped.status.success() && !stopped.needed_sigkill,
        "storage node n1 on SIGTERM: {:?}",
        stopped
    );
    cluster.start_node(0);
    for key in &keys {
        let got = poll_get(&mut c, key);
        assert_eq!(got, bulk(key), "{key} after n1 restarted on the same dir");
    }
    for (label, stopped) in cluster.shutdown() {
        assert!(
            stopped.status.success() && !stopped.needed_sigkill,
            "{label} on SIGTERM: {stopped:?}"
        );
    }
}

/// GET through a proxy, retried while the answer is an error (a restarted node takes a moment
/// to be reconnected to); panics after a deadline.
fn poll_get(client: &mut RespClient, key: &str) -> Reply {
    ringkv_integration::poll_until(
        Duration::from_secs(20),
        &format!("GET {key} to answer without an error"),
        || {
            let reply = client.cmd(&["GET", key]);
            (!reply.is_error()).then_some(reply)
        },
    )
}

#[test]
fn info_on_a_proxy_describes_the_cluster_and_sums_the_nodes_figures() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let mut client = cluster.proxy(0);
    for i in 0..40 {
        assert_eq!(client.cmd(&["SET", &format!("info:{i}"), "v"]), ok());
    }
    assert_eq!(
        client.cmd(&["SET", "info:ttl", "v", "EX", "100"]),
        ok(),
        "one key with an expiry"
    );
    for i in 0..30 {
        assert_eq!(client.cmd(&["GET", &format!("info:{i}")]), bulk("v"));
    }
    for i in 0..5 {
        assert_eq!(client.cmd(&["GET", &format!("absent:{i}")]), Reply::Null);
    }
    let info = String::from_utf8(
        client
            .cmd(&["INFO", "all"])
            .as_bytes()
            .expect("INFO is a bulk string")
            .to_vec(),
    )
    .expect("INFO is text");
    let field = |name: &str| {
        info_field(&info, name).unwrap_or_else(|| panic!("INFO has no {name}:\n{info}"))
    };
    assert_eq!(field("ringkv_mode"), "proxy");
    assert_eq!(field("cluster_enabled"), "0");
    assert_eq!(
        field("ringkv_map_epoch"),
        cluster.map_epoch().expect("a map").to_string()
    );
    assert_eq!(field("ringkv_shards"), "16");
    assert_eq!(field("ringkv_nodes"), "2");
    assert_eq!(field("ringkv_nodes_registered"), "2");
    assert_eq!(field("ringkv_etcd_reachable"), "1");
    assert_eq!(field("keyspace_hits"), "30", "hits summed over the nodes");
    assert_eq!(
        field("keyspace_misses"),
        "5",
        "misses summed over the nodes"
    );
    assert_eq!(field("db0"), "keys=41,expires=1,avg_ttl=0");
    assert!(field("connected_clients").parse::<u64>().expect("a number") >= 1);

    // CLIENT LIST on a proxy lists its clients, with the last command each sent to a node.
    let mut other = cluster.proxy(0);
    assert_eq!(other.cmd(&["SET", "listed", "v"]), ok());
    let listing = String::from_utf8(
        client
            .cmd(&["CLIENT", "LIST"])
            .as_bytes()
            .expect("CLIENT LIST is a bulk string")
            .to_vec(),
    )
    .expect("CLIENT LIST is text");
    let commands: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("cmd=")))
        .collect();
    assert_eq!(commands, ["client|list", "set"], "{listing}");

    // The proxy's slow log holds what its clients sent to the nodes.
    assert_eq!(
        client.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        ok()
    );
    assert_eq!(other.cmd(&["GET", "listed"]), bulk("v"));
    let newest = client.cmd(&["SLOWLOG", "GET", "1"]);
    let entry = newest
        .as_array()
        .and_then(|entries| entries.first())
        .and_then(Reply::as_array)
        .unwrap_or_else(|| panic!("no slow log entry: {newest:?}"));
    assert_eq!(entry[3], Reply::Array(vec![bulk("GET"), bulk("listed")]));
}

#[test]
fn storage_nodes_serve_only_peers_that_present_the_cluster_secret() {
    let cluster = Cluster::builder().nodes(1).proxies(1).shards(4).start();
    let mut proxy = cluster.proxy(0);
    assert_eq!(proxy.cmd(&["SET", "guarded", "v"]), ok());
    let epoch = cluster.map_epoch().expect("a map").to_string();

    // No secret: refused, and the connection is closed.
    let mut stranger = cluster.node_client_unauthenticated(0);
    let reply = stranger.cmd(&["SHARD", "0", &epoch, "DBSIZE"]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with(b"NOAUTH")),
        "a request without the secret: {reply}"
    );
    assert!(
        stranger.command(&["PING"]).is_err(),
        "the node closes the connection after refusing it"
    );
    // A wrong secret: refused and closed too.
    let mut liar = cluster.node_client_unauthenticated(0);
    let reply = liar.cmd(&["AUTH", "not-the-cluster-secret"]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with(b"WRONGPASS")),
        "a wrong secret: {reply}"
    );
    assert!(liar.command(&["PING"]).is_err());
    // The right one: served.
    let mut peer = cluster.node_client(0);
    let total: i64 = (0..4)
        .map(|s| {
            peer.cmd(&["SHARD", &s.to_string(), &epoch, "DBSIZE"])
                .as_int()
                .expect("DBSIZE of a served shard")
        })
        .sum();
    assert_eq!(total, 1);
}

/// One request of the internal protocol, RESP-encoded.
fn encode_request(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Sends `batch` to a node in one write (one pipelined batch) and reads its replies.
fn send_batch(node: &mut RespClient, batch: &[Vec<&str>]) -> Vec<Reply> {
    let bytes: Vec<u8> = batch.iter().flat_map(|r| encode_request(r)).collect();
    node.send_raw(&bytes).expect("send the batch");
    (0..batch.len())
        .map(|i| {
            node.read_reply()
                .unwrap_or_else(|e| panic!("reply {i}: {e}"))
        })
        .collect()
}

/// A storage node runs the plain SETs and MSETs of one pipelined batch as one engine write,
/// but each request keeps its own answer and its place: a refused or out-of-shard write in
/// the middle is refused alone, and a read between writes sees exactly the writes before it.
#[test]
fn a_node_runs_a_batch_of_writes_in_order_with_refusals_answered_alone() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let epoch = cluster.node_epoch(0).expect("node 0 serves a map");
    let e = epoch.to_string();
    let mut node = cluster.node_client(0);
    let serves = |node: &mut RespClient, s: u32| {
        node.cmd(&["SHARD", &s.to_string(), &e, "DBSIZE"])
            .as_int()
            .is_some()
    };
    let served = (0..16)
        .find(|&s| serves(&mut node, s))
        .expect("node 0 serves a shard");
    let other = (0..16)
        .find(|&s| !serves(&mut node, s))
        .expect("node 1 serves a shard");
    let (s, o) = (served.to_string(), other.to_string());
    let a = key_in_shard("batch:a:", served, 16);
    let b = key_in_shard("batch:b:", served, 16);
    let elsewhere = key_in_shard("batch:x:", other, 16);

    let batch: Vec<Vec<&str>> = vec![
        vec!["SHARD", &s, &e, "SET", &a, "1"],
        vec!["SHARD", &s, &e, "MSET", &a, "2", &b, "b1"],
        vec!["SHARD", &o, &e, "SET", &elsewhere, "no"],
        vec!["SHARD", &s, &e, "SET", &elsewhere, "no"],
        vec!["SHARD", &s, &e, "GET", &a],
        vec!["SHARD", &s, &e, "SET", &a, "3"],
        vec!["SHARD", &s, &e, "SET", &b, "b2"],
    ];
    let replies = send_batch(&mut node, &batch);
    assert_eq!(replies[0], ok());
    assert_eq!(replies[1], ok());
    assert_error_names(
        &replies[2],
        "MOVED",
        "write to a shard node 0 does not serve",
    );
    assert_error_names(
        &replies[3],
        "does not belong to shard",
        "a key outside the shard",
    );
    assert_eq!(
        replies[4],
        bulk("2"),
        "GET sees the writes before it, not after"
    );
    assert_eq!(replies[5], ok());
    assert_eq!(replies[6], ok());
    assert_eq!(node.cmd(&["SHARD", &s, &e, "GET", &a]), bulk("3"));
    assert_eq!(node.cmd(&["SHARD", &s, &e, "GET", &b]), bulk("b2"));
    let mut owner = cluster.node_client(1);
    assert_eq!(
        owner.cmd(&["SHARD", &o, &e, "EXISTS", &elsewhere]),
        Reply::Integer(0),
        "the refused writes wrote nothing"
    );
}

/// Asserts that `reply` is an error whose text contains `needle`; `why` says which request.
fn assert_error_names(reply: &Reply, needle: &str, why: &str) {
    let text = reply.to_string();
    assert!(
        reply.is_error() && text.contains(needle),
        "{why}: expected an error naming {needle:?}, got {text}"
    );
}

/// A multi-key command whose keys are in several shards of one node travels as one
/// `SHARDS` request: the node runs it whole (in a pipelined batch too) when it serves every
/// key's shard at the proxy's epoch, and refuses it whole, writing nothing, otherwise.
#[test]
fn a_node_runs_a_multi_shard_request_whole_or_refuses_it_whole() {
    let cluster = Cluster::builder().nodes(2).proxies(1).shards(16).start();
    let epoch = cluster.node_epoch(0).expect("node 0 serves a map");
    let e = epoch.to_string();
    let mut node = cluster.node_client(0);
    let serves = |node: &mut RespClient, s: u32| {
        node.cmd(&["SHARD", &s.to_string(), &e, "DBSIZE"])
            .as_int()
            .is_some()
    };
    let served: Vec<u32> = (0..16).filter(|&s| serves(&mut node, s)).collect();
    assert!(served.len() >= 2, "node 0 serves two shards: {served:?}");
    let other = (0..16)
        .find(|&s| !served.contains(&s))
        .expect("node 1 serves a shard");
    let a = key_in_shard("multi:a:", served[0], 16);
    let b = key_in_shard("multi:b:", served[1], 16);
    let elsewhere = key_in_shard("multi:x:", other, 16);

    assert_eq!(node.cmd(&["SHARDS", &e, "MSET", &a, "1", &b, "2"]), ok());
    assert_eq!(
        strings(&node.cmd(&["SHARDS", &e, "MGET", &b, &a])),
        ["2", "1"]
    );
    let later = (epoch + 100).to_string();
    let batch: Vec<Vec<&str>> = vec![
        vec!["SHARDS", &e, "MSET", &a, "3", &b, "4"],
        vec!["SHARDS", &e, "MSET", &a, "5", &elsewhere, "no"],
        vec!["SHARDS", &later, "MSET", &a, "6", &b, "6"],
        vec!["SHARDS", &e, "MGET", &a, &b],
        vec!["SHARDS", &e, "DBSIZE"],
    ];
    let replies = send_batch(&mut node, &batch);
    assert_eq!(replies[0], ok());
    assert_error_names(&replies[1], "MOVED", "a key node 0 does not serve");
    assert_error_names(&replies[2], "STALE", "a map newer than node 0's");
    assert_eq!(
        strings(&replies[3]),
        ["3", "4"],
        "the refused requests wrote none of their keys"
    );
    assert_error_names(&replies[4], "no keys", "DBSIZE in SHARDS");
    assert_eq!(node.cmd(&["SHARDS", &e, "DEL", &a, &b]), Reply::Integer(2));
    let mut owner = cluster.node_client(1);
    assert_eq!(
        owner.cmd(&["SHARD", &other.to_string(), &e, "EXISTS", &elsewhere]),
        Reply::Integer(0),
        "the refused write wrote nothing on the key's own node"
    );
}
