//! A real ringkv cluster for tests: one etcd, `ringkv-admin init`, N `ringkv-storage` nodes,
//! `ringkv-admin assign`, M `ringkv-proxy` processes, all on free 127.0.0.1 ports with
//! temporary directories, started in the order the design requires and stopped by pid.
//!
//! Why a harness rather than each test spawning processes: the start-up order matters (a
//! storage node reads the shard count that `init` wrote; `assign` only places shards on nodes
//! whose lease is registered; a proxy answers `CLUSTERDOWN` until it has a map), every wait
//! must be a poll with a deadline, and a failing test must show what every process logged.
//! [`Cluster`] does each of those once:
//!
//! - [`Cluster::start`] returns only when every proxy has answered `SET` with `+OK` (the probe
//!   key is deleted again, so tests start on an empty keyspace).
//! - The faults cluster tests inject: [`Cluster::kill_node`] (`kill -9`),
//!   [`Cluster::pause_node`] (SIGSTOP: a hung node), [`Cluster::stop_node`] (SIGTERM),
//!   [`Cluster::start_node`] (same port and data dir),
//!   [`Cluster::add_node`] + [`Cluster::assign`] (a live map change), [`Cluster::stop_etcd`] /
//!   [`Cluster::start_etcd`] (an etcd outage, same port and data).
//! - Every process writes stdout and stderr to a log file in its own directory; if a test
//!   panics while a `Cluster` is alive, the drop prints the last lines of every log (and
//!   etcd's) before stopping everything: SIGTERM to all, SIGKILL to whatever is still running
//!   after [`SHUTDOWN_DEADLINE`].
//!
//! Binaries: `ringkv-storage`, `ringkv-proxy` and `ringkv-admin` next to the test's cargo
//! profile directory, or `$RINGKV_STORAGE_BIN`, `$RINGKV_PROXY_BIN`, `$RINGKV_ADMIN_BIN`
//! (see [`crate::profile_bin`]). etcd as in [`crate::etcd`].

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::etcd::Etcd;
use crate::{
    free_port, poll_until, profile_bin, run_with_deadline, Reply, RespClient, Stop, Stopped,
    SHUTDOWN_DEADLINE, STARTUP_DEADLINE,
};

/// The cluster name every harness cluster uses: each cluster has its own etcd, so there is
/// nothing to keep apart.
pub const CLUSTER_NAME: &str = "test";

/// Shard count when a test does not choose one: the cluster default of the design.
pub const DEFAULT_SHARDS: u32 = 256;

/// Any `ringkv-admin` command finishes well within this, or it is hung.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(60);

/// How long a started storage node may take to show as live in `ringkv-admin status` (it
/// registers under an etcd lease once it is up), and a node to report a new map epoch.
pub const REGISTER_DEADLINE: Duration = Duration::from_secs(30);

/// The key [`Cluster::start`] writes through each proxy to know it routes, then deletes.
pub const PROBE_KEY: &str = "ringkv-harness:probe";

/// Lines of each log shown on failure.
const LOG_TAIL_LINES: usize = 40;

/// `ringkv-storage` (`$RINGKV_STORAGE_BIN` or next to the test's profile directory).
pub fn storage_bin() -> PathBuf {
    profile_bin("ringkv-storage", "RINGKV_STORAGE_BIN")
}

/// `ringkv-proxy` (`$RINGKV_PROXY_BIN` or next to the test's profile directory).
pub fn proxy_bin() -> PathBuf {
    profile_bin("ringkv-proxy", "RINGKV_PROXY_BIN")
}

/// `ringkv-admin` (`$RINGKV_ADMIN_BIN` or next to the test's profile directory).
pub fn admin_bin() -> PathBuf {
    profile_bin("ringkv-admin", "RINGKV_ADMIN_BIN")
}

/// Serialises "pick a port, spawn, wait for PONG" for storage nodes and proxies within one
/// test binary, so parallel tests never pick the same free port. Other processes may still
/// take it; that is retried.
static START_LOCK: Mutex<()> = Mutex::new(());

/// The value of `field` in an `INFO` text (`field:value` lines), trimmed.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// What [`Cluster::start`] starts. Tests pick small shard counts where they do not need 256:
/// the cluster tests run in parallel with the rest of the suite on two cores.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    nodes: usize,
    proxies: usize,
    shards: u32,
    storage_args: Vec<String>,
    proxy_args: Vec<String>,
}

impl Default for ClusterBuilder {
    /// 3 storage nodes, 2 proxies, [`DEFAULT_SHARDS`] shards, no extra flags.
    fn default() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 3,
            proxies: 2,
            shards: DEFAULT_SHARDS,
            storage_args: Vec::new(),
            proxy_args: Vec::new(),
        }
    }
}

impl ClusterBuilder {
    /// How many storage nodes to start (ids `n1`, `n2`, …). At least one: `assign` needs a
    /// live node.
    pub fn nodes(mut self, nodes: usize) -> ClusterBuilder {
        self.nodes = nodes;
        self
    }

    /// How many proxies to start (may be 0).
    pub fn proxies(mut self, proxies: usize) -> ClusterBuilder {
        self.proxies = proxies;
        self
    }

    /// The shard count given to `ringkv-admin init`.
    pub fn shards(mut self, shards: u32) -> ClusterBuilder {
        self.shards = shards;
        self
    }

    /// Extra flags for every storage node (also those added later), e.g. `--in-memory`.
    pub fn storage_args(mut self, args: &[&str]) -> ClusterBuilder {
        self.storage_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Extra flags for every proxy, e.g. `--request-timeout-ms 1000`.
    pub fn proxy_args(mut self, args: &[&str]) -> ClusterBuilder {
        self.proxy_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Starts the cluster; see [`Cluster::start`].
    pub fn start(self) -> Cluster {
        Cluster::start(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// One child process of the cluster with its log file. It is never reaped behind the
/// harness's back, so its pid cannot be recycled while we may still signal it.
struct Process {
    label: String,
    child: Option<Child>,
    log: PathBuf,
    /// Stopped with SIGSTOP: it must get SIGCONT before SIGTERM can end it.
    paused: bool,
}

impl Process {
    /// A process slot that is not running (yet).
    fn idle(label: String, log: PathBuf) -> Process {
        Process {
            label,
            child: None,
            log,
            paused: false,
        }
    }

    /// Spawns `cmd` with stdout and stderr appended to the log. Panics if it cannot spawn.
    fn spawn(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "{} is already running", self.label);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the handle of {}: {e}", self.log.display()));
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let described = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {described}: {e}"));
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited on its own (it stays "started" until
    /// [`Process::stop`] or [`Process::forget_exited`]).
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Drops a child that has exited (after a failed start), so it can be spawned again.
    fn forget_exited(&mut self) -> Option<ExitStatus> {
        let status = self.exited()?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` if the process has not been reaped. Harmless if it already exited.
    fn signal(&mut self, signal: libc::c_int) {
        if self.exited().is_some() {
            return;
        }
        let Some(pid) = self.pid().and_then(|pid| libc::pid_t::try_from(pid).ok()) else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child we have not reaped (checked just above, and
        // only this struct reaps it), so the pid cannot belong to another process. It has no
        // memory-safety preconditions; a failure (already exited) is handled by the waits.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Stops the process: SIGTERM then SIGKILL after [`SHUTDOWN_DEADLINE`], or SIGKILL at
    /// once. Panics if it is not running or already died on its own (a crash the test did
    /// not ask for).
    fn stop(&mut self, how: Stop) -> Stopped {
        assert!(self.child.is_some(), "{} is not running", self.label);
        if let Some(status) = self.exited() {
            panic!(
                "{} had already exited with {status} before being stopped\n{}",
                self.label,
                self.log_tail()
            );
        }
        self.resume();
        self.signal(match how {
            Stop::Graceful => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        });
        let stopped = self.wait_until(Instant::now() + SHUTDOWN_DEADLINE);
        self.child = None;
        stopped
    }

    /// SIGCONT if it was paused.
    fn resume(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Waits for exit until `deadline`, then SIGKILLs. Call after a signal.
    fn wait_until(&mut self, deadline: Instant) -> Stopped {
        let label = self.label.clone();
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{label} is not running"));
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Stopped {
                        status,
                        needed_sigkill: false,
                    }
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let status = child
                        .wait()
                        .unwrap_or_else(|e| panic!("waiting for {label} after SIGKILL: {e}"));
                    return Stopped {
                        status,
                        needed_sigkill: true,
                    };
                }
            }
        }
    }

    /// The size of the log now, to look only at what a new start writes.
    fn log_len(&self) -> u64 {
        fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The log from byte `from` on (lossy UTF-8).
    fn log_since(&self, from: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            if file.seek(SeekFrom::Start(from)).is_ok() {
                let _ = file.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn log_tail(&self) -> String {
        let text = self.log_since(0);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.label,
            self.log.display(),
            lines[start..].join("\n")
        )
    }
}

/// Whether every thread of `pid` is stopped (state `T`), as after SIGSTOP takes effect.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
            return false;
        };
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        if !matches!(state, Some("T") | Some("t")) {
            return false;
        }
        any = true;
    }
    any
}

/// Why a process did not come up.
enum Startup {
    Exited(ExitStatus),
    Timeout(String),
}

/// One `PING`; `Ok` on `+PONG`.
fn ping(addr: SocketAddr) -> Result<(), String> {
    let mut client = RespClient::connect_timeout(addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    match client
        .command(&["PING"])
        .map_err(|e| format!("PING: {e}"))?
    {
        Reply::Simple(ref s) if s == b"PONG" => Ok(()),
        // A storage node serving, that wants the cluster secret first.
        Reply::Error(ref e) if e.starts_with(b"NOAUTH") => Ok(()),
        other => Err(format!("PING answered {other}")),
    }
}

/// Polls `PING` until `+PONG`, the process exits, or `deadline` passes. Checks the process
/// again after the PONG: a process that lost the port to someone else exits, and then the
/// PONG was not ours.
fn wait_pong(process: &mut Process, addr: SocketAddr, deadline: Duration) -> Result<(), Startup> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = process.exited() {
            return Err(Startup::Exited(status));
        }
        let last = match ping(addr) {
            Ok(()) => match process.exited() {
                Some(status) => return Err(Startup::Exited(status)),
                None => return Ok(()),
            },
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(Startup::Timeout(last));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns what `command(port)` builds and waits for `+PONG` on that port. With `port` given
/// (a restart) only that port is tried; otherwise a free port is picked, and picked again if
/// the process reports the address in use. Returns the port. Panics with the log tail if the
/// process does not come up.
fn start_listening(
    process: &mut Process,
    port: Option<u16>,
    command: impl Fn(u16) -> Command,
) -> u16 {
    let _guard = START_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let attempts = if port.is_some() { 1 } else { 5 };
    for attempt in 1..=attempts {
        let port = port.unwrap_or_else(free_port);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_start = process.log_len();
        let cmd = command(port);
        let described = format!("{cmd:?}");
        process.spawn(cmd);
        match wait_pong(process, addr, STARTUP_DEADLINE) {
            Ok(()) => return port,
            Err(Startup::Exited(status)) => {
                process.forget_exited();
                let new_output = process.log_since(log_start).to_lowercase();
                let port_taken = new_output.contains("address already in use")
                    || new_output.contains("addrinuse");
                if port_taken && attempt < attempts {
                    continue;
                }
                panic!(
                    "{described} exited during startup with {status}\n{}",
                    process.log_tail()
                );
            }
            Err(Startup::Timeout(last)) => {
                let stopped = process.stop(Stop::Kill);
                panic!(
                    "{described} did not answer PING with +PONG within {STARTUP_DEADLINE:?} \
                     (last attempt: {last}); killed it ({})\n{}",
                    stopped.status,
                    process.log_tail()
                );
            }
        }
    }
    unreachable!("the loop returns or panics");
}

/// One storage node: its id, port and directory stay the same across restarts.
struct StorageNode {
    id: String,
    port: u16,
    /// `<root>/<id>/`: holds `data/` (the `--dir`) and `storage.log`.
    dir: PathBuf,
    process: Process,
}

impl StorageNode {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// One proxy.
struct Proxy {
    port: u16,
    args: Vec<String>,
    process: Process,
}

impl Proxy {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// A running cluster: etcd, storage nodes and proxies. Dropping it stops every process (and
/// prints every log tail first if the test is failing).
///
/// Nodes and proxies are addressed by index, in the order they were started (`add_node`
/// appends); node ids are `n1`, `n2`, … in that order.
pub struct Cluster {
    etcd: Etcd,
    shards: u32,
    storage_args: Vec<String>,
    proxy_args: Vec<String>,
    nodes: Vec<StorageNode>,
    proxies: Vec<Proxy>,
    /// Holds every node's and proxy's directory; declared last so it is removed after the
    /// processes using it are stopped.
    /// The cluster secret every process was given, for connections straight to a node.
    secret: String,
    root: tempfile::TempDir,
}

impl Cluster {
    /// A builder with the defaults (3 nodes, 2 proxies, 256 shards).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Starts etcd, runs `ringkv-admin init --shards S --replicas 1` (there is no replication
    /// yet), starts the storage nodes and waits until all are registered in etcd, runs
    /// `assign` and waits until every node serves that map epoch, then starts the proxies and
    /// waits until each answers `SET` with `+OK`.
    pub fn start(config: ClusterBuilder) -> Cluster {
        assert!(
            config.nodes >= 1,
            "a cluster needs at least one storage node"
        );
        let root = tempfile::Builder::new()
            .prefix("ringkv-cluster-")
            .tempdir()
            .expect("creating a temporary cluster dir");
        // Every process gets the same cluster secret from a file, so the tests can present
        // it to storage nodes too (the processes would otherwise take the one in etcd).
        let secret = format!("test-secret-{:016x}", rand::random::<u64>());
        let secret_file = root.path().join("cluster.secret");
        fs::write(&secret_file, &secret)
            .unwrap_or_else(|e| panic!("writing {}: {e}", secret_file.display()));
        let secret_arg = [
            "--secret-file".to_string(),
            secret_file.display().to_string(),
        ];
        let mut storage_args = config.storage_args;
        storage_args.extend(secret_arg.iter().cloned());
        let mut proxy_args = config.proxy_args;
        proxy_args.extend(secret_arg.iter().cloned());
        let mut cluster = Cluster {
            etcd: Etcd::start(),
            shards: config.shards,
            storage_args,
            proxy_args,
            nodes: Vec::new(),
            proxies: Vec::new(),
            root,
            secret,
        };
        let shards = config.shards.to_string();
        cluster.admin_ok(&["init", "--shards", &shards, "--replicas", "1"]);
        for _ in 0..config.nodes {
            cluster.spawn_node();
        }
        let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
        cluster.wait_registered(&ids);
        let epoch = cluster.assign();
        for i in 0..cluster.nodes.len() {
            cluster.wait_node_epoch(i, epoch);
        }
        for _ in 0..config.proxies {
            cluster.add_proxy(&[]);
        }
        cluster
    }

    /// The cluster name (`--cluster`).
    pub fn name(&self) -> &str {
        CLUSTER_NAME
    }

    /// The shard count it was created with.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The etcd client URL (`--etcd`).
    pub fn etcd_url(&self) -> String {
        self.etcd.url()
    }

    /// The etcd process, for tests that need its address or log.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    // --- proxies -----------------------------------------------------------------------------

    /// How many proxies were started (stopped ones included).
    pub fn proxy_count(&self) -> usize {
        self.proxies.len()
    }

    /// Proxy `i`'s client address.
    pub fn proxy_addr(&self, i: usize) -> SocketAddr {
        self.proxy_ref(i).addr()
    }

    /// A `redis://` URL of proxy `i`, for the `redis` crate.
    pub fn proxy_url(&self, i: usize) -> String {
        format!("redis://{}/", self.proxy_addr(i))
    }

    /// A new raw RESP2 connection to proxy `i`.
    pub fn proxy(&self, i: usize) -> RespClient {
        let addr = self.proxy_addr(i);
        RespClient::connect(addr)
            .unwrap_or_else(|e| panic!("connecting to proxy {i} on {addr}: {e}"))
    }

    /// Starts one more proxy with the builder's proxy flags plus `extra_args`, and waits until
    /// it routes (`SET` answers `+OK`; the probe key is deleted again). Returns its index.
    pub fn add_proxy(&mut self, extra_args: &[&str]) -> usize {
        let index = self.proxies.len();
        let dir = self.root.path().join(format!("proxy-{index}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut args = self.proxy_args.clone();
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut process = Process::idle(format!("proxy {index}"), dir.join("proxy.log"));
        let etcd = self.etcd.url();
        let port = start_listening(&mut process, None, |port| {
            let mut cmd = Command::new(proxy_bin());
            cmd.arg("--etcd")
                .arg(&etcd)
                .arg("--cluster")
                .arg(CLUSTER_NAME)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(&args);
            cmd
        });
        self.proxies.push(Proxy {
            port,
            args,
            process,
        });
        self.wait_proxy_routes(index);
        index
    }

    /// Polls proxy `i` with `SET` of [`PROBE_KEY`] until it answers `+OK` (a proxy answers
    /// `CLUSTERDOWN` until it has a map), then deletes the key.
    pub fn wait_proxy_routes(&mut self, i: usize) {
        let addr = self.proxy_addr(i);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = self.proxies[i].process.exited() {
                panic!("proxy {i} exited with {status} while waiting for it to route");
            }
            let outcome = RespClient::connect(addr)
                .map_err(|e| format!("connect: {e}"))
                .and_then(|mut client| {
                    let reply = client.command(&["SET", PROBE_KEY, "x"])?;
                    if reply != Reply::Simple(b"OK".to_vec()) {
                        return Err(format!("SET answered {reply}"));
                    }
                    match client.command(&["DEL", PROBE_KEY])? {
                        Reply::Integer(1) => Ok(()),
                        other => Err(format!("DEL of the probe key answered {other}")),
                    }
                });
            let last = match outcome {
                Ok(()) => return,
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "proxy {i} on {addr} did not answer SET with +OK within {STARTUP_DEADLINE:?} \
                 (last: {last})"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops proxy `i` (SIGTERM, or `kill -9`) and reports how it exited.
    pub fn stop_proxy(&mut self, i: usize, how: Stop) -> Stopped {
        self.proxy_mut(i).process.stop(how)
    }

    /// Proxy `i`'s process id while it runs.
    pub fn proxy_pid(&self, i: usize) -> Option<u32> {
        self.proxy_ref(i).process.pid()
    }

    /// The flags proxy `i` was started with (builder flags and its own).
    pub fn proxy_args(&self, i: usize) -> &[String] {
        &self.proxy_ref(i).args
    }

    // --- storage nodes -----------------------------------------------------------------------

    /// How many storage nodes were started (stopped ones included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s id (`n<i+1>`).
    pub fn node_id(&self, i: usize) -> &str {
        &self.node_ref(i).id
    }

    /// The index of the node with this id.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Node `i`'s address (`--listen`), the same across restarts.
    pub fn node_addr(&self, i: usize) -> SocketAddr {
        self.node_ref(i).addr()
    }

    /// Node `i`'s data directory (`--dir`).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.node_ref(i).data_dir()
    }

    /// Node `i`'s process id while it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.node_ref(i).process.pid()
    }

    /// A new raw RESP2 connection to storage node `i` (for `INFO` and the internal `SHARD`
    /// command).
    pub fn node_client(&self, i: usize) -> RespClient {
        let mut client = self.node_client_unauthenticated(i);
        let reply = client.cmd(&["AUTH", &self.secret]);
        assert_eq!(
            reply,
            Reply::Simple(b"OK".to_vec()),
            "node {i} refused the cluster secret"
        );
        client
    }

    /// A new raw connection to storage node `i` that has not presented the cluster secret.
    pub fn node_client_unauthenticated(&self, i: usize) -> RespClient {
        let addr = self.node_addr(i);
        RespClient::connect(addr)
            .unwrap_or_else(|e| panic!("connecting to node {i} on {addr}: {e}"))
    }

    /// The cluster secret the processes were given.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `INFO` of storage node `i`, over a fresh connection (which its `connected_clients`
    /// counts).
    pub fn node_info(&self, i: usize) -> String {
        let mut client = self.node_client(i);
        info_text(&mut client, &[]).unwrap_or_else(|e| panic!("INFO on node {i}: {e}"))
    }

    /// The `map_epoch` node `i` reports in `INFO`.
    pub fn node_epoch(&self, i: usize) -> Option<u64> {
        info_field(&self.node_info(i), "map_epoch").and_then(|e| e.parse().ok())
    }

    /// Polls node `i`'s `INFO` until it reports `map_epoch` ≥ `epoch`.
    pub fn wait_node_epoch(&self, i: usize, epoch: u64) {
        let addr = self.node_addr(i);
        poll_until(
            REGISTER_DEADLINE,
            &format!("node {} to report map_epoch >= {epoch}", self.node_id(i)),
            || {
                let mut client = RespClient::connect(addr).ok()?;
                client.command(&["AUTH", &self.secret]).ok()?;
                let info = info_text(&mut client, &[]).ok()?;
                let seen: u64 = info_field(&info, "map_epoch")?.parse().ok()?;
                (seen >= epoch).then_some(())
            },
        );
    }

    /// Starts one more storage node (next id, free port, fresh directory) and waits until it
    /// is registered in etcd. The map does not change until [`Cluster::assign`]. Returns its
    /// index.
    pub fn add_node(&mut self) -> usize {
        let index = self.spawn_node();
        let id = self.nodes[index].id.clone();
        self.wait_registered(&[id]);
        index
    }

    /// `kill -9` of node `i`: nothing is flushed, its lease stays in etcd until it expires.
    pub fn kill_node(&mut self, i: usize) -> Stopped {
        self.node_mut(i).process.stop(Stop::Kill)
    }

    /// SIGSTOP to node `i`: it keeps its sockets and its lease (until the lease expires) but
    /// answers nothing, the way a hung or overloaded node looks to a proxy. Undo with
    /// [`Cluster::resume_node`]; stopping or dropping the cluster resumes it first.
    pub fn pause_node(&mut self, i: usize) {
        let node = self.node_mut(i);
        assert!(
            node.process.child.is_some() && !node.process.paused,
            "{} is not running, or already paused",
            node.process.label
        );
        node.process.signal(libc::SIGSTOP);
        node.process.paused = true;
        // kill(2) only queues the signal: wait until every thread is stopped, or a request
        // sent right after could still be answered.
        if let Some(pid) = node.process.pid() {
            poll_until(
                STARTUP_DEADLINE,
                &format!("{} to stop", node.process.label),
                || all_threads_stopped(pid).then_some(()),
            );
        }
    }

    /// SIGCONT to node `i` after [`Cluster::pause_node`].
    pub fn resume_node(&mut self, i: usize) {
        let node = self.node_mut(i);
        assert!(node.process.paused, "{} is not paused", node.process.label);
        node.process.resume();
    }

    /// SIGTERM to node `i` (SIGKILL after [`SHUTDOWN_DEADLINE`]); reports how it exited.
    pub fn stop_node(&mut self, i: usize) -> Stopped {
        self.node_mut(i).process.stop(Stop::Graceful)
    }

    /// Starts node `i` again after a stop, with the same id, port and data directory, and
    /// waits until it answers `PING` and is registered in etcd.
    pub fn start_node(&mut self, i: usize) {
        let port = self.node_ref(i).port;
        let command = self.node_command(i);
        let node = self.node_mut(i);
        start_listening(&mut node.process, Some(port), command);
        let id = node.id.clone();
        self.wait_registered(&[id]);
    }

    /// Stops node `i` (`how`) and starts it again on the same port and directory.
    pub fn restart_node(&mut self, i: usize, how: Stop) -> Stopped {
        let stopped = self.node_mut(i).process.stop(how);
        self.start_node(i);
        stopped
    }

    fn spawn_node(&mut self) -> usize {
        let index = self.nodes.len();
        let id = format!("n{}", index + 1);
        let dir = self.root.path().join(&id);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let process = Process::idle(format!("storage node {id}"), dir.join("storage.log"));
        self.nodes.push(StorageNode {
            id,
            port: 0,
            dir,
            process,
        });
        let command = self.node_command(index);
        let node = &mut self.nodes[index];
        node.port = start_listening(&mut node.process, None, command);
        index
    }

    /// Builds node `i`'s command line for a given port.
    fn node_command(&self, i: usize) -> impl Fn(u16) -> Command {
        let node = self.node_ref(i);
        let (id, data) = (node.id.clone(), node.data_dir());
        let etcd = self.etcd.url();
        let extra = self.storage_args.clone();
        move |port| {
            let mut cmd = Command::new(storage_bin());
            cmd.arg("--etcd")
                .arg(&etcd)
                .arg("--cluster")
                .arg(CLUSTER_NAME)
                .arg("--id")
                .arg(&id)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--dir")
                .arg(&data)
                .args(&extra);
            cmd
        }
    }

    /// Polls `ringkv-admin status` until every id in `ids` is listed as live at its address.
    /// Fails early if one of those nodes exits.
    pub fn wait_registered(&mut self, ids: &[String]) {
        let wanted: Vec<(String, String)> = ids
            .iter()
            .map(|id| {
                let i = self
                    .node_index(id)
                    .unwrap_or_else(|| panic!("no node {id} in this cluster"));
                (id.clone(), self.node_addr(i).to_string())
            })
            .collect();
        let deadline = Instant::now() + REGISTER_DEADLINE;
        let mut last;
        loop {
            for id in ids {
                let node = self
                    .nodes
                    .iter_mut()
                    .find(|n| &n.id == id)
                    .unwrap_or_else(|| panic!("no node {id} in this cluster"));
                if let Some(status) = node.process.exited() {
                    panic!("storage node {id} exited with {status} before registering");
                }
            }
            let out = self.admin(&["status"]);
            last = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                let rows = status_rows(&last);
                let all = wanted.iter().all(|(id, addr)| {
                    rows.iter().any(|row| {
                        row.first() == Some(id)
                            && row.get(1).map(String::as_str) == Some("live")
                            && row.last() == Some(addr)
                    })
                });
                if all {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes {ids:?} not all live in `ringkv-admin status` within \
                 {REGISTER_DEADLINE:?}; last status:\n{last}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    // --- admin -------------------------------------------------------------------------------

    /// Runs `ringkv-admin --etcd URL --cluster NAME <args>` to completion (killed and a panic
    /// after [`ADMIN_DEADLINE`]) and returns its output, whatever the exit code.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(admin_bin());
        cmd.arg("--etcd")
            .arg(self.etcd.url())
            .arg("--cluster")
            .arg(CLUSTER_NAME)
            .args(args);
        run_with_deadline(&mut cmd, b"", ADMIN_DEADLINE)
    }

    /// [`Cluster::admin`] that must exit 0; returns its stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "ringkv-admin {args:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ringkv-admin status` (must exit 0).
    pub fn status(&self) -> String {
        self.admin_ok(&["status"])
    }

    /// The map epoch `status` reports (`None` before the first assign).
    pub fn map_epoch(&self) -> Option<u64> {
        parse_epoch(&self.status())
    }

    /// Runs `ringkv-admin assign` (must exit 0: it places every shard on the live nodes and
    /// writes the next map by compare-and-swap, or finds nothing to change) and returns the
    /// epoch of the map now in etcd, from its output (`map epoch N …`) or else from `status`.
    pub fn assign(&self) -> u64 {
        let out = self.admin_ok(&["assign"]);
        parse_epoch(&out)
            .or_else(|| self.map_epoch())
            .unwrap_or_else(|| panic!("no map epoch in the output of assign:\n{out}"))
    }

    // --- etcd --------------------------------------------------------------------------------

    /// Stops etcd (SIGTERM); proxies and storage nodes must keep serving with their last map.
    pub fn stop_etcd(&mut self) -> Option<ExitStatus> {
        self.etcd.stop()
    }

    /// Starts etcd again on the same port and data directory and waits until it is healthy.
    pub fn start_etcd(&mut self) {
        self.etcd.start_again();
    }

    // --- the whole cluster -------------------------------------------------------------------

    /// Stops every proxy, then every storage node, with SIGTERM (SIGKILL after
    /// [`SHUTDOWN_DEADLINE`]), and returns each one's label and exit. etcd keeps running (the
    /// drop stops it), so nodes can deregister cleanly.
    pub fn shutdown(&mut self) -> Vec<(String, Stopped)> {
        let mut out = Vec::new();
        for proxy in &mut self.proxies {
            if proxy.process.child.is_some() {
                out.push((
                    proxy.process.label.clone(),
                    proxy.process.stop(Stop::Graceful),
                ));
            }
        }
        for node in &mut self.nodes {
            if node.process.child.is_some() {
                out.push((
                    node.process.label.clone(),
                    node.process.stop(Stop::Graceful),
                ));
            }
        }
        out
    }

    /// The last lines of every process's log and etcd's, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(out, "{}", node.process.log_tail());
        }
        for proxy in &self.proxies {
            let _ = writeln!(out, "{}", proxy.process.log_tail());
        }
        let _ = writeln!(out, "{}", self.etcd.log_tail());
        out
    }

    fn node_ref(&self, i: usize) -> &StorageNode {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("no storage node {i} (have {})", self.nodes.len()))
    }

    fn node_mut(&mut self, i: usize) -> &mut StorageNode {
        let len = self.nodes.len();
        self.nodes
            .get_mut(i)
            .unwrap_or_else(|| panic!("no storage node {i} (have {len})"))
    }

    fn proxy_ref(&self, i: usize) -> &Proxy {
        self.proxies
            .get(i)
            .unwrap_or_else(|| panic!("no proxy {i} (have {})", self.proxies.len()))
    }

    fn proxy_mut(&mut self, i: usize) -> &mut Proxy {
        let len = self.proxies.len();
        self.proxies
            .get_mut(i)
            .unwrap_or_else(|| panic!("no proxy {i} (have {len})"))
    }
}

impl Drop for Cluster {
    /// Prints every log tail if the test is failing, then SIGTERMs every proxy and node at
    /// once, waits for all of them until one shared deadline and SIGKILLs the rest. etcd is
    /// stopped last (by its own drop), so nodes can revoke their leases on the way out.
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "cluster under test (dir {}):\n{}",
                self.root.path().display(),
                self.log_tails()
            );
        }
        let processes = self
            .proxies
            .iter_mut()
            .map(|p| &mut p.process)
            .chain(self.nodes.iter_mut().map(|n| &mut n.process));
        let mut running: Vec<&mut Process> = processes.filter(|p| p.child.is_some()).collect();
        for process in &mut running {
            process.resume();
            process.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        for process in running {
            process.wait_until(deadline);
            process.child = None;
        }
    }
}

/// `INFO` of `sections` (all of the default ones when empty) over `client`, as text.
pub fn info_text(client: &mut RespClient, sections: &[&str]) -> Result<String, String> {
    let request: Vec<&str> = std::iter::once("INFO")
        .chain(sections.iter().copied())
        .collect();
    match client.command(&request)? {
        Reply::Bulk(text) | Reply::Verbatim { data: text, .. } => {
            Ok(String::from_utf8_lossy(&text).into_owned())
        }
        other => Err(format!("INFO answered {other}")),
    }
}

/// The rows of `ringkv-admin status` below its header, split into columns.
fn status_rows(status: &str) -> Vec<Vec<String>> {
    status
        .lines()
        .skip_while(|line| !line.starts_with("NODE"))
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// `N` from the first `map epoch N` in `text`.
fn parse_epoch(text: &str) -> Option<u64> {
    let at = text.find("map epoch ")?;
    text[at + "map epoch ".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_epoch_reads_assign_and_status_output() {
        assert_eq!(
            parse_epoch("map epoch 3 written: 12 shards moved (…) on 3 live nodes\n"),
            Some(3)
        );
        assert_eq!(
            parse_epoch("map epoch 7 already places every shard on the 3 live nodes"),
            Some(7)
        );
        assert_eq!(
            parse_epoch("cluster test: 8 shards, 1 replicas\nmap epoch 12\nNODE STATE"),
            Some(12)
        );
        assert_eq!(
            parse_epoch("map: none yet (run `ringkv-admin assign`)"),
            None
        );
    }

    #[test]
    fn status_rows_are_the_lines_after_the_header() {
        let status = "cluster test: 8 shards, 1 replicas, hash xxh3-64, created_at_ms 1\n\
                      map epoch 1\n\
                      NODE  STATE  ZONE  WEIGHT  PRIMARY  REPLICA  ADDR\n\
                      n1    live   -     1       4        0        127.0.0.1:7001\n\
                      n2    dead   -     -       4        0        -\n";
        let rows = status_rows(status);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], "n1");
        assert_eq!(rows[0][1], "live");
        assert_eq!(rows[0].last().map(String::as_str), Some("127.0.0.1:7001"));
        assert_eq!(rows[1][1], "dead");
    }

    #[test]
    fn info_field_finds_exact_names() {
        let info = "# Clients\r\nconnected_clients:3\r\nnode_id:n1\r\nmap_epoch:2\r\n";
        assert_eq!(info_field(info, "connected_clients").as_deref(), Some("3"));
        assert_eq!(info_field(info, "map_epoch").as_deref(), Some("2"));
        assert_eq!(info_field(info, "map"), None);
    }
}
