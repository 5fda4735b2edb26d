//! A real etcd for cluster tests: one `etcd` process per [`Etcd`], on free loopback ports with
//! a temporary `--data-dir`, stopped by pid when dropped, and restartable on the same ports
//! and data (to test an etcd outage).
//!
//! The binary is `$ETCD_BIN` if set, else `etcd` in `$PATH`, else `/usr/bin/etcd` (Debian's
//! `etcd-server`). A missing etcd fails the test with an install hint; it never skips it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long etcd may take from spawn to answering `/health`. A single-member etcd elects
/// itself within a second or two; CI machines are slow and have two cores.
pub const ETCD_STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long etcd may take to exit after SIGTERM before it gets SIGKILL.
pub const ETCD_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Serialises "pick ports, spawn, wait until healthy" within one test binary so parallel
/// tests do not race each other for the same ports. Other processes may still take a port;
/// that is retried.
static START_LOCK: Mutex<()> = Mutex::new(());

/// The etcd binary (`$ETCD_BIN` or `$PATH`); panics with an install hint.
pub fn etcd_bin() -> PathBuf {
    crate::find_tool("etcd", "ETCD_BIN")
}

/// One running single-member etcd; dropping it stops the process (SIGTERM, then SIGKILL) and
/// deletes its data.
///
/// [`Etcd::stop`] and [`Etcd::start_again`] take it down and bring it back on the same ports
/// and the same `--data-dir`, so cluster tests can check that proxies and storage nodes ride
/// out an etcd outage and catch up with what changed afterwards.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    /// The `--data-dir` of the running (or last) process, inside `dir`.
    data: PathBuf,
    /// Holds `data-<n>/` and `etcd.log`.
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it reports itself healthy (it has a leader and serves
    /// requests).
    pub fn start() -> Etcd {
        let _guard = START_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("ringkv-etcd-")
            .tempdir()
            .expect("creating a temporary etcd dir");
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let (client_port, peer_port) = loop {
                let (a, b) = (free_port(), free_port());
                if a != b {
                    break (a, b);
                }
            };
            let data = dir.path().join(format!("data-{attempt}"));
            match spawn_and_wait(dir.path(), &data, client_port, peer_port) {
                Ok(child) => {
                    return Etcd {
                        child: Some(child),
                        client_port,
                        peer_port,
                        data,
                        dir,
                    }
                }
                Err(failure) => {
                    let port_taken = failure.exited
                        && failure
                            .tail
                            .to_lowercase()
                            .contains("address already in use");
                    if port_taken && attempt < ATTEMPTS {
                        continue;
                    }
                    panic!("{}", failure.message);
                }
            }
        }
        unreachable!("the loop returns or panics");
    }

    /// Starts etcd again after [`Etcd::stop`], on the same client and peer ports and the same
    /// data directory (so it keeps every key and lease it had), and waits until it is healthy.
    /// Panics if it is still running, or if it does not come back.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "Etcd::start_again while etcd is still running"
        );
        let _guard = START_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match spawn_and_wait(
            self.dir.path(),
            &self.data,
            self.client_port,
            self.peer_port,
        ) {
            Ok(child) => self.child = Some(child),
            Err(failure) => panic!("restarting etcd: {}", failure.message),
        }
    }

    /// True while the etcd process runs (between a start and a stop).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The client URL, `http://127.0.0.1:<port>`, as `--etcd` takes it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines etcd logged, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("etcd.log"))
    }

    /// Stops etcd now (SIGTERM, SIGKILL after [`ETCD_SHUTDOWN_DEADLINE`]); returns its exit
    /// status. Later calls, and the drop, do nothing.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + ETCD_SHUTDOWN_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    signal(&child, libc::SIGKILL);
                    return child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns etcd on these ports and data dir, appending to `<dir>/etcd.log`, and waits for
/// `/health`. On failure the process is gone and the error says why.
fn spawn_and_wait(
    dir: &Path,
    data: &Path,
    client_port: u16,
    peer_port: u16,
) -> Result<Child, SpawnFailure> {
    let log_path = dir.join("etcd.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("opening etcd.log");
    let log_err = log.try_clone().expect("cloning the etcd.log handle");
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(etcd_bin());
    cmd.arg("--name")
        .arg("t")
        .arg("--data-dir")
        .arg(data)
        .arg("--listen-client-urls")
        .arg(&client)
        .arg("--advertise-client-urls")
        .arg(&client)
        .arg("--listen-peer-urls")
        .arg(&peer)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer)
        .arg("--initial-cluster")
        .arg(format!("t={peer}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let described = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {described}: {e}"));
    match wait_healthy(&mut child, client_port, ETCD_STARTUP_DEADLINE) {
        Ok(()) => Ok(child),
        Err(Startup::Exited(status)) => {
            let tail = log_tail(&log_path);
            Err(SpawnFailure {
                exited: true,
                message: format!("{described} exited during startup with {status}\n{tail}"),
                tail,
            })
        }
        Err(Startup::Timeout(last)) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = log_tail(&log_path);
            Err(SpawnFailure {
                exited: false,
                message: format!(
                    "{described} was not healthy within {ETCD_STARTUP_DEADLINE:?} (last \
                     probe: {last})\n{tail}"
                ),
                tail,
            })
        }
    }
}

enum Startup {
    Exited(ExitStatus),
    Timeout(String),
}

/// Why a spawn did not give a healthy etcd.
struct SpawnFailure {
    /// The process exited by itself (rather than hanging until the deadline).
    exited: bool,
    /// The last lines of its log.
    tail: String,
    /// The whole story, for the panic.
    message: String,
}

/// Polls `GET /health` until etcd answers `"health":"true"`, the process exits, or the
/// deadline passes.
fn wait_healthy(child: &mut Child, port: u16, deadline: Duration) -> Result<(), Startup> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Startup::Exited(status));
        }
        let last = match health(port) {
            Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
            Ok(body) => format!("unhealthy: {}", body.trim()),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= end {
            return Err(Startup::Timeout(last));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET /health` over plain HTTP/1.0; returns the whole response.
fn health(port: u16) -> io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!(
        "--- last lines of etcd.log ---\n{}",
        lines[start..].join("\n")
    )
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on the pid of a child we have not reaped yet (so the pid cannot have
    // been reused by another process) has no memory-safety preconditions. A failure (the
    // process already exited) is harmless: the caller waits for it either way.
    unsafe {
        libc::kill(pid, signal);
    }
}
