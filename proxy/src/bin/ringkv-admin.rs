//! `ringkv-admin`: creates a cluster in etcd, shows its nodes and shard map, and places the
//! shards on the live nodes.
//!
//! ```text
//! ringkv-admin --etcd URL[,URL…] --cluster NAME init [--shards 256] [--replicas 3]
//! ringkv-admin --etcd URL --cluster NAME status
//! ringkv-admin --etcd URL --cluster NAME assign
//! ```
//!
//! Exit codes: 0 when the command did what it says; 1 when it could not (etcd unreachable, the
//! cluster already exists or does not, no live node, another admin changed the map first),
//! with one line on stderr saying why; 2 for usage errors (unknown flag, value out of range).
//!
//! This binary only uses `ringkv-common` (ring, balancer, shard map, etcd helpers) and `rand`
//! (the cluster secret), never the proxy's modules: the cluster logic lives in common so the
//! controller can share it.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringkv_common::balance::AssignError;
use ringkv_common::clock::now_ms;
use ringkv_common::etcd::{CasOutcome, ClusterStore, EtcdError, Layout};
use ringkv_common::ring::{Ring, RingError};
use ringkv_common::shardmap::{
    ClusterConfig, MapError, NodeInfo, ShardMap, ShardState, DEFAULT_REPLICAS, DEFAULT_SHARDS,
    MAX_REPLICAS, MAX_SHARDS,
};

/// Manage a ringkv cluster's configuration and shard map in etcd.
#[derive(Parser, Debug)]
#[command(name = "ringkv-admin", version)]
struct Cli {
    /// etcd endpoints, comma-separated (http://host:port).
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL")]
    etcd: Vec<String>,
    /// Cluster name: its keys live under /ringkv/<NAME>/.
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// Seconds each etcd request may take before the command gives up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the cluster: write its config (refused if the cluster exists).
    Init {
        /// Number of shards, fixed for the cluster's life.
        #[arg(long, default_value_t = DEFAULT_SHARDS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SHARDS)))]
        shards: u32,
        /// Replicas per shard, primary included.
        #[arg(long, default_value_t = DEFAULT_REPLICAS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPLICAS)))]
        replicas: u32,
    },
    /// Show the config, the nodes (live or dead, zone, weight, shards) and the map epoch.
    Status,
    /// Place every shard on the live nodes and write the map (epoch + 1) by compare-and-swap.
    Assign,
}

/// Why a command failed: each variant is one line for the operator.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("cluster {0:?} does not exist: create it with `ringkv-admin init`")]
    NotInitialised(String),
    #[error("invalid cluster settings: {0}")]
    Config(MapError),
    #[error("the stored map is unusable: {0}")]
    BadMap(MapError),
    #[error("cannot build the ring from the live nodes: {0}")]
    Ring(#[from] RingError),
    #[error("cannot assign shards: {0}")]
    Assign(#[from] AssignError),
    #[error(
        "shard {shard} is {state}; the controller owns the map until it finishes, nothing written"
    )]
    InTransition { shard: usize, state: String },
    #[error(
        "another writer changed the map first (it is now at epoch {now}); nothing written, run \
         assign again"
    )]
    LostRace { now: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = Layout::new(&cli.cluster) {
        eprintln!("ringkv-admin: --cluster: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ringkv-admin: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ringkv-admin: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command and returns what to print on success.
async fn run(cli: Cli) -> Result<String, AdminError> {
    let timeout = Duration::from_secs(cli.timeout);
    let store = ClusterStore::connect_with(&cli.etcd, &cli.cluster, timeout, timeout).await?;
    match cli.command {
        Command::Init { shards, replicas } => init(&store, shards, replicas).await,
        Command::Status => status(&store).await,
        Command::Assign => assign(&store).await,
    }
}

/// A fresh cluster secret: 128 random bits as 32 hex digits, for proxies to present to storage
/// nodes.
fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

async fn init(store: &ClusterStore, shards: u32, replicas: u32) -> Result<String, AdminError> {
    let created = u64::try_from(now_ms()).unwrap_or(0);
    // The ranges were checked by the argument parser; this only re-checks the same rules.
    let mut config = ClusterConfig::new(shards, replicas, created).map_err(AdminError::Config)?;
    config.secret = random_secret();
    store.init_config(&config).await?;
    Ok(format!(
        "cluster {}: created with {shards} shards, {replicas} replicas, hash {} (config at {})\n",
        store.layout().cluster(),
        config.hash,
        store.layout().config()
    ))
}

async fn config_of(store: &ClusterStore) -> Result<ClusterConfig, AdminError> {
    store
        .read_config()
        .await?
        .ok_or_else(|| AdminError::NotInitialised(store.layout().cluster().to_string()))
}

async fn status(store: &ClusterStore) -> Result<String, AdminError> {
    let config = config_of(store).await?;
    let nodes = store.list_nodes().await?;
    let read = store.read_map().await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}: {} shards, {} replicas, hash {}, created_at_ms {}",
        store.layout().cluster(),
        config.shards,
        config.replicas,
        config.hash,
        config.created_at_ms
    );
    let map = read.current.as_ref().map(|stored| &stored.map);
    match map {
        Some(map) => {
            let _ = writeln!(out, "map epoch {}", map.epoch);
            if let Err(err) = map.validate(&config) {
                let _ = writeln!(out, "warning: {err}");
            }
        }
        None => {
            let _ = writeln!(out, "map: none yet (run `ringkv-admin assign`)");
        }
    }
    for problem in &nodes.invalid {
        let _ = writeln!(out, "warning: {problem}");
    }

    let counts = map.map(ShardMap::counts).unwrap_or_default();
    let mut rows: Vec<[String; 7]> = vec![[
        "NODE".into(),
        "STATE".into(),
        "ZONE".into(),
        "WEIGHT".into(),
        "PRIMARY".into(),
        "REPLICA".into(),
        "ADDR".into(),
    ]];
    let dash = || "-".to_string();
    for node in &nodes.nodes {
        let c = counts.get(&node.id).copied().unwrap_or_default();
        rows.push([
            node.id.clone(),
            "live".into(),
            if node.zone.is_empty() {
                dash()
            } else {
                node.zone.clone()
            },
            node.weight.to_string(),
            c.primary.to_string(),
            c.replica.to_string(),
            node.addr.clone(),
        ]);
    }
    // Nodes the map still uses but that have no live record: their lease expired.
    for (id, c) in &counts {
        if !nodes.nodes.iter().any(|n| &n.id == id) {
            rows.push([
                id.clone(),
                "dead".into(),
                dash(),
                dash(),
                c.primary.to_string(),
                c.replica.to_string(),
                dash(),
            ]);
        }
    }
    if rows.len() == 1 {
        let _ = writeln!(out, "no nodes registered");
        return Ok(out);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    Ok(out)
}

async fn assign(store: &ClusterStore) -> Result<String, AdminError> {
    let config = config_of(store).await?;
    let nodes = store.list_nodes().await?;
    let read = store.read_map().await?;
    let base = read.current.as_ref();
    if let Some(stored) = base {
        stored.map.validate(&config).map_err(AdminError::BadMap)?;
        if let Some((shard, a)) = stored
            .map
            .shards
            .iter()
            .enumerate()
            .find(|(_, a)| a.state != ShardState::Stable)
        {
            return Err(AdminError::InTransition {
                shard,
                state: format!("{:?}", a.state).to_lowercase(),
            });
        }
    }
    let ring = Ring::new(nodes.nodes.iter().map(NodeInfo::ring_node))?;
    let epoch = base.map_or(1, |stored| stored.map.epoch + 1);
    let map = ShardMap::from_ring(epoch, &ring, &config, base.map(|stored| &stored.map))?;
    let live = nodes.nodes.len();
    if let Some(stored) = base {
        if stored.map.same_placement(&map) {
            return Ok(format!(
                "map epoch {} already places every shard on the {live} live nodes; nothing written\n",
                stored.map.epoch
            ));
        }
    }
    match store.write_map(base, &map).await? {
        CasOutcome::Written { .. } => Ok(match base {
            Some(stored) => {
                let changes = stored.map.changes_to(&map);
                let mut text = format!(
                    "map epoch {epoch} written: {} shards moved ({} primaries changed, {} \
                     replicas added) on {live} live nodes\n",
                    changes.shards_changed, changes.primaries_changed, changes.replicas_added
                );
                if changes.shards_changed > 0 {
                    text.push_str(
                        "note: shard data is not copied between nodes yet (no rebalancing): \
                         the keys of moved shards stay on their previous node and are not \
                         served until those shards are assigned back to it\n",
                    );
                }
                text
            }
            None => format!(
                "map epoch {epoch} written: {} shards placed on {live} live nodes (first \
                 assignment)\n",
                map.shards.len()
            ),
        }),
        CasOutcome::Conflict { current } => Err(AdminError::LostRace {
            now: current.map_or_else(|| "none (deleted)".to_string(), |c| c.map.epoch.to_string()),
        }),
    }
}
