//! The engine through its one entry point, `Storage::execute`, on a real RocksDB on disk.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_common::command::resolve;
use ringkv_common::resp::Reply;
use ringkv_storage::{Deferred, Fsync, Hosting, Storage, StorageConfig, StorageError};

fn open(dir: &std::path::Path, shards: u32) -> Arc<Storage> {
    Storage::open(StorageConfig::new(dir, shards, false, Fsync::No)).expect("open storage")
}

fn run(st: &Storage, words: &[&str]) -> Reply {
    let args: Vec<Bytes> = words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    match resolve(&args) {
        Ok(spec) => st.execute(spec, &args),
        Err(reply) => reply,
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn set_get_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let st = open(dir.path(), 16);
        assert_eq!(run(&st, &["SET", "k", "v"]), Reply::Ok);
        assert_eq!(run(&st, &["SET", "t", "v", "EX", "1000"]), Reply::Ok);
        st.flush().expect("flush");
    }
    let st = open(dir.path(), 16);
    assert_eq!(run(&st, &["GET", "k"]), bulk("v"));
    assert!(matches!(run(&st, &["TTL", "t"]), Reply::Int(n) if n > 990));
}

/// RocksDB checksums every write-ahead-log record with CRC32C. Compiled without SSE4.2 (the
/// build's CPU target, `.cargo/config.toml`) it computes them in software, several percent of
/// every write's CPU; RocksDB's LOG says at open which one it uses.
#[test]
#[cfg(target_arch = "x86_64")]
fn rocksdb_checksums_the_log_with_the_cpus_crc_instruction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 4);
    let log = std::fs::read_to_string(dir.path().join("LOG")).expect("RocksDB's LOG file");
    let line = log
        .lines()
        .find(|l| l.contains("Fast CRC32 supported:"))
        .expect("RocksDB logs its CRC32 implementation at open");
    assert!(
        line.contains("supported: Supported on x86"),
        "RocksDB was built without SSE4.2 ({line}): a RUSTFLAGS in the environment replaces \
         the target flags of .cargo/config.toml; add -Ctarget-cpu=x86-64-v2 to it"
    );
    drop(st);
}

#[test]
fn reopening_with_another_shard_count_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), 16));
    let err = Storage::open(StorageConfig::new(dir.path(), 32, false, Fsync::No)).err();
    assert!(
        matches!(
            err,
            Some(StorageError::ShardCount {
                found: 16,
                wanted: 32,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn expired_keys_are_never_read_and_are_swept_from_dbsize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 8);
    for i in 0..50 {
        assert_eq!(
            run(&st, &["SET", &format!("gone:{i}"), "v", "PX", "50"]),
            Reply::Ok
        );
    }
    assert_eq!(run(&st, &["SET", "stays", "v"]), Reply::Ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Reads stop returning the value as soon as it expires, sweep or not.
        let swept = st.stats().expired_keys;
        if run(&st, &["GET", "gone:0"]) == Reply::Nil
            && run(&st, &["DBSIZE"]) == Reply::Int(1)
            && swept == 50
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired keys still counted: {:?}",
            run(&st, &["DBSIZE"])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `expired_keys` reaches `expired` and DBSIZE answers `keys`.
fn wait_swept(st: &Storage, expired: u64, keys: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while st.stats().expired_keys != expired || run(st, &["DBSIZE"]) != Reply::Int(keys) {
        assert!(
            Instant::now() < deadline,
            "waiting for {expired} swept and {keys} left: swept {}, DBSIZE {:?}",
            st.stats().expired_keys,
            run(st, &["DBSIZE"])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn keys_given_an_expiry_after_the_sweep_found_nothing_due_are_swept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 8);
    // Once the first key is swept, the sweep has been over every shard and learnt that
    // nothing else is due (only a key expiring in a day).
    assert_eq!(run(&st, &["SET", "far", "v", "EX", "86400"]), Reply::Ok);
    assert_eq!(run(&st, &["SET", "first", "v", "PX", "30"]), Reply::Ok);
    wait_swept(&st, 1, 1);
    // Expiries indexed since, by SET … PX and by PEXPIRE, in every shard, are found anyway.
    for i in 0..20 {
        let key = format!("later:{i}");
        if i % 2 == 0 {
            assert_eq!(run(&st, &["SET", &key, "v", "PX", "50"]), Reply::Ok);
        } else {
            assert_eq!(run(&st, &["SET", &key, "v"]), Reply::Ok);
            assert_eq!(run(&st, &["PEXPIRE", &key, "50"]), Reply::Int(1));
        }
    }
    wait_swept(&st, 21, 1);
    assert_eq!(run(&st, &["EXISTS", "far"]), Reply::Int(1));
}

#[test]
fn scan_returns_every_key_exactly_once_across_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 32);
    let mut expected = HashSet::new();
    for i in 0..1000 {
        let key = format!("key:{i}");
        run(&st, &["SET", &key, "v"]);
        expected.insert(key);
    }
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    loop {
        let Reply::Array(parts) = run(&st, &["SCAN", &cursor, "COUNT", "37"]) else {
            panic!("scan reply")
        };
        let [Reply::Bulk(next), Reply::Array(keys)] = &parts[..] else {
            panic!("scan shape {parts:?}")
        };
        for k in keys {
            let Reply::Bulk(k) = k else {
                panic!("key {k:?}")
            };
            seen.push(String::from_utf8_lossy(k).into_owned());
        }
        pages += 1;
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
        assert!(pages < 1000, "scan does not end");
    }
    assert!(pages > 10, "COUNT bounds each page");
    assert_eq!(seen.len(), expected.len(), "no key twice");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
}

#[test]
fn scan_filters_by_match_and_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 4);
    run(&st, &["MSET", "a:1", "x", "a:2", "x", "b:1", "x"]);
    let Reply::Array(parts) = run(&st, &["SCAN", "0", "MATCH", "a:*", "COUNT", "100"]) else {
        panic!()
    };
    let Reply::Array(keys) = &parts[1] else {
        panic!()
    };
    assert_eq!(keys.len(), 2);
    let Reply::Array(parts) = run(&st, &["SCAN", "0", "TYPE", "hash", "COUNT", "100"]) else {
        panic!()
    };
    assert_eq!(parts[1], Reply::Array(vec![]));
    assert_eq!(run(&st, &["SCAN", "x"]), Reply::error("ERR invalid cursor"));
    assert_eq!(
        run(&st, &["SCAN", "0", "COUNT", "0"]),
        Reply::error("ERR syntax error")
    );
}

#[test]
fn rename_moves_value_and_ttl_across_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 64);
    run(&st, &["SET", "from", "v", "EX", "500"]);
    assert_eq!(run(&st, &["RENAME", "from", "to"]), Reply::Ok);
    assert_eq!(run(&st, &["GET", "from"]), Reply::Nil);
    assert_eq!(run(&st, &["GET", "to"]), bulk("v"));
    assert!(matches!(run(&st, &["TTL", "to"]), Reply::Int(n) if n > 490));
    assert_eq!(
        run(&st, &["RENAME", "from", "to"]),
        Reply::error("ERR no such key")
    );
}

#[test]
fn concurrent_incr_loses_no_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    run(&st, &["INCR", "counter"]);
                }
            });
        }
    });
    assert_eq!(run(&st, &["GET", "counter"]), bulk("4000"));
}

#[test]
fn flushall_empties_every_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 8);
    for i in 0..100 {
        run(&st, &["SET", &format!("k{i}"), "v"]);
    }
    assert_eq!(run(&st, &["DBSIZE"]), Reply::Int(100));
    assert_eq!(run(&st, &["FLUSHALL"]), Reply::Ok);
    assert_eq!(run(&st, &["DBSIZE"]), Reply::Int(0));
    assert_eq!(run(&st, &["RANDOMKEY"]), Reply::Nil);
    assert_eq!(
        run(&st, &["FLUSHALL", "bogus"]),
        Reply::error("ERR syntax error")
    );
}

/// A FLUSHALL clears only the shards that hold records: each cleared shard's memtable is
/// written out as a file, so clearing every shard of a nearly empty store made one file per
/// shard, and the next FLUSHALL waited for them.
#[test]
fn flushall_leaves_shards_without_records_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 64);
    let tables = || {
        std::fs::read_dir(dir.path())
            .expect("the data directory")
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "sst"))
            .count()
    };
    let before = tables();
    for round in 0..5 {
        assert_eq!(run(&st, &["SET", "only", "v"]), Reply::Ok);
        assert_eq!(run(&st, &["FLUSHALL"]), Reply::Ok);
        assert_eq!(run(&st, &["GET", "only"]), Reply::Nil, "round {round}");
        assert_eq!(run(&st, &["DBSIZE"]), Reply::Int(0), "round {round}");
    }
    // A FLUSHALL of an empty store, and of one whose only records a FLUSHALL cleared.
    assert_eq!(run(&st, &["FLUSHALL"]), Reply::Ok);
    st.flush().expect("flushing the memtables");
    let made = tables() - before;
    assert!(
        made <= 6,
        "5 FLUSHALLs of one key's shard and one of nothing wrote {made} table files over 64 \
         shards"
    );
    // The keys of every shard are still cleared when they have records.
    for i in 0..200 {
        run(&st, &["SET", &format!("k{i}"), "v"]);
    }
    run(&st, &["SET", "ttl", "v", "EX", "100"]);
    assert_eq!(run(&st, &["FLUSHALL"]), Reply::Ok);
    assert_eq!(run(&st, &["DBSIZE"]), Reply::Int(0));
    assert_eq!(run(&st, &["TTL", "ttl"]), Reply::Int(-2));
}

#[test]
fn in_memory_store_keeps_nothing_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mem");
    let st = Storage::open(StorageConfig::new(&path, 4, true, Fsync::No)).expect("open in memory");
    run(&st, &["SET", "k", "v"]);
    assert_eq!(run(&st, &["GET", "k"]), bulk("v"));
    st.flush().expect("a clean shutdown of an in-memory store");
    // A relative directory works too (RocksDB's memory environment wants absolute paths).
    let relative = Storage::open(StorageConfig::new(
        "./ringkv-mem-test",
        4,
        true,
        Fsync::Everysec,
    ))
    .expect("relative path");
    assert_eq!(run(&relative, &["SET", "k", "v"]), Reply::Ok);
    relative.flush().expect("flush");
    let leftovers = std::fs::read_dir("./ringkv-mem-test")
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all("./ringkv-mem-test");
    assert_eq!(leftovers, 0, "an in-memory store writes no files");
    let files: Vec<_> = std::fs::read_dir(&path)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        files.is_empty(),
        "an in-memory store writes no files, found {files:?}"
    );
}

#[test]
fn expiretime_rounds_without_overflow_at_the_far_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 4);
    run(&st, &["SET", "k", "v"]);
    assert_eq!(
        run(&st, &["PEXPIREAT", "k", "9223372036854775807"]),
        Reply::Int(1)
    );
    assert_eq!(
        run(&st, &["EXPIRETIME", "k"]),
        Reply::Int(9_223_372_036_854_776)
    );
    assert_eq!(run(&st, &["PEXPIRETIME", "k"]), Reply::Int(i64::MAX));
}

#[test]
fn del_counts_a_repeated_key_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 8);
    run(&st, &["MSET", "a", "1", "b", "2"]);
    assert_eq!(
        run(&st, &["DEL", "a", "a", "b", "missing", "b"]),
        Reply::Int(2)
    );
    assert_eq!(run(&st, &["EXISTS", "a", "b"]), Reply::Int(0));
}

/// Overwrites update memtable entries in place; a FLUSHALL's range tombstone must not hide
/// a write made after it to a key that was in the memtable before (a differential-test
/// finding: `MSET float nan`, `FLUSHALL`, `SETNX float nan`, then `DEL float` answered 0).
#[test]
fn writes_after_flushall_are_visible_even_when_they_reuse_a_memtable_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 16);
    for round in 0..3 {
        assert_eq!(run(&st, &["MSET", "float", "nan", "k", "v1"]), Reply::Ok);
        assert_eq!(run(&st, &["FLUSHALL"]), Reply::Ok);
        assert_eq!(run(&st, &["GET", "float"]), Reply::Nil, "round {round}");
        // Same sizes as before the FLUSHALL: the in-place path.
        assert_eq!(run(&st, &["SETNX", "float", "nan"]), Reply::Int(1));
        assert_eq!(run(&st, &["SET", "k", "v2"]), Reply::Ok);
        assert_eq!(run(&st, &["GET", "float"]), bulk("nan"), "round {round}");
        assert_eq!(run(&st, &["GET", "k"]), bulk("v2"), "round {round}");
        assert_eq!(run(&st, &["DBSIZE"]), Reply::Int(2), "round {round}");
    }
}

/// A gathered group (what the standalone connection and the storage node build from a
/// pipeline) answers exactly what the same requests answer one by one, in order, each seeing
/// the writes of the ones before it.
#[test]
fn a_group_of_writes_and_increments_answers_as_the_requests_one_by_one() {
    use ringkv_common::command::gatherable;
    use ringkv_storage::WriteGroup;

    let script: &[&[&str]] = &[
        &["INCR", "n"],
        &["INCRBY", "n", "41"],
        &["SET", "s", "abc"],
        &["INCR", "s"],
        &["MSET", "m", "7", "s", "10"],
        &["DECRBY", "s", "3"],
        &["DECR", "m"],
        &["SET", "big", "9223372036854775806"],
        &["INCR", "big"],
        &["INCR", "big"],
        &["INCRBY", "ttl", "5"],
        &["SET", "n", "x"],
        &["DECR", "n"],
        // Hash-tagged keys: their shard comes from the tag, not from the key's own hash.
        &["MSET", "{t}a", "1", "{t}b", "x"],
        &["INCRBY", "{t}a", "4"],
        &["INCR", "{t}c"],
    ];
    let args = |words: &[&str]| -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    };
    let one_by_one_dir = tempfile::tempdir().expect("tempdir");
    let grouped_dir = tempfile::tempdir().expect("tempdir");
    let one_by_one = open(one_by_one_dir.path(), 16);
    let grouped = open(grouped_dir.path(), 16);
    for st in [&one_by_one, &grouped] {
        assert_eq!(run(st, &["SET", "ttl", "1", "EX", "1000"]), Reply::Ok);
    }

    let expected: Vec<Reply> = script.iter().map(|w| run(&one_by_one, w)).collect();
    let mut group = WriteGroup::default();
    for (i, words) in script.iter().enumerate() {
        let inner = args(words);
        let (spec, what) = gatherable(&inner).expect("every request of the script gathers");
        // Every other request comes in an envelope, as on a storage node: the group takes
        // the arguments after the command's name and leaves the rest.
        let mut request = if i % 2 == 0 {
            Vec::new()
        } else {
            args(&["SHARDS", "7"])
        };
        let from = request.len();
        request.extend(inner);
        group.push(spec, what, &mut request, from, None);
        assert_eq!(request.len(), from + 1, "{words:?}");
    }
    let mut replies = Vec::new();
    grouped.execute_group(&mut group, &mut replies, &mut Deferred::default());
    assert_eq!(
        group.requests().count(),
        script.len(),
        "the group keeps its requests until cleared"
    );
    group.clear();
    assert!(group.is_empty(), "the group is emptied for reuse");
    assert_eq!(replies, expected);
    assert!(replies.contains(&Reply::Int(42)), "{replies:?}");
    assert!(replies.iter().filter(|r| r.is_error()).count() >= 3);

    for key in ["n", "s", "m", "big", "ttl", "{t}a", "{t}b", "{t}c"] {
        assert_eq!(
            run(&grouped, &["GET", key]),
            run(&one_by_one, &["GET", key]),
            "{key}"
        );
    }
    assert!(matches!(run(&grouped, &["TTL", "ttl"]), Reply::Int(n) if n > 990));
}

/// INCR of `key` as a storage node or a pipeline runs it: gathered in a group of its own.
fn incr_in_a_group(st: &Storage, key: &str) -> Reply {
    use ringkv_common::command::gatherable;
    use ringkv_storage::WriteGroup;

    let mut request: Vec<Bytes> = ["INCR", key]
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let (spec, what) = gatherable(&request).expect("INCR gathers");
    let mut group = WriteGroup::default();
    group.push(spec, what, &mut request, 0, None);
    let mut replies = Vec::new();
    st.execute_group(&mut group, &mut replies, &mut Deferred::default());
    assert_eq!(replies.len(), 1);
    replies.remove(0)
}

/// The value an increment wrote is kept in memory for the key's next increment (the counter
/// cache); every other way of writing or deleting the key must be seen by that next increment,
/// whether it runs alone or gathered.
#[test]
fn an_increment_sees_every_other_write_of_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = open(dir.path(), 16);
    let not_integer = Reply::error("ERR value is not an integer or out of range");
    // Each write of `k`, then the reply of the INCR that follows it and whether `k` has an
    // expiry after that INCR. Before each write, two increments (alone, then gathered) leave
    // their value in memory.
    let script: &[(&[&str], Reply, bool)] = &[
        (&["SET", "k", "10"], Reply::Int(11), false),
        (&["SET", "k", "abc"], not_integer.clone(), false),
        (&["SET", "k", "20", "EX", "1000"], Reply::Int(21), true),
        (&["PERSIST", "k"], Reply::Int(24), false),
        (&["APPEND", "k", "5"], Reply::Int(266), false),
        (&["SETRANGE", "k", "0", "9"], Reply::Int(969), false),
        (&["INCRBYFLOAT", "k", "0.5"], not_integer.clone(), false),
        (&["SET", "k", "1"], Reply::Int(2), false),
        (&["DEL", "k"], Reply::Int(1), false),
        (&["UNLINK", "k"], Reply::Int(1), false),
        (&["GETDEL", "k"], Reply::Int(1), false),
        (&["GETSET", "k", "40"], Reply::Int(41), false),
        (&["EXPIRE", "k", "1000"], Reply::Int(44), true),
        (&["SET", "k", "60", "KEEPTTL"], Reply::Int(61), true),
        (&["MSET", "other", "1", "k", "50"], Reply::Int(51), false),
        (&["GETEX", "k", "EX", "1000"], Reply::Int(54), true),
        (&["GETEX", "k", "PERSIST"], Reply::Int(57), false),
        (&["PEXPIRE", "k", "-1"], Reply::Int(1), false),
        (&["RENAME", "k", "moved"], Reply::Int(1), false),
        (
            &["SET", "elsewhere", "70", "EX", "1000"],
            Reply::Int(4),
            false,
        ),
        (&["RENAME", "elsewhere", "k"], Reply::Int(71), true),
        (&["FLUSHALL"], Reply::Int(1), false),
    ];
    for (i, (write, after, expires)) in script.iter().enumerate() {
        assert!(matches!(
            run(&st, &["INCR", "k"]),
            Reply::Int(_) | Reply::Error(_)
        ));
        assert!(matches!(
            incr_in_a_group(&st, "k"),
            Reply::Int(_) | Reply::Error(_)
        ));
        run(&st, write);
        let got = if i % 2 == 0 {
            run(&st, &["INCR", "k"])
        } else {
            incr_in_a_group(&st, "k")
        };
        assert_eq!(&got, after, "INCR after {write:?}");
        let ttl = run(&st, &["TTL", "k"]);
        if *expires {
            assert!(
                matches!(ttl, Reply::Int(n) if n > 990),
                "TTL after {write:?}: {ttl:?}"
            );
        } else {
            assert_eq!(ttl, Reply::Int(-1), "TTL after {write:?}");
        }
    }

    // An expiry set before the increments is kept, and the key still expires.
    assert_eq!(run(&st, &["SET", "t", "5", "PX", "300"]), Reply::Ok);
    assert_eq!(run(&st, &["INCR", "t"]), Reply::Int(6));
    assert_eq!(incr_in_a_group(&st, "t"), Reply::Int(7));
    assert!(matches!(run(&st, &["PTTL", "t"]), Reply::Int(n) if n > 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while run(&st, &["EXISTS", "t"]) != Reply::Int(0) {
        assert!(Instant::now() < deadline, "t never expired");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(run(&st, &["INCR", "t"]), Reply::Int(1));
    assert_eq!(run(&st, &["TTL", "t"]), Reply::Int(-1));

    // What the increments wrote is on disk, not only in memory.
    assert_eq!(run(&st, &["INCRBY", "k", "100"]), Reply::Int(101));
    st.flush().expect("flush");
    drop(st);
    let st = open(dir.path(), 16);
    assert_eq!(run(&st, &["INCR", "k"]), Reply::Int(102));
    assert_eq!(run(&st, &["GET", "t"]), bulk("1"));
}

/// A key of `st` that lands on `shard`.
fn key_in(st: &Storage, shard: u32) -> String {
    (0..)
        .map(|i| format!("key:{i}"))
        .find(|k| st.shard(k.as_bytes()) == shard)
        .expect("some key lands on every shard")
}

/// The number of the newest OPTIONS file RocksDB wrote in `dir`. Each write of the file
/// takes two numbers from RocksDB's file counter (a temporary file's, then its own).
fn options_file_number(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read data dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("OPTIONS-")?.parse().ok()
        })
        .max()
        .expect("an OPTIONS file")
}

#[test]
fn shards_assigned_to_a_node_are_created_together_and_reopen_with_their_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut config = StorageConfig::new(dir.path(), 64, false, Fsync::No);
        config.hosting = Hosting::Assigned;
        config
    };
    {
        let st = Storage::open(config()).expect("open");
        assert_eq!(st.hosted(), Vec::<u32>::new());
        // Duplicates count once; shards already open are not created again.
        assert_eq!(st.host(&[7, 3, 5, 3]).expect("host"), 3);
        assert_eq!(st.host(&[3, 9]).expect("host"), 1);
        assert_eq!(st.host(&[9, 5]).expect("host"), 0);
        assert_eq!(st.hosted(), vec![3, 5, 7, 9]);
        for shard in [3, 5, 7, 9] {
            let key = key_in(&st, shard);
            assert_eq!(run(&st, &["SET", &key, &format!("v{shard}")]), Reply::Ok);
        }
        // A shard the store does not have is refused, and changes nothing.
        assert!(matches!(
            st.host(&[11, 64]),
            Err(StorageError::Engine(
                ringkv_storage::EngineError::NotHosted(64)
            ))
        ));
        assert!(!st.hosts(11));
        // Many shards at once write RocksDB's OPTIONS file (every family's options) once,
        // not once per family: a node given 256 new shards spent 19 s of CPU rewriting it.
        let before = options_file_number(dir.path());
        let many: Vec<u32> = (20..52).collect();
        assert_eq!(st.host(&many).expect("host"), 32);
        let written = (options_file_number(dir.path()) - before) / 2;
        assert_eq!(
            written, 1,
            "OPTIONS written {written} times for 32 families"
        );
        st.flush().expect("flush");
    }
    let st = Storage::open(config()).expect("reopen");
    let hosted: Vec<u32> = [3, 5, 7, 9].into_iter().chain(20..52).collect();
    assert_eq!(st.hosted(), hosted);
    for shard in [3, 5, 7, 9] {
        let key = key_in(&st, shard);
        assert_eq!(run(&st, &["GET", &key]), bulk(&format!("v{shard}")));
    }
    assert_eq!(st.host(&[3, 11]).expect("host"), 1);
    assert!(st.hosts(11));
}
