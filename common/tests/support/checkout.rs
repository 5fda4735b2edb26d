//! Where the tests find the repository's files (dashboards, fuzz inputs).

use std::path::PathBuf;

/// The including package's directory in the checkout the tests run from. Cargo sets
/// `CARGO_MANIFEST_DIR` for the test process too; the compile-time value names the checkout
/// that built the binary, another one when clones share a target directory (as `.ci/run`'s
/// does) and cargo finds the binary up to date.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
