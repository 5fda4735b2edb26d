//! The server end to end over TCP, byte for byte: pipelining, protocol errors, QUIT, HELLO,
//! the proxy's own commands, and graceful shutdown. Each test starts its own server on a
//! free port with its own data directory.

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_proxy::backend::Backend;
use ringkv_proxy::config::Config;
use ringkv_proxy::server::Server;
use ringkv_storage::{Fsync, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ringkv_proxy::server::ServerError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        bind: "127.0.0.1".parse().expect("ip"),
        port: 0,
        dir: dir.path().to_path_buf(),
        shards: 4,
        in_memory: false,
        fsync: Fsync::No,
        metrics_addr: None,
        event_loops: None,
        acl: ringkv_common::acl::Acl::open(),
        limits: ringkv_proxy::config::ClientLimits::default(),
        tls: None,
    };
    let storage_config = config.storage();
    let storage = tokio::task::spawn_blocking(move || Storage::open(storage_config))
        .await
        .expect("join")
        .expect("open");
    let server = Server::bind(&config, Backend::Local(storage))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl TestServer {
    async fn client(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("stops in time");
        result.expect("join").expect("clean shutdown");
    }
}

/// A multibulk request.
fn req(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

/// Reads until `expected` bytes have arrived (or the peer closes, or a second passes).
async fn read_n(stream: &mut TcpStream, expected: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while got.len() < expected {
        let mut buf = [0u8; 65536];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
    got
}

/// Sends `request` and expects exactly `reply` back.
async fn roundtrip(stream: &mut TcpStream, request: &[u8], reply: &[u8]) {
    stream.write_all(request).await.expect("write");
    let got = read_n(stream, reply.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}

/// Whether the server closed the connection.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start().await;
    let mut c = server.client().await;
    let mut batch = Vec::new();
    for words in [
        &["PING"][..],
        &["ECHO", "a"],
        &["PING", "b"],
        &["nosuch", "x"],
        &["GET"],
        &["SELECT", "1"],
    ] {
        batch.extend(req(words));
    }
    batch.extend_from_slice(b"PING\r\n");
    let expected = "+PONG\r\n$1\r\na\r\n$1\r\nb\r\n\
                    -ERR unknown command 'nosuch', with args beginning with: 'x' \r\n\
                    -ERR wrong number of arguments for 'get' command\r\n\
                    -ERR DB index is out of range\r\n+PONG\r\n";
    roundtrip(&mut c, &batch, expected.as_bytes()).await;
    server.stop().await;
}

/// A pipeline of plain SETs and MSETs runs as one engine write; every request still gets its
/// own reply, in order, and a later read in the same pipeline sees the writes before it.
#[tokio::test]
async fn pipelined_writes_answer_each_request_and_are_read_back_in_order() {
    let server = start().await;
    let mut c = server.client().await;
    let mut batch = Vec::new();
    for words in [
        &["SET", "k", "1"][..],
        &["set", "k", "2"],
        &["GET", "k"],
        &["MSET", "a", "x", "k", "3"],
        &["MSET", "odd"],
        &["SET", "k", "4", "NX"],
        &["INCR", "k"],
        &["SET", "a", "y"],
        &["MGET", "a", "k"],
        &["SET", "only-key"],
    ] {
        batch.extend(req(words));
    }
    let expected = "+OK\r\n+OK\r\n$1\r\n2\r\n+OK\r\n\
                    -ERR wrong number of arguments for 'mset' command\r\n\
                    $-1\r\n:4\r\n+OK\r\n*2\r\n$1\r\ny\r\n$1\r\n4\r\n\
                    -ERR wrong number of arguments for 'set' command\r\n";
    roundtrip(&mut c, &batch, expected.as_bytes()).await;
    server.stop().await;
}

#[tokio::test]
async fn requests_split_across_reads_are_reassembled() {
    let server = start().await;
    let mut c = server.client().await;
    let big = "x".repeat(100_000);
    let request = req(&["ECHO", &big]);
    let (head, tail) = request.split_at(10);
    c.write_all(head).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let expected = format!("${}\r\n{big}\r\n", big.len());
    roundtrip(&mut c, tail, expected.as_bytes()).await;
    server.stop().await;
}

#[tokio::test]
async fn protocol_error_answers_earlier_requests_then_closes() {
    let server = start().await;
    let mut c = server.client().await;
    let mut batch = req(&["PING"]);
    batch.extend_from_slice(b"*1\r\n$abc\r\n");
    roundtrip(
        &mut c,
        &batch,
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    assert!(closed(&mut c).await);
    // Other clients are not affected.
    let mut other = server.client().await;
    roundtrip(&mut other, &req(&["PING"]), b"+PONG\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn quit_answers_ok_and_closes_skipping_the_rest() {
    let server = start().await;
    let mut c = server.client().await;
    let mut batch = req(&["QUIT"]);
    batch.extend(req(&["PING"]));
    roundtrip(&mut c, &batch, b"+OK\r\n").await;
    assert!(closed(&mut c).await);
    server.stop().await;
}

#[tokio::test]
async fn hello_switches_to_resp3_and_reset_back() {
    let server = start().await;
    let mut c = server.client().await;
    c.write_all(&req(&["CLIENT", "ID"])).await.expect("write");
    let id_line = String::from_utf8(read_n(&mut c, 3).await).expect("utf8");
    let id = id_line.trim().trim_start_matches(':').to_string();
    let map = format!(
        "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id}\r\n\
         $4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    );
    roundtrip(&mut c, &req(&["HELLO", "3"]), map.as_bytes()).await;
    roundtrip(&mut c, &req(&["CLIENT", "GETNAME"]), b"_\r\n").await;
    roundtrip(
        &mut c,
        &req(&["HELLO", "4"]),
        b"-NOPROTO unsupported protocol version\r\n",
    )
    .await;
    roundtrip(&mut c, &req(&["RESET"]), b"+RESET\r\n").await;
    roundtrip(&mut c, &req(&["CLIENT", "GETNAME"]), b"$-1\r\n").await;
    server.stop().await;
}

#[tokio::test]
async fn client_names_and_info() {
    let server = start().await;
    let mut c = server.client().await;
    roundtrip(
        &mut c,
        &req(&["CLIENT", "SETNAME", "a b"]),
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    )
    .await;
    roundtrip(&mut c, &req(&["CLIENT", "SETNAME", "app"]), b"+OK\r\n").await;
    roundtrip(&mut c, &req(&["CLIENT", "GETNAME"]), b"$3\r\napp\r\n").await;
    roundtrip(
        &mut c,
        &req(&["CLIENT", "SETINFO", "LIB-NAME", "test"]),
        b"+OK\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        &req(&["CLIENT", "SETINFO", "x", "1"]),
        b"-ERR Unrecognized option 'x'\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        &req(&["CLIENT", "BOGUS"]),
        b"-ERR unknown subcommand 'BOGUS'. Try CLIENT HELP.\r\n",
    )
    .await;
    c.write_all(&req(&["CLIENT", "INFO"])).await.expect("write");
    let info = String::from_utf8(read_n(&mut c, 300).await).expect("utf8");
    let local = c.local_addr().expect("addr");
    assert!(
        info.contains(&format!(" addr={local} laddr={} ", server.addr)),
        "{info}"
    );
    assert!(info.contains(" name=app "), "{info}");
    assert!(
        info.ends_with(" resp=2 lib-name=test lib-ver=\n\r\n"),
        "{info}"
    );
    server.stop().await;
}

#[tokio::test]
async fn server_commands() {
    let server = start().await;
    let mut c = server.client().await;
    let port = server.addr.port().to_string();
    let expected = format!("*2\r\n$4\r\nport\r\n${}\r\n{port}\r\n", port.len());
    roundtrip(
        &mut c,
        &req(&["CONFIG", "GET", "port"]),
        expected.as_bytes(),
    )
    .await;
    roundtrip(
        &mut c,
        &req(&["CONFIG", "GET", "*fsync*"]),
        b"*2\r\n$11\r\nappendfsync\r\n$2\r\nno\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        &req(&["CONFIG", "SET", "foo", "1"]),
        b"-ERR Unknown option or number of arguments for CONFIG SET - 'foo'\r\n",
    )
    .await;
    roundtrip(&mut c, &req(&["CONFIG", "RESETSTAT"]), b"+OK\r\n").await;
    let count = ringkv_common::command::COMMANDS.len();
    roundtrip(
        &mut c,
        &req(&["COMMAND", "COUNT"]),
        format!(":{count}\r\n").as_bytes(),
    )
    .await;
    roundtrip(
        &mut c,
        &req(&["COMMAND", "INFO", "nosuch"]),
        b"*1\r\n$-1\r\n",
    )
    .await;
    roundtrip(&mut c, &req(&["COMMAND", "DOCS", "nosuch"]), b"*0\r\n").await;
    roundtrip(&mut c, &req(&["INFO", "nosuch"]), b"$0\r\n\r\n").await;

    c.write_all(&req(&["INFO", "keyspace", "server"]))
        .await
        .expect("write");
    let info = String::from_utf8(read_n(&mut c, 400).await).expect("utf8");
    assert!(
        info.contains("\r\n# Server\r\nredis_version:7.0.0\r\n"),
        "{info}"
    );
    assert!(
        info.contains("\r\n\r\n# Keyspace\r\n"),
        "sections in Redis's order: {info}"
    );
    assert!(info.contains(&format!("\r\ntcp_port:{port}\r\n")), "{info}");

    c.write_all(&req(&["TIME"])).await.expect("write");
    let time = String::from_utf8(read_n(&mut c, 20).await).expect("utf8");
    assert!(time.starts_with("*2\r\n$10\r\n"), "{time}");
    server.stop().await;
}

/// Sends INFO stats and returns the value of `field` in it.
async fn info_stat(stream: &mut TcpStream, field: &str) -> String {
    stream
        .write_all(&req(&["INFO", "stats"]))
        .await
        .expect("write");
    let mut got = read_n(stream, 4).await;
    // A bulk string: `$<len>\r\n`, then the text and its CRLF.
    let total = loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n") {
            let len: usize = text[1..end].parse().expect("bulk length");
            break end + 2 + len + 2;
        }
        let more = read_n(stream, 1).await;
        assert!(!more.is_empty(), "INFO stats was cut short: {text:?}");
        got.extend_from_slice(&more);
    };
    if got.len() < total {
        got.extend_from_slice(&read_n(stream, total - got.len()).await);
    }
    let text = String::from_utf8(got).expect("utf8");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        .to_string()
}

/// Each event loop counts its own reads (one shared counter cost every read a cache miss):
/// INFO still sums the hits and misses of every connection, and CONFIG RESETSTAT zeroes
/// every loop's count.
#[tokio::test]
async fn keyspace_hits_and_misses_sum_every_connections_reads() {
    let server = start().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.client().await);
    }
    roundtrip(&mut clients[0], &req(&["SET", "k", "v"]), b"+OK\r\n").await;
    for c in &mut clients {
        roundtrip(c, &req(&["GET", "k"]), b"$1\r\nv\r\n").await;
        roundtrip(c, &req(&["GET", "absent"]), b"$-1\r\n").await;
        roundtrip(c, &req(&["GET", "absent"]), b"$-1\r\n").await;
    }
    assert_eq!(info_stat(&mut clients[0], "keyspace_hits").await, "4");
    assert_eq!(info_stat(&mut clients[3], "keyspace_misses").await, "8");

    roundtrip(&mut clients[1], &req(&["CONFIG", "RESETSTAT"]), b"+OK\r\n").await;
    assert_eq!(info_stat(&mut clients[2], "keyspace_hits").await, "0");
    assert_eq!(info_stat(&mut clients[2], "keyspace_misses").await, "0");
    roundtrip(&mut clients[3], &req(&["GET", "k"]), b"$1\r\nv\r\n").await;
    assert_eq!(info_stat(&mut clients[0], "keyspace_hits").await, "1");
    server.stop().await;
}

/// instantaneous_ops_per_sec, instantaneous_input_kbps and instantaneous_output_kbps follow
/// the traffic as Redis's do (sampled every 100 ms, averaged over 1.6 s, the rates in KiB/s
/// with two decimals): dashboards built for Redis plot them.
#[tokio::test]
async fn instantaneous_rates_follow_the_traffic() {
    let server = start().await;
    let mut c = server.client().await;
    let mut watcher = server.client().await;
    assert_eq!(
        info_stat(&mut watcher, "unexpected_error_replies").await,
        "0"
    );
    let value = "x".repeat(4096);
    let set = req(&["SET", "k", &value]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        for _ in 0..50 {
            roundtrip(&mut c, &set, b"+OK\r\n").await;
        }
        let ops = info_stat(&mut watcher, "instantaneous_ops_per_sec").await;
        let input = info_stat(&mut watcher, "instantaneous_input_kbps").await;
        let output = info_stat(&mut watcher, "instantaneous_output_kbps").await;
        for kbps in [&input, &output] {
            assert_eq!(
                kbps.split_once('.').map(|(_, decimals)| decimals.len()),
                Some(2),
                "a rate in KiB/s with two decimals: {kbps}"
            );
        }
        let positive = |v: &str| v.parse::<f64>().expect("a number") > 0.0;
        if positive(&ops) && positive(&input) && positive(&output) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rates still not moved by the traffic: ops {ops}, input {input}, output {output}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn command_alone_lists_every_command() {
    let server = start().await;
    let mut c = server.client().await;
    c.write_all(&req(&["COMMAND"])).await.expect("write");
    let head = read_n(&mut c, 8).await;
    let count = ringkv_common::command::COMMANDS.len();
    assert!(
        head.starts_with(format!("*{count}\r\n").as_bytes()),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let server = start().await;
    let mut idle = server.client().await;
    roundtrip(&mut idle, &req(&["PING"]), b"+PONG\r\n").await;
    let addr = server.addr;
    server.stop().await;
    assert!(closed(&mut idle).await);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
