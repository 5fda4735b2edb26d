//! The storage-node connection pool against an in-process fake storage node: ordering,
//! connection count, batching, timeouts, reconnection and the bounded queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use ringkv_common::event_loops::EventLoops;
use ringkv_common::resp::{Parsed, RequestLimits, RequestParser};
use ringkv_proxy::pool::{LoopSet, NodePool, PoolConfig, PoolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Answers every request: `ECHO x` with `x`, anything else with `+OK`.
const ECHO: u8 = 0;
/// Reads requests and never answers.
const SILENT: u8 = 1;
/// Answers with bytes that are not RESP.
const GARBAGE: u8 = 2;

/// What the fake node has seen, and how it behaves.
#[derive(Default)]
struct Node {
    mode: AtomicU8,
    accepted: AtomicU64,
    requests: AtomicU64,
    /// Connections that ended (EOF or error).
    closed: AtomicU64,
    /// Reads that carried more than one whole request: proof the client pipelines.
    multi_request_reads: AtomicU64,
}

/// A fake storage node; dropping it closes the listener and every connection.
struct FakeNode {
    addr: SocketAddr,
    node: Arc<Node>,
    _tasks: JoinSet<()>,
}

impl FakeNode {
    async fn start(mode: u8) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = Arc::new(Node::default());
        node.mode.store(mode, Ordering::SeqCst);
        FakeNode::serve(listener, node)
    }

    /// Listens again on `addr` (a restarted node), keeping the counters.
    async fn restart(addr: SocketAddr, node: Arc<Node>) -> FakeNode {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        FakeNode::serve(socket.listen(128).unwrap(), node)
    }

    fn serve(listener: TcpListener, node: Arc<Node>) -> FakeNode {
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let shared = Arc::clone(&node);
        tasks.spawn(async move {
            // Connection tasks live in this set, so dropping the node drops them all.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_conn(stream, Arc::clone(&shared)));
            }
        });
        FakeNode {
            addr,
            node,
            _tasks: tasks,
        }
    }

    fn set_mode(&self, mode: u8) {
        self.node.mode.store(mode, Ordering::SeqCst);
    }
}

async fn serve_conn(stream: tokio::net::TcpStream, node: Arc<Node>) {
    answer(stream, &node).await;
    node.closed.fetch_add(1, Ordering::SeqCst);
}

async fn answer(mut stream: tokio::net::TcpStream, node: &Node) {
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut args = Vec::new();
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut out = Vec::new();
        let mut in_this_read = 0;
        loop {
            match parser.parse(&mut buf, &mut args) {
                Ok(Parsed::Request) => {}
                Ok(Parsed::Empty) => continue,
                Ok(Parsed::Incomplete) => break,
                Err(_) => return,
            }
            in_this_read += 1;
            node.requests.fetch_add(1, Ordering::SeqCst);
            match node.mode.load(Ordering::SeqCst) {
                ECHO => match args.as_slice() {
                    [name, value] if name.eq_ignore_ascii_case(b"ECHO") => {
                        out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
                        out.extend_from_slice(value);
                        out.extend_from_slice(b"\r\n");
                    }
                    _ => out.extend_from_slice(b"+OK\r\n"),
                },
                GARBAGE => out.extend_from_slice(b"?what\r\n"),
                _ => {}
            }
            args.clear();
        }
        if in_this_read > 1 {
            node.multi_request_reads.fetch_add(1, Ordering::SeqCst);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn echo(value: &str) -> Vec<Bytes> {
    vec![Bytes::from_static(b"ECHO"), Bytes::from(value.to_owned())]
}

fn config() -> PoolConfig {
    PoolConfig {
        connections: 2,
        queue_depth: 1024,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(1),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        auth: None,
        loops: LoopSet::default(),
    }
}

/// Polls `cond` until it holds, failing the test after a generous deadline.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn replies_come_back_in_order_over_fixed_connections_in_batches() {
    let server = FakeNode::start(ECHO).await;
    let pool = Arc::new(NodePool::new(server.addr, config()));
    let mut callers = JoinSet::new();
    for i in 0..1000 {
        let pool = Arc::clone(&pool);
        callers.spawn(async move {
            let value = format!("value-{i}");
            let reply = pool.call(echo(&value)).await;
            assert_eq!(reply, Ok(BytesFrame::BulkString(Bytes::from(value))));
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.unwrap();
    }
    assert_eq!(server.node.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(server.node.requests.load(Ordering::SeqCst), 1000);
    let stats = pool.stats();
    assert_eq!(stats.batched_requests, 1000);
    assert!(stats.batches < stats.batched_requests, "{stats:?}");
    assert!(server.node.multi_request_reads.load(Ordering::SeqCst) > 0);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.connections_up, 2);
    assert_eq!(stats.timeouts, 0);
}

#[tokio::test]
async fn connections_on_event_loops_serve_callers_on_those_loops_and_off_them() {
    let server = FakeNode::start(ECHO).await;
    let loops = EventLoops::start(2).unwrap();
    let set = loops.set();
    let pool = Arc::new(NodePool::new(
        server.addr,
        PoolConfig {
            loops: set.clone(),
            ..config()
        },
    ));
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for on in 0..2 {
        for task in 0..25 {
            let (pool, done, set) = (Arc::clone(&pool), done.clone(), set.clone());
            set.clone().spawn(on, async move {
                let mut answers = Vec::new();
                for i in 0..40 {
                    let value = format!("{on}-{task}-{i}");
                    let reply = pool.call_on(i, echo(&value)).await;
                    answers.push((reply, value));
                }
                let _ = done.send((set.index_of_current(), answers));
            });
        }
    }
    drop(done);
    let mut callers = 0;
    while let Some((ran_on, answers)) = finished.recv().await {
        assert!(ran_on.is_some(), "the caller ran on one of the loops");
        for (reply, value) in answers {
            assert_eq!(reply, Ok(BytesFrame::BulkString(Bytes::from(value))));
        }
        callers += 1;
    }
    assert_eq!(callers, 50);
    // A caller on no loop (this test's runtime) uses them too.
    assert_eq!(
        pool.call(echo("off the loops")).await,
        Ok(BytesFrame::BulkString(Bytes::from_static(b"off the loops")))
    );
    assert_eq!(set.index_of_current(), None);
    assert_eq!(server.node.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(server.node.requests.load(Ordering::SeqCst), 2001);
    let stats = pool.stats();
    assert!(stats.batches < stats.batched_requests, "{stats:?}");
    assert_eq!(stats.in_flight, 0);
    drop(pool);
    drop(loops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_callers_on_many_threads_each_get_their_own_reply() {
    let server = FakeNode::start(ECHO).await;
    let pool = Arc::new(NodePool::new(server.addr, config()));
    let mut callers = JoinSet::new();
    for task in 0..50 {
        let pool = Arc::clone(&pool);
        callers.spawn(async move {
            for i in 0..100 {
                let value = format!("{task}-{i}");
                let reply = pool.call(echo(&value)).await;
                assert_eq!(reply, Ok(BytesFrame::BulkString(Bytes::from(value))));
            }
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.unwrap();
    }
    assert_eq!(server.node.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.stats().batched_requests, 5000);
}

#[tokio::test]
async fn a_node_that_stops_answering_times_requests_out_then_the_pool_reconnects() {
    let server = FakeNode::start(SILENT).await;
    let config = PoolConfig {
        request_timeout: Duration::from_millis(200),
        ..config()
    };
    let pool = Arc::new(NodePool::new(server.addr, config));
    let mut callers = JoinSet::new();
    for i in 0..10 {
        let pool = Arc::clone(&pool);
        callers.spawn(async move { pool.call(echo(&i.to_string())).await });
    }
    while let Some(joined) = callers.join_next().await {
        match joined.unwrap() {
            Err(PoolError::Timeout { addr, .. }) => assert_eq!(addr, server.addr),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert_eq!(pool.stats().timeouts, 10);
    let message = PoolError::Timeout {
        addr: server.addr,
        timeout: Duration::from_millis(200),
    }
    .to_string();
    assert!(message.contains(&server.addr.to_string()), "{message}");

    server.set_mode(ECHO);
    eventually("a call to succeed after timeouts", async || {
        pool.call(echo("back")).await == Ok(BytesFrame::BulkString(Bytes::from("back")))
    })
    .await;
    assert!(pool.stats().reconnects >= 1);
}

#[tokio::test]
async fn a_request_made_while_the_connection_is_still_being_made_times_out_at_its_deadline() {
    // The node accepts but never answers the cluster secret, so the connection is never
    // ready; the handshake would give up only after a minute.
    let server = FakeNode::start(SILENT).await;
    let config = PoolConfig {
        connections: 1,
        request_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(60),
        auth: Some(Bytes::from_static(b"secret")),
        ..config()
    };
    let pool = NodePool::new(server.addr, config);
    assert_eq!(
        pool.call(echo("never sent")).await,
        Err(PoolError::Timeout {
            addr: server.addr,
            timeout: Duration::from_millis(200),
        })
    );
    assert_eq!(pool.stats().timeouts, 1);
}

#[tokio::test]
async fn a_node_that_goes_away_fails_waiting_callers_and_is_reconnected_when_back() {
    let server = FakeNode::start(SILENT).await;
    let addr = server.addr;
    let node = Arc::clone(&server.node);
    let pool = Arc::new(NodePool::new(addr, config()));
    let mut callers = JoinSet::new();
    for i in 0..5 {
        let pool = Arc::clone(&pool);
        callers.spawn(async move { pool.call(echo(&i.to_string())).await });
    }
    eventually("the node to receive the requests", async || {
        node.requests.load(Ordering::SeqCst) == 5
    })
    .await;

    drop(server);
    while let Some(joined) = callers.join_next().await {
        match joined.unwrap() {
            Err(PoolError::Unavailable { addr: failed, .. }) => assert_eq!(failed, addr),
            other => panic!("expected the node to be unavailable, got {other:?}"),
        }
    }
    // While the node is away, callers fail instead of hanging until their timeout.
    match pool.call(echo("away")).await {
        Err(PoolError::Unavailable { .. }) => {}
        other => panic!("expected the node to be unavailable, got {other:?}"),
    }

    node.mode.store(ECHO, Ordering::SeqCst);
    let _server = FakeNode::restart(addr, Arc::clone(&node)).await;
    eventually("a call to succeed once the node is back", async || {
        pool.call(echo("back")).await == Ok(BytesFrame::BulkString(Bytes::from("back")))
    })
    .await;
    assert!(pool.stats().reconnects >= 1);
}

#[tokio::test]
async fn the_queue_is_bounded_by_queue_depth() {
    let server = FakeNode::start(SILENT).await;
    let config = PoolConfig {
        connections: 1,
        queue_depth: 4,
        ..config()
    };
    let pool = Arc::new(NodePool::new(server.addr, config));
    let mut callers = JoinSet::new();
    for i in 0..4 {
        let pool = Arc::clone(&pool);
        callers.spawn(async move { pool.call(echo(&i.to_string())).await });
    }
    eventually("four requests in flight", async || {
        pool.stats().in_flight == 4
    })
    .await;
    assert_eq!(
        pool.try_call(echo("one too many")).await,
        Err(PoolError::Busy { addr: server.addr })
    );
    // A caller that waits for room does not add to the queue either.
    let waiter = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.call(echo("waits")).await })
    };
    eventually("the node to receive the first four", async || {
        server.node.requests.load(Ordering::SeqCst) == 4
    })
    .await;
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().in_flight, 4);
    assert!(!waiter.is_finished());
    waiter.abort();
}

#[tokio::test]
async fn a_reply_that_is_not_resp_is_a_protocol_error() {
    let server = FakeNode::start(GARBAGE).await;
    let pool = NodePool::new(server.addr, config());
    match pool.call(echo("x")).await {
        Err(PoolError::Protocol { addr, .. }) => assert_eq!(addr, server.addr),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    server.set_mode(ECHO);
    eventually("a call to succeed after the protocol error", async || {
        pool.call(echo("ok")).await == Ok(BytesFrame::BulkString(Bytes::from("ok")))
    })
    .await;
}

#[tokio::test]
async fn dropping_the_pool_closes_its_connections() {
    let server = FakeNode::start(ECHO).await;
    let pool = NodePool::new(server.addr, config());
    assert_eq!(
        pool.call(echo("x")).await,
        Ok(BytesFrame::BulkString(Bytes::from("x")))
    );
    eventually("both connections to be accepted", async || {
        server.node.accepted.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(pool);
    eventually("the node to see both connections closed", async || {
        server.node.closed.load(Ordering::SeqCst) == 2
    })
    .await;
}
