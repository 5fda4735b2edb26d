//! What every connection shares: the settings the server runs with, the counters, and the
//! backend. Built once at start and handed to each connection in an `Arc`; nothing in it is
//! behind a lock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use ringkv_common::acl::Acl;
use ringkv_common::resp::RequestLimits;
use ringkv_storage::Fsync;

use crate::backend::Backend;
use crate::clients::Clients;
use crate::config::{ClientLimits, Config};
use crate::slowlog::SlowLog;
use crate::stats::Stats;
use crate::tls::Tls;

/// Seconds of idleness before TCP keepalive probes start, as Redis's default `tcp-keepalive`:
/// dead peers behind NATs and firewalls are noticed and their connections freed.
pub const TCP_KEEPALIVE_SECS: u64 = 300;

/// The settings CONFIG GET and INFO report.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address actually listened on (the real port when `--port 0` was given).
    pub addr: SocketAddr,
    /// The data directory, made absolute when it exists.
    pub dir: PathBuf,
    /// Shard count.
    pub shards: u32,
    /// Whether data lives only in memory.
    pub in_memory: bool,
    /// WAL sync policy.
    pub fsync: Fsync,
    /// Users and their permissions (`--requirepass`, `--aclfile`).
    pub acl: Acl,
    /// `--maxclients`, `--timeout`, `--proto-max-bulk-len`.
    pub limits: ClientLimits,
    /// TLS on the client port, when configured.
    pub tls: Option<Tls>,
}

impl Settings {
    /// A cluster proxy's settings: no data directory of its own, the cluster's shard count.
    pub fn proxy(
        addr: SocketAddr,
        shards: u32,
        acl: Acl,
        limits: ClientLimits,
        tls: Option<Tls>,
    ) -> Settings {
        Settings {
            addr,
            dir: PathBuf::new(),
            shards,
            in_memory: false,
            fsync: Fsync::Everysec,
            acl,
            limits,
            tls,
        }
    }

    /// The settings of `config` once listening on `addr`.
    pub fn new(config: &Config, addr: SocketAddr) -> Settings {
        let dir = std::fs::canonicalize(&config.dir).unwrap_or_else(|_| config.dir.clone());
        Settings {
            addr,
            dir,
            shards: config.shards,
            in_memory: config.in_memory,
            fsync: config.fsync,
            acl: config.acl.clone(),
            limits: config.limits,
            tls: config.tls.clone(),
        }
    }
}

/// State shared by all connections.
#[derive(Debug)]
pub struct ServerContext {
    /// What the server was started with.
    pub settings: Settings,
    /// Counters for INFO.
    pub stats: Stats,
    /// The connected clients (CLIENT LIST, CLIENT KILL).
    pub clients: Clients,
    /// SLOWLOG's entries and settings.
    pub slowlog: SlowLog,
    /// Where data commands go.
    pub backend: Backend,
    /// Protocol limits for requests.
    pub limits: RequestLimits,
    /// When the server started (for uptime).
    pub started: Instant,
    /// The same instant as a Unix time, for INFO's persistence section.
    pub started_unix: u64,
    /// A random id for this run, as Redis's `run_id`: tells a restart from a long uptime.
    pub run_id: String,
}

impl ServerContext {
    /// The shared state of a server about to accept connections.
    pub fn new(settings: Settings, backend: Backend) -> ServerContext {
        let mut rng = rand::thread_rng();
        let run_id = (0..40)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect();
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let limits = RequestLimits {
            max_bulk_len: usize::try_from(settings.limits.proto_max_bulk_len).unwrap_or(usize::MAX),
            ..RequestLimits::default()
        };
        ServerContext {
            settings,
            stats: Stats::default(),
            clients: Clients::default(),
            slowlog: SlowLog::default(),
            backend,
            limits,
            started: Instant::now(),
            started_unix,
            run_id,
        }
    }
}
