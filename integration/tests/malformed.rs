//! A storm of random and malformed frames, over many connections at once, against the
//! standalone server and against a cluster proxy, while another client's SET/GET traffic runs
//! alongside and must never see an error or a wrong value.
//!
//! Each malformed session is one connection: a few requests (unknown commands, wrong arities,
//! inline lines with binary bytes, empty requests) and then an ending: a protocol error (bad
//! multibulk or bulk lengths, negative or huge lengths, a missing `$`, unbalanced quotes, an
//! inline line over 64 KiB), a truncated frame followed by a close, or nothing. The expected
//! replies are predicted by running the same bytes through the request parser: so many
//! replies, then `-ERR Protocol error: …` and a close by the server, or the client's close.
//!
//! Seeded: the seed is printed, and `MALFORMED_SEED=N` replays a run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_common::resp::request::INLINE_MAX_SIZE;
use ringkv_common::resp::{Parsed, RequestParser};
use ringkv_integration::cluster::Cluster;
use ringkv_integration::{
    decode_frame, encode_command, escape, Protocol, Reply, RespClient, Server,
};

/// Frames sent in one storm, over all threads.
const FRAMES: usize = 10_000;
/// Threads opening malformed sessions; each has one connection open at a time, so this is
/// also the number of concurrent malformed connections.
const THREADS: usize = 50;
/// SET/GET round trips the steady client makes at least.
const MIN_ROUND_TRIPS: u64 = 500;
/// Longest wait for a reply or a close: nothing in this test should come near it.
const WAIT: Duration = Duration::from_secs(10);

fn seed() -> u64 {
    let seed = match std::env::var("MALFORMED_SEED") {
        Ok(s) => s.parse().expect("MALFORMED_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    println!("malformed seed: {seed} (MALFORMED_SEED={seed} replays it)");
    seed
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The last frame is malformed: the server replies with a protocol error and closes.
    ProtocolError,
    /// A frame cut short, then the client half-closes: the server must close too.
    TruncatedThenHalfClose,
    /// A frame cut short, then the client drops the connection without reading.
    TruncatedThenDrop,
    /// Only whole requests: the client reads their replies and closes.
    Clean,
}

/// A request that gets exactly one reply and never touches data: unknown commands, wrong
/// arities, PING/ECHO, inline lines with binary bytes, empty requests (no reply).
fn replied_frame(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..9) {
        0 => {
            let name = format!("NOSUCHCMD{}", rng.gen_range(0..1000));
            encode_command(&[name.as_str(), "a", "b"])
        }
        1 => {
            // A known command with the wrong number of arguments.
            let cmds: [&[&str]; 6] = [
                &["GET"],
                &["SET", "malformed:k"],
                &["EXPIRE"],
                &["GETRANGE", "malformed:k", "0"],
                &["INCRBYFLOAT"],
                &["SCAN"],
            ];
            encode_command(cmds[rng.gen_range(0..cmds.len())])
        }
        2 => encode_command(&["PING"]),
        3 => encode_command(&[&b"ECHO"[..], &random_bytes(rng, 0..40)]),
        4 => b"PING\r\n".to_vec(),
        5 => {
            // Inline: a made-up command with binary bytes (no quotes or line ends, so the
            // line stays one request).
            let mut line = b"zz".to_vec();
            line.extend(
                random_bytes(rng, 1..60)
                    .into_iter()
                    .filter(|b| !matches!(b, b'\n' | b'"' | b'\'')),
            );
            line.extend_from_slice(b"\r\n");
            line
        }
        6 => [&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"\n", b"   \r\n"][rng.gen_range(0..5)].to_vec(),
        7 => {
            // Binary arguments in a multibulk request of an unknown command.
            let args: Vec<Vec<u8>> = (0..rng.gen_range(1..6))
                .map(|i| {
                    if i == 0 {
                        b"X-UNKNOWN".to_vec()
                    } else {
                        random_bytes(rng, 0..30)
                    }
                })
                .collect();
            encode_command(&args)
        }
        _ => {
            // Garbage: random bytes as an inline line, which may hold several requests or
            // none (the parser below predicts what the server makes of it).
            let mut line: Vec<u8> = random_bytes(rng, 1..40)
                .into_iter()
                .filter(|b| !matches!(b, b'"' | b'\'' | b'*'))
                .collect();
            line.push(b'\n');
            line
        }
    }
}

/// A frame the server must refuse with `Protocol error`, complete so that the server has read
/// every byte sent when it closes.
fn malformed_frame(rng: &mut StdRng) -> Vec<u8> {
    let cases: [&[u8]; 14] = [
        b"*abc\r\n",
        b"*\r\n",
        b"*+1\r\n",
        b"*1 \r\n",
        b"*2147483648\r\n",
        b"*99999999999999999999999\r\n",
        b"*1\r\n:1\r\n",
        b"*2\r\n$3\r\nGET\r\nk\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$abc\r\n",
        b"*1\r\n$536870913\r\n",
        b"*1\r\n$99999999999999999999\r\n",
        b"SET k \"unbalanced\r\n",
    ];
    match rng.gen_range(0..40) {
        0 => {
            // An inline line over the limit, with no end in sight. (With its newline it would
            // be refused or served depending on how much of it one read returns.)
            vec![b'a'; INLINE_MAX_SIZE + 1 + rng.gen_range(0..100)]
        }
        1 => b"GET \"a\"b\r\n".to_vec(),
        _ => cases[rng.gen_range(0..cases.len())].to_vec(),
    }
}

/// A frame cut short: the server waits for the rest.
fn truncated_frame(rng: &mut StdRng) -> Vec<u8> {
    let cases: [&[u8]; 8] = [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk",
        b"*2\r\n$3\r\nGET\r\n",
        b"*1\r\n$4\r\nPI",
        b"*1",
        b"*1\r",
        b"PING",
        b"*99999999\r\n$4\r\nPING\r\n",
        b"*1\r\n$100000\r\nabc",
    ];
    match rng.gen_range(0..50) {
        // A huge (allowed) announced length, then a few bytes of it.
        0 => b"*1\r\n$536870912\r\nabcdef".to_vec(),
        _ => cases[rng.gen_range(0..cases.len())].to_vec(),
    }
}

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let n = rng.gen_range(len);
    (0..n).map(|_| rng.gen()).collect()
}

/// What the server should make of `input`: the number of replies, and the protocol error
/// that ends it, if any.
fn predict(input: &[u8]) -> (usize, Option<String>) {
    let mut parser = RequestParser::default();
    let mut buf = BytesMut::from(input);
    let mut replies = 0;
    loop {
        let mut args = Vec::new();
        match parser.parse(&mut buf, &mut args) {
            Ok(Parsed::Request) => replies += 1,
            Ok(Parsed::Empty) => {}
            Ok(Parsed::Incomplete) => return (replies, None),
            Err(e) => return (replies, Some(e.0)),
        }
    }
}

/// Splits `bytes` into whole RESP2 replies; the tail that is not a whole reply is returned.
fn split_replies(mut bytes: &[u8]) -> Result<(Vec<Reply>, &[u8]), String> {
    let mut replies = Vec::new();
    while let Some((reply, len)) = decode_frame(bytes, Protocol::Resp2)? {
        replies.push(reply);
        bytes = &bytes[len..];
    }
    Ok((replies, bytes))
}

/// Opens one session: sends its frames and checks the server's answer. Returns the frames
/// sent.
fn session(addr: SocketAddr, rng: &mut StdRng, budget: usize) -> usize {
    let ending = match rng.gen_range(0..10) {
        0..=3 => Ending::ProtocolError,
        4 | 5 => Ending::TruncatedThenHalfClose,
        6 => Ending::TruncatedThenDrop,
        _ => Ending::Clean,
    };
    let replied = rng.gen_range(0..12).min(budget.saturating_sub(1));
    let mut frames: Vec<Vec<u8>> = (0..replied).map(|_| replied_frame(rng)).collect();
    match ending {
        Ending::ProtocolError => frames.push(malformed_frame(rng)),
        Ending::TruncatedThenHalfClose | Ending::TruncatedThenDrop => {
            frames.push(truncated_frame(rng))
        }
        Ending::Clean => {}
    }
    let input = frames.concat();
    let (expected, error) = predict(&input);
    let what = || {
        format!(
            "session ending {ending:?}, {} frames, input \"{}\"",
            frames.len(),
            escape(&input[..input.len().min(600)])
        )
    };

    let mut client = RespClient::connect_timeout(addr, WAIT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    // Several writes, so that frames also arrive split across reads.
    let mut sent_all = true;
    for piece in input.chunks(rng.gen_range(1..=input.len().max(1))) {
        if client.send_raw(piece).is_err() {
            // The server may close on a protocol error before the last bytes of a long line.
            sent_all = false;
            break;
        }
    }
    assert!(
        sent_all || error.is_some(),
        "the server closed early: {}",
        what()
    );

    match (ending, &error) {
        (Ending::TruncatedThenDrop, None) => return frames.len(),
        (Ending::Clean, None) => {
            for i in 0..expected {
                let reply = client
                    .read_reply()
                    .unwrap_or_else(|e| panic!("reply {i} of {expected}: {e}; {}", what()));
                assert!(
                    !matches!(&reply, Reply::Error(e) if e.starts_with(b"ERR Protocol error")),
                    "unexpected protocol error: {reply}; {}",
                    what()
                );
            }
            return frames.len();
        }
        (Ending::TruncatedThenHalfClose, None) => {
            client.shutdown_write().expect("half-close");
        }
        _ => {}
    }

    // The server closes: after a protocol error, or after the client's half-close.
    let closing = client.read_until_closed(WAIT);
    assert!(closing.closed, "the server did not close: {}", what());
    let (replies, rest) = split_replies(&closing.bytes)
        .unwrap_or_else(|e| panic!("undecodable replies: {e}; {}", what()));
    assert!(
        rest.is_empty(),
        "a partial reply before the close; {}",
        what()
    );
    match error {
        None => assert_eq!(replies.len(), expected, "replies; {}", what()),
        Some(error) => {
            // Over-long inline lines: the server may close while bytes are still in flight,
            // and the reset can then discard replies the client had not read yet.
            let lossy = input.len() > INLINE_MAX_SIZE;
            if !lossy || replies.len() == expected + 1 {
                assert_eq!(replies.len(), expected + 1, "replies; {}", what());
                let last = replies.last().expect("the error reply");
                assert_eq!(
                    *last,
                    Reply::Error(format!("ERR {error}").into_bytes()),
                    "{}",
                    what()
                );
            }
            for reply in &replies[..replies.len().min(expected)] {
                assert!(
                    !matches!(reply, Reply::Error(e) if e.starts_with(b"ERR Protocol error")),
                    "protocol error before the malformed frame: {reply}; {}",
                    what()
                );
            }
        }
    }
    frames.len()
}

/// SET then GET on its own connection until `stop`, every reply checked. Returns the number of
/// SET/GET pairs, and how many of them ran before `stop`.
fn steady_traffic(addr: SocketAddr, seed: u64, stop: &AtomicBool) -> (u64, u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e7_6e7);
    let mut client =
        RespClient::connect_timeout(addr, WAIT).expect("connecting the SET/GET client");
    let mut ops = 0;
    let mut during_storm = 0;
    // At least MIN_ROUND_TRIPS, however quickly the storm ends.
    while ops < MIN_ROUND_TRIPS || !stop.load(Ordering::Relaxed) {
        let key = format!("malformed:steady:{}", ops % 64);
        let value = random_bytes(&mut rng, 0..100);
        let reply = client
            .command(&[&b"SET"[..], key.as_bytes(), &value])
            .unwrap_or_else(|e| panic!("SET {key} after {ops} round trips: {e}"));
        assert_eq!(reply, Reply::Simple(b"OK".to_vec()), "SET {key}");
        let reply = client
            .command(&[&b"GET"[..], key.as_bytes()])
            .unwrap_or_else(|e| panic!("GET {key} after {ops} round trips: {e}"));
        assert_eq!(reply, Reply::Bulk(value), "GET {key}");
        ops += 1;
        if !stop.load(Ordering::Relaxed) {
            during_storm = ops;
        }
    }
    (ops, during_storm)
}

/// Runs the storm against `addr` and checks the server still answers on a new connection.
fn storm(addr: SocketAddr, label: &str, seed: u64) {
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let sessions = AtomicU64::new(0);
    let ((ops, during_storm), frames) = thread::scope(|s| {
        let steady = s.spawn(|| steady_traffic(addr, seed, &stop));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let sessions = &sessions;
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64));
                    let mut budget = FRAMES / THREADS;
                    let mut sent = 0;
                    while budget > 0 {
                        let n = session(addr, &mut rng, budget);
                        budget = budget.saturating_sub(n);
                        sent += n;
                        sessions.fetch_add(1, Ordering::Relaxed);
                    }
                    sent
                })
            })
            .collect();
        // Stop the SET/GET client whatever happens, or a failed worker would hang the scope.
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Ordering::Relaxed);
        let frames: usize = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum();
        let ops = steady
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (ops, frames)
    });
    println!(
        "{label}: {frames} frames over {} connections in {:.1?}; {ops} SET/GET pairs \
         ({during_storm} during the storm), all correct",
        sessions.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(frames >= FRAMES, "{frames} frames sent");
    assert!(
        during_storm > 0,
        "the SET/GET client did not run during the storm"
    );

    let mut client = RespClient::connect_timeout(addr, WAIT).expect("connecting after the storm");
    assert_eq!(
        client.command(&["PING"]).expect("PING after the storm"),
        Reply::Simple(b"PONG".to_vec())
    );
}

/// Whether process `pid` is running (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[test]
fn standalone_survives_malformed_frames_on_many_connections() {
    let seed = seed();
    let server = Server::ringkv(&["--in-memory", "--shards", "16"]);
    storm(server.addr(), "standalone", seed);
    let pid = server.pid().expect("the server runs");
    assert!(alive(pid), "ringkv exited\n{}", server.log_tail());
}

#[test]
fn proxy_survives_malformed_frames_on_many_connections() {
    let seed = seed();
    let cluster = Cluster::builder()
        .nodes(2)
        .proxies(1)
        .shards(16)
        .storage_args(&["--in-memory"])
        .start();
    storm(cluster.proxy_addr(0), "proxy", seed);
    let pid = cluster.proxy_pid(0).expect("the proxy runs");
    assert!(alive(pid), "ringkv-proxy exited\n{}", cluster.log_tails());
    for i in 0..cluster.node_count() {
        let pid = cluster.node_pid(i).expect("the node runs");
        assert!(
            alive(pid),
            "storage node {i} exited\n{}",
            cluster.log_tails()
        );
    }
}
