//! OBJECT ENCODING, REFCOUNT, FREQ and IDLETIME: what Redis says about a key's in-memory
//! object, answered for the value ringkv holds; and MEMORY USAGE, what the key's records take.
//!
//! ringkv keeps no Redis objects, so ENCODING and REFCOUNT answer what Redis answers for the
//! same value as SET stores it (an integer, a short string, a long one). Redis can answer
//! differently for a value it built in place: after APPEND or SETRANGE on an existing key it
//! says `raw`, after INCRBYFLOAT `embstr`, whatever the value. Nothing tracks accesses, so
//! FREQ answers what Redis answers without an LFU policy, and IDLETIME says it is not tracked.

use bytes::Bytes;
use ringkv_common::args::{int_arg, is_opt, SYNTAX};
use ringkv_common::clock::now_ms;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::Reply;

use crate::layout::{DATA_PREFIX_LEN, EXPIRY_PREFIX_LEN};
use crate::value::HEADER_LEN;
use crate::{Outcome, Storage};

/// RocksDB's trailer on every record key: its sequence number and type.
const ROCKSDB_KEY_TRAILER: usize = 8;

/// Longest string Redis keeps in one allocation with its object (`embstr`).
const EMBSTR_LIMIT: usize = 44;

/// Integers below this are Redis's shared objects when no maxmemory is set (ringkv has none).
const SHARED_INTEGERS: i64 = 10_000;

/// Redis's reference count of a shared object.
const SHARED_REFCOUNT: i64 = i32::MAX as i64;

/// OBJECT ENCODING / REFCOUNT / FREQ / IDLETIME of `key`: nil for a missing key, as in Redis,
/// before any subcommand's own answer.
pub(crate) fn execute(st: &Storage, spec: &'static CommandSpec, key: &[u8]) -> Outcome {
    // Redis's OBJECT looks the key up as a read: a hit or a miss.
    let Some(value) = st.read(key, now_ms())? else {
        return Ok(Reply::Nil);
    };
    let integer = as_integer(&value.payload);
    Ok(match spec.cmd {
        // A bulk string, as Redis sends it.
        Cmd::ObjectEncoding => Reply::bulk_static(match integer {
            Some(_) => b"int",
            None if value.payload.len() <= EMBSTR_LIMIT => b"embstr",
            None => b"raw",
        }),
        Cmd::ObjectRefcount => match integer {
            Some(n) if (0..SHARED_INTEGERS).contains(&n) => Reply::Int(SHARED_REFCOUNT),
            _ => Reply::Int(1),
        },
        Cmd::ObjectFreq => Reply::error(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. \
             Please note that when switching between policies at runtime LRU and LFU data \
             will take some time to adjust.",
        ),
        _ => Reply::error("ERR ringkv does not track when keys were last accessed"),
    })
}

/// MEMORY USAGE key [SAMPLES count]: the bytes the key's records take in RocksDB before
/// compression (its data record, and its expiry-index record when it has an expiry), or nil.
/// A string has nothing to sample, so SAMPLES is checked as Redis checks it and then unused.
pub(crate) fn memory_usage(st: &Storage, args: &[Bytes]) -> Outcome {
    let mut options = args[3..].iter();
    while let Some(option) = options.next() {
        match options.next() {
            Some(count) if is_opt(option, "samples") => {
                if int_arg(count)? < 0 {
                    return Err(SYNTAX.into());
                }
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    let key = &args[2];
    // Redis finds the key without a read lookup: no keyspace hit or miss.
    let value = st.read_to_write(key, now_ms())?;
    Ok(value.map_or(Reply::Nil, |v| {
        Reply::Int(record_bytes(key.len(), v.payload.len(), v.expire_at != 0) as i64)
    }))
}

/// The bytes of a key's records: the data record (prefix, key, trailer, header, value) and,
/// for a key with an expiry, its expiry-index record (prefix, key, trailer; no value).
fn record_bytes(key: usize, value: usize, expires: bool) -> usize {
    let data = DATA_PREFIX_LEN + key + ROCKSDB_KEY_TRAILER + HEADER_LEN + value;
    let expiry = if expires {
        EXPIRY_PREFIX_LEN + key + ROCKSDB_KEY_TRAILER
    } else {
        0
    };
    data + expiry
}

/// The integer Redis would store the value as (`int` encoding): at most 20 characters that
/// `string2ll` accepts.
fn as_integer(payload: &[u8]) -> Option<i64> {
    if payload.len() > 20 {
        return None;
    }
    parse_i64(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_its_key_twice_only_with_an_expiry() {
        assert_eq!(record_bytes(3, 5, false), 9 + 3 + 8 + 10 + 5);
        assert_eq!(record_bytes(3, 5, true), 9 + 3 + 8 + 10 + 5 + 9 + 3 + 8);
    }

    #[test]
    fn integers_are_those_redis_would_encode_as_int() {
        assert_eq!(as_integer(b"0"), Some(0));
        assert_eq!(as_integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(as_integer(b"9223372036854775808"), None);
        assert_eq!(as_integer(b"007"), None);
        assert_eq!(as_integer(b"+7"), None);
        assert_eq!(as_integer(b"-0"), None);
        assert_eq!(as_integer(b" 7"), None);
        assert_eq!(as_integer(b"1.5"), None);
        assert_eq!(as_integer(b""), None);
    }
}
