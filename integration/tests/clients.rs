//! What an application using a real client library relies on, driven through the `redis`
//! crate (async, tokio): strings and keyspace, RESP3, pipelines, expiry, hash tags, and
//! atomic read-modify-write under many concurrent clients.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, Value};
use ringkv_integration::Server;
use tokio::time::{sleep, Instant};

/// The redis crate's default response timeout (500 ms) is too tight for a two-core CI machine
/// running several test binaries' servers at once; a hang is still caught.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Liveness bound for expiry: a key set with PX 100 must be gone within this. Generous because
/// it is not a speed check.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(5);

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

async fn connect(server: &Server) -> MultiplexedConnection {
    connect_url(&server.url()).await
}

/// Sends `args` as one command and converts its reply; panics naming the command on error.
async fn query<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(con)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Polls an async condition until it holds or the deadline passes.
async fn eventually<F, Fut>(deadline: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if probe().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_get_are_binary_safe() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"plain".to_vec(), b"value".to_vec()),
        (b"nul\x00key".to_vec(), b"nul\x00value".to_vec()),
        (b"crlf\r\nkey".to_vec(), b"\r\n\r\n".to_vec()),
        (b"\xff\xfe".to_vec(), (0..=255u8).collect()),
        (b"".to_vec(), b"empty key".to_vec()),
        (b"empty value".to_vec(), b"".to_vec()),
    ];
    for (k, v) in &pairs {
        let () = con.set(k, v).await.expect("SET binary");
    }
    for (k, v) in &pairs {
        let got: Option<Vec<u8>> = con.get(k).await.expect("GET binary");
        assert_eq!(got.as_ref(), Some(v), "GET {k:?}");
    }
    let missing: Option<Vec<u8>> = con.get("never-set").await.expect("GET missing");
    assert_eq!(missing, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_value_round_trips_intact() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let value: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let () = con.set("big", &value).await.expect("SET 8 MiB");
    let got: Vec<u8> = con.get("big").await.expect("GET 8 MiB");
    assert!(
        got == value,
        "8 MiB value came back different ({} bytes)",
        got.len()
    );
    let len: usize = con.strlen("big").await.expect("STRLEN");
    assert_eq!(len, value.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_commands_behave_as_documented() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let set_nx: Option<String> = query(&mut con, &["SET", "s", "1", "NX"]).await;
    assert_eq!(set_nx.as_deref(), Some("OK"), "SET NX on a new key");
    let again: Option<String> = query(&mut con, &["SET", "s", "2", "NX"]).await;
    assert_eq!(again, None, "SET NX on an existing key replies nil");
    let old: Option<String> = query(&mut con, &["SET", "s", "3", "GET"]).await;
    assert_eq!(old.as_deref(), Some("1"));
    let n: i64 = con.incr("s", 10).await.expect("INCRBY");
    assert_eq!(n, 13);
    let f: f64 = query(&mut con, &["INCRBYFLOAT", "s", "0.5"]).await;
    assert_eq!(f, 13.5);
    let len: usize = con.append("s", "xyz").await.expect("APPEND");
    assert_eq!(len, 7);
    let range: String = con.getrange("s", 1, -2).await.expect("GETRANGE");
    assert_eq!(range, "3.5xy");
    let len: usize = con
        .setrange("s", 10, "!")
        .await
        .expect("SETRANGE past the end");
    assert_eq!(len, 11);
    let padded: Vec<u8> = con.get("s").await.expect("GET after SETRANGE");
    assert_eq!(
        padded,
        b"13.5xyz\0\0\0!".to_vec(),
        "SETRANGE pads with zero bytes"
    );
    let deleted: Option<String> = con.get_del("s").await.expect("GETDEL");
    assert!(deleted.is_some());
    let exists: bool = con.exists("s").await.expect("EXISTS");
    assert!(!exists, "GETDEL deletes");

    let fresh: i64 = con.incr("text", 1).await.expect("INCR on a missing key");
    assert_eq!(fresh, 1, "INCR on a missing key starts from 0");
    let () = con.set("text", "abc").await.expect("SET text");
    let not_integer: redis::RedisResult<i64> = con.incr("text", 1).await;
    let err = not_integer.expect_err("INCR on a non-integer must fail");
    assert!(
        err.to_string()
            .contains("value is not an integer or out of range"),
        "INCR on text: {err}"
    );
    let unknown = redis::cmd("NOSUCHCOMMAND")
        .arg("x")
        .query_async::<Value>(&mut con)
        .await
        .expect_err("unknown command");
    assert!(
        unknown.to_string().contains("unknown command"),
        "unknown command error: {unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_commands_behave_as_documented() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let () = con
        .mset(&[("a", "1"), ("b", "2"), ("c", "3")])
        .await
        .expect("MSET");
    let n: usize = con
        .exists(&["a", "b", "nope", "a"])
        .await
        .expect("EXISTS multi");
    assert_eq!(n, 3, "EXISTS counts a repeated key twice");
    let kind: String = query(&mut con, &["TYPE", "a"]).await;
    assert_eq!(kind, "string");
    let kind: String = query(&mut con, &["TYPE", "nope"]).await;
    assert_eq!(kind, "none");
    let () = con.rename("a", "a2").await.expect("RENAME");
    let renamed: bool = con
        .rename_nx("b", "a2")
        .await
        .expect("RENAMENX onto existing");
    assert!(!renamed, "RENAMENX onto an existing key does nothing");
    let missing: redis::RedisResult<()> = con.rename("nope", "x").await;
    let missing = missing.expect_err("RENAME of a missing key");
    assert!(missing.to_string().contains("no such key"), "{missing}");
    let size: usize = query(&mut con, &["DBSIZE"]).await;
    assert_eq!(size, 3);
    let mut keys: Vec<String> = con.keys("*").await.expect("KEYS");
    keys.sort();
    assert_eq!(keys, ["a2", "b", "c"]);
    let removed: usize = con.del(&["a2", "b", "nope"]).await.expect("DEL multi");
    assert_eq!(removed, 2);
    let random: Option<String> = query(&mut con, &["RANDOMKEY"]).await;
    assert_eq!(random.as_deref(), Some("c"), "RANDOMKEY with a single key");
    let () = query(&mut con, &["FLUSHALL"]).await;
    let random: Option<String> = query(&mut con, &["RANDOMKEY"]).await;
    assert_eq!(random, None, "RANDOMKEY on an empty database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_lcs_object_and_memory_usage_through_the_client_library() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let () = con.set_ex("src", "ohmytext", 1000).await.expect("SETEX");
    let copied: bool = con
        .copy("src", "dst", redis::CopyOptions::default())
        .await
        .expect("COPY");
    assert!(copied, "COPY to a new key");
    let value: String = con.get("dst").await.expect("GET copy");
    assert_eq!(value, "ohmytext");
    let ttl: i64 = con.ttl("dst").await.expect("TTL copy");
    assert!(
        (1..=1000).contains(&ttl),
        "COPY keeps the expiry: TTL {ttl}"
    );
    let () = con.set("src", "mynewtext").await.expect("SET");
    let copied: bool = con
        .copy("src", "dst", redis::CopyOptions::default())
        .await
        .expect("COPY onto an existing key");
    assert!(!copied, "COPY without REPLACE leaves an existing key");
    let copied: bool = con
        .copy(
            "src",
            "dst",
            redis::CopyOptions::default().replace(true).db(0),
        )
        .await
        .expect("COPY REPLACE DB 0");
    assert!(copied);
    let ttl: i64 = con.ttl("dst").await.expect("TTL replaced");
    assert_eq!(ttl, -1, "the replaced copy has the source's (no) expiry");
    let other_db: redis::RedisResult<bool> = con
        .copy("src", "x", redis::CopyOptions::default().db(1))
        .await;
    let other_db = other_db.expect_err("COPY DB 1");
    assert!(
        other_db.to_string().contains("DB index is out of range"),
        "{other_db}"
    );

    let () = con.set("a", "ohmytext").await.expect("SET a");
    let common: String = query(&mut con, &["LCS", "a", "src"]).await;
    assert_eq!(common, "mytext");
    let len: i64 = query(&mut con, &["LCS", "a", "src", "LEN"]).await;
    assert_eq!(len, 6);

    let () = con.set("n", 42).await.expect("SET n");
    let () = con.set("long", "x".repeat(45)).await.expect("SET long");
    for (key, encoding) in [("n", "int"), ("a", "embstr"), ("long", "raw")] {
        let found: Option<String> = con.object_encoding(key).await.expect("OBJECT ENCODING");
        assert_eq!(found.as_deref(), Some(encoding), "OBJECT ENCODING {key}");
    }
    let missing: Option<String> = con.object_encoding("nope").await.expect("OBJECT ENCODING");
    assert_eq!(missing, None);
    let idle: redis::RedisResult<Option<usize>> = con.object_idletime("a").await;
    let idle = idle.expect_err("OBJECT IDLETIME is not tracked");
    assert!(idle.to_string().contains("does not track"), "{idle}");
    let part: String = query(&mut con, &["SUBSTR", "a", "2", "3"]).await;
    assert_eq!(part, "my");
    let bytes: Option<i64> = query(&mut con, &["MEMORY", "USAGE", "long"]).await;
    let bytes = bytes.expect("MEMORY USAGE of an existing key");
    assert!(
        bytes > 4 + 45,
        "MEMORY USAGE counts the key and the value: {bytes}"
    );
    let bytes: Option<i64> = query(&mut con, &["MEMORY", "USAGE", "nope", "SAMPLES", "0"]).await;
    assert_eq!(bytes, None, "MEMORY USAGE of a missing key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitmaps_through_the_client_library() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    // Daily active users, one bit per user id: the bitmaps' textbook use.
    for (day, users) in [("day1", &[1usize, 5, 9][..]), ("day2", &[5, 9, 100][..])] {
        for &user in users {
            let was: bool = con.setbit(day, user, true).await.expect("SETBIT");
            assert!(!was, "SETBIT answers the old bit");
        }
    }
    let on: bool = con.getbit("day1", 5).await.expect("GETBIT");
    assert!(on);
    let off: bool = con.getbit("day1", 6).await.expect("GETBIT");
    assert!(!off);
    let active: usize = con.bitcount("day1").await.expect("BITCOUNT");
    assert_eq!(active, 3);
    let len: usize = con
        .bit_and("both", &["day1", "day2"])
        .await
        .expect("BITOP AND");
    assert_eq!(len, 13, "BITOP answers the longest source's length");
    let both: usize = con.bitcount("both").await.expect("BITCOUNT");
    assert_eq!(both, 2, "users 5 and 9 were active both days");
    let first: i64 = query(&mut con, &["BITPOS", "day2", "1"]).await;
    assert_eq!(first, 5);
    let fields: Vec<Option<i64>> = query(
        &mut con,
        &[
            "BITFIELD", "counters", "INCRBY", "u8", "#0", "200", "OVERFLOW", "FAIL", "INCRBY",
            "u8", "#0", "100", "GET", "u8", "#0",
        ],
    )
    .await;
    assert_eq!(
        fields,
        [Some(200), None, Some(200)],
        "OVERFLOW FAIL refuses and writes nothing"
    );
}

/// Increments `key` by one with the check-and-set loop Redis's documentation teaches: WATCH,
/// read, then MULTI / SET / EXEC, again from the start when EXEC answers nil.
async fn check_and_set_increment(con: &mut MultiplexedConnection, key: &str) {
    loop {
        let () = redis::cmd("WATCH")
            .arg(key)
            .query_async(con)
            .await
            .expect("WATCH");
        let current: Option<i64> = con.get(key).await.expect("GET");
        let committed: Option<((),)> = redis::pipe()
            .atomic()
            .set(key, current.unwrap_or(0) + 1)
            .query_async(con)
            .await
            .expect("MULTI/SET/EXEC");
        if committed.is_some() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_through_the_client_library() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;

    // The crate's atomic pipeline: MULTI, the commands, EXEC; the replies are EXEC's.
    let (set, incremented, read): (String, i64, String) = redis::pipe()
        .atomic()
        .set("greeting", "hello")
        .incr("visits", 5)
        .get("greeting")
        .query_async(&mut con)
        .await
        .expect("atomic pipeline");
    assert_eq!(
        (set.as_str(), incremented, read.as_str()),
        ("OK", 5, "hello")
    );

    // A command that fails as it runs fails alone: the others still run, nothing is undone
    // (the crate reports the failed one by its place in the transaction).
    let failed = redis::pipe()
        .atomic()
        .set("a", "x")
        .incr("a", 1)
        .set("b", "y")
        .query_async::<Value>(&mut con)
        .await
        .expect_err("INCR of a non-integer fails inside EXEC");
    let failed = failed.to_string();
    assert!(
        failed.contains("Index 1") && failed.contains("not an integer"),
        "{failed}"
    );
    let both: (String, String) = con.mget(&["a", "b"]).await.expect("MGET");
    assert_eq!(both, ("x".to_string(), "y".to_string()));

    // A watched key written by another client between WATCH and EXEC: EXEC runs nothing.
    let mut other = connect(&server).await;
    let () = redis::cmd("WATCH")
        .arg("balance")
        .query_async(&mut con)
        .await
        .expect("WATCH");
    let () = other.set("balance", 100).await.expect("SET");
    let aborted: Option<((),)> = redis::pipe()
        .atomic()
        .set("balance", 1)
        .query_async(&mut con)
        .await
        .expect("EXEC");
    assert_eq!(
        aborted, None,
        "EXEC after a watched key changed answers nil"
    );
    let balance: i64 = con.get("balance").await.expect("GET");
    assert_eq!(balance, 100, "the aborted transaction wrote nothing");

    // Check-and-set from many clients at once loses no increment: each lost race makes EXEC
    // answer nil, and the client tries again.
    const CLIENTS: usize = 8;
    const EACH: usize = 40;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut con = connect(&server).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                check_and_set_increment(&mut con, "shared").await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let shared: usize = con.get("shared").await.expect("GET");
    assert_eq!(shared, CLIENTS * EACH, "an increment was lost");
}

/// Waits for `writers` to finish, then tells the readers to stop (`done`) and checks that each
/// read at least once (a reader returns how many reads it made).
async fn end_race(
    writers: Vec<tokio::task::JoinHandle<()>>,
    done: &AtomicBool,
    readers: Vec<tokio::task::JoinHandle<u64>>,
) {
    for writer in writers {
        writer.await.expect("writer task");
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        let reads = reader.await.expect("reader task");
        assert!(reads > 0, "a reader never read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clients_never_see_part_of_a_transaction() {
    let server = Server::ringkv(&[]);
    const WRITES: u64 = 2_000;
    let writers_done = Arc::new(AtomicBool::new(false));
    // Two writers set both keys to the same number in each transaction…
    let mut writers = Vec::new();
    for writer in 0..2u64 {
        let mut con = connect(&server).await;
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES {
                let n = i * 2 + writer;
                let () = redis::pipe()
                    .atomic()
                    .set("pair:a", n)
                    .ignore()
                    .set("pair:b", n)
                    .ignore()
                    .query_async(&mut con)
                    .await
                    .expect("MULTI/SET/SET/EXEC");
            }
        }));
    }
    // …and two readers, on the other event loop as well, must always read them equal.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut con = connect(&server).await;
        let done = Arc::clone(&writers_done);
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let (a, b): (Option<u64>, Option<u64>) =
                    con.mget(&["pair:a", "pair:b"]).await.expect("MGET");
                assert_eq!(a, b, "MGET saw part of a transaction");
                reads += 1;
            }
            reads
        }));
    }
    end_race(writers, &writers_done, readers).await;
}

/// MGET reads its keys at one point in time, as Redis's does: a reader never sees one key
/// from before a write and another from after it, whether the writes are one MSET or two
/// SETs one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_reads_its_keys_at_one_point_in_time() {
    let server = Server::ringkv(&[]);
    const WRITES: u64 = 20_000;
    let writers_done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    // Two writers set both keys of a pair to the same number with one MSET…
    for writer in 0..2u64 {
        let mut con = connect(&server).await;
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES {
                let n = i * 2 + writer;
                let () = con
                    .mset(&[("pair:a", n), ("pair:b", n)])
                    .await
                    .expect("MSET");
            }
        }));
    }
    // …and one writes a record and then its flag, each acknowledged before the next.
    let mut con = connect(&server).await;
    writers.push(tokio::spawn(async move {
        for i in 0..WRITES {
            let () = con.set("order:data", i).await.expect("SET data");
            let () = con.set("order:flag", i).await.expect("SET flag");
        }
    }));
    // Two readers, one on each event loop, must never read the pair different, nor a flag
    // newer than its record.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut con = connect(&server).await;
        let done = Arc::clone(&writers_done);
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let (a, b): (Option<u64>, Option<u64>) =
                    con.mget(&["pair:a", "pair:b"]).await.expect("MGET pair");
                assert_eq!(a, b, "MGET saw one key before an MSET and one after it");
                let (data, flag): (Option<u64>, Option<u64>) = con
                    .mget(&["order:data", "order:flag"])
                    .await
                    .expect("MGET record and flag");
                assert!(
                    flag <= data,
                    "MGET saw a flag ({flag:?}) newer than the record written before it ({data:?})"
                );
                reads += 1;
            }
            reads
        }));
    }
    end_race(writers, &writers_done, readers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_ttl_and_persist_lifecycle() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let ttl: i64 = con.ttl("k").await.expect("TTL missing");
    assert_eq!(ttl, -2, "TTL of a missing key");
    let () = con.set("k", "v").await.expect("SET");
    let ttl: i64 = con.ttl("k").await.expect("TTL persistent");
    assert_eq!(ttl, -1, "TTL of a key without expiry");
    let set: bool = con.expire("k", 1000).await.expect("EXPIRE");
    assert!(set);
    let ttl: i64 = con.ttl("k").await.expect("TTL volatile");
    assert!((990..=1000).contains(&ttl), "TTL after EXPIRE 1000: {ttl}");
    let pttl: i64 = con.pttl("k").await.expect("PTTL");
    assert!(
        (990_000..=1_000_000).contains(&pttl),
        "PTTL after EXPIRE 1000: {pttl}"
    );
    let gt: bool = query(&mut con, &["EXPIRE", "k", "100", "GT"]).await;
    assert!(!gt, "EXPIRE GT with a smaller TTL does nothing");
    let kept: Option<String> = query(&mut con, &["SET", "k", "v2", "KEEPTTL", "GET"]).await;
    assert_eq!(kept.as_deref(), Some("v"));
    let ttl: i64 = con.ttl("k").await.expect("TTL after KEEPTTL");
    assert!(ttl > 900, "SET KEEPTTL kept the TTL: {ttl}");
    let persisted: bool = con.persist("k").await.expect("PERSIST");
    assert!(persisted);
    let ttl: i64 = con.ttl("k").await.expect("TTL after PERSIST");
    assert_eq!(ttl, -1);
    let () = con.set("k", "v3").await.expect("SET clears TTL");
    let past: bool = con.expire_at("k", 1).await.expect("EXPIREAT in the past");
    assert!(past, "EXPIREAT in the past still replies 1");
    let gone: Option<String> = con.get("k").await.expect("GET after EXPIREAT past");
    assert_eq!(
        gone, None,
        "a key whose expiry is in the past is gone at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setnx_against_expired_volatile_key() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let () = query(&mut con, &["SET", "x", "old", "PX", "100"]).await;
    eventually(
        EXPIRY_DEADLINE,
        "a key set with PX 100 to disappear",
        || {
            let mut con = con.clone();
            async move {
                con.get::<_, Option<String>>("x")
                    .await
                    .expect("GET")
                    .is_none()
            }
        },
    )
    .await;
    let won: bool = con.set_nx("x", "new").await.expect("SETNX");
    assert!(won, "SETNX on an expired key sets it");
    let value: String = con.get("x").await.expect("GET after SETNX");
    assert_eq!(value, "new");
    let ttl: i64 = con.ttl("x").await.expect("TTL");
    assert_eq!(
        ttl, -1,
        "SETNX on an expired key does not inherit the old TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_leave_dbsize_and_scan() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    for i in 0..50 {
        let () = query(&mut con, &["SET", &format!("short:{i}"), "v", "PX", "100"]).await;
    }
    for i in 0..5 {
        let () = con.set(format!("long:{i}"), "v").await.expect("SET");
    }
    // Active expiry, not only lazy expiry on access: nothing touches the short keys here.
    eventually(
        EXPIRY_DEADLINE,
        "DBSIZE to drop to the 5 persistent keys",
        || {
            let mut con = con.clone();
            async move { query::<i64>(&mut con, &["DBSIZE"]).await == 5 }
        },
    )
    .await;
    let mut keys: Vec<String> = Vec::new();
    let mut iter = con.scan::<String>().await.expect("SCAN");
    while let Some(key) = iter.next_item().await {
        keys.push(key.expect("SCAN item"));
    }
    drop(iter);
    keys.sort();
    assert_eq!(
        keys,
        ["long:0", "long:1", "long:2", "long:3", "long:4"],
        "SCAN after expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_from_fifty_concurrent_clients_loses_no_update() {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 1000;
    let server = Server::ringkv(&[]);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            let mut seen = Vec::with_capacity(PER_CLIENT);
            for _ in 0..PER_CLIENT {
                let n: i64 = con.incr("hits", 1).await.expect("INCR");
                seen.push(n);
            }
            seen
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for n in task.await.expect("INCR task") {
            assert!(all.insert(n), "two INCRs returned the same value {n}");
        }
    }
    let expected: BTreeSet<i64> = (1..=(CLIENTS * PER_CLIENT) as i64).collect();
    assert!(
        all == expected,
        "INCR results are not exactly 1..={}",
        CLIENTS * PER_CLIENT
    );
    let mut con = connect(&server).await;
    let total: i64 = con.get("hits").await.expect("GET hits");
    assert_eq!(total, (CLIENTS * PER_CLIENT) as i64);
}

/// The writes of every client an event loop serves in one turn are applied together, after
/// the clients' requests ran (the storage's `turn` module). Each client must still read its
/// own writes later in its pipeline, another connection must see them once they are
/// acknowledged, and no increment may be lost, with fifty clients on both loops writing
/// their own keys, one key all of them write, and one key all of them increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_applied_a_loop_turn_at_a_time_stay_atomic_and_in_order() {
    const CLIENTS: usize = 50;
    const ROUNDS: usize = 100;
    let server = Server::ringkv(&[]);
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            let mut other = connect_url(&url).await;
            let mine = format!("mine:{client}");
            let mut returned: Vec<(usize, i64)> = Vec::with_capacity(2 * ROUNDS);
            for round in 0..ROUNDS {
                let value = format!("{client}:{round}");
                // A group of blind writes, a read, a group of increments.
                let (own, first, second): (String, i64, i64) = redis::pipe()
                    .cmd("MSET")
                    .arg(&mine)
                    .arg(&value)
                    .arg("shared")
                    .arg(&value)
                    .ignore()
                    .cmd("GET")
                    .arg(&mine)
                    .cmd("INCR")
                    .arg("total")
                    .cmd("INCRBY")
                    .arg("total")
                    .arg(2)
                    .query_async(&mut con)
                    .await
                    .expect("a pipeline of MSET, GET, INCR, INCRBY");
                assert_eq!(own, value, "a GET after its own pipeline's MSET");
                returned.push((1, first));
                returned.push((2, second));
                let seen: String = other.get(&mine).await.expect("GET from another connection");
                assert_eq!(
                    seen, value,
                    "another connection after the MSET was acknowledged"
                );
            }
            returned
        }));
    }
    let mut values = BTreeSet::new();
    let mut added = 0;
    for task in tasks {
        for (by, value) in task.await.expect("client task") {
            assert!(
                values.insert(value),
                "two increments of one key returned the same value {value}"
            );
            added += by as i64;
        }
    }
    let mut con = connect(&server).await;
    let total: i64 = query(&mut con, &["GET", "total"]).await;
    assert_eq!(total, added, "increments lost");
    assert_eq!(added, (3 * CLIENTS * ROUNDS) as i64);
}

/// FLUSHALL locks every key while the pipelined writes and increments of clients on both
/// loops hold their keys' locks until their loop's turn is applied, and the expiry sweep
/// deletes keys under the same locks: everyone must get through, none waiting on another
/// for ever (a hang shows as a client timing out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_amid_pipelined_writes_on_every_loop_gets_through() {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 50;
    let server = Server::ringkv(&[]);
    let done = Arc::new(AtomicBool::new(false));
    let mut flushers = Vec::new();
    for _ in 0..2 {
        let (url, done) = (server.url(), Arc::clone(&done));
        flushers.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            let mut flushes = 0u32;
            while !done.load(Ordering::Relaxed) {
                let () = redis::cmd("FLUSHALL")
                    .query_async(&mut con)
                    .await
                    .expect("FLUSHALL amid writes");
                flushes += 1;
            }
            flushes
        }));
    }
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let url = server.url();
        writers.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            for round in 0..ROUNDS {
                let mut pipe = redis::pipe();
                let mut mset = redis::cmd("MSET");
                for key in 0..10 {
                    mset.arg(format!("w:{}", (writer * 7 + round + key) % 64))
                        .arg(round);
                }
                pipe.add_command(mset).ignore();
                pipe.cmd("INCR").arg(format!("c:{}", round % 8));
                pipe.cmd("SET")
                    .arg(format!("e:{writer}"))
                    .arg(round)
                    .arg("PX")
                    .arg(1)
                    .ignore();
                pipe.cmd("INCRBY").arg(format!("c:{}", round % 8)).arg(2);
                let (first, second): (i64, i64) = pipe
                    .query_async(&mut con)
                    .await
                    .unwrap_or_else(|e| panic!("writer {writer}, round {round}: {e}"));
                assert!(
                    first >= 1 && second >= 2,
                    "increments after FLUSHALL answered {first} and {second}"
                );
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    done.store(true, Ordering::Relaxed);
    for flusher in flushers {
        assert!(flusher.await.expect("flusher task") > 0, "no FLUSHALL ran");
    }
    let mut con = connect(&server).await;
    let () = query(&mut con, &["SET", "after", "1"]).await;
    let after: i64 = query(&mut con, &["INCR", "after"]).await;
    assert_eq!(after, 2);
}

/// A pipeline whose gathered requests all fail writes nothing, and must leave no key locked:
/// clients on every loop can write the key at once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_increments_leave_their_key_free_for_every_loop() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let () = query(&mut con, &["SET", "text", "not a number"]).await;
    let failed: redis::RedisResult<Vec<i64>> = redis::pipe()
        .cmd("INCR")
        .arg("text")
        .cmd("DECRBY")
        .arg("text")
        .arg(3)
        .query_async(&mut con)
        .await;
    let err = failed.expect_err("INCR of a string answered a number");
    assert!(
        err.to_string().contains("not an integer"),
        "unexpected error: {err}"
    );
    // New connections are spread over the loops; each SET would wait for ever (and the
    // client time out) if a loop still held the key's lock.
    for i in 0..8 {
        let mut writer = connect(&server).await;
        let () = query(&mut writer, &["SET", "text", &i.to_string()]).await;
    }
    let last: i64 = query(&mut con, &["INCR", "text"]).await;
    assert_eq!(last, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_from_fifty_concurrent_clients_loses_no_byte() {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 200;
    let server = Server::ringkv(&[]);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            let byte = [b'a' + (c % 26) as u8];
            let mut lengths = Vec::with_capacity(PER_CLIENT);
            for _ in 0..PER_CLIENT {
                let len: usize = con.append("log", &byte[..]).await.expect("APPEND");
                lengths.push(len);
            }
            lengths
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for len in task.await.expect("APPEND task") {
            assert!(
                all.insert(len),
                "two APPENDs returned the same length {len}"
            );
        }
    }
    let mut con = connect(&server).await;
    let len: usize = con.strlen("log").await.expect("STRLEN");
    assert_eq!(len, CLIENTS * PER_CLIENT);
    assert_eq!(all.len(), CLIENTS * PER_CLIENT);
    let value: Vec<u8> = con.get("log").await.expect("GET log");
    for c in 0..CLIENTS {
        let byte = b'a' + (c % 26) as u8;
        let expected = PER_CLIENT * (CLIENTS / 26 + usize::from(c % 26 < CLIENTS % 26));
        let count = value.iter().filter(|&&b| b == byte).count();
        assert_eq!(count, expected, "occurrences of {:?}", byte as char);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setnx_race_has_exactly_one_winner() {
    let server = Server::ringkv(&[]);
    let mut tasks = Vec::new();
    for c in 0..50 {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            let mut wins = Vec::new();
            for round in 0..20 {
                let won: bool = con.set_nx(format!("lock:{round}"), c).await.expect("SETNX");
                if won {
                    wins.push(round);
                }
            }
            wins
        }));
    }
    let mut winners = [0usize; 20];
    for task in tasks {
        for round in task.await.expect("SETNX task") {
            winners[round] += 1;
        }
    }
    assert_eq!(winners, [1; 20], "SETNX winners per key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_tag_keys_work_in_mset_and_mget() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let pairs = [
        ("{user}:1", "alice"),
        ("{user}:2", "bob"),
        ("{order}:9", "book"),
        ("plain", "x"),
        ("{}", "empty tag"),
        ("a{b}c{d}", "first tag wins"),
    ];
    let () = con.mset(&pairs).await.expect("MSET with hash tags");
    let keys: Vec<&str> = [
        "{user}:2",
        "missing",
        "{order}:9",
        "{user}:1",
        "plain",
        "{}",
        "a{b}c{d}",
    ]
    .to_vec();
    let values: Vec<Option<String>> = con.mget(&keys).await.expect("MGET with hash tags");
    assert_eq!(
        values,
        [
            Some("bob"),
            None,
            Some("book"),
            Some("alice"),
            Some("x"),
            Some("empty tag"),
            Some("first tag wins")
        ]
        .map(|v| v.map(String::from))
        .to_vec(),
        "MGET keeps the order of its keys"
    );
    let set: bool = query(
        &mut con,
        &["MSETNX", "{user}:3", "carol", "{user}:1", "eve"],
    )
    .await;
    assert!(!set, "MSETNX with one existing key sets nothing");
    let carol: Option<String> = con.get("{user}:3").await.expect("GET");
    assert_eq!(carol, None, "MSETNX is all or nothing");
    let removed: usize = con
        .del(&["{user}:1", "{user}:2", "{order}:9"])
        .await
        .expect("DEL hash-tagged keys");
    assert_eq!(removed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_and_mset_of_a_thousand_keys_keep_key_order() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let pairs: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("key:{i}"), format!("value:{i}")))
        .collect();
    let () = con.mset(&pairs).await.expect("MSET 1000");
    let keys: Vec<String> = (0..1200).rev().map(|i| format!("key:{i}")).collect();
    let values: Vec<Option<String>> = con.mget(&keys).await.expect("MGET 1200");
    for (i, value) in (0..1200).rev().zip(values) {
        let expected = (i < 1000).then(|| format!("value:{i}"));
        assert_eq!(value, expected, "MGET position of key:{i}");
    }
    let size: usize = query(&mut con, &["DBSIZE"]).await;
    assert_eq!(size, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_replies_arrive_in_request_order() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("p:{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg(format!("p:{i}"));
        pipe.cmd("GET").arg(format!("p:{}", i / 2));
    }
    let replies: Vec<i64> = pipe
        .query_async(&mut con)
        .await
        .expect("pipeline of 1500 commands");
    assert_eq!(replies.len(), 1000);
    for (i, pair) in replies.chunks(2).enumerate() {
        let i = i as i64;
        assert_eq!(pair[0], i + 1, "INCR p:{i}");
        assert_eq!(pair[1], i / 2 + 1, "GET p:{}", i / 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_visits_every_key() {
    let server = Server::ringkv(&[]);
    let mut con = connect(&server).await;
    let expected: BTreeSet<String> = (0..600).map(|i| format!("scan:{i}")).collect();
    let pairs: Vec<(String, i32)> = expected.iter().map(|k| (k.clone(), 1)).collect();
    let () = con.mset(&pairs).await.expect("MSET");
    let () = con.set("other", 1).await.expect("SET other");
    let mut seen = BTreeSet::new();
    let mut iter = con
        .scan_match::<_, String>("scan:*")
        .await
        .expect("SCAN MATCH");
    while let Some(key) = iter.next_item().await {
        seen.insert(key.expect("SCAN item"));
    }
    assert!(
        seen == expected,
        "SCAN MATCH scan:* missed or invented keys ({} seen)",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_connection_gets_resp3_replies() {
    let server = Server::ringkv(&[]);
    let mut con = connect_url(&format!("{}?protocol=resp3", server.url())).await;
    let hello: Value = query(&mut con, &["HELLO", "3"]).await;
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 on a RESP3 connection must be a map, got {hello:?}");
    };
    let proto = fields
        .iter()
        .find(|(k, _)| {
            matches!(k, Value::BulkString(b) if b == b"proto")
                || matches!(k, Value::SimpleString(s) if s == "proto")
        })
        .map(|(_, v)| v.clone());
    assert_eq!(proto, Some(Value::Int(3)), "HELLO 3 proto field");
    let missing: Value = query(&mut con, &["GET", "missing"]).await;
    assert_eq!(missing, Value::Nil, "RESP3 null");
    let () = con.set("k", "v").await.expect("SET over RESP3");
    let got: String = con.get("k").await.expect("GET over RESP3");
    assert_eq!(got, "v");
    let n: i64 = con.incr("n", 5).await.expect("INCRBY over RESP3");
    assert_eq!(n, 5);
    let values: Vec<Option<String>> = con.mget(&["k", "missing"]).await.expect("MGET over RESP3");
    assert_eq!(values, [Some("v".to_string()), None]);
}
