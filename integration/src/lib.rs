//! End-to-end test harness for ringkv: real processes, real sockets, real clients.
//!
//! Crate map:
//! - [`Server`]: starts `ringkv` (on a temporary `--dir`) or a reference `redis-server` on a
//!   free loopback port, waits until it answers `PING`, stops it by pid (SIGTERM, then SIGKILL
//!   after a deadline, or `kill -9` on purpose for durability tests) and kills it on drop.
//! - [`RespClient`]: a deliberately raw client: writes any bytes (valid or malformed), reads
//!   exactly one reply frame, decoded with `redis-protocol` as RESP2 or RESP3, keeping the raw
//!   bytes so tests can compare replies byte for byte.
//! - [`Reply`]: one decoded reply, the same type for RESP2 and RESP3, printable for failures.
//! - Tool lookup ([`ringkv_bin`], [`redis_server_bin`], [`redis_cli_bin`],
//!   [`redis_benchmark_bin`]) that fails with a message saying how to get the tool, and
//!   [`run_with_deadline`] for running them without hanging the suite.
//! - [`cluster::Cluster`]: a whole cluster (etcd, `ringkv-admin`, storage nodes, proxies) on
//!   free loopback ports, with the faults cluster tests inject (kill a node, stop etcd, add a
//!   node and reassign).
//! - [`prometheus::Prometheus`]: a real Prometheus on a free port with a generated config, its
//!   query API over a std-only HTTP GET, and readers for `/metrics` text and PromQL metric
//!   names (for `tests/monitoring.rs`).
//! - [`poll_until`]: the only way tests wait: poll a condition until a deadline, never a fixed
//!   sleep standing in for synchronisation.
//!
//! The binary under test is `$RINGKV_BIN` if set, otherwise `ringkv` in the cargo target
//! profile directory this test executable was built in (`.../release/deps/x` →
//! `.../release/ringkv`). `cargo test -p ringkv-integration` does not build that binary: build
//! it first (`cargo build --release -p ringkv-proxy --bin ringkv`). A missing binary fails the
//! tests loudly; it never skips them.
//!
//! Test files (each starts its own servers on free ports with temporary dirs):
//! - `tests/differential.rs`: a seeded random command stream, ringkv vs redis-server, RESP2
//!   and RESP3 (`DIFF_SEED`, `DIFF_COMMANDS`, `DIFF_HISTORY`, `DIFF_SKIP`: see its header).
//! - `tests/protocol.rs`: malformed and unusual framing, byte-exact against redis-server.
//! - `tests/clients.rs`: the `redis` crate (async): semantics, RESP3, concurrency, expiry.
//! - `tests/durability.rs`: SIGTERM restart, `kill -9` with `--fsync always`, `--in-memory`.
//! - `tests/cli_tools.rs`: `redis-cli`, `redis-benchmark`, and ringkv's own flags.
//! - `tests/cluster.rs`: a real cluster (etcd, storage nodes, proxies): routing across proxies,
//!   CROSSSLOT, live map changes, etcd down, a dead node, connection multiplexing.
//! - `tests/monitoring.rs`: every Grafana dashboard query in grafana/dashboards/ evaluated by a
//!   real Prometheus scraping a real cluster; every metric they name is one the code exports.
//!
//! Environment: `RINGKV_BIN`, `REDIS_SERVER_BIN`, `REDIS_CLI_BIN`, `REDIS_BENCHMARK_BIN`
//! override where the programs are. `tools/redis-as-ringkv.sh` is redis-server behind
//! ringkv's command line: `RINGKV_BIN=integration/tools/redis-as-ringkv.sh cargo test ...`
//! checks the suite itself (everything must pass against it).

pub mod cluster;
pub mod etcd;
pub mod prometheus;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode_range as resp2_decode_range;
use redis_protocol::resp2::types::RangeFrame as Resp2Range;
use redis_protocol::resp3::decode::complete::decode_range as resp3_decode_range;
use redis_protocol::resp3::types::{RangeFrame as Resp3Range, VerbatimStringFormat};

/// How long a server may take from spawn to its first `+PONG`. Generous because RocksDB
/// recovery after `kill -9` replays the WAL, and CI machines have two cores.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Default read timeout of a [`RespClient`]: a server that does not answer within this is
/// hung, not slow.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Tool lookup
// ---------------------------------------------------------------------------------------------

/// The ringkv binary under test: `$RINGKV_BIN`, or `ringkv` next to this test executable's
/// profile directory. Panics with instructions if it does not exist.
pub fn ringkv_bin() -> PathBuf {
    profile_bin("ringkv", "RINGKV_BIN")
}

/// Another workspace binary (`ringkv-storage`, `ringkv-proxy`, `ringkv-admin`): `$env_override`
/// if set, otherwise `name` next to [`ringkv_bin`]'s default location (the cargo profile
/// directory this test executable was built in). Panics with instructions if it is missing, so
/// a test never silently runs against nothing.
pub fn profile_bin(name: &str, env_override: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_override}={} does not name an existing file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe() of the test binary");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps/")
        .join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: build it first with `cargo build --release --workspace --bins` \
         (same CARGO_TARGET_DIR and profile as the tests), or point {env_override} at it",
        path.display()
    );
    path
}

/// Finds `name` in `$PATH` (or the override variable `env_override`); panics with an install
/// hint when it is missing.
pub(crate) fn find_tool(name: &str, env_override: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_override}={} does not name an existing file",
            path.display()
        );
        return path;
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found in PATH: `scripts/install-deps.sh test` installs it (Debian \
                 packages redis-server, redis-tools, etcd-server), or set {env_override} to its path"
            )
        })
}

/// The reference `redis-server` (`$REDIS_SERVER_BIN` or `$PATH`).
pub fn redis_server_bin() -> PathBuf {
    find_tool("redis-server", "REDIS_SERVER_BIN")
}

/// `redis-cli` (`$REDIS_CLI_BIN` or `$PATH`).
pub fn redis_cli_bin() -> PathBuf {
    find_tool("redis-cli", "REDIS_CLI_BIN")
}

/// `redis-benchmark` (`$REDIS_BENCHMARK_BIN` or `$PATH`).
pub fn redis_benchmark_bin() -> PathBuf {
    find_tool("redis-benchmark", "REDIS_BENCHMARK_BIN")
}

// ---------------------------------------------------------------------------------------------
// Waiting and running
// ---------------------------------------------------------------------------------------------

/// Polls `probe` every few milliseconds until it returns `Some`, or panics naming `what` once
/// `timeout` has passed. The short sleep between polls only paces the loop; correctness never
/// depends on it.
pub fn poll_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Raises this test process's soft limit on open files to `want` (tests that hold thousands
/// of sockets); panics if the hard limit is lower.
pub fn raise_open_files_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    if limit.rlim_cur >= want {
        return;
    }
    assert!(
        limit.rlim_max >= want,
        "the hard limit on open files ({}) is below the {want} this test needs: raise it with \
         `ulimit -Hn {want}` (as root)",
        limit.rlim_max
    );
    limit.rlim_cur = want;
    // SAFETY: as above.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// Runs `cmd` to completion with `stdin` as its standard input, killing it and panicking if it
/// is still running after `deadline` (tools like `redis-benchmark` spin forever when the
/// server is gone).
pub fn run_with_deadline(cmd: &mut Command, stdin: &[u8], deadline: Duration) -> Output {
    let described = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {described}: {e}"));
    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let writer = thread::spawn(move || {
        // A tool that exits early closes its stdin; that is its business, not an error here.
        let _ = child_stdin.write_all(&input);
    });
    let stdout = drain_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = drain_in_thread(child.stderr.take().expect("piped stderr"));
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.join().unwrap_or_default();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "{described} still running after {deadline:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Err(e) => panic!("waiting for {described}: {e}"),
        }
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: stderr.join().expect("stderr reader thread"),
    }
}

fn drain_in_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// A free TCP port on 127.0.0.1, found by binding port 0 and dropping the listener. Another
/// process can take it before the server binds; [`Server`] retries on "address in use".
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// Which program a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The binary under test.
    Ringkv,
    /// The reference implementation, `redis-server`, with persistence off.
    Redis,
}

/// How to stop a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, then SIGKILL if it has not exited after [`SHUTDOWN_DEADLINE`].
    Graceful,
    /// SIGKILL at once (`kill -9`): nothing is flushed that was not already durable.
    Kill,
}

/// How a stop went.
#[derive(Debug)]
pub struct Stopped {
    /// The exit status the process reported.
    pub status: ExitStatus,
    /// True when a graceful stop had to fall back to SIGKILL.
    pub needed_sigkill: bool,
}

/// Serialises "pick a port, spawn, wait for PONG" within one test binary, so parallel tests of
/// the same binary never race each other for a port. Other processes may still take it; that
/// is handled by retrying.
static START_LOCK: Mutex<()> = Mutex::new(());

/// One running server process on 127.0.0.1; dropping it kills the process.
pub struct Server {
    flavor: Flavor,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Keeps a temporary data directory alive as long as the server (and its restarts).
    _owned_dir: Option<tempfile::TempDir>,
    /// Holds `server.log` (stdout and stderr of every start) for failure messages.
    logs: tempfile::TempDir,
    extra_args: Vec<OsString>,
}

impl Server {
    /// Starts ringkv with `extra_args` on a fresh temporary `--dir`.
    pub fn ringkv(extra_args: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-data-")
            .tempdir()
            .expect("creating a temporary --dir");
        let path = dir.path().to_path_buf();
        Server::start(Flavor::Ringkv, path, Some(dir), extra_args)
    }

    /// Starts ringkv with `extra_args` on `dir`, which the caller keeps alive.
    pub fn ringkv_in(dir: &Path, extra_args: &[&str]) -> Server {
        Server::start(Flavor::Ringkv, dir.to_path_buf(), None, extra_args)
    }

    /// Starts the reference redis-server (no RDB, no AOF, in the foreground) with `extra_args`.
    pub fn redis(extra_args: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("redis-ref-")
            .tempdir()
            .expect("creating a temporary redis-server dir");
        let path = dir.path().to_path_buf();
        Server::start(Flavor::Redis, path, Some(dir), extra_args)
    }

    fn start(
        flavor: Flavor,
        dir: PathBuf,
        owned_dir: Option<tempfile::TempDir>,
        extra_args: &[&str],
    ) -> Server {
        let logs = tempfile::Builder::new()
            .prefix("ringkv-logs-")
            .tempdir()
            .expect("creating a temporary log dir");
        let mut server = Server {
            flavor,
            child: None,
            port: 0,
            dir,
            _owned_dir: owned_dir,
            logs,
            extra_args: extra_args.iter().map(OsString::from).collect(),
        };
        server.spawn_and_wait();
        server
    }

    /// The program this server runs.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The port it listens on (changes on [`Server::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A `redis://` URL for the `redis` crate.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The data directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A new raw RESP2 connection.
    pub fn connect(&self) -> RespClient {
        RespClient::connect(self.addr()).unwrap_or_else(|e| {
            panic!(
                "connecting to {:?} on {}: {e}\n{}",
                self.flavor,
                self.addr(),
                self.log_tail()
            )
        })
    }

    /// The last lines the server printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read(self.log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- last lines of {:?} log ---\n{}",
            self.flavor,
            lines[start..].join("\n")
        )
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join("server.log")
    }

    /// Stops the process. Returns how it exited; panics if it had already died on its own.
    pub fn stop(&mut self, how: Stop) -> Stopped {
        let mut child = self.child.take().expect("server is not running");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{:?} had already exited with {status} before being stopped\n{}",
                self.flavor,
                self.log_tail()
            );
        }
        let signal = match how {
            Stop::Graceful => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        send_signal(&child, signal);
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        loop {
            match child.try_wait().expect("try_wait on server process") {
                Some(status) => {
                    return Stopped {
                        status,
                        needed_sigkill: false,
                    }
                }
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                None => {
                    send_signal(&child, libc::SIGKILL);
                    let status = child.wait().expect("wait after SIGKILL");
                    return Stopped {
                        status,
                        needed_sigkill: true,
                    };
                }
            }
        }
    }

    /// Starts the same program again on the same `--dir` (on a new port), with `extra_args`
    /// replacing the previous ones. Call after [`Server::stop`].
    pub fn start_again(&mut self, extra_args: &[&str]) {
        assert!(
            self.child.is_none(),
            "start_again while the server is still running"
        );
        self.extra_args = extra_args.iter().map(OsString::from).collect();
        self.spawn_and_wait();
    }

    /// `stop(how)` then `start_again` with the same arguments.
    pub fn restart(&mut self, how: Stop) -> Stopped {
        let stopped = self.stop(how);
        self.spawn_and_wait();
        stopped
    }

    fn command_for(&self, port: u16) -> Command {
        let port = port.to_string();
        match self.flavor {
            Flavor::Ringkv => {
                let mut cmd = Command::new(ringkv_bin());
                cmd.arg("--bind")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(&port)
                    .arg("--dir")
                    .arg(&self.dir);
                cmd.args(&self.extra_args);
                cmd
            }
            Flavor::Redis => {
                let mut cmd = Command::new(redis_server_bin());
                cmd.arg("--port")
                    .arg(&port)
                    .arg("--bind")
                    .arg("127.0.0.1")
                    .arg("--save")
                    .arg("")
                    .arg("--appendonly")
                    .arg("no")
                    .arg("--daemonize")
                    .arg("no")
                    .arg("--dir")
                    .arg(&self.dir);
                cmd.args(&self.extra_args);
                cmd
            }
        }
    }

    fn spawn_and_wait(&mut self) {
        let _guard = START_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("opening the server log");
            let log_err = log.try_clone().expect("cloning the server log handle");
            let mut cmd = self.command_for(port);
            cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
            let described = format!("{cmd:?}");
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {described}: {e}"));
            match wait_ready(&mut child, port, STARTUP_DEADLINE) {
                Ok(()) => {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                Err(Startup::Exited(status)) => {
                    let tail = self.log_tail();
                    let lower = tail.to_lowercase();
                    let port_taken =
                        lower.contains("address already in use") || lower.contains("addrinuse");
                    if port_taken && attempt < ATTEMPTS {
                        continue;
                    }
                    panic!("{described} exited during startup with {status}\n{tail}");
                }
                Err(Startup::Timeout(last)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{described} did not answer PING with +PONG within {STARTUP_DEADLINE:?} \
                         (last attempt: {last})\n{}",
                        self.log_tail()
                    );
                }
            }
        }
        unreachable!("the loop returns or panics");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) with the pid of a child we have not yet reaped (so it cannot have been
    // recycled for another process) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        io::Error::last_os_error()
    );
}

enum Startup {
    Exited(ExitStatus),
    Timeout(String),
}

/// Polls the server with PING until it answers `+PONG`, it exits, or the deadline passes. A
/// `-LOADING` reply or a refused connection just means "not yet".
fn wait_ready(child: &mut Child, port: u16, deadline: Duration) -> Result<(), Startup> {
    let end = Instant::now() + deadline;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut last;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on a starting server") {
            return Err(Startup::Exited(status));
        }
        match ping_once(addr) {
            Ok(()) => {
                // Another process could own this port. A server that failed to bind exits,
                // so make sure ours is still alive, and where the server reports its pid, that
                // it is ours.
                if let Some(status) = child.try_wait().expect("try_wait on a starting server") {
                    return Err(Startup::Exited(status));
                }
                match reported_pid(addr) {
                    Some(pid) if pid != child.id() => {
                        last = format!("port {port} is served by another process (pid {pid})");
                    }
                    _ => return Ok(()),
                }
            }
            Err(e) => last = e,
        }
        if Instant::now() >= end {
            return Err(Startup::Timeout(last));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn ping_once(addr: SocketAddr) -> Result<(), String> {
    let mut client = RespClient::connect_timeout(addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    let reply = client
        .command(&[b"PING"])
        .map_err(|e| format!("PING: {e}"))?;
    match reply {
        Reply::Simple(ref s) if s == b"PONG" => Ok(()),
        // Started with --requirepass: it serves, it just wants AUTH first.
        Reply::Error(ref e) if e.starts_with(b"NOAUTH") => Ok(()),
        other => Err(format!("PING answered {other}")),
    }
}

/// The `process_id:` field of `INFO server`, if the server reports one.
fn reported_pid(addr: SocketAddr) -> Option<u32> {
    let mut client = RespClient::connect_timeout(addr, Duration::from_secs(2)).ok()?;
    let reply = client.command(&["INFO", "server"]).ok()?;
    let text = match reply {
        Reply::Bulk(text) | Reply::Verbatim { data: text, .. } => text,
        _ => return None,
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// Which reply protocol a connection speaks (what `HELLO` last set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, every connection's starting point.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// One decoded reply. RESP2 frames map onto the first six variants; RESP3 may use all.
/// Maps keep the order the decoder reports, which is not the wire order: compare
/// [`Frame::raw`] when order matters.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+...`
    Simple(Vec<u8>),
    /// `-...` or RESP3 `!...` (blob error).
    Error(Vec<u8>),
    /// `:...`
    Integer(i64),
    /// `$...`
    Bulk(Vec<u8>),
    /// `*...`
    Array(Vec<Reply>),
    /// `$-1`, `*-1`, or RESP3 `_`.
    Null,
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,...`
    Double(f64),
    /// RESP3 `(...`
    BigNumber(Vec<u8>),
    /// RESP3 `=...`, with its three-letter format.
    Verbatim {
        /// `txt` or `mkd`.
        format: String,
        /// The text after the format prefix.
        data: Vec<u8>,
    },
    /// RESP3 `%...`
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~...`
    Set(Vec<Reply>),
    /// RESP3 `>...`
    Push(Vec<Reply>),
}

impl Reply {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes of a bulk, simple or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) | Reply::Simple(b) | Reply::Verbatim { data: b, .. } => Some(b),
            _ => None,
        }
    }

    /// True for `-ERR...`-style replies.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => Some(items),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(
            f: &mut fmt::Formatter<'_>,
            open: &str,
            items: &[Reply],
            close: &str,
        ) -> fmt::Result {
            f.write_str(open)?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(close)
        }
        match self {
            Reply::Simple(s) => write!(f, "+{}", escape(s)),
            Reply::Error(e) => write!(f, "(error) {}", escape(e)),
            Reply::Integer(n) => write!(f, "(integer) {n}"),
            Reply::Bulk(b) => write!(f, "\"{}\"", escape(b)),
            Reply::Null => f.write_str("(nil)"),
            Reply::Boolean(b) => write!(f, "(boolean) {b}"),
            Reply::Double(d) => write!(f, "(double) {d}"),
            Reply::BigNumber(n) => write!(f, "(big number) {}", escape(n)),
            Reply::Verbatim { format, data } => {
                write!(f, "(verbatim {format}) \"{}\"", escape(data))
            }
            Reply::Array(items) => list(f, "[", items, "]"),
            Reply::Set(items) => list(f, "set{", items, "}"),
            Reply::Push(items) => list(f, "push[", items, "]"),
            Reply::Map(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One reply as read off the wire: its exact bytes and their decoding.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Exactly the bytes of this one reply.
    pub raw: Vec<u8>,
    /// The decoded reply.
    pub reply: Reply,
}

/// Escapes bytes the way `redis-cli` prints them: printable ASCII as is, `\n`, `\r`, `\t`,
/// `\"`, `\\`, everything else `\xHH`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn slice(buf: &[u8], (start, end): (usize, usize)) -> Vec<u8> {
    buf[start..end].to_vec()
}

fn from_resp2(buf: &[u8], frame: &Resp2Range) -> Reply {
    match frame {
        Resp2Range::SimpleString(r) => Reply::Simple(slice(buf, *r)),
        Resp2Range::Error(r) => Reply::Error(slice(buf, *r)),
        Resp2Range::Integer(n) => Reply::Integer(*n),
        Resp2Range::BulkString(r) => Reply::Bulk(slice(buf, *r)),
        Resp2Range::Array(items) => {
            Reply::Array(items.iter().map(|f| from_resp2(buf, f)).collect())
        }
        Resp2Range::Null => Reply::Null,
    }
}

fn from_resp3(buf: &[u8], frame: &Resp3Range) -> Result<Reply, String> {
    let list = |items: &mut dyn Iterator<Item = &Resp3Range>| -> Result<Vec<Reply>, String> {
        items.map(|f| from_resp3(buf, f)).collect()
    };
    Ok(match frame {
        Resp3Range::BlobString { data, .. } => Reply::Bulk(slice(buf, *data)),
        Resp3Range::BlobError { data, .. } | Resp3Range::SimpleError { data, .. } => {
            Reply::Error(slice(buf, *data))
        }
        Resp3Range::SimpleString { data, .. } => Reply::Simple(slice(buf, *data)),
        Resp3Range::Boolean { data, .. } => Reply::Boolean(*data),
        Resp3Range::Null => Reply::Null,
        Resp3Range::Number { data, .. } => Reply::Integer(*data),
        Resp3Range::Double { data, .. } => Reply::Double(*data),
        Resp3Range::BigNumber { data, .. } => Reply::BigNumber(slice(buf, *data)),
        Resp3Range::VerbatimString { data, format, .. } => Reply::Verbatim {
            format: match format {
                VerbatimStringFormat::Text => "txt".to_string(),
                VerbatimStringFormat::Markdown => "mkd".to_string(),
            },
            data: slice(buf, *data),
        },
        Resp3Range::Array { data, .. } => Reply::Array(list(&mut data.iter())?),
        Resp3Range::Set { data, .. } => Reply::Set(list(&mut data.iter())?),
        Resp3Range::Push { data, .. } => Reply::Push(list(&mut data.iter())?),
        Resp3Range::Map { data, .. } => Reply::Map(
            data.iter()
                .map(|(k, v)| Ok((from_resp3(buf, k)?, from_resp3(buf, v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Resp3Range::Hello { .. } | Resp3Range::ChunkedString(_) => {
            return Err(format!("server sent a client-only RESP3 frame: {frame:?}"))
        }
    })
}

/// Tries to decode one complete frame at the start of `buf`: `Ok(None)` when more bytes are
/// needed, `Ok(Some((reply, len)))` when a frame of `len` bytes is there.
pub fn decode_frame(buf: &[u8], protocol: Protocol) -> Result<Option<(Reply, usize)>, String> {
    match protocol {
        Protocol::Resp2 => match resp2_decode_range(buf) {
            Ok(Some((frame, len))) => Ok(Some((from_resp2(buf, &frame), len))),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("invalid RESP2 reply ({e:?}): \"{}\"", escape(buf))),
        },
        Protocol::Resp3 => match resp3_decode_range(buf) {
            Ok(Some((frame, len))) => Ok(Some((from_resp3(buf, &frame)?, len))),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("invalid RESP3 reply ({e:?}): \"{}\"", escape(buf))),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// Encodes `args` as a RESP multibulk request (`*N\r\n$len\r\narg\r\n...`).
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a connection did after a request, as seen by [`RespClient::read_until_closed`].
#[derive(Debug, PartialEq, Eq)]
pub struct Closing {
    /// Every byte received before the end.
    pub bytes: Vec<u8>,
    /// True when the server closed (EOF or reset); false when the wait timed out with the
    /// connection still open.
    pub closed: bool,
}

/// A blocking RESP client over one TCP connection, for tests that need control over every
/// byte: malformed requests, pipelining, inline commands, both protocol versions.
pub struct RespClient {
    stream: TcpStream,
    buf: Vec<u8>,
    protocol: Protocol,
}

impl RespClient {
    /// Connects, with a [`READ_TIMEOUT`] on reads.
    pub fn connect(addr: SocketAddr) -> io::Result<RespClient> {
        RespClient::connect_timeout(addr, READ_TIMEOUT)
    }

    /// Connects, with `timeout` for the connect and for every read.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<RespClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            stream,
            buf: Vec::new(),
            protocol: Protocol::Resp2,
        })
    }

    /// This end's address: what the server shows as the client's `addr`.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .unwrap_or_else(|e| panic!("the client socket has no local address: {e}"))
    }

    /// The protocol replies are decoded with.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Decodes later replies as `protocol` (call after a successful `HELLO`, or `RESET`).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Changes the read timeout.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    /// Writes `bytes` as they are, in one `write_all`.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes one multibulk request.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        self.send_raw(&encode_command(args))
    }

    /// Reads exactly one complete reply frame (bytes after it stay buffered for the next call).
    pub fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            if !self.buf.is_empty() {
                if let Some((reply, len)) = decode_frame(&self.buf, self.protocol)? {
                    let raw: Vec<u8> = self.buf.drain(..len).collect();
                    return Ok(Frame { raw, reply });
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                    "connection closed by the server with {} bytes of an incomplete reply: \"{}\"",
                    self.buf.len(),
                    escape(&self.buf)
                ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "reading a reply: {e} (have {} bytes: \"{}\")",
                        self.buf.len(),
                        escape(&self.buf)
                    ))
                }
            }
        }
    }

    /// Reads one reply and returns only its decoding.
    pub fn read_reply(&mut self) -> Result<Reply, String> {
        self.read_frame().map(|frame| frame.reply)
    }

    /// Sends one command and reads its reply frame.
    pub fn command_frame<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, String> {
        self.send(args)
            .map_err(|e| format!("writing a request: {e}"))?;
        self.read_frame()
    }

    /// Sends one command and reads its decoded reply.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, String> {
        self.command_frame(args).map(|frame| frame.reply)
    }

    /// Like [`RespClient::command`] for tests: panics with the command on I/O failure.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.command(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Reads everything until the server closes the connection or `timeout` passes without
    /// the connection closing. A reset after data counts as closed.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Closing {
        let mut bytes = std::mem::take(&mut self.buf);
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Closing {
                    bytes,
                    closed: false,
                };
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Closing {
                        bytes,
                        closed: true,
                    }
                }
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Closing {
                        bytes,
                        closed: false,
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Closing {
                        bytes,
                        closed: true,
                    }
                }
                Err(e) => panic!("reading until close: {e}"),
            }
        }
    }

    /// Half-closes the write side, as a client does after its last request.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }
}

/// Writes `contents` to a new file at `path` (helper for tests that need a regular file where
/// a directory is expected).
pub fn write_file(path: &Path, contents: &[u8]) {
    let mut file =
        File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(contents)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_command_is_a_multibulk_of_bulk_strings() {
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn decode_frame_keeps_binary_error_text_and_reports_length() {
        let buf = b"-ERR unknown command '\xff'\r\n:1\r\n";
        let (reply, len) = decode_frame(buf, Protocol::Resp2)
            .expect("valid frame")
            .expect("complete frame");
        assert_eq!(reply, Reply::Error(b"ERR unknown command '\xff'".to_vec()));
        assert_eq!(&buf[len..], b":1\r\n");
    }

    #[test]
    fn decode_frame_needs_more_bytes_for_a_partial_bulk() {
        assert_eq!(decode_frame(b"$5\r\nab", Protocol::Resp2), Ok(None));
        assert_eq!(
            decode_frame(b"_\r\n", Protocol::Resp3),
            Ok(Some((Reply::Null, 3)))
        );
    }

    #[test]
    fn escape_matches_redis_cli_style() {
        assert_eq!(escape(b"a\0\r\n\"\xff"), "a\\x00\\r\\n\\\"\\xff");
    }
}
