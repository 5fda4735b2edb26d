//! `ringkv-admin` against a real etcd: `init`, `status`, `assign`, node liveness through
//! leases, watches, and the shard map's compare-and-swap.
//!
//! Every test starts its own etcd (see `ringkv_integration::etcd`). Fake storage nodes are
//! registered with the same helpers a storage node uses (`ClusterStore::register_node`).
//!
//! The binary under test is `$RINGKV_ADMIN_BIN` if set, otherwise `ringkv-admin` in the cargo
//! profile directory of this test executable. Build it first:
//! `cargo build --release -p ringkv-proxy --bin ringkv-admin`.

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::Duration;

use ringkv_common::etcd::{
    CasOutcome, ClusterStore, LeaseState, MapEvent, NodeEvent, NodeLease, StoredMap,
};
use ringkv_common::ring::Ring;
use ringkv_common::shardmap::{ClusterConfig, NodeInfo, ShardMap};
use ringkv_integration::cluster::admin_bin;
use ringkv_integration::etcd::Etcd;
use ringkv_integration::{free_port, poll_until, run_with_deadline};
use tokio::runtime::Runtime;

/// Any admin command finishes well within this, or it is hung.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// How long a lease change may take to show (etcd expires leases on its own clock).
const LEASE_DEADLINE: Duration = Duration::from_secs(30);

/// The result of one `ringkv-admin` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

fn run_admin(args: &[&str]) -> Run {
    let mut cmd = Command::new(admin_bin());
    cmd.args(args);
    Run::from(run_with_deadline(&mut cmd, b"", COMMAND_DEADLINE))
}

fn admin(etcd: &Etcd, cluster: &str, args: &[&str]) -> Run {
    let url = etcd.url();
    let mut all = vec!["--etcd", url.as_str(), "--cluster", cluster];
    all.extend_from_slice(args);
    run_admin(&all)
}

/// A multi-threaded runtime, so lease keep-alives keep running while the test thread waits
/// for an admin process.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn store(rt: &Runtime, etcd: &Etcd, cluster: &str) -> ClusterStore {
    rt.block_on(ClusterStore::connect(&[etcd.url()], cluster))
        .unwrap_or_else(|e| panic!("connecting to {}: {e}\n{}", etcd.url(), etcd.log_tail()))
}

fn node(id: &str, zone: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_string(),
        addr: format!("127.0.0.1:{}", free_port()),
        zone: zone.to_string(),
        weight: 1,
    }
}

fn register(rt: &Runtime, store: &ClusterStore, node: &NodeInfo, ttl: Duration) -> NodeLease {
    rt.block_on(store.register_node(node, ttl))
        .unwrap_or_else(|e| panic!("registering {}: {e}", node.id))
}

fn live_ids(rt: &Runtime, store: &ClusterStore) -> Vec<String> {
    let list = rt.block_on(store.list_nodes()).expect("list nodes");
    list.nodes.into_iter().map(|n| n.id).collect()
}

fn stored_map(rt: &Runtime, store: &ClusterStore) -> StoredMap {
    rt.block_on(store.read_map())
        .expect("read map")
        .current
        .expect("a map is stored")
}

/// The status line of node `id`, split into columns.
fn status_row(status: &str, id: &str) -> Vec<String> {
    status
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find(|cols| cols.first().map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no status line for {id}:\n{status}"))
}

#[test]
fn init_creates_the_cluster_once_and_a_second_init_is_refused() {
    let etcd = Etcd::start();
    let rt = runtime();
    let out = admin(
        &etcd,
        "alpha",
        &["init", "--shards", "64", "--replicas", "2"],
    );
    out.expect_code(0);
    assert!(out.stdout.contains("64 shards"), "{}", out.stdout);

    let again = admin(&etcd, "alpha", &["init"]);
    again.expect_code(1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(again.stderr.lines().count(), 1, "{}", again.stderr);

    let store = store(&rt, &etcd, "alpha");
    let config = rt
        .block_on(store.read_config())
        .expect("read config")
        .expect("config exists");
    assert_eq!((config.shards, config.replicas), (64, 2));
    assert_eq!(config.hash, "xxh3-64");
    assert!(config.created_at_ms > 0);

    let status = admin(&etcd, "alpha", &["status"]);
    status.expect_code(0);
    assert!(
        status.stdout.contains("64 shards, 2 replicas"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("map: none"), "{}", status.stdout);

    // Another cluster on the same etcd is independent.
    admin(&etcd, "beta", &["init"]).expect_code(0);
    let beta = admin(&etcd, "beta", &["status"]);
    assert!(
        beta.stdout.contains("256 shards, 3 replicas"),
        "{}",
        beta.stdout
    );
}

#[test]
fn status_and_assign_on_a_missing_cluster_fail_with_exit_1() {
    let etcd = Etcd::start();
    for command in ["status", "assign"] {
        let out = admin(&etcd, "ghost", &[command]);
        out.expect_code(1);
        assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    }
}

#[test]
fn assign_places_every_shard_on_the_live_nodes_in_distinct_zones() {
    let etcd = Etcd::start();
    let rt = runtime();
    admin(
        &etcd,
        "zoned",
        &["init", "--shards", "64", "--replicas", "3"],
    )
    .expect_code(0);
    let store = store(&rt, &etcd, "zoned");

    // No live node: nothing to assign to.
    let empty = admin(&etcd, "zoned", &["assign"]);
    empty.expect_code(1);
    assert!(empty.stderr.contains("no live node"), "{}", empty.stderr);

    let nodes = [
        node("n1", "a"),
        node("n2", "b"),
        node("n3", "c"),
        node("n4", "a"),
    ];
    let _leases: Vec<NodeLease> = nodes
        .iter()
        .map(|n| register(&rt, &store, n, Duration::from_secs(10)))
        .collect();

    let out = admin(&etcd, "zoned", &["assign"]);
    out.expect_code(0);
    assert!(out.stdout.contains("map epoch 1 written"), "{}", out.stdout);

    let stored = stored_map(&rt, &store);
    let config = rt
        .block_on(store.read_config())
        .expect("read config")
        .expect("config");
    stored.map.validate(&config).expect("valid map");
    assert_eq!(stored.map.epoch, 1);
    assert_eq!(stored.map.shards.len(), 64);
    let zone_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.zone.clone())
            .unwrap_or_else(|| panic!("map names unknown node {id}"))
    };
    for (i, shard) in stored.map.shards.iter().enumerate() {
        assert_eq!(shard.replicas.len(), 3, "shard {i}: {shard:?}");
        assert_eq!(shard.replicas[0], shard.primary, "shard {i}: {shard:?}");
        let zones: HashSet<String> = shard.replicas.iter().map(|r| zone_of(r)).collect();
        assert_eq!(zones.len(), 3, "shard {i} not spread over zones: {shard:?}");
    }
    // The map is what the ring and balancer compute from the live nodes.
    let ring = Ring::new(nodes.iter().map(NodeInfo::ring_node)).expect("ring");
    let expected = ShardMap::from_ring(1, &ring, &config, None).expect("map");
    assert_eq!(stored.map, expected);

    let status = admin(&etcd, "zoned", &["status"]);
    status.expect_code(0);
    assert!(status.stdout.contains("map epoch 1"), "{}", status.stdout);
    let counts = stored.map.counts();
    for n in &nodes {
        let row = status_row(&status.stdout, &n.id);
        let c = counts[&n.id];
        assert_eq!(
            row[1..6],
            [
                "live".to_string(),
                n.zone.clone(),
                "1".to_string(),
                c.primary.to_string(),
                c.replica.to_string()
            ],
            "{}",
            status.stdout
        );
    }
    // Zones b and c hold every shard once; zone a's two nodes share it.
    assert_eq!(counts["n2"].primary + counts["n2"].replica, 64);
    assert_eq!(counts["n3"].primary + counts["n3"].replica, 64);

    // Nothing changed: assign writes nothing and the epoch stays.
    let again = admin(&etcd, "zoned", &["assign"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing written"), "{}", again.stdout);
    assert_eq!(stored_map(&rt, &store).map.epoch, 1);
}

#[test]
fn a_dead_node_shows_as_dead_and_assign_moves_only_its_shards() {
    let etcd = Etcd::start();
    let rt = runtime();
    admin(
        &etcd,
        "failover",
        &["init", "--shards", "128", "--replicas", "2"],
    )
    .expect_code(0);
    let store = store(&rt, &etcd, "failover");
    let mut leases: Vec<NodeLease> = (1..=4)
        .map(|i| {
            register(
                &rt,
                &store,
                &node(&format!("n{i}"), ""),
                Duration::from_secs(10),
            )
        })
        .collect();
    admin(&etcd, "failover", &["assign"]).expect_code(0);
    let before = stored_map(&rt, &store);

    // n4 shuts down cleanly: its lease is revoked and its record vanishes.
    let n4 = leases.pop().expect("n4's lease");
    rt.block_on(n4.revoke()).expect("revoke n4's lease");
    poll_until(LEASE_DEADLINE, "n4's record to vanish", || {
        (!live_ids(&rt, &store).contains(&"n4".to_string())).then_some(())
    });

    let status = admin(&etcd, "failover", &["status"]);
    status.expect_code(0);
    let row = status_row(&status.stdout, "n4");
    assert_eq!(row[1], "dead", "{}", status.stdout);
    assert_eq!(status_row(&status.stdout, "n1")[1], "live");

    let out = admin(&etcd, "failover", &["assign"]);
    out.expect_code(0);
    assert!(out.stdout.contains("map epoch 2 written"), "{}", out.stdout);
    let after = stored_map(&rt, &store);
    assert_eq!(after.map.epoch, 2);
    let mut moved = 0;
    for (old, new) in before.map.shards.iter().zip(&after.map.shards) {
        assert!(!new.replicas.contains(&"n4".to_string()), "{new:?}");
        if old.replicas.contains(&"n4".to_string()) {
            moved += 1;
            for survivor in old.replicas.iter().filter(|r| *r != "n4") {
                assert!(new.replicas.contains(survivor), "{old:?} → {new:?}");
            }
        } else {
            assert_eq!(old, new, "a shard without n4 moved");
        }
    }
    assert!(
        out.stdout.contains(&format!("{moved} shards moved")),
        "expected {moved} moved: {}",
        out.stdout
    );
    let status = admin(&etcd, "failover", &["status"]);
    assert!(!status.stdout.contains("n4"), "{}", status.stdout);
}

#[test]
fn a_node_whose_keepalive_stops_expires_and_a_kept_alive_one_stays() {
    let etcd = Etcd::start();
    let rt = runtime();
    let store = store(&rt, &etcd, "leases");
    let ttl = Duration::from_secs(2);
    let kept = register(&rt, &store, &node("kept", ""), ttl);
    let dropped = register(&rt, &store, &node("dropped", ""), ttl);
    assert_eq!(live_ids(&rt, &store), ["dropped", "kept"]);

    // Dropping the handle stops the keep-alive without revoking: etcd expires the lease.
    drop(dropped);
    poll_until(LEASE_DEADLINE, "the unrefreshed lease to expire", || {
        (live_ids(&rt, &store) == ["kept"]).then_some(())
    });
    // By now more than a TTL has passed, so "kept" was refreshed by its keep-alive.
    assert_eq!(kept.state(), LeaseState::Alive);
    assert_eq!(live_ids(&rt, &store), ["kept"]);
}

#[test]
fn watchers_see_nodes_come_and_go_and_each_new_map() {
    let etcd = Etcd::start();
    let rt = runtime();
    admin(
        &etcd,
        "watched",
        &["init", "--shards", "32", "--replicas", "1"],
    )
    .expect_code(0);
    let store = store(&rt, &etcd, "watched");
    let listed = rt.block_on(store.list_nodes()).expect("list nodes");
    let read = rt.block_on(store.read_map()).expect("read map");
    assert!(read.current.is_none());
    let mut node_watch = rt.block_on(async { store.watch_nodes(listed.revision + 1) });
    let mut map_watch = rt.block_on(async { store.watch_map(read.revision + 1) });

    let lease = register(&rt, &store, &node("w1", "z"), Duration::from_secs(10));
    let next_node = |watch: &mut ringkv_common::etcd::Watch<NodeEvent>| {
        rt.block_on(async {
            loop {
                match tokio::time::timeout(COMMAND_DEADLINE, watch.next()).await {
                    Ok(Some(NodeEvent::Interrupted { .. })) => continue,
                    Ok(Some(event)) => return event,
                    Ok(None) => panic!("node watch ended"),
                    Err(_) => panic!("no node event within {COMMAND_DEADLINE:?}"),
                }
            }
        })
    };
    match next_node(&mut node_watch) {
        NodeEvent::Up(info) => assert_eq!((info.id.as_str(), info.zone.as_str()), ("w1", "z")),
        other => panic!("expected w1 up, got {other:?}"),
    }

    admin(&etcd, "watched", &["assign"]).expect_code(0);
    let event = rt.block_on(async {
        loop {
            match tokio::time::timeout(COMMAND_DEADLINE, map_watch.next()).await {
                Ok(Some(MapEvent::Interrupted { .. })) => continue,
                Ok(Some(event)) => return event,
                Ok(None) => panic!("map watch ended"),
                Err(_) => panic!("no map event within {COMMAND_DEADLINE:?}"),
            }
        }
    });
    match event {
        MapEvent::Changed(stored) => {
            assert_eq!(stored.map.epoch, 1);
            assert!(stored.map.shards.iter().all(|s| s.primary == "w1"));
            assert_eq!(stored, stored_map(&rt, &store));
        }
        other => panic!("expected the first map, got {other:?}"),
    }

    rt.block_on(lease.revoke()).expect("revoke");
    match next_node(&mut node_watch) {
        NodeEvent::Down { id } => assert_eq!(id, "w1"),
        other => panic!("expected w1 down, got {other:?}"),
    }
}

fn test_map(epoch: u64, primary: &str, shards: u32) -> ShardMap {
    let config = ClusterConfig::new(shards, 1, 0).expect("config");
    let ring = Ring::new([node(primary, "").ring_node()]).expect("ring");
    ShardMap::from_ring(epoch, &ring, &config, None).expect("map")
}

#[test]
fn two_writers_with_the_same_base_epoch_cannot_both_win() {
    let etcd = Etcd::start();
    let rt = runtime();
    let first = store(&rt, &etcd, "race");
    let second = store(&rt, &etcd, "race");

    // Both create the first map at once: exactly one creation succeeds.
    let (map_a, map_b) = (test_map(1, "a", 16), test_map(1, "b", 16));
    let (a, b) = rt.block_on(async {
        tokio::join!(
            first.write_map(None, &map_a),
            second.write_map(None, &map_b),
        )
    });
    let (a, b) = (a.expect("txn a"), b.expect("txn b"));
    let winners = [&a, &b]
        .iter()
        .filter(|o| matches!(o, CasOutcome::Written { .. }))
        .count();
    assert_eq!(winners, 1, "{a:?} / {b:?}");

    for round in 0..20u64 {
        // Both read the same map, then both try to replace it with their own next epoch.
        let base = stored_map(&rt, &first);
        assert_eq!(base.map.epoch, round + 1);
        let mine = test_map(base.map.epoch + 1, "a", 16);
        let theirs = test_map(base.map.epoch + 1, "b", 16);
        let (a, b) = rt.block_on(async {
            tokio::join!(
                first.write_map(Some(&base), &mine),
                second.write_map(Some(&base), &theirs),
            )
        });
        let (a, b) = (a.expect("txn a"), b.expect("txn b"));
        let stored = stored_map(&rt, &first);
        match (&a, &b) {
            (CasOutcome::Written { .. }, CasOutcome::Conflict { current }) => {
                assert_eq!(stored.map, mine);
                assert_eq!(current.as_ref().map(|c| &c.map), Some(&mine));
            }
            (CasOutcome::Conflict { current }, CasOutcome::Written { .. }) => {
                assert_eq!(stored.map, theirs);
                assert_eq!(current.as_ref().map(|c| &c.map), Some(&theirs));
            }
            _ => panic!("round {round}: exactly one writer must win: {a:?} / {b:?}"),
        }
        // A late writer still holding the old base loses too.
        let late = rt
            .block_on(first.write_map(Some(&base), &test_map(base.map.epoch + 1, "c", 16)))
            .expect("txn");
        assert!(matches!(late, CasOutcome::Conflict { .. }), "{late:?}");
    }

    // An epoch that does not grow is refused before anything is sent.
    let base = stored_map(&rt, &first);
    let stale = test_map(base.map.epoch, "a", 16);
    assert!(rt.block_on(first.write_map(Some(&base), &stale)).is_err());
}

#[test]
fn two_admins_racing_to_assign_cannot_both_write() {
    let etcd = Etcd::start();
    let rt = runtime();
    for round in 0..3 {
        let cluster = format!("admins-{round}");
        admin(&etcd, &cluster, &["init", "--shards", "64"]).expect_code(0);
        let store = store(&rt, &etcd, &cluster);
        let _leases: Vec<NodeLease> = (1..=3)
            .map(|i| {
                register(
                    &rt,
                    &store,
                    &node(&format!("n{i}"), ""),
                    Duration::from_secs(10),
                )
            })
            .collect();
        let url = etcd.url();
        let spawn = || {
            Command::new(admin_bin())
                .args(["--etcd", &url, "--cluster", &cluster, "assign"])
                .output()
        };
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(spawn);
            let two = s.spawn(spawn);
            (
                one.join().expect("thread").expect("run admin"),
                two.join().expect("thread").expect("run admin"),
            )
        });
        let runs = [Run::from(one), Run::from(two)];
        let written = runs
            .iter()
            .filter(|r| r.stdout.contains("written:"))
            .count();
        assert_eq!(
            written,
            1,
            "exactly one admin writes epoch 1: {:?}",
            runs.iter()
                .map(|r| (r.code, r.stdout.clone(), r.stderr.clone()))
                .collect::<Vec<_>>()
        );
        for run in &runs {
            // The loser either lost the compare-and-swap (exit 1) or read the winner's map and
            // found nothing to do (exit 0).
            let lost = run.code == Some(1) && run.stderr.contains("another writer");
            let idle = run.code == Some(0);
            assert!(lost || idle, "{:?} {} {}", run.code, run.stdout, run.stderr);
        }
        assert_eq!(stored_map(&rt, &store).map.epoch, 1);
    }
}

#[test]
fn an_unreachable_etcd_is_exit_1_with_one_line() {
    // A port nobody listens on: bound, then released.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for command in ["status", "assign", "init"] {
        let out = run_admin(&["--etcd", &url, "--cluster", "c", "--timeout", "2", command]);
        out.expect_code(1);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{command}: {}", out.stderr);
        assert!(
            lines[0].contains("etcd") && lines[0].contains(&url),
            "{command}: {}",
            out.stderr
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["--etcd", "http://127.0.0.1:1", "--cluster", "c"],
        vec![
            "--etcd",
            "http://127.0.0.1:1",
            "--cluster",
            "c",
            "init",
            "--shards",
            "0",
        ],
        vec![
            "--etcd",
            "http://127.0.0.1:1",
            "--cluster",
            "c",
            "init",
            "--replicas",
            "x",
        ],
        vec!["--etcd", "http://127.0.0.1:1", "--cluster", "a/b", "status"],
        vec!["--cluster", "c", "status"],
        vec![
            "--etcd",
            "http://127.0.0.1:1",
            "--cluster",
            "c",
            "frobnicate",
        ],
    ] {
        let out = run_admin(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {} {}", out.stdout, out.stderr);
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
