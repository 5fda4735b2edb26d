//! The command line of `ringkv-storage`, validated once at start: a bad value is one line
//! naming its flag, exit code 2 (as clap's own usage errors).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ringkv_common::ring::MAX_WEIGHT;
use ringkv_common::shardmap::validate_node_id;

use crate::Fsync;

/// The storage node's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringkv-storage",
    version,
    about = "ringkv storage node: serves the shards the etcd shard map gives it to ringkv proxies",
    long_about = None
)]
pub struct NodeConfig {
    /// etcd endpoints, comma-separated (http://host:port).
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL")]
    pub etcd: Vec<String>,

    /// Cluster name: its keys live under /ringkv/<NAME>/ in etcd.
    #[arg(long, value_name = "NAME")]
    pub cluster: String,

    /// This node's id, stable across restarts (letters, digits, '-', '_', '.', ':').
    #[arg(long, value_name = "ID")]
    pub id: String,

    /// Address to listen on for proxies (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,

    /// Address registered in etcd for proxies to connect to (default: the listening address).
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,

    /// Directory of the data files (created if missing; ignored with --in-memory).
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,

    /// Failure domain: replicas of a shard go to distinct zones where zones exist.
    #[arg(long, value_name = "ZONE", default_value = "")]
    pub zone: String,

    /// Relative capacity: a node of weight 2 gets about twice the shards of weight 1.
    #[arg(long, value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_WEIGHT)))]
    pub weight: u32,

    /// When writes reach the disk, as Redis's appendfsync: always, everysec or no.
    #[arg(long, value_name = "POLICY", default_value = "everysec")]
    pub fsync: Fsync,

    /// Keep all data in memory: nothing survives a restart.
    #[arg(long)]
    pub in_memory: bool,

    /// Serve Prometheus metrics on http://ADDR/metrics (off when absent).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Event-loop threads serving proxies' connections (default: one per core). Sharing a
    /// small machine with other busy processes, fewer can serve more; see the README.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub event_loops: Option<u16>,

    /// File holding the cluster secret proxies must present (default: the one
    /// `ringkv-admin init` stored in etcd).
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

/// A flag whose value cannot be used: `--flag value: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value}: {reason}")]
pub struct FlagError {
    /// The flag, with its dashes.
    pub flag: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl NodeConfig {
    /// Checks what clap cannot: the node id's characters, and that the advertised address
    /// is one a proxy can connect to.
    pub fn validate(&self) -> Result<(), FlagError> {
        if let Err(err) = validate_node_id(&self.id) {
            return Err(FlagError {
                flag: "--id",
                value: self.id.clone(),
                reason: err.to_string(),
            });
        }
        if let Some(addr) = self.advertise {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(FlagError {
                    flag: "--advertise",
                    value: addr.to_string(),
                    reason: "must be an address proxies can connect to (no 0.0.0.0, no port 0)"
                        .into(),
                });
            }
        }
        Ok(())
    }
}
