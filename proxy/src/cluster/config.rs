//! The command line of `ringkv-proxy`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::pool::{LoopSet, PoolConfig};

/// The cluster proxy's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringkv-proxy",
    version,
    about = "ringkv proxy: serves Redis clients, routing each key to its storage node by the etcd shard map",
    long_about = None
)]
pub struct ProxyConfig {
    /// etcd endpoints, comma-separated (http://host:port).
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL")]
    pub etcd: Vec<String>,

    /// Cluster name: its keys live under /ringkv/<NAME>/ in etcd.
    #[arg(long, value_name = "NAME")]
    pub cluster: String,

    /// Address to listen on for clients (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6380")]
    pub listen: SocketAddr,

    /// Event-loop threads serving connections (default: one per core). Sharing a small
    /// machine with other busy processes, fewer can serve more; see the README.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub event_loops: Option<u16>,

    /// Connections to each storage node, however many clients there are, spread over the
    /// proxy's event loops (default: one per loop).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub node_connections: Option<u16>,

    /// Milliseconds a request to a storage node may take, queueing included, before the
    /// client gets a CLUSTERDOWN error.
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub request_timeout_ms: u64,

    /// Serve Prometheus metrics on http://ADDR/metrics (off when absent).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Password clients must give with AUTH (or HELLO … AUTH default PASS) before anything else.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "aclfile")]
    pub requirepass: Option<String>,

    /// Users and their permissions, in (a subset of) Redis's ACL file syntax.
    #[arg(long, value_name = "PATH")]
    pub aclfile: Option<std::path::PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: crate::config::ClientLimits,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: crate::config::TlsFlags,

    /// File holding the cluster secret to present to storage nodes (default: the one
    /// `ringkv-admin init` stored in etcd).
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<std::path::PathBuf>,
}

impl ProxyConfig {
    /// The settings of the pools to the storage nodes, presenting `secret`, with their
    /// connections on `loops`.
    pub fn pool(&self, secret: Option<bytes::Bytes>, loops: LoopSet) -> PoolConfig {
        PoolConfig {
            connections: self
                .node_connections
                .map_or(loops.len().max(1), usize::from),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            auth: secret,
            loops,
            ..PoolConfig::default()
        }
    }
}
