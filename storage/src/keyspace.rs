//! The keyspace commands: existence, deletion, expiry, renaming and copying, as Redis 7
//! answers them.

use bytes::Bytes;
use ringkv_common::args::{int_arg, invalid_expire, is_opt, NO_SUCH_KEY, SYNTAX};
use ringkv_common::clock::now_ms;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::resp::Reply;

use crate::{Outcome, Storage};

pub(crate) fn execute(st: &Storage, spec: &'static CommandSpec, args: &[Bytes]) -> Outcome {
    match spec.cmd {
        Cmd::Del | Cmd::Unlink => del(st, &args[1..]),
        Cmd::Exists | Cmd::Touch => exists(st, &args[1..]),
        Cmd::Type => {
            let found = st
                .engine
                .header(st.shard(&args[1]), &args[1], now_ms())?
                .is_some();
            st.count_read(found);
            Ok(Reply::status(if found { "string" } else { "none" }))
        }
        Cmd::Expire => expire(st, spec, args, now_ms(), true),
        Cmd::Pexpire => expire(st, spec, args, now_ms(), false),
        Cmd::Expireat => expire(st, spec, args, 0, true),
        Cmd::Pexpireat => expire(st, spec, args, 0, false),
        Cmd::Ttl => ttl(st, &args[1], false, false),
        Cmd::Pttl => ttl(st, &args[1], true, false),
        Cmd::Expiretime => ttl(st, &args[1], false, true),
        Cmd::Pexpiretime => ttl(st, &args[1], true, true),
        Cmd::Persist => persist(st, &args[1]),
        Cmd::Rename => rename(st, &args[1], &args[2], false),
        Cmd::Renamenx => rename(st, &args[1], &args[2], true),
        Cmd::Copy => copy(st, args),
        Cmd::ObjectEncoding | Cmd::ObjectRefcount | Cmd::ObjectFreq | Cmd::ObjectIdletime => {
            crate::object::execute(st, spec, &args[2])
        }
        Cmd::MemoryUsage => crate::object::memory_usage(st, args),
        _ => Ok(Reply::error("ERR command not served by the storage engine")),
    }
}

fn del(st: &Storage, keys: &[Bytes]) -> Outcome {
    let _held = st.locks.lock_many(keys.iter().map(|k| &k[..]));
    let now = now_ms();
    let mut batch = st.engine.batch();
    let mut deleted = 0;
    // A key named twice is deleted (and counted) once, as in Redis.
    let mut unique: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    unique.sort_unstable();
    unique.dedup();
    for key in unique {
        if st.engine.header(st.shard(key), key, now)?.is_some() {
            st.engine.delete(&mut batch, st.shard(key), key)?;
            deleted += 1;
        }
    }
    if !batch.is_empty() {
        st.engine.write(batch)?;
    }
    Ok(Reply::Int(deleted))
}

fn exists(st: &Storage, keys: &[Bytes]) -> Outcome {
    let now = now_ms();
    let mut found = 0;
    for key in keys {
        let exists = st.engine.header(st.shard(key), key, now)?.is_some();
        // A read lookup for Redis: each key counts as a hit or a miss.
        st.count_read(exists);
        found += i64::from(exists);
    }
    Ok(Reply::Int(found))
}

/// The EXPIRE family's NX / XX / GT / LT conditions.
#[derive(Default)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

/// Redis's `parseExtendedExpireArgumentsOrReply`.
fn parse_conditions(options: &[Bytes]) -> Result<Conditions, Reply> {
    let mut c = Conditions::default();
    for opt in options {
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => c.nx = true,
            b"xx" => c.xx = true,
            b"gt" => c.gt = true,
            b"lt" => c.lt = true,
            _ => {
                let end = opt.iter().position(|&b| b == 0).unwrap_or(opt.len());
                return Err(Reply::error_owned(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(&opt[..end])
                )));
            }
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if c.gt && c.lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(c)
}

/// Redis's `expireGenericCommand`: `basetime` is now for relative forms, 0 for absolute.
fn expire(
    st: &Storage,
    spec: &CommandSpec,
    args: &[Bytes],
    basetime: i64,
    seconds: bool,
) -> Outcome {
    let key = &args[1];
    let conditions = parse_conditions(&args[3..])?;
    let mut when = int_arg(&args[2])?;
    if seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(invalid_expire(spec.name).into());
        }
        when *= 1000;
    }
    if when > i64::MAX - basetime {
        return Err(invalid_expire(spec.name).into());
    }
    when += basetime;

    let _guard = st.locks.lock(key);
    let now = now_ms();
    let Some(value) = st.engine.get(st.shard(key), key, now)? else {
        return Ok(Reply::Int(0));
    };
    let current = if value.expire_at == 0 {
        -1
    } else {
        value.expire_at
    };
    let refused = (conditions.nx && current != -1)
        || (conditions.xx && current == -1)
        || (conditions.gt && (when <= current || current == -1))
        || (conditions.lt && current != -1 && when >= current);
    if refused {
        return Ok(Reply::Int(0));
    }
    if when <= now {
        st.delete_one(key)?;
    } else {
        st.write_one(key, when, &value.payload)?;
    }
    Ok(Reply::Int(1))
}

/// TTL, PTTL, EXPIRETIME and PEXPIRETIME: -2 for no key, -1 for no expiry.
fn ttl(st: &Storage, key: &Bytes, millis: bool, absolute: bool) -> Outcome {
    let now = now_ms();
    let header = st.engine.header(st.shard(key), key, now)?;
    st.count_read(header.is_some());
    let Some(header) = header else {
        return Ok(Reply::Int(-2));
    };
    if header.expire_at == 0 {
        return Ok(Reply::Int(-1));
    }
    let left = if absolute {
        header.expire_at
    } else {
        header.expire_at - now
    }
    .max(0);
    // Rounded to the nearest second as Redis does, without overflowing near i64::MAX.
    Ok(Reply::Int(if millis {
        left
    } else {
        left / 1000 + i64::from(left % 1000 >= 500)
    }))
}

fn persist(st: &Storage, key: &Bytes) -> Outcome {
    let _guard = st.locks.lock(key);
    match st.engine.get(st.shard(key), key, now_ms())? {
        Some(value) if value.expire_at != 0 => {
            st.write_one(key, 0, &value.payload)?;
            Ok(Reply::Int(1))
        }
        _ => Ok(Reply::Int(0)),
    }
}

/// RENAME / RENAMENX: atomic even across shards, since one RocksDB batch spans families.
fn rename(st: &Storage, from: &Bytes, to: &Bytes, nx: bool) -> Outcome {
    let _held = st.locks.lock_many([&from[..], &to[..]].into_iter());
    let now = now_ms();
    let Some(value) = st.engine.get(st.shard(from), from, now)? else {
        return Err(NO_SUCH_KEY.into());
    };
    if from == to {
        return Ok(if nx { Reply::Int(0) } else { Reply::Ok });
    }
    if nx && st.engine.header(st.shard(to), to, now)?.is_some() {
        return Ok(Reply::Int(0));
    }
    let mut batch = st.engine.batch();
    st.engine.put(
        &mut batch,
        st.shard(to),
        to,
        value.expire_at,
        &value.payload,
    )?;
    st.engine.delete(&mut batch, st.shard(from), from)?;
    st.engine.write(batch)?;
    Ok(if nx { Reply::Int(1) } else { Reply::Ok })
}

/// COPY source destination [DB destination-db] [REPLACE], in Redis's order of checks:
/// options, then the same-key error, then the source, then the destination. Only database 0
/// exists, so `DB` names it or is out of range.
fn copy(st: &Storage, args: &[Bytes]) -> Outcome {
    let (from, to) = (&args[1], &args[2]);
    let mut replace = false;
    let mut options = args[3..].iter();
    while let Some(option) = options.next() {
        if is_opt(option, "replace") {
            replace = true;
        } else if let (true, Some(db)) = (is_opt(option, "db"), options.clone().next()) {
            options.next();
            let db = int_arg(db)?;
            if i32::try_from(db).is_err() {
                return Err(Reply::error(
                    "ERR value is out of range, value must between -2147483648 and 2147483647",
                )
                .into());
            }
            if db != 0 {
                return Err(Reply::error("ERR DB index is out of range").into());
            }
        } else {
            return Err(SYNTAX.into());
        }
    }
    if from == to {
        return Err(Reply::error("ERR source and destination objects are the same").into());
    }
    let _held = st.locks.lock_many([&from[..], &to[..]].into_iter());
    let now = now_ms();
    let Some(value) = st.read(from, now)? else {
        return Ok(Reply::Int(0));
    };
    if !replace && st.engine.header(st.shard(to), to, now)?.is_some() {
        return Ok(Reply::Int(0));
    }
    st.write_one(to, value.expire_at, &value.payload)?;
    Ok(Reply::Int(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn expire_conditions_are_checked_as_redis() {
        assert!(parse_conditions(&opts(&["nx"])).is_ok());
        assert!(parse_conditions(&opts(&["GT", "xx"])).is_ok());
        let err = |w: &[&str]| parse_conditions(&opts(w)).err();
        assert_eq!(
            err(&["nx", "xx"]),
            Some(Reply::error(
                "ERR NX and XX, GT or LT options at the same time are not compatible"
            ))
        );
        assert_eq!(
            err(&["gt", "lt"]),
            Some(Reply::error(
                "ERR GT and LT options at the same time are not compatible"
            ))
        );
        assert_eq!(
            err(&["foo"]),
            Some(Reply::error("ERR Unsupported option foo"))
        );
    }
}
