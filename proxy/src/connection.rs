//! One client connection: bytes in, requests out to the dispatcher, replies back, in order.
//!
//! Pipelining is served in batches: after each read, every complete request in the buffer is
//! parsed and run in order, every reply is encoded into one output buffer, and that buffer is
//! written with one `write` (a pipeline of 100 GETs costs one read and one write syscall,
//! not a hundred of each). Arguments are slices of the read buffer (no copy), and the
//! argument vector is reused from request to request, so a request costs no allocation beyond
//! its reply's.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringkv_common::command::{self, CommandSpec, Route};
use ringkv_common::resp::{Parsed, Reply, RequestParser};
use ringkv_common::transaction::Queued;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{Answer, Started};
use crate::cmd;
use crate::context::{ServerContext, TCP_KEEPALIVE_SECS};
use crate::dispatch::{authorize, dispatch};
use crate::session::{Session, MAX_QUEUED_BYTES};
use crate::shutdown::Shutdown;
use crate::stats::{BatchCounts, ClientGuard};
use crate::tls::{ClientStream, Tls};
use ringkv_storage::{Deferred, WriteGroup};

/// Initial read buffer: Redis's default query buffer chunk. Most requests are far smaller,
/// so one read usually takes a whole pipeline batch; larger requests grow it as needed.
const READ_CHUNK: usize = 16 * 1024;

/// Read into the buffer only with at least this much room, so that reads stay large.
const MIN_READ_ROOM: usize = 4 * 1024;

/// Write the replies gathered so far once they reach this size, even mid-batch, so a huge
/// pipeline does not hold all of its replies in memory at once.
const FLUSH_AT: usize = 256 * 1024;

/// Buffers that grew past this for one large request or reply are given back once empty,
/// so an idle connection does not keep megabytes.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// Most requests of one client in flight to storage nodes at once; beyond it the connection
/// waits for their replies before starting more, which bounds its memory.
const MAX_IN_FLIGHT: usize = 256;

/// Argument vectors a connection keeps for reuse, and the largest it keeps (in arguments):
/// a pipeline of 16 requests to storage nodes, MSETs of 10 keys included, then allocates
/// none, and an idle connection holds at most 16 KiB of them.
const SPARE_ARGS: usize = 16;
const SPARE_ARGS_CAPACITY: usize = 32;

/// A reply in request order: known, or still on its way from a storage node.
enum InFlight<'a> {
    Done(Reply),
    /// Sent at once by `Backend::send_now`: no future of its own (a boxed future per
    /// request, its copy and its polling were a fifth of the proxy's CPU at -P 16). Its
    /// arguments are kept in case the node refuses it and it must be sent again.
    Sent {
        started: Started,
        spec: &'static CommandSpec,
        args: Vec<Bytes>,
        at: Instant,
    },
    Waiting(Pin<Box<dyn Future<Output = Reply> + Send + 'a>>),
}

/// What a batch leaves the connection to do.
enum Next {
    /// Read more requests.
    Read,
    /// Write what is buffered, then close (QUIT, or a protocol error).
    Close,
}

/// The answer to a command queued inside MULTI.
const QUEUED: Reply = Reply::status("QUEUED");

/// How long a TLS client may take to complete its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection and its buffers.
pub struct Connection {
    stream: ClientStream,
    input: BytesMut,
    output: BytesMut,
    parser: RequestParser,
    /// The arguments of the request being parsed; cleared, not freed, between requests.
    args: Vec<Bytes>,
    /// Emptied argument vectors of answered requests, for the next requests sent to a node
    /// (such a request keeps its own until answered, in case it must be sent again).
    spare_args: Vec<Vec<Bytes>>,
    session: Session,
    counts: BatchCounts,
    /// Whether a command since the last flush wrote to the engine.
    wrote: bool,
    /// Consecutive gatherable requests of this batch, to run as one write.
    gathering: Gathering,
}

/// Consecutive gatherable requests of one batch (plain `SET key value`, `MSET`, `INCR`,
/// `DECR`, `INCRBY`, `DECRBY`), run as one engine write under one round of key locks, so a
/// pipeline of them costs one engine write and one log append instead of a lock, a read and
/// a write each. Running them together at the first request that is not one (or at the end
/// of the batch, before any reply is sent) is indistinguishable for every client: each
/// request still takes effect between its arrival and its reply, in order, and sees the
/// writes of the requests before it (see `WriteGroup`).
#[derive(Default)]
struct Gathering {
    group: WriteGroup,
    /// Each gathered request's table entry, for the per-command metrics.
    specs: Vec<&'static CommandSpec>,
    /// The replies of the last group run, reused from group to group.
    replies: Vec<Reply>,
    /// The loop turns this batch's groups wait in, for `Backend::end_batch`.
    deferred: Deferred,
}

impl Gathering {
    /// Takes `args` into the group (moving its arguments out; the caller clears the rest) if
    /// it is gatherable and the session may run it; otherwise leaves it to dispatch (which
    /// answers NOAUTH / NOPERM in order).
    fn absorb(&mut self, args: &mut Vec<Bytes>, session: &Session) -> bool {
        let Some((spec, what)) = command::gatherable(args) else {
            return false;
        };
        if authorize(session, spec, args).is_err() {
            return false;
        }
        self.group.push(spec, what, args, 0, None);
        self.specs.push(spec);
        true
    }
}

/// Serves one accepted client until it disconnects, sends QUIT, breaks the protocol, or the
/// server shuts down (after finishing the batch in progress).
pub async fn serve(stream: TcpStream, ctx: Arc<ServerContext>, mut shutdown: Shutdown) {
    let _client = ClientGuard::new(&ctx.stats);
    let _turn = ctx.backend.ends_turn();
    let mut conn = match Connection::new(stream, &ctx) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::debug!(%err, "connection lost before it started");
            return;
        }
    };
    let registered = ctx.clients.register(&conn.session);
    conn.session.listed = Some(Arc::clone(registered.listed()));
    if let Some(tls) = &ctx.settings.tls {
        if let Err(err) = conn.start_tls(tls).await {
            tracing::debug!(peer = %conn.session.peer, %err, "TLS handshake failed");
            return;
        }
    }
    let peer = conn.session.peer;
    match conn.run(&ctx, &mut shutdown).await {
        Ok(()) => tracing::debug!(%peer, id = conn.session.id, "client closed"),
        Err(err) => tracing::debug!(%peer, id = conn.session.id, %err, "client connection error"),
    }
}

/// Completes after `seconds` (never, for 0): `--timeout`, Redis's idle-client limit.
async fn idle_for(seconds: u64) {
    if seconds == 0 {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

/// Keeps an answered request's argument vector, emptied, for a later request, unless enough
/// are kept already or it grew large for one big request.
fn keep_spare(spare_args: &mut Vec<Vec<Bytes>>, mut args: Vec<Bytes>) {
    if spare_args.len() < SPARE_ARGS && args.capacity() <= SPARE_ARGS_CAPACITY {
        args.clear();
        spare_args.push(args);
    }
}

impl Connection {
    /// Runs the TLS handshake (bounded by [`TLS_HANDSHAKE_TIMEOUT`]); from then on the
    /// connection speaks TLS.
    pub async fn start_tls(&mut self, tls: &Tls) -> io::Result<()> {
        let plain = std::mem::replace(&mut self.stream, ClientStream::Closed);
        let ClientStream::Plain(tcp) = plain else {
            self.stream = plain;
            return Err(io::Error::other("TLS is already running"));
        };
        let tls_stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = ClientStream::Tls(Box::new(tls_stream));
        Ok(())
    }

    /// Sets the socket up (no Nagle delay: replies go out as soon as they are written;
    /// keepalive probes to notice dead peers) and starts a session.
    pub fn new(stream: TcpStream, ctx: &ServerContext) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        let keepalive =
            socket2::TcpKeepalive::new().with_time(Duration::from_secs(TCP_KEEPALIVE_SECS));
        if let Err(err) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%err, "cannot enable TCP keepalive");
        }
        let mut session = Session::new(
            stream.peer_addr()?,
            stream.local_addr()?,
            stream.as_raw_fd(),
        );
        session.user = ctx.settings.acl.initial_user();
        Ok(Connection {
            stream: ClientStream::Plain(stream),
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(READ_CHUNK),
            parser: RequestParser::new(ctx.limits),
            args: Vec::with_capacity(8),
            spare_args: Vec::new(),
            session,
            counts: BatchCounts::default(),
            wrote: false,
            gathering: Gathering::default(),
        })
    }

    /// Reads, runs and answers batches until the connection ends.
    async fn run(&mut self, ctx: &ServerContext, shutdown: &mut Shutdown) -> io::Result<()> {
        // Replies of a batch in request order; empty between batches, kept for the next.
        let mut in_flight = Vec::new();
        let listed = self.session.listed.clone();
        let killed = async {
            match &listed {
                Some(listed) => listed.killed().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(killed);
        loop {
            if self.input.capacity() - self.input.len() < MIN_READ_ROOM {
                self.input.reserve(READ_CHUNK);
            }
            let idle = ctx.settings.limits.timeout;
            let read = tokio::select! {
                biased;
                () = shutdown.recv() => return Ok(()),
                () = &mut killed => {
                    tracing::debug!(peer = %self.session.peer, "closing a client CLIENT KILL named");
                    return Ok(());
                }
                read = self.stream.read_buf(&mut self.input) => read?,
                () = idle_for(idle) => {
                    tracing::debug!(peer = %self.session.peer, idle, "closing an idle client");
                    return Ok(());
                }
            };
            if read == 0 {
                return Ok(());
            }
            self.counts.input_bytes += read as u64;
            let next = self.run_batch(ctx, &mut in_flight).await?;
            if let Some(listed) = &listed {
                listed.touch(self.session.last_command);
            }
            self.flush(ctx).await?;
            if matches!(next, Next::Close) || shutdown.is_shutdown() {
                return Ok(());
            }
            if self.input.is_empty() && self.input.capacity() > SHRINK_ABOVE {
                self.input = BytesMut::with_capacity(READ_CHUNK);
            }
        }
    }

    /// Runs every complete request in the input buffer, encoding the replies in order.
    ///
    /// Through a cluster, the data commands of a batch are all sent before any reply is
    /// awaited (each shard's requests go down one node connection in order, so a pipeline's
    /// SET then GET of one key still run in that order); a command the connection answers
    /// itself (HELLO, CLIENT…) first waits for the replies before it, since it may change how
    /// they are encoded.
    async fn run_batch<'c>(
        &mut self,
        ctx: &'c ServerContext,
        in_flight: &mut Vec<InFlight<'c>>,
    ) -> io::Result<Next> {
        let concurrent = !ctx.backend.coalesces_writes();
        let next = self.run_requests(ctx, concurrent, in_flight).await;
        self.settle(ctx, in_flight).await;
        next
    }

    /// The body of [`run_batch`](Self::run_batch).
    async fn run_requests<'c>(
        &mut self,
        ctx: &'c ServerContext,
        concurrent: bool,
        in_flight: &mut Vec<InFlight<'c>>,
    ) -> io::Result<Next> {
        // Whether every request in flight was sent at once. A request that could not be
        // (its future sends it when first polled) holds back the ones after it until the
        // next settle, so that requests reach each shard's connection in pipeline order.
        let mut all_sent = true;
        // When the batch's requests arrived: one clock read for all of them, for their
        // latency metric and their deadline at the node.
        let mut batch_at = None;
        loop {
            match self.parser.parse(&mut self.input, &mut self.args) {
                Ok(Parsed::Request) if self.session.transaction.is_some() => {
                    self.settle(ctx, in_flight).await;
                    all_sent = true;
                    if let Some(next) = self.queue(ctx).await? {
                        return Ok(next);
                    }
                }
                Ok(Parsed::Request) if concurrent => match command::resolve(&self.args) {
                    Ok(spec) if spec.route != Route::Local => {
                        self.session.last_command = Some(spec);
                        if let Err(reply) = authorize(&self.session, spec, &self.args) {
                            ctx.stats.commands.reject(spec);
                            self.args.clear();
                            in_flight.push(InFlight::Done(reply));
                            continue;
                        }
                        let at = *batch_at.get_or_insert_with(Instant::now);
                        let spare = self.spare_args.pop();
                        let args = std::mem::replace(
                            &mut self.args,
                            spare.unwrap_or_else(|| Vec::with_capacity(8)),
                        );
                        let (backend, stats) = (&ctx.backend, &ctx.stats);
                        match all_sent
                            .then(|| backend.send_now(spec, &args, at))
                            .flatten()
                        {
                            Some(started) => in_flight.push(InFlight::Sent {
                                started,
                                spec,
                                args,
                                at,
                            }),
                            None => {
                                all_sent = false;
                                in_flight.push(InFlight::Waiting(Box::pin(async move {
                                    let reply = backend.execute(spec, &args).await;
                                    stats.record_command(spec, reply.is_error(), at.elapsed());
                                    reply
                                })));
                            }
                        }
                        self.counts.commands += 1;
                        if in_flight.len() >= MAX_IN_FLIGHT {
                            self.settle(ctx, in_flight).await;
                            all_sent = true;
                            if self.output.len() >= FLUSH_AT {
                                self.flush(ctx).await?;
                            }
                        }
                    }
                    Ok(_) => {
                        self.settle(ctx, in_flight).await;
                        all_sent = true;
                        if let Some(next) = self.run_one(ctx).await? {
                            return Ok(next);
                        }
                    }
                    Err(reply) => {
                        let named = command::named(&self.args).ok();
                        if let Some(spec) = named {
                            ctx.stats.commands.reject(spec);
                            self.session.last_command = Some(spec);
                        }
                        let reply = cmd::transaction::refused(&mut self.session, named, reply);
                        self.args.clear();
                        in_flight.push(InFlight::Done(reply));
                    }
                },
                Ok(Parsed::Request)
                    if ctx.backend.coalesces_writes()
                        && self.gathering.absorb(&mut self.args, &self.session) =>
                {
                    self.session.last_command = self.gathering.specs.last().copied();
                    self.args.clear()
                }
                Ok(Parsed::Request) => {
                    if let Some(next) = self.run_one(ctx).await? {
                        return Ok(next);
                    }
                }
                Ok(Parsed::Empty) => self.args.clear(),
                // A partly received request keeps its arguments for the next read.
                Ok(Parsed::Incomplete) => {
                    self.run_gathered(ctx).await;
                    return Ok(Next::Read);
                }
                Err(err) => {
                    self.run_gathered(ctx).await;
                    self.settle(ctx, in_flight).await;
                    tracing::debug!(peer = %self.session.peer, %err, "protocol error, closing");
                    self.push(ctx, &Reply::error_owned(format!("ERR {err}")));
                    return Ok(Next::Close);
                }
            }
        }
    }

    /// Waits for every reply in flight and encodes them all, in request order.
    async fn settle<'c>(&mut self, ctx: &'c ServerContext, in_flight: &mut Vec<InFlight<'c>>) {
        if in_flight.is_empty() {
            return;
        }
        let (backend, stats, slowlog) = (&ctx.backend, &ctx.stats, &ctx.slowlog);
        let spare_args = &mut self.spare_args;
        let session = &self.session;
        poll_fn(|cx| {
            let mut done = true;
            // One clock read, and one lookup of this thread's counts, for every reply this
            // poll finds.
            let mut now = None;
            let mut local = None;
            for slot in in_flight.iter_mut() {
                if let InFlight::Sent {
                    started,
                    spec,
                    args,
                    at,
                } = slot
                {
                    let (spec, at) = (*spec, *at);
                    match backend.poll_answer(started, cx) {
                        Poll::Ready(Answer::Reply(reply)) => {
                            let took = now.get_or_insert_with(Instant::now).duration_since(at);
                            let local = local.get_or_insert_with(|| stats.commands.local());
                            stats.record_command_with(local, spec, reply.is_error(), took);
                            slowlog.note(spec, args, took, session);
                            keep_spare(spare_args, std::mem::take(args));
                            *slot = InFlight::Done(reply);
                        }
                        // Refused, so it did not run: sent again by a future, polled below.
                        Poll::Ready(Answer::Refused(refused)) => {
                            let args = std::mem::take(args);
                            *slot = InFlight::Waiting(Box::pin(async move {
                                let reply = backend.retry(refused, &args).await;
                                stats.record_command(spec, reply.is_error(), at.elapsed());
                                reply
                            }));
                        }
                        Poll::Pending => done = false,
                    }
                }
                if let InFlight::Waiting(reply) = slot {
                    match reply.as_mut().poll(cx) {
                        Poll::Ready(reply) => *slot = InFlight::Done(reply),
                        Poll::Pending => done = false,
                    }
                }
            }
            if done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        for slot in in_flight.drain(..) {
            if let InFlight::Done(reply) = slot {
                self.push(ctx, &reply);
            }
        }
    }

    /// Runs the parsed request on its own (after the requests gathered before it);
    /// returns what the batch must do next if the request ends it.
    async fn run_one(&mut self, ctx: &ServerContext) -> io::Result<Option<Next>> {
        self.run_gathered(ctx).await;
        let outcome = dispatch(&mut self.session, ctx, &self.args).await;
        self.args.clear();
        self.counts.commands += u64::from(outcome.ran) + outcome.inner_commands;
        self.counts.errors += outcome.inner_errors;
        self.wrote |= outcome.wrote;
        self.push(ctx, &outcome.reply);
        if self.session.closing {
            return Ok(Some(Next::Close));
        }
        if self.output.len() >= FLUSH_AT {
            self.flush(ctx).await?;
        }
        Ok(None)
    }

    /// Inside MULTI: queues the parsed request for EXEC and answers QUEUED, or runs it at
    /// once if Redis does (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET). A request that cannot
    /// be queued (unknown, wrong arity, not permitted, or one a cluster cannot run in a
    /// transaction) gets its error and fails the transaction: EXEC will answer EXECABORT.
    async fn queue(&mut self, ctx: &ServerContext) -> io::Result<Option<Next>> {
        let named = command::named(&self.args).ok();
        if named.is_some_and(|spec| cmd::transaction::runs_at_once(spec.cmd)) {
            return self.run_one(ctx).await;
        }
        if named.is_some() {
            self.session.last_command = named;
        }
        let refusal = match command::resolve(&self.args) {
            Ok(spec) => match authorize(&self.session, spec, &self.args)
                .err()
                .or_else(|| ctx.backend.transaction_refusal(spec))
            {
                Some(refusal) => refusal,
                None => {
                    let spare = self.spare_args.pop().unwrap_or_default();
                    let args = std::mem::replace(&mut self.args, spare);
                    let pushed = match self.session.transaction.as_mut() {
                        Some(transaction) => {
                            transaction.push(Queued { spec, args }, MAX_QUEUED_BYTES)
                        }
                        None => Ok(()),
                    };
                    self.session.publish();
                    self.push(ctx, pushed.as_ref().err().unwrap_or(&QUEUED));
                    return Ok(None);
                }
            },
            Err(reply) => reply,
        };
        if let Some(spec) = named {
            ctx.stats.commands.reject(spec);
        }
        let reply = cmd::transaction::refused(&mut self.session, named, refusal);
        self.args.clear();
        self.push(ctx, &reply);
        Ok(None)
    }

    /// Runs the requests gathered so far as one engine write and answers each of them.
    async fn run_gathered(&mut self, ctx: &ServerContext) {
        if self.gathering.group.is_empty() {
            return;
        }
        let Gathering {
            group,
            specs,
            replies,
            deferred,
        } = &mut self.gathering;
        let started = Instant::now();
        ctx.backend.execute_group(group, replies, deferred).await;
        // Every request of the group waited for the whole group.
        let took = started.elapsed();
        self.counts.commands += replies.len() as u64;
        ctx.stats.record_group(specs, replies, took);
        if ctx.slowlog.is_slow(took) {
            for (spec, args) in specs.iter().zip(group.requests()) {
                ctx.slowlog.note_named(spec, args, took, &self.session);
            }
        }
        group.clear();
        specs.clear();
        for reply in replies.drain(..) {
            if reply.is_error() {
                self.counts.errors += 1;
                ctx.stats.commands.error(&reply);
            }
            // An error acknowledges nothing (see `Outcome::wrote`).
            self.wrote |= !reply.is_error();
            reply.encode(self.session.protocol, &mut self.output);
        }
    }

    /// Encodes a reply in the session's protocol (after the command ran: HELLO 3's own reply
    /// is already RESP3).
    fn push(&mut self, ctx: &ServerContext, reply: &Reply) {
        if reply.is_error() {
            self.counts.errors += 1;
            ctx.stats.commands.error(reply);
        }
        reply.encode(self.session.protocol, &mut self.output);
    }

    /// Writes the buffered replies and adds the batch's figures to the server's counters.
    /// Replies to writes leave only once the engine has made those writes survive a killed
    /// process; when it could not, none of the batch's replies leave and the connection
    /// closes, so the client sees what a crash would show it, not an acknowledgement.
    async fn flush(&mut self, ctx: &ServerContext) -> io::Result<()> {
        // A batch whose groups wait in a turn settles it whatever its replies were: the
        // groups hold key locks until it is applied.
        let deferred = std::mem::take(&mut self.gathering.deferred);
        if std::mem::take(&mut self.wrote) || !deferred.is_empty() {
            if let Err(err) = ctx.backend.end_batch(deferred).await {
                tracing::error!(
                    peer = %self.session.peer,
                    %err,
                    "writing the WAL failed: closing the connection without its replies"
                );
                self.output.clear();
                return Err(io::Error::other(format!("writing the WAL failed: {err}")));
            }
        }
        let counts = std::mem::take(&mut self.counts);
        let written = self.output.len();
        ctx.stats.add_batch(BatchCounts {
            output_bytes: written as u64,
            ..counts
        });
        if written > 0 {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            if self.output.capacity() > SHRINK_ABOVE {
                self.output = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        Ok(())
    }
}
