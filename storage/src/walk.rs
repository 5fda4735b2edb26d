//! Commands that walk every shard: SCAN, KEYS, RANDOMKEY, DBSIZE, FLUSHALL, FLUSHDB.
//!
//! A SCAN cursor is stateless: the shard in its top 16 bits and, below, the top 48 bits of the
//! scan-order hash of the next key to return (see `layout`). Any server of the same data can
//! continue it, and a key present for the whole scan is returned exactly once unless two keys
//! share a 48-bit hash prefix across a page boundary, which the walk avoids by never ending a
//! page between two such keys.

use bytes::Bytes;
use rand::Rng;
use ringkv_common::args::{int_arg, is_opt, SYNTAX};
use ringkv_common::clock::now_ms;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::cursor::{parse_cursor, POSITION_MASK, SHARD_SHIFT};
use ringkv_common::glob::glob_match;
use ringkv_common::resp::Reply;

use crate::engine::EngineError;
use crate::layout::split_data_key;
use crate::value::Header;
use crate::{Outcome, Scope, Storage};

pub(crate) fn execute(
    st: &Storage,
    scope: Scope,
    spec: &'static CommandSpec,
    args: &[Bytes],
) -> Outcome {
    match spec.cmd {
        Cmd::Dbsize => Ok(Reply::Int(count(st, scope)?.0 as i64)),
        Cmd::Flushall | Cmd::Flushdb => {
            match args.len() {
                1 => {}
                2 if is_opt(&args[1], "sync") || is_opt(&args[1], "async") => {}
                _ => return Err(SYNTAX.into()),
            }
            // No write may land between the tombstones and their flush (see `Engine::clear`).
            let _all = st.locks.lock_all();
            st.engine.clear(shards(st, scope))?;
            Ok(Reply::Ok)
        }
        Cmd::Scan => scan(st, scope, args),
        Cmd::Keys => keys(st, scope, &args[1]),
        Cmd::Randomkey => random_key(st, scope),
        _ => Ok(Reply::error("ERR command not served by the storage engine")),
    }
}

/// The shards a command of `scope` walks: every hosted one, or the one named.
fn shards(st: &Storage, scope: Scope) -> Vec<u32> {
    match scope {
        Scope::All => st.engine.hosted().collect(),
        Scope::Shard(shard) => vec![shard],
    }
}

/// Visits every live key of `shard` from scan position `order` until `visit` returns false;
/// expired records are passed with `live == false`. Returns whether the shard was finished.
fn visit_shard(
    st: &Storage,
    shard: u32,
    order: u64,
    now: i64,
    mut visit: impl FnMut(u64, &[u8], Option<Header>) -> bool,
) -> Result<bool, EngineError> {
    let mut iter = st.engine.data_iter(shard, order)?;
    while let Some((record_key, record)) = iter.current() {
        if let Some((order, key)) = split_data_key(record_key) {
            let mut header = Header::decode(record).filter(|h| !h.expired(now));
            if header.is_none() {
                // Overwrites update memtable entries in place, and an iterator reads them
                // without RocksDB's per-entry lock: a record caught mid-rewrite can look
                // expired. A point read takes the lock; a live key is never skipped.
                header = st.engine.header(shard, key, now)?;
            }
            if !visit(order, key, header) {
                return Ok(false);
            }
        }
        iter.advance();
    }
    iter.status()?;
    Ok(true)
}

/// Live keys and live keys with an expiry, over the shards of `scope`.
pub(crate) fn count(st: &Storage, scope: Scope) -> Result<(u64, u64), EngineError> {
    let now = now_ms();
    let (mut keys, mut expires) = (0, 0);
    for shard in shards(st, scope) {
        visit_shard(st, shard, 0, now, |_, _, header| {
            if let Some(h) = header {
                keys += 1;
                expires += u64::from(h.expire_at != 0);
            }
            true
        })?;
    }
    Ok((keys, expires))
}

/// SCAN over every shard (a cursor moves on to the next shard when one is done), or over one
/// shard (the cursor must name it; 0 comes back when that shard is done): the proxy of a
/// cluster walks the shards itself, one node request each.
fn scan(st: &Storage, scope: Scope, args: &[Bytes]) -> Outcome {
    let cursor = parse_cursor(&args[1]).ok_or(Reply::error("ERR invalid cursor"))?;
    let mut count: i64 = 10;
    let mut pattern: Option<&[u8]> = None;
    let mut type_filter: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        if is_opt(&args[i], "count") && has_value {
            count = int_arg(&args[i + 1])?;
            if count < 1 {
                return Err(SYNTAX.into());
            }
        } else if is_opt(&args[i], "match") && has_value {
            pattern = Some(&args[i + 1][..]).filter(|p| *p != b"*");
        } else if is_opt(&args[i], "type") && has_value {
            type_filter = Some(&args[i + 1][..]);
        } else {
            return Err(SYNTAX.into());
        }
        i += 2;
    }
    let wants_strings = type_filter.is_none_or(|t| t.eq_ignore_ascii_case(b"string"));

    let now = now_ms();
    let mut shard = (cursor >> SHARD_SHIFT) as u32;
    let mut position = (cursor & POSITION_MASK) << (64 - SHARD_SHIFT);
    let end = match scope {
        Scope::All => st.shards(),
        Scope::Shard(only) if cursor == 0 || shard == only => {
            shard = only;
            only + 1
        }
        Scope::Shard(_) => return Err(Reply::error("ERR invalid cursor").into()),
    };
    let mut found = Vec::new();
    let mut examined: i64 = 0;
    let mut next_cursor = 0;
    while shard < end {
        if !st.engine.hosts(shard) {
            shard += 1;
            position = 0;
            continue;
        }
        let mut last_prefix = None;
        let finished = visit_shard(st, shard, position, now, |order, key, header| {
            let prefix = order >> (64 - SHARD_SHIFT);
            let page_full = examined >= count && last_prefix != Some(prefix);
            if page_full && !(shard == 0 && prefix == 0) {
                next_cursor = (u64::from(shard) << SHARD_SHIFT) | prefix;
                return false;
            }
            examined += 1;
            last_prefix = Some(prefix);
            let wanted = header.is_some()
                && wants_strings
                && pattern.is_none_or(|p| glob_match(p, key, false));
            if wanted {
                found.push(Reply::Bulk(Bytes::copy_from_slice(key)));
            }
            true
        })?;
        if !finished {
            break;
        }
        shard += 1;
        position = 0;
        if examined >= count {
            if shard < end {
                next_cursor = u64::from(shard) << SHARD_SHIFT;
            }
            break;
        }
    }
    let cursor_text = Bytes::copy_from_slice(itoa::Buffer::new().format(next_cursor).as_bytes());
    Ok(Reply::Array(vec![
        Reply::Bulk(cursor_text),
        Reply::Array(found),
    ]))
}

fn keys(st: &Storage, scope: Scope, pattern: &[u8]) -> Outcome {
    let now = now_ms();
    let all = pattern == b"*";
    let mut found = Vec::new();
    for shard in shards(st, scope) {
        visit_shard(st, shard, 0, now, |_, key, header| {
            if header.is_some() && (all || glob_match(pattern, key, false)) {
                found.push(Reply::Bulk(Bytes::copy_from_slice(key)));
            }
            true
        })?;
    }
    Ok(Reply::Array(found))
}

fn random_key(st: &Storage, scope: Scope) -> Outcome {
    let now = now_ms();
    let mut rng = rand::thread_rng();
    let shards = shards(st, scope);
    if shards.is_empty() {
        return Ok(Reply::Nil);
    }
    let first = rng.gen_range(0..shards.len());
    let start: u64 = rng.gen();
    for step in 0..shards.len() {
        let shard = shards[(first + step) % shards.len()];
        // From a random position to the end of the shard, then from its beginning.
        for from in [start, 0] {
            let mut chosen = None;
            visit_shard(st, shard, from, now, |_, key, header| {
                if header.is_some() {
                    chosen = Some(Bytes::copy_from_slice(key));
                    return false;
                }
                true
            })?;
            if let Some(key) = chosen {
                return Ok(Reply::Bulk(key));
            }
        }
    }
    Ok(Reply::Nil)
}
