//! `ringkv`: the standalone server, proxy and storage engine in one process.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 2 when a flag's value cannot be
//! used (one line on stderr names it), 1 when the server fails while running.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use ringkv_proxy::backend::Backend;
use ringkv_proxy::config::{Config, ConfigError};
use ringkv_proxy::server::{Server, ServerError};
use ringkv_proxy::shutdown::terminate_signal;
use ringkv_storage::Storage;
use tracing_subscriber::EnvFilter;

/// Rust-side allocations (request buffers, futures, replies) go to mimalloc: see the workspace
/// Cargo.toml. RocksDB's C++ allocations keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::from_args() {
        Ok(config) => config,
        Err(err) => return bad_flag(&err),
    };
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
            eprintln!("ringkv: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    if let Some(addr) = config.metrics_addr {
        if let Err(err) = ringkv_common::metrics::install(addr, "standalone") {
            return bad_flag(&ConfigError {
                flag: "--metrics-addr",
                value: addr.to_string(),
                reason: err.reason,
            });
        }
    }
    // Opening may replay a WAL: off the async workers.
    let storage_config = config.storage();
    let storage = match tokio::task::spawn_blocking(move || Storage::open(storage_config)).await {
        Ok(Ok(storage)) => storage,
        Ok(Err(err)) => return bad_flag(&config.storage_error(&err)),
        Err(err) => {
            eprintln!("ringkv: the storage engine failed to open: {err}");
            return ExitCode::FAILURE;
        }
    };
    if config.metrics_addr.is_some() {
        tokio::spawn(ringkv_storage::metrics::export_forever(Arc::clone(
            &storage,
        )));
    }
    let server = match Server::bind(&config, Backend::Local(storage)).await {
        Ok(server) => server,
        Err(ServerError::Bind { addr, source }) => {
            let reason = format!("cannot listen on {addr}: {source}");
            return bad_flag(&ConfigError {
                flag: "--port",
                value: config.port.to_string(),
                reason,
            });
        }
        Err(err) => {
            eprintln!("ringkv: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %server.local_addr(),
        dir = %if config.in_memory { "(in memory)".into() } else { config.dir.display().to_string() },
        shards = config.shards,
        fsync = config.fsync.name(),
        "ringkv {} listening on {}",
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

/// One line naming the flag, exit code 2 (clap's code for usage errors).
fn bad_flag(err: &ConfigError) -> ExitCode {
    eprintln!("ringkv: {err}");
    ExitCode::from(2)
}
