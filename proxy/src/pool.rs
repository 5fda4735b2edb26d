//! Multiplexed, pipelined connections from the proxy to one storage node.
//!
//! A proxy may serve tens of thousands of clients, but a storage node should see a fixed,
//! small number of connections from it (by default one per event loop of the proxy):
//! connection count then stays independent of client count, and many small requests share
//! one syscall. With event loops ([`PoolConfig::loops`]), the connections are spread over
//! them and a caller uses the connections of its own loop: its request, the write that
//! carries it and the reply never cross threads, and the writer, woken by the first request
//! of a loop turn, runs after every client that was ready in that turn has queued its own.
//! Each connection is two tasks:
//!
//! - the *writer* waits for the first queued request, then takes everything else already
//!   queued (`try_recv`), encodes the whole batch into one buffer and writes it at once; it
//!   records each request's reply sender in the shared FIFO *before* writing, so the reader can
//!   never see a reply whose request it does not know;
//! - the *reader* decodes replies as they arrive and completes the oldest waiting request with
//!   each one: RESP replies come back in request order, so no request id is needed.
//!
//! Every request holds a slot of its connection's semaphore from the moment it is queued until
//! its reply (or error) is delivered, so queued plus unanswered requests never exceed
//! `queue_depth`: a slow node pushes back on callers instead of growing memory.
//!
//! A connection that fails (I/O error, EOF, an undecodable reply, or its oldest request
//! passing its deadline) fails every request waiting on it with an error naming the node, then
//! reconnects: at once if it had been working, otherwise after a capped exponential backoff
//! during which new requests fail fast instead of hanging.
//!
//! A request's deadline costs no timer of its own while its connection is serving: the
//! writer answers a request that expired while queued instead of sending it, and the reader
//! keeps one timer, at the oldest written request's deadline. Only a caller that waits for
//! queue room, or whose connection is still being made, arms a timer. (A timer per request
//! cost 14-17% of the proxy's CPU at -P 16, and a wake-up write to its own event loop for
//! about every third request.)

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

pub use ringkv_common::event_loops::LoopSet;

/// Most requests encoded into one write: bounds the buffer and the latency of the first
/// request in a batch when the queue is very deep.
const MAX_BATCH: usize = 1024;

/// A write buffer grown past this by one huge batch is given back rather than kept for the
/// life of the connection.
const KEEP_WRITE_BUFFER: usize = 1024 * 1024;

/// Settings of the connections to one storage node.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Connections to the node. Two keep one slow reply from stalling everything behind it
    /// while still batching well; more rarely helps.
    pub connections: usize,
    /// Requests that may be queued or awaiting their reply per connection; callers beyond it
    /// wait (`call`) or are refused (`try_call`).
    pub queue_depth: usize,
    /// How long a caller waits, queueing included, before it gets [`PoolError::Timeout`]; a
    /// connection whose oldest request passes it is presumed dead and reconnected.
    pub request_timeout: Duration,
    /// How long one connection attempt may take before it counts as failed.
    pub connect_timeout: Duration,
    /// First wait after a failed connection attempt; doubles per further failure.
    pub backoff_min: Duration,
    /// Longest wait between connection attempts.
    pub backoff_max: Duration,
    /// The cluster secret, presented (`AUTH <secret>`) on every new connection before any
    /// request; `None` for a node that asks for none.
    pub auth: Option<Bytes>,
    /// The event loops the connections run on: connection `i` lives on loop `i` modulo
    /// their count, and callers on a loop use that loop's connections (the others only if
    /// all of its own are down, or if it has none). Empty: every connection runs on the
    /// runtime that creates the pool, and callers share them all.
    pub loops: LoopSet,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            connections: 2,
            queue_depth: 4096,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            auth: None,
            loops: LoopSet::default(),
        }
    }
}

/// Why a request to a storage node got no reply. Every message names the node, because the
/// proxy talks to many and the error may end up in a client's reply or a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The request's deadline passed, queueing included.
    #[error("storage node {addr} did not answer within {timeout:?}")]
    Timeout {
        /// The node.
        addr: SocketAddr,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// The connection failed, or is down and waiting to reconnect.
    #[error("storage node {addr} unavailable: {reason}")]
    Unavailable {
        /// The node.
        addr: SocketAddr,
        /// What went wrong, for the log.
        reason: String,
    },
    /// `try_call` found the connection's queue full.
    #[error("storage node {addr} request queue full")]
    Busy {
        /// The node.
        addr: SocketAddr,
    },
    /// The pool was dropped while the request waited.
    #[error("connection pool to storage node {addr} closed")]
    Closed {
        /// The node.
        addr: SocketAddr,
    },
    /// The node sent something that is not RESP2, so nothing after it can be trusted.
    #[error("protocol error from storage node {addr}: {reason}")]
    Protocol {
        /// The node.
        addr: SocketAddr,
        /// The decoder's complaint.
        reason: String,
    },
}

impl PoolError {
    /// The storage node the request was for.
    pub fn addr(&self) -> SocketAddr {
        match self {
            PoolError::Timeout { addr, .. }
            | PoolError::Unavailable { addr, .. }
            | PoolError::Busy { addr }
            | PoolError::Closed { addr }
            | PoolError::Protocol { addr, .. } => *addr,
        }
    }
}

/// A snapshot of the pool's counters, for the metrics endpoint and INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests holding a queue slot: queued for a writer or awaiting their reply.
    pub in_flight: u64,
    /// Writes made, each carrying one batch of requests.
    pub batches: u64,
    /// Requests written, summed over batches: `batched_requests / batches` is the mean
    /// batch size, the figure that shows whether pipelining works.
    pub batched_requests: u64,
    /// Connections established again after one failed.
    pub reconnects: u64,
    /// Requests that failed with [`PoolError::Timeout`].
    pub timeouts: u64,
    /// Connections currently established.
    pub connections_up: u64,
}

/// Counters shared by the pool and its connection tasks. None is updated per request: the
/// event loops share them, and a count both loops update moves between their cores each
/// time (requests in flight are read off the connections' queue room instead).
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    batched_requests: AtomicU64,
    reconnects: AtomicU64,
    timeouts: AtomicU64,
    connections_up: AtomicU64,
}

/// A request's place in its connection's queue; giving it back (on drop, whatever path the
/// request took) frees room for the next caller, and so counts it out of
/// [`PoolStats::in_flight`].
struct QueueSlot {
    _permit: OwnedSemaphorePermit,
}

type ReplySender = oneshot::Sender<Result<BytesFrame, PoolError>>;
type ReplyReceiver = oneshot::Receiver<Result<BytesFrame, PoolError>>;

/// A request on its way to the writer.
struct Request {
    args: Vec<Bytes>,
    reply: ReplySender,
    deadline: Instant,
    slot: QueueSlot,
}

impl Request {
    /// Answers the request with `error` without sending it, freeing its queue slot first.
    fn fail(self, error: PoolError) {
        let Request { reply, slot, .. } = self;
        drop(slot);
        let _ = reply.send(Err(error));
    }
}

/// A request written (or about to be) whose reply has not arrived.
struct Waiting {
    reply: ReplySender,
    deadline: Instant,
    _slot: QueueSlot,
}

impl Waiting {
    /// Frees the queue slot before waking the caller, so a caller that has its reply never
    /// sees its own request still counted in flight.
    fn complete(self, result: Result<BytesFrame, PoolError>) {
        let Waiting { reply, _slot, .. } = self;
        drop(_slot);
        let _ = reply.send(result);
    }
}

/// What the writer and reader of one connection share.
struct Shared {
    /// Requests in the order they were written, so in the order their replies will come.
    waiting: Mutex<VecDeque<Waiting>>,
    /// Wakes the reader when the queue goes from empty to not, to arm its deadline timer.
    written: Notify,
    /// Set by the reader when it delivers a reply: the connection worked, so a failure after
    /// it reconnects without waiting.
    delivered: AtomicBool,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, VecDeque<Waiting>> {
        // Never held across an await or a panic point that leaves the queue inconsistent.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The caller's side of one connection.
struct Conn {
    queue: mpsc::Sender<Request>,
    room: Arc<Semaphore>,
    /// Down (callers fail fast) or serving (its reader keeps their deadlines).
    state: Arc<ConnState>,
}

/// Whether a connection is backing off between attempts, and why, so callers can fail fast
/// with the reason; and whether it is serving, so callers know its reader keeps their
/// deadlines.
#[derive(Default)]
struct ConnState {
    down: AtomicBool,
    reason: Mutex<String>,
    serving: AtomicBool,
}

impl ConnState {
    fn set_down(&self, reason: &str) {
        reason.clone_into(&mut self.reason.lock().unwrap_or_else(|p| p.into_inner()));
        self.down.store(true, Ordering::Release);
    }

    fn clear_down(&self) {
        self.down.store(false, Ordering::Release);
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }
}

/// Pooled, pipelined connections to one storage node. Cheap to share behind an `Arc`;
/// dropping it closes the connections and fails whatever still waits with
/// [`PoolError::Closed`].
pub struct NodePool {
    addr: SocketAddr,
    config: PoolConfig,
    conns: Vec<Conn>,
    next: AtomicUsize,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for NodePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePool")
            .field("addr", &self.addr)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl NodePool {
    /// Starts the connection tasks on the configured loops (or, with none, on the current
    /// tokio runtime, so it must then be called inside one). Connecting happens in the
    /// background: requests made meanwhile wait for the first attempt rather than fail.
    /// `connections` and `queue_depth` below 1 are taken as 1.
    pub fn new(addr: SocketAddr, config: PoolConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let queue_depth = config.queue_depth.max(1);
        let conns = (0..config.connections.max(1))
            .map(|i| {
                let (queue, requests) = mpsc::channel(queue_depth);
                let state = Arc::new(ConnState::default());
                let task = ConnTask {
                    addr,
                    config: config.clone(),
                    counters: Arc::clone(&counters),
                    state: Arc::clone(&state),
                };
                config.loops.spawn(i, task.run(requests));
                Conn {
                    queue,
                    room: Arc::new(Semaphore::new(queue_depth)),
                    state,
                }
            })
            .collect();
        NodePool {
            addr,
            config,
            conns,
            next: AtomicUsize::new(0),
            counters,
        }
    }

    /// The node this pool talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one command (its arguments, name first) and waits for its reply, waiting for
    /// queue room if the connection is saturated. An error reply from the node (`-ERR …`) is a
    /// reply, not a [`PoolError`]: only the transport failing is.
    pub async fn call(&self, args: Vec<Bytes>) -> Result<BytesFrame, PoolError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        self.call_on(start, args).await
    }

    /// [`call`](Self::call) on the connection chosen by `affinity` (modulo the connection
    /// count; the next one if it is down). Requests of one affinity queued in some order are
    /// run by the node in that order: the proxy uses the shard, so a pipeline's writes and
    /// reads of one key keep their order however many connections there are.
    pub async fn call_on(
        &self,
        affinity: usize,
        args: Vec<Bytes>,
    ) -> Result<BytesFrame, PoolError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let result = async {
            let conn = self.pick_from(affinity)?;
            let permit = match Arc::clone(&conn.room).try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => return Err(self.closed()),
                // Only a caller that finds the queue full arms a timer of its own.
                Err(TryAcquireError::NoPermits) => {
                    match tokio::time::timeout_at(deadline, Arc::clone(&conn.room).acquire_owned())
                        .await
                    {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) => return Err(self.closed()),
                        Err(_) => return Err(self.timeout()),
                    }
                }
            };
            self.send(conn, args, permit, deadline).await
        }
        .await;
        self.count(result)
    }

    /// Queues a request on the connection [`call_on`](Self::call_on) would choose, without
    /// waiting, and returns where its reply will arrive; `None` (the request dropped) when
    /// queueing it would mean waiting: the connection is not serving yet, or has no queue
    /// room. Lets a caller keep many requests in flight without a future for each. The
    /// request's deadline, the request timeout after `now` (when the caller received it),
    /// is kept by its connection, as for a `call_on` on a serving one; pass what the
    /// [`Pending`] gives to [`count`](Self::count).
    pub fn start_on(
        &self,
        affinity: usize,
        args: Vec<Bytes>,
        now: std::time::Instant,
    ) -> Option<Pending> {
        let conn = self.pick_from(affinity).ok()?;
        if !conn.state.is_serving() {
            return None;
        }
        let permit = Arc::clone(&conn.room).try_acquire_owned().ok()?;
        let deadline = Instant::from_std(now) + self.config.request_timeout;
        let (request, answer) = self.request(args, permit, deadline);
        conn.queue.try_send(request).ok()?;
        Some(Pending {
            answer,
            addr: self.addr,
        })
    }

    /// Like [`call`](Self::call), but fails at once with [`PoolError::Busy`] instead of
    /// waiting when the chosen connection's queue is full: for callers that would rather shed
    /// load than queue behind a slow node.
    pub async fn try_call(&self, args: Vec<Bytes>) -> Result<BytesFrame, PoolError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let result = async {
            let conn = self.pick()?;
            let permit = match Arc::clone(&conn.room).try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits) => return Err(PoolError::Busy { addr: self.addr }),
                Err(TryAcquireError::Closed) => return Err(self.closed()),
            };
            self.send(conn, args, permit, deadline).await
        }
        .await;
        self.count(result)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        let c = &self.counters;
        // Room a connection's queue lacks is held by its requests in flight.
        let room = self.config.queue_depth.max(1);
        let in_flight = self
            .conns
            .iter()
            .map(|conn| room.saturating_sub(conn.room.available_permits()) as u64)
            .sum();
        PoolStats {
            in_flight,
            batches: c.batches.load(Ordering::Relaxed),
            batched_requests: c.batched_requests.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            connections_up: c.connections_up.load(Ordering::Relaxed),
        }
    }

    /// The next connection round-robin, skipping those backing off; if all are, the error
    /// says why the chosen one is down.
    fn pick(&self) -> Result<&Conn, PoolError> {
        self.pick_from(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The connection `start` modulo the count (among the caller's loop's connections when
    /// it runs on one of the pool's loops), or the next one up.
    fn pick_from(&self, start: usize) -> Result<&Conn, PoolError> {
        let n = self.conns.len();
        if let Some((own, stride, count)) = self.own_connections() {
            for i in 0..count {
                let conn = &self.conns[own + (start + i) % count * stride];
                if !conn.state.is_down() {
                    return Ok(conn);
                }
            }
        }
        for i in 0..n {
            let conn = &self.conns[(start + i) % n];
            if !conn.state.is_down() {
                return Ok(conn);
            }
        }
        Err(PoolError::Unavailable {
            addr: self.addr,
            reason: self.conns[start % n].state.reason(),
        })
    }

    /// The connection a request of `affinity` goes down while it is up, as an index: requests
    /// of one lane run on the node in the order they were made, so a caller that must keep
    /// two requests in order (a pipeline's MSET, then GET of one of its keys) sends both in
    /// one lane.
    pub fn lane(&self, affinity: usize) -> usize {
        match self.own_connections() {
            Some((own, stride, count)) => own + affinity % count * stride,
            None => affinity % self.conns.len(),
        }
    }

    /// The caller's loop's connections, when it runs on one of the pool's loops and that loop
    /// has any: they are `own`, `own + stride`, … (`count` of them).
    fn own_connections(&self) -> Option<(usize, usize, usize)> {
        let own = self.config.loops.index_of_current()?;
        let stride = self.config.loops.len();
        let n = self.conns.len();
        (own < n).then(|| (own, stride, (n - 1 - own) / stride + 1))
    }

    async fn send(
        &self,
        conn: &Conn,
        args: Vec<Bytes>,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<BytesFrame, PoolError> {
        let (request, answer) = self.request(args, permit, deadline);
        conn.queue.send(request).await.map_err(|_| self.closed())?;
        // A serving connection keeps the deadline itself: its writer answers a request that
        // expired in the queue, its reader fails the connection when the oldest written one
        // expires. Only a request queued while the connection is being made needs a timer.
        // (If the connection fails just after this check, the request waits for the next one
        // to be made, at most the connect timeout, and is then sent or answered.)
        if conn.state.is_serving() {
            return answer.await.map_err(|_| self.closed())?;
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer.map_err(|_| self.closed())?,
            Err(_) => Err(self.timeout()),
        }
    }

    /// A request holding its queue slot, and where its reply will arrive.
    fn request(
        &self,
        args: Vec<Bytes>,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> (Request, ReplyReceiver) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            args,
            reply,
            deadline,
            slot: QueueSlot { _permit: permit },
        };
        (request, answer)
    }

    /// Counts a request's outcome in the pool's figures (a timeout), and passes it on; the
    /// pool's own calls do it, a [`Pending`]'s holder does it once the reply is in (or
    /// [`count_failure`](Self::count_failure) for a failure).
    pub fn count(&self, result: Result<BytesFrame, PoolError>) -> Result<BytesFrame, PoolError> {
        if let Err(err) = &result {
            self.count_failure(err);
        }
        result
    }

    /// [`count`](Self::count) of a request that failed with `err`.
    pub fn count_failure(&self, err: &PoolError) {
        if matches!(err, PoolError::Timeout { .. }) {
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn timeout(&self) -> PoolError {
        PoolError::Timeout {
            addr: self.addr,
            timeout: self.config.request_timeout,
        }
    }

    fn closed(&self) -> PoolError {
        PoolError::Closed { addr: self.addr }
    }
}

/// The reply of a request queued by [`NodePool::start_on`].
pub struct Pending {
    answer: ReplyReceiver,
    addr: SocketAddr,
}

impl Future for Pending {
    type Output = Result<BytesFrame, PoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let addr = self.addr;
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(PoolError::Closed { addr })))
    }
}

/// Why a connection ended.
enum Failure {
    /// The pool was dropped.
    Closed,
    /// The oldest waiting request passed its deadline.
    Timeout,
    /// Connect, read or write failed, or the node closed the connection.
    Io(String),
    /// The node sent something undecodable, or a reply nobody asked for.
    Protocol(String),
}

/// The background side of one connection: connects, runs writer and reader, reconnects.
struct ConnTask {
    addr: SocketAddr,
    config: PoolConfig,
    counters: Arc<Counters>,
    state: Arc<ConnState>,
}

impl ConnTask {
    async fn run(self, mut requests: mpsc::Receiver<Request>) {
        let mut backoff = self.config.backoff_min;
        let mut connected_before = false;
        let mut wait = false;
        loop {
            if wait {
                // Fail fast while waiting: a caller learns the node is down now, not after
                // its timeout.
                let until = Instant::now() + backoff;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        request = requests.recv() => match request {
                            Some(request) => {
                                request.fail(self.error(&Failure::Io(self.state.reason())));
                            }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
            let stream = match tokio::time::timeout(
                self.config.connect_timeout,
                TcpStream::connect(self.addr),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    self.state.set_down(&format!("connect failed: {err}"));
                    wait = true;
                    continue;
                }
                Err(_) => {
                    let timeout = self.config.connect_timeout;
                    self.state
                        .set_down(&format!("connect timed out after {timeout:?}"));
                    wait = true;
                    continue;
                }
            };
            // Requests are small and already batched: Nagle would only add latency.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(addr = %self.addr, %err, "set_nodelay failed");
            }
            let mut stream = stream;
            if let Some(secret) = &self.config.auth {
                let handshake = present_secret(&mut stream, secret);
                match tokio::time::timeout(self.config.connect_timeout, handshake).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        tracing::warn!(addr = %self.addr, %reason, "storage node refused the proxy");
                        self.state.set_down(&reason);
                        wait = true;
                        continue;
                    }
                    Err(_) => {
                        self.state.set_down("no answer to the cluster secret");
                        wait = true;
                        continue;
                    }
                }
            }
            if connected_before {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            connected_before = true;
            self.state.clear_down();
            self.counters.connections_up.fetch_add(1, Ordering::Relaxed);

            let (failure, worked) = self.serve(stream, &mut requests).await;
            self.counters.connections_up.fetch_sub(1, Ordering::Relaxed);
            if let Failure::Closed = failure {
                return;
            }
            let reason = match &failure {
                Failure::Timeout => "a request timed out".to_owned(),
                Failure::Io(reason) | Failure::Protocol(reason) => reason.clone(),
                Failure::Closed => return,
            };
            tracing::warn!(addr = %self.addr, %reason, "storage node connection failed");
            self.state.set_down(&reason);
            // Reconnect at once if the connection was working; back off if it never did,
            // so a node that accepts and drops us is not hammered.
            if worked {
                backoff = self.config.backoff_min;
                self.state.clear_down();
            }
            wait = !worked;
        }
    }

    /// Runs one established connection until it fails; fails every request still waiting on
    /// it. Returns why it ended and whether it ever delivered a reply.
    async fn serve(
        &self,
        stream: TcpStream,
        requests: &mut mpsc::Receiver<Request>,
    ) -> (Failure, bool) {
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            waiting: Mutex::new(VecDeque::new()),
            written: Notify::new(),
            delivered: AtomicBool::new(false),
        });
        let mut reader = tokio::spawn(read_replies(read, Arc::clone(&shared)));
        let expired = self.error(&Failure::Timeout);
        self.state.set_serving(true);
        let failure = tokio::select! {
            failure = write_requests(write, requests, &shared, &self.counters, &expired) => failure,
            joined = &mut reader => joined
                .unwrap_or_else(|err| Failure::Io(format!("reply reader failed: {err}"))),
        };
        self.state.set_serving(false);
        reader.abort();
        let error = self.error(&failure);
        let waiting = std::mem::take(&mut *shared.waiting());
        for request in waiting {
            request.complete(Err(error.clone()));
        }
        (failure, shared.delivered.load(Ordering::Relaxed))
    }

    fn error(&self, failure: &Failure) -> PoolError {
        let addr = self.addr;
        match failure {
            Failure::Closed => PoolError::Closed { addr },
            Failure::Timeout => PoolError::Timeout {
                addr,
                timeout: self.config.request_timeout,
            },
            Failure::Io(reason) => PoolError::Unavailable {
                addr,
                reason: reason.clone(),
            },
            Failure::Protocol(reason) => PoolError::Protocol {
                addr,
                reason: reason.clone(),
            },
        }
    }
}

/// The writer: one buffer and one write per wakeup, however many requests are queued. A
/// request whose deadline passed while it was queued (say, while the connection was being
/// made) is answered `expired` instead of being sent.
async fn write_requests(
    mut write: OwnedWriteHalf,
    requests: &mut mpsc::Receiver<Request>,
    shared: &Shared,
    counters: &Counters,
    expired: &PoolError,
) -> Failure {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut batch = Vec::new();
    loop {
        let Some(first) = requests.recv().await else {
            return Failure::Closed;
        };
        let mut next = Some(first);
        let mut taken = 0;
        let now = Instant::now();
        while let Some(request) = next {
            taken += 1;
            // A request past its deadline is answered, not sent; one whose caller gave up
            // before it was written is skipped: nothing will wait for that reply.
            if request.deadline <= now {
                request.fail(expired.clone());
            } else if !request.reply.is_closed() {
                encode_request(&request.args, &mut buf);
                batch.push(Waiting {
                    reply: request.reply,
                    deadline: request.deadline,
                    _slot: request.slot,
                });
            }
            next = if taken < MAX_BATCH {
                requests.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .batched_requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Recorded before writing, so no reply can arrive for a request the reader does not
        // know about.
        shared.waiting().extend(batch.drain(..));
        shared.written.notify_one();
        if let Err(err) = write.write_all(&buf).await {
            return Failure::Io(format!("write failed: {err}"));
        }
        buf.clear();
        if buf.capacity() > KEEP_WRITE_BUFFER {
            buf = Vec::with_capacity(16 * 1024);
        }
    }
}

/// The reader: completes the oldest waiting request with each reply, and declares the
/// connection dead when the oldest request passes its deadline.
///
/// One timer per connection, armed at the oldest request's deadline and moved only when it
/// fires early (the request it was armed for was answered): a timer set and cancelled per
/// request cost the proxy a wake-up write to its own event loop for about every third
/// request, since the timer driver is woken whenever a deadline is sooner than its next one.
async fn read_replies(mut read: OwnedReadHalf, shared: Arc<Shared>) -> Failure {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed = false;
    loop {
        loop {
            match decode_bytes_mut(&mut buf) {
                Ok(Some((frame, _, _))) => {
                    let Some(request) = shared.waiting().pop_front() else {
                        return Failure::Protocol("a reply nobody asked for".to_owned());
                    };
                    shared.delivered.store(true, Ordering::Relaxed);
                    request.complete(Ok(frame));
                }
                Ok(None) => break,
                Err(err) => return Failure::Protocol(err.to_string()),
            }
        }
        if !armed {
            if let Some(oldest) = shared.waiting().front().map(|request| request.deadline) {
                timer.as_mut().reset(oldest);
                armed = true;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        tokio::select! {
            biased;
            read = read.read_buf(&mut buf) => match read {
                Ok(0) => return Failure::Io("connection closed by the node".to_owned()),
                Ok(_) => {}
                Err(err) => return Failure::Io(format!("read failed: {err}")),
            },
            () = &mut timer, if armed => {
                armed = false;
                let oldest = shared.waiting().front().map(|request| request.deadline);
                if oldest.is_some_and(|deadline| deadline <= Instant::now()) {
                    return Failure::Timeout;
                }
            }
            () = shared.written.notified() => {}
        }
    }
}

/// Presents the cluster secret on a new connection and waits for `+OK`.
async fn present_secret(stream: &mut TcpStream, secret: &Bytes) -> Result<(), String> {
    let mut request = Vec::with_capacity(secret.len() + 32);
    encode_request(&[Bytes::from_static(b"AUTH"), secret.clone()], &mut request);
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("sending the cluster secret failed: {e}"))?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        let read = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("reading the answer to the cluster secret failed: {e}"))?;
        if read == 0 {
            return Err("the node closed the connection instead of accepting the secret".into());
        }
        match decode_bytes_mut(&mut buf) {
            Ok(Some((BytesFrame::SimpleString(ok), _, _))) if &ok[..] == b"OK" => return Ok(()),
            Ok(Some((BytesFrame::Error(e), _, _))) => {
                return Err(format!("the node refused the cluster secret: {e}"))
            }
            Ok(Some((other, _, _))) => {
                return Err(format!(
                    "unexpected answer to the cluster secret: {other:?}"
                ))
            }
            Ok(None) => continue,
            Err(e) => return Err(format!("undecodable answer to the cluster secret: {e}")),
        }
    }
}

/// Encodes a request as Redis clients do: a multibulk array of bulk strings.
fn encode_request(args: &[Bytes], buf: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    buf.push(b'*');
    buf.extend_from_slice(digits.format(args.len()).as_bytes());
    buf.extend_from_slice(b"\r\n");
    for arg in args {
        buf.push(b'$');
        buf.extend_from_slice(digits.format(arg.len()).as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}
