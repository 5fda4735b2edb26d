//! Every data command's argument parsing and execution: `command::resolve` on arbitrary
//! argument vectors, then the resolved command on an in-memory engine (see
//! `ringkv_fuzz::commands`). Nothing may panic.
//!
//! Arguments come from a vocabulary (a few keys, hash tags, option names, edge-case integers
//! and floats) or are short arbitrary bytes, so that the fuzzer reaches the option parsers
//! (SET, GETEX, the EXPIRE conditions, SCAN, INCRBYFLOAT, GETRANGE…) instead of stopping at
//! "unknown command". The store is emptied before each input, so an input replays alone.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringkv_common::command::COMMANDS;
use ringkv_fuzz::commands::{run, Request};
use ringkv_storage::{Fsync, Storage, StorageConfig};

const KEYS: &[&str] = &["k", "k2", "{t}a", "{t}b", "", "x:1", "x:2", "*"];

const WORDS: &[&str] = &[
    "NX", "XX", "GT", "LT", "GET", "EX", "PX", "EXAT", "PXAT", "KEEPTTL", "PERSIST", "MATCH",
    "COUNT", "TYPE", "string", "hash", "*", "k*", "?", "[a-z]", "\\", "[", "[^", "{t}*", "nx",
];

const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    10,
    100,
    1000,
    65_536,
    i32::MAX as i64,
    i32::MIN as i64,
    1 << 48,
    1 << 62,
    i64::MAX / 1000,
    i64::MAX / 1000 + 1,
    i64::MAX,
    i64::MIN,
    i64::MIN + 1,
    1_700_000_000,
    1_700_000_000_000,
    4_102_444_800_000,
    536_870_911,
    536_870_912,
];

const FLOATS: &[&str] = &[
    "0.1",
    "-0.1",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "inf",
    "-inf",
    "+inf",
    "nan",
    "1e-320",
    "3.0e3",
    " 1",
    "1 ",
    "0x10",
    "1.5",
    "-0",
    "5e-324",
    "1e400",
    "0.0",
    "1e17",
];

/// One argument.
#[derive(Debug, Arbitrary)]
enum Arg {
    Key(u8),
    Word(u8),
    Int(u8),
    AnyInt(i64),
    Float(u8),
    Bytes(Vec<u8>),
}

/// A command name: one of the table's (subcommands as two words), or arbitrary bytes.
#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Command {
    name: Name,
    args: Vec<Arg>,
    scoped: bool,
}

/// Inputs run on one store before it is replaced by a fresh one. Each input starts with
/// FLUSHALL, so no state crosses inputs, but on one store that lived through 14,000 inputs the
/// target had slowed from ~800 to ~30 inputs a second with 500 MB resident (values of up to
/// 64 KiB from SETRANGE/APPEND, then deleted by range, accumulate in the in-memory RocksDB).
const INPUTS_PER_STORE: u32 = 1000;

/// The in-memory store, opened once and replaced every [`INPUTS_PER_STORE`] inputs.
fn storage() -> Arc<Storage> {
    static STORAGE: Mutex<Option<(Arc<Storage>, u32)>> = Mutex::new(None);
    let mut slot = STORAGE.lock().unwrap_or_else(|e| e.into_inner());
    if slot
        .as_ref()
        .is_some_and(|(_, used)| *used >= INPUTS_PER_STORE)
    {
        *slot = None;
    }
    let (st, used) = slot.get_or_insert_with(|| {
        let st = Storage::open(StorageConfig::new("ringkv-fuzz", 4, true, Fsync::No))
            .expect("open the in-memory store");
        (st, 0)
    });
    *used += 1;
    Arc::clone(st)
}

fn names() -> &'static [Vec<&'static [u8]>] {
    static NAMES: OnceLock<Vec<Vec<&'static [u8]>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = Vec::new();
        for spec in COMMANDS {
            names.push(vec![spec.name.as_bytes()]);
            for sub in spec.subcommands {
                names.push(sub.name.as_bytes().split(|&b| b == b'|').collect());
            }
        }
        names
    })
}

fn pick(list: &[&str], i: u8) -> Bytes {
    Bytes::copy_from_slice(list[usize::from(i) % list.len()].as_bytes())
}

fn arg_bytes(arg: &Arg) -> Bytes {
    match arg {
        Arg::Key(i) => pick(KEYS, *i),
        Arg::Word(i) => pick(WORDS, *i),
        Arg::Int(i) => Bytes::from(INTS[usize::from(*i) % INTS.len()].to_string()),
        Arg::AnyInt(n) => Bytes::from(n.to_string()),
        Arg::Float(i) => pick(FLOATS, *i),
        Arg::Bytes(b) => Bytes::copy_from_slice(&b[..b.len().min(32)]),
    }
}

fn request(command: &Command) -> Request {
    let mut args: Vec<Bytes> = match &command.name {
        Name::Known(i) => names()[usize::from(*i) % names().len()]
            .iter()
            .map(|w| Bytes::copy_from_slice(w))
            .collect(),
        Name::Raw(raw) => vec![Bytes::copy_from_slice(&raw[..raw.len().min(32)])],
    };
    args.extend(command.args.iter().take(12).map(arg_bytes));
    Request {
        args,
        scoped: command.scoped,
    }
}

fuzz_target!(|commands: Vec<Command>| {
    let requests: Vec<Request> = commands.iter().take(16).map(request).collect();
    run(&storage(), &requests);
});
