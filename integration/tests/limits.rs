//! Client limits: `--maxclients`, `--timeout`, `--proto-max-bulk-len` answer as redis-server
//! does, and the server's memory stays bounded against 5,000 connections, a 600 MB bulk
//! announced and sent slowly, and a client that pipelines large replies and never reads.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringkv_integration::cluster::Cluster;
use ringkv_integration::{escape, RespClient, Server};

/// Resident memory of process `pid` in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn raise_open_files_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur >= want {
        return;
    }
    assert!(
        limit.rlim_max >= want,
        "the hard limit on open files ({}) is below the {want} this test needs",
        limit.rlim_max
    );
    limit.rlim_cur = want;
    // SAFETY: as above.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Opens clients until one is turned away; returns the reply bytes of the one turned away.
fn over_the_limit(addr: std::net::SocketAddr, limit: usize) -> (Vec<RespClient>, Vec<u8>) {
    let mut held = Vec::new();
    for i in 0..limit {
        let mut client = RespClient::connect(addr).expect("connect");
        assert_eq!(
            escape(&client.command_frame(&["PING"]).expect("PING").raw),
            "+PONG\\r\\n",
            "client {i} of {limit} is served"
        );
        held.push(client);
    }
    let mut extra = RespClient::connect(addr).expect("connect");
    let closing = extra.read_until_closed(Duration::from_secs(10));
    assert!(closing.closed, "the client over the limit is disconnected");
    (held, closing.bytes)
}

#[test]
fn maxclients_turns_extra_clients_away_as_redis_server() {
    let ringkv = Server::ringkv(&["--maxclients", "4"]);
    let redis = Server::redis(&["--maxclients", "4"]);
    let (_ours, ours) = over_the_limit(ringkv.addr(), 4);
    let (_theirs, theirs) = over_the_limit(redis.addr(), 4);
    assert_eq!(escape(&ours), escape(&theirs));
    assert_eq!(escape(&ours), "-ERR max number of clients reached\\r\\n");

    let cluster = Cluster::builder()
        .nodes(1)
        .proxies(1)
        .shards(4)
        .proxy_args(&["--maxclients", "4"])
        .start();
    let (_proxied, bytes) = over_the_limit(cluster.proxy_addr(0), 4);
    assert_eq!(escape(&bytes), "-ERR max number of clients reached\\r\\n");
}

#[test]
fn timeout_closes_idle_clients_only() {
    let ringkv = Server::ringkv(&["--timeout", "1"]);
    let mut idle = ringkv.connect();
    let mut busy = ringkv.connect();
    let started = Instant::now();
    // The busy client keeps talking for three idle periods; the idle one is closed meanwhile.
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            escape(
                &busy
                    .command_frame(&["PING"])
                    .expect("busy client served")
                    .raw
            ),
            "+PONG\\r\\n"
        );
        thread::sleep(Duration::from_millis(200)); // pacing, not synchronisation
    }
    let closing = idle.read_until_closed(Duration::from_secs(10));
    assert!(closing.closed, "the idle client was closed");
    assert!(closing.bytes.is_empty(), "closed without a reply, as Redis");
}

#[test]
fn proto_max_bulk_len_refuses_larger_arguments_as_redis_server() {
    let ringkv = Server::ringkv(&["--proto-max-bulk-len", "1048576"]);
    let redis = Server::redis(&["--proto-max-bulk-len", "1mb"]);
    let header = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n";
    let mut replies = Vec::new();
    for server in [&ringkv, &redis] {
        let mut client = server.connect();
        client.send_raw(header).expect("send");
        let closing = client.read_until_closed(Duration::from_secs(10));
        assert!(closing.closed, "the connection is closed");
        replies.push(escape(&closing.bytes));
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(replies[0], "-ERR Protocol error: invalid bulk length\\r\\n");
    // At the limit itself the argument is accepted.
    let mut client = ringkv.connect();
    let value = vec![b'x'; 1 << 20];
    assert_eq!(
        escape(
            &client
                .command_frame(&[&b"SET"[..], b"k", &value])
                .expect("SET")
                .raw
        ),
        "+OK\\r\\n"
    );
}

#[test]
fn memory_stays_bounded_with_five_thousand_connections() {
    raise_open_files_limit(6000);
    let ringkv = Server::ringkv(&[]);
    let pid = ringkv.pid().expect("running");
    let before = rss(pid);
    let mut clients = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let mut client = TcpStream::connect(ringkv.addr()).expect("connect");
        client
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .expect("send PING");
        clients.push(client);
    }
    // Every connection is served (the last one too).
    let mut last = RespClient::connect(ringkv.addr()).expect("connect");
    assert_eq!(
        escape(&last.command_frame(&["PING"]).expect("PING").raw),
        "+PONG\\r\\n"
    );
    let during = rss(pid);
    let per_connection = during.saturating_sub(before) / 5000;
    println!("rss before {before}, with 5000 connections {during}: {per_connection} bytes each");
    assert!(
        per_connection < 64 * 1024,
        "each idle connection costs {per_connection} bytes of server memory"
    );
}

#[test]
fn memory_stays_bounded_against_a_huge_bulk_sent_slowly() {
    let ringkv = Server::ringkv(&[]);
    let pid = ringkv.pid().expect("running");
    let before = rss(pid);
    let mut client = ringkv.connect();
    // 600 MB announced (over the 512 MB default), then sent a megabyte at a time.
    client
        .send_raw(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$629145600\r\n")
        .expect("send header");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..8 {
        if client.send_raw(&chunk).is_err() {
            break; // the server has closed the connection
        }
    }
    let closing = client.read_until_closed(Duration::from_secs(10));
    assert!(closing.closed, "the connection is closed");
    assert_eq!(
        escape(&closing.bytes),
        "-ERR Protocol error: invalid bulk length\\r\\n"
    );
    let after = rss(pid);
    assert!(
        after < before + (64 << 20),
        "server memory grew from {before} to {after} bytes"
    );
    let mut other = ringkv.connect();
    assert_eq!(
        escape(&other.command_frame(&["PING"]).expect("PING").raw),
        "+PONG\\r\\n"
    );
}

#[test]
fn memory_stays_bounded_for_a_client_that_never_reads() {
    let ringkv = Server::ringkv(&[]);
    let pid = ringkv.pid().expect("running");
    let mut setup = ringkv.connect();
    let value = vec![b'v'; 1 << 20];
    assert_eq!(
        escape(
            &setup
                .command_frame(&[&b"SET"[..], b"big", &value])
                .expect("SET")
                .raw
        ),
        "+OK\\r\\n"
    );
    let before = rss(pid);
    // 2,000 GETs of a 1 MB value: 2 GB of replies that the client never reads. The writer
    // stops when the server stops reading (TCP pushes back) or after a deadline.
    let stream = TcpStream::connect(ringkv.addr()).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
            let mut sent = 0;
            while sent < 2000 && stream.write_all(request).is_ok() {
                sent += 1;
            }
            done.store(true, Ordering::SeqCst);
            sent
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
        peak = peak.max(rss(pid));
        thread::sleep(Duration::from_millis(50)); // sampling, not synchronisation
    }
    let sent = writer.join().expect("writer");
    peak = peak.max(rss(pid));
    println!("sent {sent} GETs of 1 MB; server rss {before} → peak {peak}");
    assert!(
        peak < before + (256 << 20),
        "server memory grew from {before} to {peak} bytes for a client that never reads"
    );
    drop(stream);
    let mut other = ringkv.connect();
    assert_eq!(
        escape(&other.command_frame(&["PING"]).expect("PING").raw),
        "+PONG\\r\\n"
    );
}
