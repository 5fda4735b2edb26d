//! `ringkv-storage`: a storage node of a ringkv cluster.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 2 when a flag's value cannot be
//! used (one line on stderr names it), 1 when the node fails otherwise.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ringkv_storage::node::{self, NodeConfig, NodeError};
use tracing_subscriber::EnvFilter;

/// Rust-side allocations (request buffers, futures, replies) go to mimalloc: see the workspace
/// Cargo.toml. RocksDB's C++ allocations keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = NodeConfig::parse();
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
            eprintln!("ringkv-storage: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node::run(config, ringkv_common::signal::terminate_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(NodeError::Flag(err)) => {
            eprintln!("ringkv-storage: {err}");
            ExitCode::from(2)
        }
        Err(NodeError::Fatal(err)) => {
            eprintln!("ringkv-storage: {err}");
            ExitCode::FAILURE
        }
    }
}
