//! Connections served by event-loop threads: one single-threaded tokio runtime per core,
//! each owning the connections it is given from accept to close, as Redis's and nginx's
//! event loops do.
//!
//! With the multi-threaded runtime, every readiness event could wake a task on the other
//! worker, and its idle worker had to be woken with a futex (~0.9 per request at
//! `redis-benchmark -P 1`), besides work stealing between the two queues. Here a
//! connection's task is only ever polled by its own thread: a request costs its read and its
//! write, and a turn of the loop runs every connection that is ready before the engine's log
//! is written once for all of them (see `Backend::end_batch`).
//!
//! Other tasks can live on a loop too ([`LoopSet`]): the proxy runs its connections to each
//! storage node on every loop, so a client's request, the node connection that carries it
//! and the reply all stay on one thread, and a loop turn sends the requests of every client
//! that was ready in one write (see `pool`). A task asks which loop it runs on with
//! [`current_loop`].

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How long a loop's runtime waits, when the server stops, for blocking engine calls its
/// connections started; the connections themselves are drained before that.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Identities handed to loops, unique in the process, so a task can tell its loop from the
/// loops of another server in the same process (tests run several).
static NEXT_LOOP_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The identity of the loop this thread runs, if it is one.
    static CURRENT_LOOP: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The identity of the event loop the caller runs on (`None` off the loops): with
/// [`LoopSet::index_of_current`], it tells a task which of a set's loops it is on.
pub fn current_loop() -> Option<usize> {
    CURRENT_LOOP.with(Cell::get)
}

/// The event-loop threads of one server.
pub struct EventLoops {
    loops: Vec<EventLoop>,
    /// The identity of the first loop; the others follow in order.
    first_id: usize,
}

/// Where tasks can be spawned to run on a set of loops, one per index, and how a task finds
/// its own loop's index. Cheap to clone; an empty set means "the caller's runtime".
#[derive(Debug, Clone, Default)]
pub struct LoopSet {
    handles: Vec<Handle>,
    first_id: usize,
}

impl LoopSet {
    /// How many loops.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether the set has no loops (tasks then run on the caller's runtime).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Spawns `task` on loop `index` (modulo the count), or on the caller's runtime when the
    /// set is empty.
    pub fn spawn<F>(&self, index: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(task);
        } else {
            self.handles[index % self.handles.len()].spawn(task);
        }
    }

    /// The index in this set of the loop the caller runs on, if it runs on one of them.
    pub fn index_of_current(&self) -> Option<usize> {
        let index = current_loop()?.checked_sub(self.first_id)?;
        (index < self.handles.len()).then_some(index)
    }
}

/// One thread and its runtime.
struct EventLoop {
    handle: Handle,
    /// Connections it serves now, to give the next one to the least busy loop.
    connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Counts a connection on its loop for as long as it lives.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventLoops {
    /// Starts `threads` loops (at least one), and returns once every loop thread runs: a
    /// server that answers after this has all its loops up, named as `top -H` shows them.
    pub fn start(threads: usize) -> io::Result<EventLoops> {
        let count = threads.max(1);
        let first_id = NEXT_LOOP_ID.fetch_add(count, Ordering::Relaxed);
        let mut loops = Vec::with_capacity(count);
        let (started, starts) = std::sync::mpsc::channel::<()>();
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let started = started.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringkv-loop-{i}"))
                .spawn(move || {
                    CURRENT_LOOP.with(|current| current.set(Some(first_id + i)));
                    // The thread has its name by now (std sets it before running this).
                    let _ = started.send(());
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(STOP_GRACE);
                })?;
            loops.push(EventLoop {
                handle,
                connections: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        drop(started);
        // Built first, so that its drop stops the loops if one is missing.
        let loops = EventLoops { loops, first_id };
        for _ in 0..count {
            starts
                .recv()
                .map_err(|_| io::Error::other("an event-loop thread ended as it started"))?;
        }
        Ok(loops)
    }

    /// The loops, to spawn long-lived tasks on them (the proxy's node connections).
    pub fn set(&self) -> LoopSet {
        LoopSet {
            handles: self.loops.iter().map(|l| l.handle.clone()).collect(),
            first_id: self.first_id,
        }
    }

    /// One loop per core the process may use.
    pub fn per_core() -> io::Result<EventLoops> {
        EventLoops::start(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// `count` loops when given (`--event-loops`: a process sharing a few cores with other
    /// busy ones may serve more with fewer threads), otherwise one per core.
    pub fn count_or_per_core(count: Option<usize>) -> io::Result<EventLoops> {
        match count {
            Some(count) => EventLoops::start(count),
            None => EventLoops::per_core(),
        }
    }

    /// Hands an accepted connection to the loop serving the fewest; `serve` runs there.
    pub fn serve<F>(&self, stream: TcpStream, serve: impl FnOnce(TcpStream) -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(chosen) = self
            .loops
            .iter()
            .min_by_key(|l| l.connections.load(Ordering::Relaxed))
        else {
            return;
        };
        // Leave this runtime's reactor; the loop registers the socket with its own.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(%err, "connection lost before it reached an event loop");
                return;
            }
        };
        chosen.connections.fetch_add(1, Ordering::Relaxed);
        let served = Served(Arc::clone(&chosen.connections));
        chosen.handle.spawn(async move {
            let _served = served;
            match TcpStream::from_std(std_stream) {
                Ok(stream) => serve(stream).await,
                Err(err) => tracing::debug!(%err, "cannot register a connection"),
            }
        });
    }
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        for l in &mut self.loops {
            if let Some(stop) = l.stop.take() {
                let _ = stop.send(());
            }
        }
        for l in &mut self.loops {
            if let Some(thread) = l.thread.take() {
                if thread.join().is_err() {
                    tracing::error!("an event-loop thread panicked");
                }
            }
        }
    }
}

impl std::fmt::Debug for EventLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoops")
            .field("threads", &self.loops.len())
            .finish()
    }
}
