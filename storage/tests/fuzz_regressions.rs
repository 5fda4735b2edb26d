//! Inputs the `command_args` and `value_codec` fuzz targets found, replayed on the stable
//! toolchain through the same code: `fuzz/src/commands.rs` (included by path) resolves each
//! request and runs it on an in-memory engine as the fuzz target does. The fuzz inputs
//! themselves are kept under `fuzz/regressions/<target>/`; their decoded requests are written
//! out here (`cargo fuzz fmt` prints them).

#[allow(dead_code)]
#[path = "../../fuzz/src/commands.rs"]
mod commands;

use std::sync::Arc;

use commands::{run, Request};
use ringkv_storage::value::{encode, Header, HEADER_LEN};
use ringkv_storage::{Fsync, Storage, StorageConfig};

fn store() -> Arc<Storage> {
    Storage::open(StorageConfig::new(
        "ringkv-fuzz-regressions",
        4,
        true,
        Fsync::No,
    ))
    .expect("open the in-memory store")
}

fn scoped(mut request: Request) -> Request {
    request.scoped = true;
    request
}

/// The corners the fuzz target starts from, replayed as a smoke test of the harness itself.
#[test]
fn option_parsing_corners_run_without_panicking() {
    let st = store();
    let requests = [
        Request::new(&["SET", "k", "v", "EX", "9223372036854775807"]),
        Request::new(&["SET", "k", "v", "PXAT", "-9223372036854775808"]),
        Request::new(&["SET", "k", "v", "KEEPTTL", "GET", "XX"]),
        Request::new(&["EXPIRE", "k", "9223372036854775807", "GT", "LT"]),
        Request::new(&["PEXPIREAT", "k", "-9223372036854775808", "NX"]),
        Request::new(&["INCRBYFLOAT", "k", "1e308"]),
        Request::new(&["INCRBYFLOAT", "k", "nan"]),
        Request::new(&[
            "GETRANGE",
            "k",
            "-9223372036854775808",
            "9223372036854775807",
        ]),
        Request::new(&["SETRANGE", "k", "536870912", "x"]),
        Request::new(&[
            "SCAN",
            "18446744073709551615",
            "COUNT",
            "9223372036854775807",
        ]),
        Request::new(&["SCAN", "0", "MATCH", "[^", "TYPE", "string", "COUNT", "0"]),
        Request::new(&["GETEX", "k", "PERSIST", "EX", "1"]),
        scoped(Request::new(&["MSET", "{t}a", "1", "{t}b", "2"])),
        scoped(Request::new(&["RENAME", "{t}a", "{t}a"])),
        Request::new(&["KEYS", "*"]),
        Request::new(&["DBSIZE"]),
    ];
    run(&st, &requests);
}

#[test]
fn value_codec_round_trips_extremes() {
    for at in [0, 1, -1, i64::MIN, i64::MAX] {
        let record = encode(at, b"payload");
        let header = Header::decode(&record).expect("decodes");
        assert_eq!(header.expire_at, at);
        assert_eq!(&record[HEADER_LEN..], b"payload");
    }
}
