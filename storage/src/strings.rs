//! The string commands, with Redis 7's option parsing, replies and errors.

use bytes::Bytes;
use ringkv_common::args::{
    int_arg, invalid_expire, is_opt, NOT_FLOAT, NOT_INTEGER, OVERFLOW, SYNTAX,
};
use ringkv_common::clock::now_ms;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::Reply;

use crate::counters::Counter;
use crate::engine::EngineError;
use crate::float::{incr_by_float, FloatError};
use crate::layout;
use crate::lcs;
use crate::value::{self, Value};
use crate::{Outcome, Storage};

/// Largest string a command may build (Redis's default proto-max-bulk-len).
pub const MAX_STRING: i64 = 512 * 1024 * 1024;

const TOO_LONG: Reply =
    Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");

pub(crate) fn execute(st: &Storage, spec: &'static CommandSpec, args: &[Bytes]) -> Outcome {
    match spec.cmd {
        Cmd::Get => get(st, &args[1]),
        Cmd::Set => set(st, spec, args),
        Cmd::Setnx => set_with(
            st,
            spec,
            &args[1],
            &args[2],
            SetOptions {
                nx: true,
                ..SetOptions::default()
            },
            None,
        )
        .map(|r| {
            if r == Reply::Ok {
                Reply::Int(1)
            } else {
                Reply::Int(0)
            }
        }),
        Cmd::Setex | Cmd::Psetex => {
            let unit = if spec.cmd == Cmd::Setex {
                Unit::Seconds
            } else {
                Unit::Millis
            };
            let options = SetOptions {
                expire: Some((Expiry::Relative, unit)),
                ..SetOptions::default()
            };
            set_with(st, spec, &args[1], &args[3], options, Some(&args[2]))
        }
        Cmd::Getset => {
            let options = SetOptions {
                get: true,
                ..SetOptions::default()
            };
            set_with(st, spec, &args[1], &args[2], options, None)
        }
        Cmd::Getdel => getdel(st, &args[1]),
        Cmd::Getex => getex(st, spec, args),
        Cmd::Mget => mget(st, &args[1..]),
        Cmd::Mset => mset(st, &args[1..], false),
        Cmd::Msetnx => mset(st, &args[1..], true),
        Cmd::Append => append(st, &args[1], &args[2]),
        Cmd::Strlen => {
            let value = st.read(&args[1], now_ms())?;
            Ok(Reply::Int(value.map_or(0, |v| v.payload.len() as i64)))
        }
        Cmd::Incr => incr_by(st, &args[1], 1),
        Cmd::Decr => incr_by(st, &args[1], -1),
        Cmd::Incrby => incr_by(st, &args[1], int_arg(&args[2])?),
        Cmd::Decrby => match int_arg(&args[2])? {
            i64::MIN => Err(Reply::error("ERR decrement would overflow").into()),
            n => incr_by(st, &args[1], -n),
        },
        Cmd::Incrbyfloat => incrbyfloat(st, &args[1], &args[2]),
        // SUBSTR is GETRANGE's old name, answered the same way.
        Cmd::Getrange | Cmd::Substr => getrange(st, args),
        Cmd::Lcs => lcs(st, args),
        Cmd::Setrange => setrange(st, args),
        _ => Ok(Reply::error("ERR command not served by the storage engine")),
    }
}

impl Storage {
    /// Reads a live value for a command that answers with it (GET, STRLEN, SET … GET…),
    /// counting the hit or miss as Redis's read lookups do.
    pub(crate) fn read(&self, key: &[u8], now: i64) -> Result<Option<Value>, EngineError> {
        let value = self.read_to_write(key, now)?;
        self.count_read(value.is_some());
        Ok(value)
    }

    /// Reads a live value a write starts from (APPEND, SETRANGE, SET NX…): not counted as a
    /// keyspace hit or miss, as Redis does not count its write lookups.
    pub(crate) fn read_to_write(&self, key: &[u8], now: i64) -> Result<Option<Value>, EngineError> {
        self.engine.get(self.shard(key), key, now)
    }

    /// Reads a live value in place through `read` (see [`Engine::read_live`]) for a write
    /// that starts from it (the increments): not counted, as [`Storage::read_to_write`].
    ///
    /// [`Engine::read_live`]: crate::engine::Engine::read_live
    pub(crate) fn read_with<R>(
        &self,
        key: &[u8],
        now: i64,
        read: impl FnOnce(i64, &[u8]) -> R,
    ) -> Result<Option<R>, EngineError> {
        self.engine.read_live(self.shard(key), key, now, read)
    }

    /// Writes one key's value in its own batch.
    pub(crate) fn write_one(
        &self,
        key: &[u8],
        expire_at: i64,
        payload: &[u8],
    ) -> Result<(), EngineError> {
        let mut batch = self.engine.batch();
        self.engine
            .put(&mut batch, self.shard(key), key, expire_at, payload)?;
        self.engine.write(batch)
    }

    /// Deletes one key in its own batch.
    pub(crate) fn delete_one(&self, key: &[u8]) -> Result<(), EngineError> {
        let mut batch = self.engine.batch();
        self.engine.delete(&mut batch, self.shard(key), key)?;
        self.engine.write(batch)
    }
}

fn bulk_or_nil(value: Option<Value>) -> Reply {
    value.map_or(Reply::Nil, |v| Reply::Bulk(v.payload))
}

fn get(st: &Storage, key: &Bytes) -> Outcome {
    Ok(bulk_or_nil(st.read(key, now_ms())?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// EX / PX: from now.
    Relative,
    /// EXAT / PXAT: a Unix time.
    Absolute,
}

#[derive(Debug, Default, Clone, Copy)]
struct SetOptions {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    expire: Option<(Expiry, Unit)>,
}

/// Redis's `parseExtendedStringArgumentsOrReply`, for SET (`for_set`) and GETEX.
fn parse_options(args: &[Bytes], for_set: bool) -> Result<(SetOptions, Option<&Bytes>), Reply> {
    let mut o = SetOptions::default();
    let mut expire_arg = None;
    let mut j = if for_set { 3 } else { 2 };
    while j < args.len() {
        let opt = &args[j][..];
        let has_next = j + 1 < args.len();
        let timed = o.expire.is_some();
        let expire_kind = |name: &str| o.expire.is_none_or(|e| e == expire_of(name));
        if for_set && is_opt(opt, "nx") && !o.xx {
            o.nx = true;
        } else if for_set && is_opt(opt, "xx") && !o.nx {
            o.xx = true;
        } else if for_set && is_opt(opt, "get") {
            o.get = true;
        } else if for_set && is_opt(opt, "keepttl") && !o.persist && !timed {
            o.keepttl = true;
        } else if !for_set && is_opt(opt, "persist") && !timed && !o.keepttl {
            o.persist = true;
        } else if let Some(name) = ["ex", "px", "exat", "pxat"]
            .into_iter()
            .find(|n| is_opt(opt, n))
        {
            if o.keepttl || o.persist || !expire_kind(name) || !has_next {
                return Err(SYNTAX);
            }
            o.expire = Some(expire_of(name));
            expire_arg = Some(&args[j + 1]);
            j += 1;
        } else {
            return Err(SYNTAX);
        }
        j += 1;
    }
    Ok((o, expire_arg))
}

fn expire_of(name: &str) -> (Expiry, Unit) {
    match name {
        "ex" => (Expiry::Relative, Unit::Seconds),
        "px" => (Expiry::Relative, Unit::Millis),
        "exat" => (Expiry::Absolute, Unit::Seconds),
        _ => (Expiry::Absolute, Unit::Millis),
    }
}

/// Redis's `getExpireMillisecondsOrReply`: the absolute Unix ms an expiry argument means.
fn expire_at(
    arg: &Bytes,
    (kind, unit): (Expiry, Unit),
    command: &str,
    now: i64,
) -> Result<i64, Reply> {
    let mut ms = int_arg(arg)?;
    if ms <= 0 || (unit == Unit::Seconds && ms > i64::MAX / 1000) {
        return Err(invalid_expire(command));
    }
    if unit == Unit::Seconds {
        ms *= 1000;
    }
    if kind == Expiry::Relative {
        ms = ms.wrapping_add(now);
    }
    if ms <= 0 {
        return Err(invalid_expire(command));
    }
    Ok(ms)
}

fn set(st: &Storage, spec: &'static CommandSpec, args: &[Bytes]) -> Outcome {
    let (options, expire_arg) = parse_options(args, true)?;
    set_with(st, spec, &args[1], &args[2], options, expire_arg)
}

/// Redis's `setGenericCommand`: SET and the commands that are SET with fixed options.
fn set_with(
    st: &Storage,
    spec: &CommandSpec,
    key: &Bytes,
    payload: &Bytes,
    o: SetOptions,
    expire_arg: Option<&Bytes>,
) -> Outcome {
    let now = now_ms();
    let expire_at = match (o.expire, expire_arg) {
        (Some(kind), Some(arg)) => Some(expire_at(arg, kind, spec.name, now)?),
        _ => None,
    };
    let _guard = st.locks.lock(key);
    if !(o.nx || o.xx || o.get || o.keepttl) {
        // A plain SET replaces whatever is there: no read needed.
        st.write_one(key, expire_at.unwrap_or(0), payload)?;
        return Ok(Reply::Ok);
    }
    // Redis counts the lookup of SET … GET (a read), not that of NX, XX or KEEPTTL.
    let old = if o.get {
        st.read(key, now)?
    } else {
        st.read_to_write(key, now)?
    };
    let found = old.is_some();
    if (o.nx && found) || (o.xx && !found) {
        return Ok(if o.get { bulk_or_nil(old) } else { Reply::Nil });
    }
    let keep = if o.keepttl {
        old.as_ref().map_or(0, |v| v.expire_at)
    } else {
        0
    };
    st.write_one(key, expire_at.unwrap_or(keep), payload)?;
    Ok(if o.get { bulk_or_nil(old) } else { Reply::Ok })
}

fn getdel(st: &Storage, key: &Bytes) -> Outcome {
    let _guard = st.locks.lock(key);
    let old = st.read(key, now_ms())?;
    if old.is_some() {
        st.delete_one(key)?;
    }
    Ok(bulk_or_nil(old))
}

fn getex(st: &Storage, spec: &CommandSpec, args: &[Bytes]) -> Outcome {
    let (o, expire_arg) = parse_options(args, false)?;
    let key = &args[1];
    let now = now_ms();
    let _guard = st.locks.lock(key);
    let Some(value) = st.read(key, now)? else {
        return Ok(Reply::Nil);
    };
    let when = match (o.expire, expire_arg) {
        (Some(kind), Some(arg)) => Some((kind.0, expire_at(arg, kind, spec.name, now)?)),
        _ => None,
    };
    match when {
        Some((Expiry::Absolute, at)) if at <= now => st.delete_one(key)?,
        Some((_, at)) => st.write_one(key, at, &value.payload)?,
        None if o.persist && value.expire_at != 0 => st.write_one(key, 0, &value.payload)?,
        None => {}
    }
    Ok(Reply::Bulk(value.payload))
}

fn mget(st: &Storage, keys: &[Bytes]) -> Outcome {
    let now = now_ms();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.push(bulk_or_nil(st.read(key, now)?));
    }
    Ok(Reply::Array(out))
}

fn mset(st: &Storage, pairs: &[Bytes], only_if_none_exist: bool) -> Outcome {
    if !pairs.len().is_multiple_of(2) {
        let name = if only_if_none_exist { "msetnx" } else { "mset" };
        return Ok(ringkv_common::command::wrong_arity(name));
    }
    let keys = pairs.iter().step_by(2).map(|k| &k[..]);
    let _held = st.locks.lock_many(keys);
    let now = now_ms();
    if only_if_none_exist {
        for key in pairs.iter().step_by(2) {
            if st.engine.header(st.shard(key), key, now)?.is_some() {
                return Ok(Reply::Int(0));
            }
        }
    }
    let mut batch = st.engine.batch();
    for pair in pairs.chunks_exact(2) {
        st.engine
            .put(&mut batch, st.shard(&pair[0]), &pair[0], 0, &pair[1])?;
    }
    st.engine.write(batch)?;
    Ok(if only_if_none_exist {
        Reply::Int(1)
    } else {
        Reply::Ok
    })
}

fn append(st: &Storage, key: &Bytes, tail: &Bytes) -> Outcome {
    let _guard = st.locks.lock(key);
    let old = st.read_to_write(key, now_ms())?;
    let (expire_at, mut payload) = value::editable(old);
    if payload.len() as i64 + tail.len() as i64 > MAX_STRING {
        return Err(TOO_LONG.into());
    }
    payload.extend_from_slice(tail);
    st.write_one(key, expire_at, &payload)?;
    Ok(Reply::Int(payload.len() as i64))
}

/// A key's expiry and its integer value plus `by` (or the error INCRBY answers), from the
/// counter cache or read in place; shared by INCR run alone and INCR in a gathered group.
/// `hash` is the key's `layout::order_of`.
pub(crate) fn read_incremented(
    st: &Storage,
    key: &[u8],
    hash: u64,
    now: i64,
    by: i64,
) -> Result<(i64, Result<i64, Reply>), EngineError> {
    if let Some(counter) = st.engine.counter(key, hash, now) {
        return Ok((
            counter.expire_at,
            counter.value.checked_add(by).ok_or(OVERFLOW),
        ));
    }
    let stored = st.read_with(key, now, |expire_at, payload| {
        (expire_at, incremented(Some(payload), by))
    })?;
    Ok(stored.unwrap_or_else(|| (0, incremented(None, by))))
}

/// INCRBY's arithmetic on a stored string (`None`: no key, which counts as 0), with Redis's
/// errors.
pub(crate) fn incremented(current: Option<&[u8]>, by: i64) -> Result<i64, Reply> {
    let current = match current {
        Some(payload) => parse_i64(payload).ok_or(NOT_INTEGER)?,
        None => 0,
    };
    current.checked_add(by).ok_or(OVERFLOW)
}

fn incr_by(st: &Storage, key: &Bytes, by: i64) -> Outcome {
    let _guard = st.locks.lock(key);
    let hash = layout::order_of(key);
    let (expire_at, next) = read_incremented(st, key, hash, now_ms(), by)?;
    let next = next?;
    let mut batch = st.engine.batch();
    let mut digits = itoa::Buffer::new();
    let payload = digits.format(next).as_bytes();
    st.engine
        .put_increment(&mut batch, st.shard(key), key, hash, expire_at, payload)?;
    st.engine.write(batch)?;
    st.engine.remember_counter(
        key,
        hash,
        Counter {
            expire_at,
            value: next,
        },
    );
    Ok(Reply::Int(next))
}

fn incrbyfloat(st: &Storage, key: &Bytes, by: &Bytes) -> Outcome {
    let _guard = st.locks.lock(key);
    let old = st.read_to_write(key, now_ms())?;
    let sum = incr_by_float(old.as_ref().map(|v| &v.payload[..]), by).map_err(|e| match e {
        FloatError::NotFloat => NOT_FLOAT,
        FloatError::NanOrInfinity => Reply::error("ERR increment would produce NaN or Infinity"),
    })?;
    st.write_one(key, old.map_or(0, |v| v.expire_at), &sum)?;
    Ok(Reply::Bulk(Bytes::from(sum)))
}

fn getrange(st: &Storage, args: &[Bytes]) -> Outcome {
    let mut start = int_arg(&args[2])?;
    let mut end = int_arg(&args[3])?;
    let Some(value) = st.read(&args[1], now_ms())? else {
        return Ok(Reply::bulk_static(b""));
    };
    let len = value.payload.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::bulk_static(b""));
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return Ok(Reply::bulk_static(b""));
    }
    Ok(Reply::Bulk(
        value.payload.slice(start as usize..=end as usize),
    ))
}

/// LCS key1 key2 [options]. As in Redis, both keys are read (and counted as read lookups)
/// before the options are checked, and a missing key is the empty string. Like MGET, the two
/// reads take no lock.
fn lcs(st: &Storage, args: &[Bytes]) -> Outcome {
    let now = now_ms();
    let a = st.read(&args[1], now)?;
    let b = st.read(&args[2], now)?;
    let options = lcs::Options::parse(&args[3..])?;
    let payload = |v: &Option<Value>| v.as_ref().map_or(Bytes::new(), |v| v.payload.clone());
    Ok(lcs::answer(&payload(&a), &payload(&b), options)?)
}

fn setrange(st: &Storage, args: &[Bytes]) -> Outcome {
    let offset = int_arg(&args[2])?;
    if offset < 0 {
        return Err(Reply::error("ERR offset is out of range").into());
    }
    let (key, patch) = (&args[1], &args[3]);
    let _guard = st.locks.lock(key);
    let old = st.read_to_write(key, now_ms())?;
    let old_len = old.as_ref().map_or(0, |v| v.payload.len() as i64);
    if patch.is_empty() {
        return Ok(Reply::Int(old_len));
    }
    match offset.checked_add(patch.len() as i64) {
        Some(total) if total <= MAX_STRING => {}
        _ => return Err(TOO_LONG.into()),
    }
    let (expire_at, mut payload) = value::editable(old);
    let offset = offset as usize;
    if payload.len() < offset + patch.len() {
        payload.resize(offset + patch.len(), 0);
    }
    payload[offset..offset + patch.len()].copy_from_slice(patch);
    st.write_one(key, expire_at, &payload)?;
    Ok(Reply::Int(payload.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn set_options_follow_redis_rules() {
        assert!(parse_options(&args(&["set", "k", "v", "NX", "XX"]), true).is_err());
        assert!(parse_options(&args(&["set", "k", "v", "EX", "1", "PX", "1"]), true).is_err());
        assert!(parse_options(&args(&["set", "k", "v", "EX", "1", "EX", "2"]), true).is_ok());
        assert!(parse_options(&args(&["set", "k", "v", "KEEPTTL", "EX", "1"]), true).is_err());
        assert!(parse_options(&args(&["set", "k", "v", "EX"]), true).is_err());
        assert!(parse_options(&args(&["set", "k", "v", "PERSIST"]), true).is_err());
        assert!(parse_options(&args(&["getex", "k", "PERSIST"]), false).is_ok());
        assert!(parse_options(&args(&["getex", "k", "NX"]), false).is_err());
        let request = args(&["set", "k", "v", "nx", "get", "pxat", "5"]);
        let (o, arg) = parse_options(&request, true).expect("valid");
        assert!(o.nx && o.get);
        assert_eq!(o.expire, Some((Expiry::Absolute, Unit::Millis)));
        assert_eq!(arg.map(|b| &b[..]), Some(&b"5"[..]));
    }

    #[test]
    fn expire_arguments_are_checked_as_redis() {
        let now = 1_000;
        let secs = (Expiry::Relative, Unit::Seconds);
        assert_eq!(expire_at(&Bytes::from("10"), secs, "set", now), Ok(11_000));
        assert_eq!(
            expire_at(&Bytes::from("0"), secs, "set", now),
            Err(invalid_expire("set"))
        );
        assert_eq!(
            expire_at(&Bytes::from("-1"), secs, "set", now),
            Err(invalid_expire("set"))
        );
        assert_eq!(
            expire_at(&Bytes::from("x"), secs, "set", now),
            Err(NOT_INTEGER)
        );
        let overflow = (i64::MAX / 1000 + 1).to_string();
        assert_eq!(
            expire_at(&Bytes::from(overflow), secs, "set", now),
            Err(invalid_expire("set"))
        );
        let ms_abs = (Expiry::Absolute, Unit::Millis);
        assert_eq!(expire_at(&Bytes::from("5"), ms_abs, "set", now), Ok(5));
    }
}
