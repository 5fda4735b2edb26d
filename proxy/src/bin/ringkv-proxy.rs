//! `ringkv-proxy`: a stateless proxy of a ringkv cluster. Clients speak Redis to it; it routes
//! every key to the storage node that owns its shard in the map it follows in etcd.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 2 when a flag's value cannot be
//! used (one line on stderr names it), 1 when the proxy fails otherwise.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringkv_common::etcd::ClusterStore;
use ringkv_common::event_loops::EventLoops;
use ringkv_common::internal::cluster_secret;
use ringkv_common::shardmap::ClusterConfig;
use ringkv_proxy::backend::Backend;
use ringkv_proxy::cluster::config::ProxyConfig;
use ringkv_proxy::cluster::Cluster;
use ringkv_proxy::config::load_acl;
use ringkv_proxy::context::Settings;
use ringkv_proxy::server::{Server, ServerError};
use ringkv_proxy::shutdown::terminate_signal;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Rust-side allocations (request buffers, futures, replies) go to mimalloc: see the workspace
/// Cargo.toml. RocksDB's C++ allocations keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = ProxyConfig::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ringkv-proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: ProxyConfig) -> ExitCode {
    let acl = match load_acl(config.requirepass.as_deref(), config.aclfile.as_deref()) {
        Ok(acl) => acl,
        Err(err) => return bad_flag(err.flag, &err.value, &err.reason),
    };
    let tls = match config.tls.load() {
        Ok(tls) => tls,
        Err(err) => return bad_flag(err.flag, &err.value, &err.reason),
    };
    if let Some(addr) = config.metrics_addr {
        if let Err(err) = ringkv_common::metrics::install(addr, "proxy") {
            return bad_flag("--metrics-addr", &addr.to_string(), &err.reason);
        }
    }
    let store = match ClusterStore::connect(&config.etcd, &config.cluster).await {
        Ok(store) => store,
        Err(err) => return bad_flag("--etcd", &config.etcd.join(","), &err.to_string()),
    };
    let Some(cluster_config) = read_cluster_config(&store, &config.cluster).await else {
        return ExitCode::FAILURE;
    };
    let secret = match cluster_secret(config.secret_file.as_deref(), &cluster_config.secret) {
        Ok(secret) => secret,
        Err(reason) => {
            let file = config.secret_file.as_ref().map(|p| p.display().to_string());
            return bad_flag("--secret-file", &file.unwrap_or_default(), &reason);
        }
    };
    let loops = match EventLoops::count_or_per_core(config.event_loops.map(usize::from)) {
        Ok(loops) => loops,
        Err(err) => {
            eprintln!("ringkv-proxy: cannot start the event-loop threads: {err}");
            return ExitCode::FAILURE;
        }
    };
    let shards = cluster_config.shards;
    let pool = config.pool(secret, loops.set());
    let node_connections = pool.connections;
    let cluster = Arc::new(Cluster::start(store, cluster_config, pool));
    let server = match Server::bind_on_loops(
        config.listen,
        |addr| Settings::proxy(addr, shards, acl, config.limits, tls),
        Backend::Remote(cluster),
        loops,
    )
    .await
    {
        Ok(server) => server,
        Err(ServerError::Bind { addr, source }) => {
            return bad_flag("--listen", &addr.to_string(), &source.to_string())
        }
        Err(err) => {
            eprintln!("ringkv-proxy: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %server.local_addr(),
        cluster = %config.cluster,
        shards,
        node_connections,
        "ringkv-proxy {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
    );
    match server.run(terminate_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "shutdown failed");
            ExitCode::FAILURE
        }
    }
}

/// The cluster's config, waiting for etcd while it is unreachable; `None` (after saying why)
/// if the cluster does not exist.
async fn read_cluster_config(store: &ClusterStore, name: &str) -> Option<ClusterConfig> {
    let mut pause = Duration::from_millis(100);
    loop {
        match store.read_config().await {
            Ok(Some(config)) => return Some(config),
            Ok(None) => {
                eprintln!(
                    "ringkv-proxy: cluster {name:?} does not exist in etcd: create it with \
                     `ringkv-admin init`"
                );
                return None;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the cluster config; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One line naming the flag, exit code 2.
fn bad_flag(flag: &str, value: &str, reason: &str) -> ExitCode {
    eprintln!("ringkv-proxy: {flag} {value}: {reason}");
    ExitCode::from(2)
}
