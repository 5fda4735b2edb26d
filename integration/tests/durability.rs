//! Data on `--dir` outlives the process: across a graceful restart (SIGTERM), and with
//! `--fsync always` across `kill -9` for every write that was acknowledged. `--in-memory` is
//! the documented exception: its data is gone after a restart.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringkv_integration::{encode_command, poll_until, Reply, RespClient, Server, Stop};

/// (key, value) of every SET the server acknowledged, shared by the writer threads.
type AckedSets = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn ok() -> Reply {
    Reply::Simple(b"OK".to_vec())
}

fn value_for(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.extend_from_slice(b"\x00\r\n\xff");
    v.extend(std::iter::repeat_n(b'x', i % 300));
    v
}

/// Writes keys `prefix:0..n` with [`value_for`] in pipelined batches; every reply must be OK.
fn write_keys(client: &mut RespClient, prefix: &str, n: usize) {
    for chunk_start in (0..n).step_by(500) {
        let end = (chunk_start + 500).min(n);
        let mut batch = Vec::new();
        for i in chunk_start..end {
            let key = format!("{prefix}:{i}");
            batch.extend(encode_command(&[
                b"SET".as_slice(),
                key.as_bytes(),
                &value_for(i),
            ]));
        }
        client.send_raw(&batch).expect("writing a batch of SETs");
        for i in chunk_start..end {
            let reply = client
                .read_reply()
                .unwrap_or_else(|e| panic!("SET {prefix}:{i}: {e}"));
            assert_eq!(reply, ok(), "SET {prefix}:{i}");
        }
    }
}

fn assert_keys(client: &mut RespClient, prefix: &str, n: usize, after: &str) {
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        let reply = client
            .command(&[b"GET".as_slice(), key.as_bytes()])
            .unwrap_or_else(|e| panic!("GET {key}: {e}"));
        assert_eq!(reply, Reply::Bulk(value_for(i)), "{key} after {after}");
    }
}

fn dbsize(client: &mut RespClient) -> i64 {
    client
        .cmd(&["DBSIZE"])
        .as_int()
        .expect("DBSIZE is an integer")
}

#[test]
fn keys_survive_graceful_restart() {
    let mut server = Server::ringkv(&[]);
    let mut client = server.connect();
    write_keys(&mut client, "durable", 3000);
    assert_eq!(client.cmd(&["SET", "volatile", "v", "EX", "100000"]), ok());
    assert_eq!(client.cmd(&["SET", "deleted", "v"]), ok());
    assert_eq!(client.cmd(&["DEL", "deleted"]), Reply::Integer(1));
    assert_eq!(client.cmd(&["SET", "expired", "v", "EX", "100000"]), ok());
    assert_eq!(
        client.cmd(&["PEXPIREAT", "expired", "1"]),
        Reply::Integer(1)
    );
    assert_eq!(client.cmd(&["INCRBY", "counter", "41"]), Reply::Integer(41));
    assert_eq!(client.cmd(&["APPEND", "counter", "0"]), Reply::Integer(3));
    drop(client);

    let stopped = server.stop(Stop::Graceful);
    assert!(
        !stopped.needed_sigkill,
        "ringkv did not exit within the deadline after SIGTERM"
    );
    assert!(
        stopped.status.success(),
        "ringkv exited with {} after SIGTERM",
        stopped.status
    );
    server.start_again(&[]);

    let mut client = server.connect();
    assert_keys(&mut client, "durable", 3000, "a graceful restart");
    assert_eq!(client.cmd(&["GET", "volatile"]), Reply::Bulk(b"v".to_vec()));
    let ttl = client
        .cmd(&["TTL", "volatile"])
        .as_int()
        .expect("TTL is an integer");
    assert!(
        (99_000..=100_000).contains(&ttl),
        "TTL of volatile after restart: {ttl}"
    );
    assert_eq!(
        client.cmd(&["EXISTS", "deleted", "expired"]),
        Reply::Integer(0),
        "deleted or expired keys came back"
    );
    assert_eq!(
        client.cmd(&["GET", "counter"]),
        Reply::Bulk(b"410".to_vec())
    );
    assert_eq!(dbsize(&mut client), 3002);
}

#[test]
fn flushall_survives_graceful_restart() {
    let mut server = Server::ringkv(&[]);
    let mut client = server.connect();
    write_keys(&mut client, "flushed", 200);
    assert_eq!(client.cmd(&["FLUSHALL"]), ok());
    assert_eq!(client.cmd(&["SET", "after-flush", "1"]), ok());
    drop(client);
    server.restart(Stop::Graceful);
    let mut client = server.connect();
    assert_eq!(
        dbsize(&mut client),
        1,
        "keys deleted by FLUSHALL came back after restart"
    );
    assert_eq!(
        client.cmd(&["GET", "after-flush"]),
        Reply::Bulk(b"1".to_vec())
    );
}

#[test]
fn every_acknowledged_set_survives_kill_9_with_fsync_always() {
    let mut server = Server::ringkv(&["--fsync", "always"]);
    let mut client = server.connect();
    // One at a time: each SET is acknowledged before the next is sent.
    for i in 0..500 {
        let key = format!("acked:{i}");
        let reply = client
            .command(&[b"SET".as_slice(), key.as_bytes(), &value_for(i)])
            .unwrap_or_else(|e| panic!("SET {key}: {e}"));
        assert_eq!(reply, ok(), "SET {key}");
    }
    assert_eq!(
        client.cmd(&["INCRBY", "acked-counter", "500"]),
        Reply::Integer(500)
    );
    // A transaction's writes, synced before EXEC answers (it runs on a blocking thread).
    assert_eq!(client.cmd(&["MULTI"]), ok());
    for command in [&["SET", "tx:a", "1"][..], &["INCRBY", "tx:n", "7"]] {
        assert_eq!(client.cmd(command), Reply::Simple(b"QUEUED".to_vec()));
    }
    assert_eq!(
        client.cmd(&["EXEC"]),
        Reply::Array(vec![ok(), Reply::Integer(7)])
    );
    let stopped = server.stop(Stop::Kill);
    assert!(
        !stopped.status.success(),
        "kill -9 should not look like a clean exit"
    );
    server.start_again(&["--fsync", "always"]);
    let mut client = server.connect();
    assert_keys(&mut client, "acked", 500, "kill -9");
    assert_eq!(
        client.cmd(&["GET", "acked-counter"]),
        Reply::Bulk(b"500".to_vec())
    );
    assert_eq!(
        client.cmd(&["MGET", "tx:a", "tx:n"]),
        Reply::Array(vec![Reply::Bulk(b"1".to_vec()), Reply::Bulk(b"7".to_vec())])
    );
}

#[test]
fn concurrent_writers_lose_no_acknowledged_write_on_kill_9_with_fsync_always() {
    const WRITERS: usize = 8;
    const ACKED_BEFORE_KILL: usize = 2000;
    let mut server = Server::ringkv(&["--fsync", "always"]);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: AckedSets = Arc::new(Mutex::new(Vec::new()));
    let max_counter = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.connect();
        let (acked_total, stop, acked, max_counter) = (
            acked_total.clone(),
            stop.clone(),
            acked.clone(),
            max_counter.clone(),
        );
        writers.push(thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                // Alternate plain SETs with an INCR on a shared counter: both must be durable.
                let result = if i % 4 == 3 {
                    client.command(&["INCR", "shared-counter"]).map(|reply| {
                        let n = reply.as_int().expect("INCR replies an integer") as usize;
                        max_counter.fetch_max(n, Ordering::SeqCst);
                    })
                } else {
                    let key = format!("w{w}:{i}");
                    let value = value_for(i);
                    client
                        .command(&[b"SET".as_slice(), key.as_bytes(), &value])
                        .map(|reply| {
                            assert_eq!(reply, ok(), "SET {key}");
                            acked.lock().expect("acked list").push((key, value));
                        })
                };
                match result {
                    Ok(()) => {
                        acked_total.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server died under us: everything not acknowledged may be lost.
                    Err(_) => return,
                }
                i += 1;
            }
        }));
    }
    poll_until(
        Duration::from_secs(120),
        "writers to get 2000 acknowledgements",
        || (acked_total.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL).then_some(()),
    );
    // Kill while the writers are still writing.
    server.stop(Stop::Kill);
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().expect("writer thread panicked");
    }
    server.start_again(&["--fsync", "always"]);
    let mut client = server.connect();
    let acked = acked.lock().expect("acked list");
    assert!(
        acked.len() >= ACKED_BEFORE_KILL / 2,
        "too few SETs acknowledged: {}",
        acked.len()
    );
    let mut lost = Vec::new();
    for (key, value) in acked.iter() {
        let reply = client.command(&[b"GET".as_slice(), key.as_bytes()]);
        if reply.as_ref() != Ok(&Reply::Bulk(value.clone())) {
            lost.push(format!("{key}: {reply:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged SETs lost after kill -9, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let counter = match client.cmd(&["GET", "shared-counter"]) {
        Reply::Bulk(b) => String::from_utf8_lossy(&b)
            .parse::<usize>()
            .expect("counter is a number"),
        Reply::Null => 0,
        other => panic!("GET shared-counter: {other}"),
    };
    let acked_max = max_counter.load(Ordering::SeqCst);
    assert!(
        counter >= acked_max,
        "shared-counter went back from acknowledged {acked_max} to {counter}"
    );
}

#[test]
fn in_memory_mode_loses_data_on_restart() {
    let mut server = Server::ringkv(&["--in-memory"]);
    let mut client = server.connect();
    write_keys(&mut client, "ephemeral", 100);
    assert_eq!(dbsize(&mut client), 100);
    drop(client);
    server.restart(Stop::Graceful);
    let mut client = server.connect();
    assert_eq!(
        dbsize(&mut client),
        0,
        "--in-memory data should be gone after a restart (documented)"
    );
    assert_eq!(client.cmd(&["GET", "ephemeral:0"]), Reply::Null);
}

/// The WAL reaches the OS before any reply to a write is sent, whatever `--fsync` says, so a
/// killed process (as opposed to a crashed machine) loses no acknowledged write in any mode,
/// pipelined or not.
#[test]
fn acknowledged_pipelined_writes_survive_kill_9_in_every_fsync_mode() {
    for mode in ["everysec", "no"] {
        let mut server = Server::ringkv(&["--fsync", mode]);
        let mut client = server.connect();
        let mut pipeline = Vec::new();
        for i in 0..300 {
            let key = format!("piped:{i}");
            let value = value_for(i);
            pipeline.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
            pipeline.extend_from_slice(&value);
            pipeline.extend_from_slice(b"\r\n");
        }
        client.send_raw(&pipeline).expect("send the pipeline");
        for i in 0..300 {
            let reply = client
                .read_reply()
                .unwrap_or_else(|e| panic!("reply {i} ({mode}): {e}"));
            assert_eq!(reply, ok(), "SET piped:{i} ({mode})");
        }
        let stopped = server.stop(Stop::Kill);
        assert!(
            !stopped.status.success(),
            "kill -9 should not look like a clean exit"
        );
        server.start_again(&["--fsync", mode]);
        let mut client = server.connect();
        assert_keys(
            &mut client,
            "piped",
            300,
            &format!("kill -9 with --fsync {mode}"),
        );
    }
}
