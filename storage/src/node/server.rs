//! The node's port: proxies' connections, each a task that reads every request available,
//! runs them in order, makes the batch's writes survive a crash, and writes all the replies
//! in one syscall (the proxy's pool pipelines, so a batch is often hundreds of requests).
//!
//! What a connection may send:
//! - `SHARD <shard> <epoch> <command…>`: a data command, run if [`Ownership::check`] allows;
//! - `SHARDS <epoch> <command…>`: a multi-key command whose keys are in several shards, run
//!   if [`Ownership::check`] allows every key's shard, refused whole otherwise;
//! - `SHARD <shard> <epoch> WATCHING|TRANSACTION …`: a client's WATCH and EXEC through a
//!   proxy (see `transactions`);
//! - `PING`, `INFO`, `QUIT`: for operators and health checks.

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringkv_common::command::{self, flag, CommandSpec, Route};
use ringkv_common::internal::{
    open_envelope, open_shards_envelope, secret_matches, Envelope, Refusal, AUTH, NOAUTH_NODE,
    SHARD, SHARDS, WRONG_SECRET,
};
use ringkv_common::metrics::names;
use ringkv_common::resp::{Parsed, Protocol, Reply, RequestLimits, RequestParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ownership::Ownership;
use crate::tally::Tally;
use crate::{Deferred, Scope, Storage, WriteGroup};

/// Read buffer growth step, and so the most one read takes in. A proxy's connection
/// carries the requests of many clients, and under load each read filled a 64 KiB buffer;
/// every read is a batch with costs of its own (its turn's engine write, where the two
/// loops meet in RocksDB's write thread, and its log write), and a quarter as many batches
/// took cluster MSET -P 16 from ~95k to ~115k requests/s and the node's CPU per request
/// down 12-20% (512 KiB measured the same as 256).
const READ_CHUNK: usize = 256 * 1024;

/// Replies gathered beyond this are written mid-batch.
const FLUSH_AT: usize = 1024 * 1024;

/// Most requests gathered into one engine write.
const MAX_GATHERED: usize = 1024;

/// What every connection of the node shares.
pub struct NodeContext {
    /// This node's id, for INFO.
    pub id: String,
    /// The engine.
    pub storage: Arc<Storage>,
    /// Which shards are served, at which epoch.
    pub ownership: Arc<Ownership>,
    /// Open connections (proxies and operators).
    pub connections: AtomicU64,
    /// Requests run, for INFO (per thread: every request adds to it).
    pub commands: Tally,
    /// Requests refused with MOVED or STALE, for INFO.
    pub refused: AtomicU64,
    /// The cluster secret every connection must present first; `None`: no check.
    pub secret: Option<Bytes>,
}

/// Consecutive gatherable requests of one batch (`SHARD … SET k v`, `SHARD … MSET …`,
/// `SHARD … INCR k`, `SHARDS … MSET …`…), run as one engine write at the first request that
/// is not one, or at the end of the batch (before any reply leaves), as the standalone server
/// does for its clients: each request still takes effect between its arrival and its reply,
/// in order.
#[derive(Default)]
struct Gathering {
    group: WriteGroup,
    /// The replies of the last group run, reused from group to group.
    replies: Vec<Reply>,
    /// The loop turns this batch's groups wait in, for [`end_batch`].
    deferred: Deferred,
}

impl Gathering {
    /// Takes `args` into the group (moving the inner command's arguments out; the caller
    /// clears the rest) if it is gatherable and this node may run it now (served shards and
    /// epoch, keys in the envelope's shard, no per-write sync); otherwise leaves it to
    /// [`handle`], which answers it (or refuses it) on its own.
    fn absorb(&mut self, ctx: &NodeContext, args: &mut Vec<Bytes>) -> bool {
        let Some(Ok((shard, epoch, inner))) = open_enveloped(args) else {
            return false;
        };
        let Some((spec, what)) = command::gatherable(inner) else {
            return false;
        };
        if ctx.storage.may_block(spec) {
            return false;
        }
        let admitted = match shard {
            Some(shard) => {
                ctx.ownership.check(Envelope { shard, epoch }).is_ok()
                    && ctx.storage.in_scope(shard, spec, inner).is_ok()
            }
            None => keys_served(ctx, epoch, spec, inner).is_ok(),
        };
        if !admitted {
            return false;
        }
        ctx.commands.add(1);
        let from = args.len() - inner.len();
        self.group.push(spec, what, args, from, shard);
        true
    }

    /// Runs the gathered requests, if any, and encodes their replies; returns whether any
    /// was answered as written (an error acknowledges nothing: see [`end_batch`]).
    fn run(&mut self, ctx: &NodeContext, output: &mut BytesMut) -> bool {
        if self.group.is_empty() {
            return false;
        }
        ctx.storage
            .execute_group(&mut self.group, &mut self.replies, &mut self.deferred);
        self.group.clear();
        let mut wrote = false;
        for reply in self.replies.drain(..) {
            wrote |= !reply.is_error();
            reply.encode(Protocol::Resp2, output);
        }
        wrote
    }
}

/// Counts a connection for as long as it lives.
struct Connected<'a>(&'a AtomicU64);

impl<'a> Connected<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Connected(counter)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until it closes, breaks the protocol, or `stop` turns true (after
/// finishing the batch in progress).
pub async fn serve(mut stream: TcpStream, ctx: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let _counted = Connected::new(&ctx.connections);
    let _turn = ctx.storage.ends_turn();
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "cannot disable Nagle's algorithm");
    }
    let peer = stream.peer_addr().ok();
    match run(&mut stream, &ctx, &mut stop).await {
        Ok(()) => tracing::debug!(?peer, "connection closed"),
        Err(err) => tracing::debug!(?peer, %err, "connection failed"),
    }
}

async fn run(
    stream: &mut TcpStream,
    ctx: &NodeContext,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut args: Vec<Bytes> = Vec::with_capacity(8);
    let mut authenticated = ctx.secret.is_none();
    let mut gathering = Gathering::default();
    loop {
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = stopped(stop) => return Ok(()),
            read = stream.read_buf(&mut input) => read?,
        };
        if read == 0 {
            return Ok(());
        }
        let mut wrote = false;
        let mut close = false;
        loop {
            match parser.parse(&mut input, &mut args) {
                Ok(Parsed::Request) if !authenticated => {
                    let reply = present_secret(ctx, &args);
                    args.clear();
                    authenticated = matches!(reply, Reply::Ok);
                    reply.encode(Protocol::Resp2, &mut output);
                    if !authenticated {
                        close = true;
                        break;
                    }
                }
                Ok(Parsed::Request) if gathering.absorb(ctx, &mut args) => {
                    args.clear();
                    if gathering.group.len() >= MAX_GATHERED {
                        wrote |= gathering.run(ctx, &mut output);
                    }
                }
                Ok(Parsed::Request) => {
                    wrote |= gathering.run(ctx, &mut output);
                    let (reply, writes, quit) = handle(ctx, &args).await;
                    args.clear();
                    wrote |= writes;
                    reply.encode(Protocol::Resp2, &mut output);
                    if quit {
                        close = true;
                        break;
                    }
                    if output.len() >= FLUSH_AT {
                        let deferred = std::mem::take(&mut gathering.deferred);
                        end_batch(ctx, std::mem::take(&mut wrote), deferred).await?;
                        stream.write_all(&output).await?;
                        output.clear();
                    }
                }
                Ok(Parsed::Empty) => args.clear(),
                Ok(Parsed::Incomplete) => break,
                Err(err) => {
                    wrote |= gathering.run(ctx, &mut output);
                    Reply::error_owned(format!("ERR {err}")).encode(Protocol::Resp2, &mut output);
                    close = true;
                    break;
                }
            }
        }
        wrote |= gathering.run(ctx, &mut output);
        end_batch(ctx, wrote, std::mem::take(&mut gathering.deferred)).await?;
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if close {
            return Ok(());
        }
    }
}

/// The reply to a connection's first request when the node has a secret: `+OK` for
/// `AUTH <secret>`, an error (after which the connection is closed) for anything else.
fn present_secret(ctx: &NodeContext, args: &[Bytes]) -> Reply {
    let Some(secret) = &ctx.secret else {
        return Reply::Ok;
    };
    match args {
        [name, given] if name.eq_ignore_ascii_case(AUTH) => {
            if secret_matches(given, secret) {
                Reply::Ok
            } else {
                tracing::warn!("a peer presented a wrong cluster secret");
                WRONG_SECRET
            }
        }
        _ => NOAUTH_NODE,
    }
}

/// Makes a batch's writes survive a crash (per the fsync policy) before its replies leave.
/// When it cannot (a full disk, say), the batch's writes are in memory only: the error
/// closes the connection with none of its replies sent, and the proxy answers the requests
/// on it with an error, not an acknowledgement. A batch whose writes all failed has nothing
/// to make durable (`wrote` is false) and gets its errors.
async fn end_batch(ctx: &NodeContext, wrote: bool, deferred: Deferred) -> io::Result<()> {
    // A batch whose groups wait in a turn settles it whatever its replies were: the groups
    // hold key locks until it is applied.
    if !wrote && deferred.is_empty() {
        return Ok(());
    }
    // Group commit, as the standalone server does (`Backend::end_batch`): the other
    // connections ready now run their batches first, and one log write covers them all.
    let mark = ctx.storage.write_mark();
    tokio::task::yield_now().await;
    let result = if ctx.storage.end_batch_blocks() {
        let storage = Arc::clone(&ctx.storage);
        match tokio::task::spawn_blocking(move || storage.end_batch(mark, deferred)).await {
            Ok(result) => result.map_err(|err| err.to_string()),
            // The sync did not finish (it panicked, or the runtime is shutting down).
            Err(err) => Err(err.to_string()),
        }
    } else {
        ctx.storage
            .end_batch(mark, deferred)
            .map_err(|err| err.to_string())
    };
    result.map_err(|err| {
        tracing::error!(%err, "writing the WAL failed: closing the connection without its replies");
        io::Error::other(format!("writing the WAL failed: {err}"))
    })
}

/// The reply to one request, whether it may have written, and whether to close after it.
async fn handle(ctx: &NodeContext, args: &[Bytes]) -> (Reply, bool, bool) {
    let name = &args[0];
    if let Some(opened) = open_enveloped(args) {
        let (reply, wrote) = match opened {
            Ok((shard, epoch, inner)) => run_enveloped(ctx, shard, epoch, inner).await,
            Err(reply) => (reply, false),
        };
        return (reply, wrote, false);
    }
    let reply = if name.eq_ignore_ascii_case(b"ping") {
        match args.len() {
            1 => Reply::status("PONG"),
            2 => Reply::Bulk(args[1].clone()),
            _ => command::wrong_arity("ping"),
        }
    } else if name.eq_ignore_ascii_case(b"info") {
        let keyspace = args[1..].iter().any(|a| {
            [&b"keyspace"[..], b"all", b"everything"]
                .iter()
                .any(|w| a.eq_ignore_ascii_case(w))
        });
        // The walk runs on another thread: this one's pending writes go first.
        ctx.storage.end_turn();
        let storage = Arc::clone(&ctx.storage);
        let stats = tokio::task::spawn_blocking(move || storage.read_stats(keyspace))
            .await
            .unwrap_or_default();
        Reply::Verbatim(Bytes::from(info(ctx, &stats, keyspace)))
    } else if name.eq_ignore_ascii_case(b"quit") {
        return (Reply::Ok, false, true);
    } else if name.eq_ignore_ascii_case(AUTH) {
        // Already authenticated (or no secret): a repeated AUTH changes nothing.
        Reply::Ok
    } else {
        Reply::error(
            "ERR this is a ringkv storage node: send commands to a ringkv proxy \
             (only SHARD, SHARDS, PING, INFO and QUIT are served here)",
        )
    };
    (reply, false, false)
}

/// An opened envelope: the shard it names (none for `SHARDS`, whose keys each name theirs),
/// the map epoch, and the command.
type Opened<'a> = (Option<u32>, u64, &'a [Bytes]);

/// Opens a `SHARD` or `SHARDS` envelope; `None` for any other request.
fn open_enveloped(args: &[Bytes]) -> Option<Result<Opened<'_>, Reply>> {
    if args[0].eq_ignore_ascii_case(SHARD) {
        Some(
            open_envelope(args)
                .map(|(envelope, inner)| (Some(envelope.shard), envelope.epoch, inner)),
        )
    } else if args[0].eq_ignore_ascii_case(SHARDS) {
        Some(open_shards_envelope(args).map(|(epoch, inner)| (None, epoch, inner)))
    } else {
        None
    }
}

/// Runs an enveloped command if this node serves its shard at `epoch` (`SHARD`), or every
/// key's shard (`SHARDS`, refused whole, before running any of it, otherwise).
async fn run_enveloped(
    ctx: &NodeContext,
    shard: Option<u32>,
    epoch: u64,
    inner: &[Bytes],
) -> (Reply, bool) {
    if let Some(shard) = shard.filter(|_| super::transactions::is_transactional(inner)) {
        return super::transactions::run(ctx, shard, epoch, inner).await;
    }
    let spec = match command::resolve(inner) {
        Ok(spec) => spec,
        Err(reply) => return (reply, false),
    };
    let unroutable = match shard {
        Some(_) if spec.route == Route::Local => {
            Some("is not a data command and cannot run in a shard")
        }
        None if !matches!(spec.route, Route::MultiKey | Route::SingleShard) => {
            Some("has no keys to route by and cannot run in SHARDS")
        }
        _ => None,
    };
    if let Some(why) = unroutable {
        return (
            Reply::error_owned(format!("ERR '{}' {why}", spec.name)),
            false,
        );
    }
    let admitted = match shard {
        Some(shard) => ctx
            .ownership
            .check(Envelope { shard, epoch })
            .map_err(Unserved::Refused),
        None => keys_served(ctx, epoch, spec, inner),
    };
    match admitted {
        Ok(()) => {
            let scope = shard.map_or(Scope::All, Scope::Shard);
            run_scoped(ctx, scope, spec, inner).await
        }
        Err(Unserved::Refused(refusal)) => (refused(ctx, refusal), false),
        Err(Unserved::NotHosted(shard)) => (
            Reply::error_owned(format!("ERR shard {shard} is not hosted here")),
            false,
        ),
    }
}

/// Why an enveloped request cannot be served here.
enum Unserved {
    /// Not at this epoch: the proxy routes again.
    Refused(Refusal),
    /// Served by the map, but not opened here (a bug, reported to the client).
    NotHosted(u32),
}

/// Whether every key of `args` is in a shard this node serves (and hosts) at `epoch`.
fn keys_served(
    ctx: &NodeContext,
    epoch: u64,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Result<(), Unserved> {
    // One snapshot of the map for every key: the part is refused or run whole.
    let snapshot = ctx.ownership.snapshot();
    for i in spec.key_indexes(args.len()) {
        let shard = ctx.storage.shard(&args[i]);
        snapshot
            .check(Envelope { shard, epoch })
            .map_err(Unserved::Refused)?;
        if !ctx.storage.hosts(shard) {
            return Err(Unserved::NotHosted(shard));
        }
    }
    Ok(())
}

/// Counts a refusal and gives the reply that carries it.
pub(super) fn refused(ctx: &NodeContext, refusal: Refusal) -> Reply {
    ctx.refused.fetch_add(1, Ordering::Relaxed);
    let reason = match refusal {
        Refusal::Moved { .. } => "moved",
        Refusal::Stale { .. } => "stale",
    };
    metrics::counter!(names::STORAGE_REFUSED, "reason" => reason).increment(1);
    refusal.reply()
}

/// Runs an admitted data command in `scope`, on a blocking thread if it may wait for a
/// disk sync; returns its reply and whether it may have written and answered as if it did
/// (an error acknowledges nothing: see [`end_batch`]).
async fn run_scoped(
    ctx: &NodeContext,
    scope: Scope,
    spec: &'static CommandSpec,
    inner: &[Bytes],
) -> (Reply, bool) {
    ctx.commands.add(1);
    let wrote = |reply: &Reply| spec.has(flag::WRITE) && !reply.is_error();
    if !ctx.storage.may_block(spec) {
        let reply = ctx.storage.execute_in(scope, spec, inner);
        let wrote = wrote(&reply);
        return (reply, wrote);
    }
    ctx.storage.end_turn();
    let storage = Arc::clone(&ctx.storage);
    let owned = inner.to_vec();
    let reply = tokio::task::spawn_blocking(move || storage.execute_in(scope, spec, &owned))
        .await
        .unwrap_or_else(|err| {
            tracing::error!(command = spec.name, %err, "storage engine failed");
            Reply::error("ERR internal error in the storage engine")
        });
    let wrote = wrote(&reply);
    (reply, wrote)
}

/// INFO: the node's identity, map epoch, shards, connections and engine counters, as
/// `field:value` lines; with `keyspace` (INFO keyspace / all) also its live keys, as Redis's
/// `db0` line (counting walks every shard).
fn info(ctx: &NodeContext, stats: &crate::StorageStats, keyspace: bool) -> String {
    let view = ctx.ownership.view();
    let mut text = String::new();
    let _ = write!(
        text,
        "# Server\r\nringkv_version:{}\r\nrole:storage\r\nnode_id:{}\r\nprocess_id:{}\r\n\
         \r\n# Clients\r\nconnected_clients:{}\r\n\
         \r\n# Cluster\r\nmap_epoch:{}\r\nserved_shards:{}\r\nhosted_shards:{}\r\n\
         \r\n# Stats\r\ntotal_commands_processed:{}\r\nrefused_requests:{}\r\n\
         expired_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        ctx.id,
        std::process::id(),
        ctx.connections.load(Ordering::Relaxed),
        view.epoch,
        view.served_count(),
        ctx.storage.hosted().len(),
        ctx.commands.sum(),
        ctx.refused.load(Ordering::Relaxed),
        stats.expired_keys,
        stats.keyspace_hits,
        stats.keyspace_misses,
    );
    if keyspace {
        let _ = write!(
            text,
            "\r\n# Keyspace\r\ndb0:keys={},expires={},avg_ttl=0\r\n",
            stats.keys, stats.expires
        );
    }
    text
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
