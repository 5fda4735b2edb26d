//! Inputs the `resp_request` fuzz target found, replayed through the same checks on the stable
//! toolchain: the check code is the fuzz crate's own (`fuzz/src/resp.rs`, included by path),
//! and every file under `fuzz/regressions/resp_request/` is replayed.

#[path = "support/checkout.rs"]
mod checkout;
#[path = "../../fuzz/src/resp.rs"]
mod resp;

use std::path::PathBuf;

use bytes::BytesMut;
use ringkv_common::resp::request::{Parsed, RequestParser};

use checkout::manifest_dir;

fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = manifest_dir().join("../fuzz/regressions").join(target);
    // The directory is in the repository: not finding it must fail, not replay nothing.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("reading fuzz/regressions").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

#[test]
fn resp_request_regression_inputs_replay_cleanly() {
    for (path, input) in regressions("resp_request") {
        println!("replaying {}", path.display());
        resp::check(&input);
    }
}

#[test]
fn seeds_parse_the_same_in_every_chunking() {
    let seeds = manifest_dir().join("../fuzz/seeds/resp_request");
    for entry in std::fs::read_dir(seeds).expect("fuzz/seeds/resp_request") {
        let path = entry.expect("a seed").path();
        resp::check(&std::fs::read(&path).expect("reading a seed"));
    }
}

/// Most a parser may reserve for a request before its bytes arrive.
const RESERVE_BOUND: usize = 1 << 20;

/// Found by `resp_request` run with `-malloc_limit_mb=64` (libFuzzer's `out-of-memory
/// (malloc(411111113))`), kept as `fuzz/regressions/resp_request/oom-announced-bulk`:
/// `*5\r\n$411111111\r\n`, 16 bytes announcing a bulk of 411 MB, makes the parser reserve the
/// whole bulk at once, before a byte of it has arrived (up to 512 MiB, the largest bulk
/// allowed). Every connection can do this, so a few thousand connections of 16 bytes each
/// reserve terabytes: only virtual memory while it stays untouched under Linux's default
/// overcommit, but an allocation failure (strict overcommit, `ulimit -v`, a container limit)
/// aborts the whole server. Fixed: the parser reserves at most `MAX_PREALLOC` (1 MiB) ahead
/// of the bytes that arrived, and the buffer grows as they come.
#[test]
fn announced_bulk_length_is_not_reserved_up_front() {
    for input in [
        &b"*1\r\n$536870912\r\n"[..],
        include_bytes!("../../fuzz/regressions/resp_request/oom-announced-bulk"),
    ] {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut args = Vec::new();
        assert_eq!(parser.parse(&mut buf, &mut args), Ok(Parsed::Incomplete));
        assert!(
            buf.capacity() <= RESERVE_BOUND,
            "{} input bytes made the parser reserve {} bytes",
            input.len(),
            buf.capacity()
        );
    }
}
