//! Argument vectors through `command::resolve` and then, for data commands, through the
//! engine, as the standalone server (every shard) or a storage node (the first key's shard)
//! runs them. Nothing may panic, and every reply must encode in RESP2 and RESP3.

use bytes::{Bytes, BytesMut};
use ringkv_common::command::{resolve, Route};
use ringkv_common::placement::shard_of;
use ringkv_common::resp::reply::Protocol;
use ringkv_common::resp::request::parse_i64;
use ringkv_storage::{Scope, Storage};

/// One request: its arguments (name first), and whether to run it scoped to its first key's
/// shard as a storage node does.
#[derive(Debug, Clone)]
pub struct Request {
    /// The arguments, name first.
    pub args: Vec<Bytes>,
    /// Run with [`Scope::Shard`] rather than [`Scope::All`].
    pub scoped: bool,
}

impl Request {
    /// A request from words, run over every shard.
    pub fn new<A: AsRef<[u8]>>(args: &[A]) -> Request {
        Request {
            args: args
                .iter()
                .map(|a| Bytes::copy_from_slice(a.as_ref()))
                .collect(),
            scoped: false,
        }
    }
}

/// Empties the store, then runs `requests` in order.
pub fn run(st: &Storage, requests: &[Request]) {
    let flush = [Bytes::from_static(b"FLUSHALL")];
    st.execute(resolve(&flush).expect("FLUSHALL resolves"), &flush);
    for request in requests {
        run_one(st, request);
    }
}

/// Resolves and runs one request.
pub fn run_one(st: &Storage, request: &Request) {
    let args = &request.args;
    if args.is_empty() {
        // The connection never resolves an empty request.
        return;
    }
    let spec = match resolve(args) {
        Ok(spec) => spec,
        Err(reply) => {
            assert!(reply.is_error(), "{reply:?}");
            encode(&reply);
            return;
        }
    };
    // Commands the connection answers itself never reach the engine.
    if spec.route == Route::Local || too_slow(args) {
        return;
    }
    let scope = match spec.key_indexes(args.len()).next() {
        Some(i) if request.scoped => Scope::Shard(shard_of(&args[i], st.shards())),
        _ => Scope::All,
    };
    let reply = st.execute_in(scope, spec, args);
    encode(&reply);
}

fn encode(reply: &ringkv_common::resp::Reply) {
    let mut out = BytesMut::new();
    reply.encode(Protocol::Resp2, &mut out);
    reply.encode(Protocol::Resp3, &mut out);
}

/// SETRANGE with a large in-range offset builds a value of up to 512 MiB: correct, but it
/// would make such an input take a second and hold that memory. Offsets beyond the limit (the
/// error path) still run.
fn too_slow(args: &[Bytes]) -> bool {
    args[0].eq_ignore_ascii_case(b"setrange")
        && args.len() == 4
        && parse_i64(&args[2]).is_some_and(|offset| {
            offset > 65_536 && offset.saturating_add(args[3].len() as i64) <= 536_870_912
        })
}
