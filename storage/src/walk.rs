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
use ringkv_common::glob::glob_match;
use ringkv_common::resp::Reply;

use crate::layout::split_data_key;
use crate::value::Header;
use crate::{Outcome, Storage};

const SHARD_SHIFT: u32 = 48;
const POSITION_MASK: u64 = (1 << SHARD_SHIFT) - 1;

pub(crate) fn execute(st: &Storage, spec: &'static CommandSpec, args: &[Bytes]) -> Outcome {
    match spec.cmd {
        Cmd::Dbsize => Ok(Reply::Int(count(st)?.0 as i64)),
        Cmd::Flushall | Cmd::Flushdb => {
            match args.len() {
                1 => {}
                2 if is_opt(&args[1], "sync") || is_opt(&args[1], "async") => {}
                _ => return Err(SYNTAX.into()),
            }
            st.engine.clear_all()?;
            Ok(Reply::Ok)
        }
        Cmd::Scan => scan(st, args),
        Cmd::Keys => keys(st, &args[1]),
        Cmd::Randomkey => random_key(st),
        _ => Ok(Reply::error("ERR command not served by the storage engine")),
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
) -> Result<bool, rocksdb::Error> {
    let mut iter = st.engine.data_iter(shard, order);
    while let Some((record_key, record)) = iter.current() {
        if let Some((order, key)) = split_data_key(record_key) {
            let header = Header::decode(record).filter(|h| !h.expired(now));
            if !visit(order, key, header) {
                return Ok(false);
            }
        }
        iter.advance();
    }
    iter.status()?;
    Ok(true)
}

/// Live keys and live keys with an expiry, over every shard.
pub(crate) fn count(st: &Storage) -> Result<(u64, u64), rocksdb::Error> {
    let now = now_ms();
    let (mut keys, mut expires) = (0, 0);
    for shard in 0..st.shards() {
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

/// A cursor as Redis's `strtoul` reads it: optional sign, decimal digits, nothing else.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let (negative, digits) = match arg {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, arg),
    };
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

fn scan(st: &Storage, args: &[Bytes]) -> Outcome {
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
    let mut found = Vec::new();
    let mut examined: i64 = 0;
    let mut next_cursor = 0;
    while shard < st.shards() {
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
            if shard < st.shards() {
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

fn keys(st: &Storage, pattern: &[u8]) -> Outcome {
    let now = now_ms();
    let all = pattern == b"*";
    let mut found = Vec::new();
    for shard in 0..st.shards() {
        visit_shard(st, shard, 0, now, |_, key, header| {
            if header.is_some() && (all || glob_match(pattern, key, false)) {
                found.push(Reply::Bulk(Bytes::copy_from_slice(key)));
            }
            true
        })?;
    }
    Ok(Reply::Array(found))
}

fn random_key(st: &Storage) -> Outcome {
    let now = now_ms();
    let mut rng = rand::thread_rng();
    let first_shard = rng.gen_range(0..st.shards());
    let start: u64 = rng.gen();
    for step in 0..st.shards() {
        let shard = (first_shard + step) % st.shards();
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

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_parse_as_strtoul() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+7"), Some(7));
        assert_eq!(parse_cursor(b"007"), Some(7));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"abc"), None);
        assert_eq!(parse_cursor(b"1 "), None);
        assert_eq!(parse_cursor(b"99999999999999999999999"), None);
    }
}
