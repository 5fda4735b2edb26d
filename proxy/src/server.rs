//! The listener: accepts clients, one task each, until told to stop; then drains the
//! connections and flushes the engine.
//!
//! Stopping is ordered so that nothing acknowledged is lost: first no new connections, then
//! every connection finishes the batch it is running and writes its replies, then the
//! backend is flushed, and only then does `run` return.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::backend::Backend;
use crate::config::Config;
use crate::connection;
use crate::context::{ServerContext, Settings};
use crate::shutdown::ShutdownController;
use ringkv_common::event_loops::EventLoops;

/// How long shutdown waits for connections to finish their current batch before flushing
/// anyway: long enough for any single batch, short enough for a service manager's timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Redis's reply to a connection over `maxclients`, sent before closing it.
const TOO_MANY_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";

/// A bound listener and the state its connections will share.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    /// The event-loop threads connections are served on; `None`: the caller's runtime (a
    /// cluster backend whose node connections were not put on loops).
    loops: Option<EventLoops>,
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be listened on (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The event-loop threads could not be started (out of threads or memory).
    #[error("cannot start the event-loop threads: {0}")]
    EventLoops(io::Error),
    /// The engine could not make the last writes durable.
    #[error("flushing the storage engine failed: {0}")]
    Flush(String),
}

impl Server {
    /// Listens on the configured address; connections are accepted once [`Server::run`]
    /// starts.
    pub async fn bind(config: &Config, backend: Backend) -> Result<Server, ServerError> {
        let addr = SocketAddr::new(config.bind, config.port);
        let loops = match backend {
            Backend::Local(_) => {
                let count = config.event_loops.map(usize::from);
                Some(EventLoops::count_or_per_core(count).map_err(ServerError::EventLoops)?)
            }
            Backend::Remote(_) => None,
        };
        Server::bind_with(addr, |local| Settings::new(config, local), backend, loops).await
    }

    /// Listens on `addr`; `settings` receives the address actually bound (the chosen port
    /// when 0 was asked for) and gives what CONFIG GET and INFO report. In front of the
    /// local engine, connections are served on event loops of their own (one per core); in
    /// front of a cluster, on the caller's runtime (see [`Server::bind_on_loops`]).
    pub async fn bind_addr(
        addr: SocketAddr,
        settings: impl FnOnce(SocketAddr) -> Settings,
        backend: Backend,
    ) -> Result<Server, ServerError> {
        let loops = match backend {
            Backend::Local(_) => Some(EventLoops::per_core().map_err(ServerError::EventLoops)?),
            Backend::Remote(_) => None,
        };
        Server::bind_with(addr, settings, backend, loops).await
    }

    /// [`Server::bind_addr`] serving connections on `loops`: the proxy's, whose node
    /// connections (`PoolConfig::loops`) run there too, so that a client's request stays on
    /// one thread all the way to the node and back.
    pub async fn bind_on_loops(
        addr: SocketAddr,
        settings: impl FnOnce(SocketAddr) -> Settings,
        backend: Backend,
        loops: EventLoops,
    ) -> Result<Server, ServerError> {
        Server::bind_with(addr, settings, backend, Some(loops)).await
    }

    async fn bind_with(
        addr: SocketAddr,
        settings: impl FnOnce(SocketAddr) -> Settings,
        backend: Backend,
        loops: Option<EventLoops>,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let ctx = Arc::new(ServerContext::new(settings(local), backend));
        // Room for every allowed client plus the server's own files and connections.
        let want = ctx.settings.limits.maxclients + 128;
        let got = crate::process::raise_open_files_limit(want);
        if got < want {
            tracing::warn!(
                maxclients = ctx.settings.limits.maxclients,
                open_files = got,
                "the open-file limit is below maxclients: raise it (ulimit -n) or lower --maxclients"
            );
        }
        Ok(Server {
            listener,
            ctx,
            loops,
        })
    }

    /// The address actually listened on (the chosen port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.ctx.settings.addr
    }

    /// The state shared by the connections.
    pub fn context(&self) -> &Arc<ServerContext> {
        &self.ctx
    }

    /// Serves clients until `stop` completes (e.g. [`crate::shutdown::terminate_signal`]),
    /// then drains the connections and flushes the backend.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            listener,
            ctx,
            loops,
        } = self;
        let controller = ShutdownController::new();
        let sampler = tokio::spawn({
            let ctx = Arc::clone(&ctx);
            async move { ctx.stats.sample_rates().await }
        });
        tokio::select! {
            () = accept_loop(&listener, &ctx, &controller, loops.as_ref()) => {}
            () = stop => {}
        }
        drop(listener);
        let clients = ctx.stats.connected_clients.load(Relaxed);
        tracing::info!(
            clients,
            "shutting down: no new connections, finishing requests in progress"
        );
        if !controller.shutdown(DRAIN_GRACE).await {
            tracing::warn!(grace = ?DRAIN_GRACE, "some connections did not finish in time");
        }
        sampler.abort();
        drop(loops);
        ctx.backend.flush().await.map_err(ServerError::Flush)?;
        tracing::info!("storage flushed, bye");
        Ok(())
    }
}

/// Accepts forever; a failed accept (out of file descriptors, usually) is logged and retried
/// after a pause rather than ending the server.
async fn accept_loop(
    listener: &TcpListener,
    ctx: &Arc<ServerContext>,
    controller: &ShutdownController,
    loops: Option<&EventLoops>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                if ctx.stats.connected_clients.load(Relaxed) >= ctx.settings.limits.maxclients {
                    reject(stream, ctx);
                    continue;
                }
                let (ctx, shutdown) = (Arc::clone(ctx), controller.subscribe());
                match loops {
                    Some(loops) => loops.serve(stream, move |stream| {
                        connection::serve(stream, ctx, shutdown)
                    }),
                    None => {
                        tokio::spawn(connection::serve(stream, ctx, shutdown));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Turns a connection away over maxclients, telling it why, as Redis does.
fn reject(mut stream: TcpStream, ctx: &ServerContext) {
    ctx.stats.rejected_connections.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        let _ = stream.write_all(TOO_MANY_CLIENTS).await;
    });
}
