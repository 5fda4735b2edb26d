//! The bitmap commands on string values: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD
//! and BITFIELD_RO, with Redis 7.0's argument checks in Redis's order, replies and errors.
//!
//! Bits are numbered from the most significant bit of the first byte, as in Redis. Reading
//! past a value's end reads zeros; writing past it grows the value with zero bytes. Writes keep
//! the key's expiry, except BITOP's, which replaces its destination as SET does.

use bytes::Bytes;
use ringkv_common::args::{int_arg, is_opt, NOT_INTEGER, SYNTAX};
use ringkv_common::clock::now_ms;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::Reply;

use crate::value;
use crate::{Outcome, Storage};

/// Bytes a bit offset may reach: Redis's default `proto-max-bulk-len` (see `strings`).
const MAX_BYTES: u64 = 512 * 1024 * 1024;

const BAD_OFFSET: Reply = Reply::error("ERR bit offset is not an integer or out of range");
const BAD_BIT: Reply = Reply::error("ERR bit is not an integer or out of range");

/// Runs one bitmap command; `args[0]` is its name, its arity already checked.
pub(crate) fn execute(st: &Storage, spec: &'static CommandSpec, args: &[Bytes]) -> Outcome {
    match spec.cmd {
        Cmd::Setbit => setbit(st, args),
        Cmd::Getbit => getbit(st, args),
        Cmd::Bitcount => bitcount(st, args),
        Cmd::Bitpos => bitpos(st, args),
        Cmd::Bitop => bitop(st, args),
        Cmd::Bitfield => bitfield(st, args, false),
        Cmd::BitfieldRo => bitfield(st, args, true),
        _ => Ok(Reply::error("ERR command not served by the storage engine")),
    }
}

/// Redis's `getBitOffsetFromArgument`: a bit offset within the first 512 MiB; with `#`
/// allowed (BITFIELD), `#n` is the n-th field of `bits` bits.
fn bit_offset(arg: &[u8], hash_bits: Option<u32>) -> Result<u64, Reply> {
    let (digits, times) = match (arg.first(), hash_bits) {
        (Some(b'#'), Some(bits)) => (&arg[1..], i64::from(bits)),
        _ => (arg, 1),
    };
    let offset = parse_i64(digits).ok_or(BAD_OFFSET)?.wrapping_mul(times);
    match u64::try_from(offset) {
        Ok(offset) if offset >> 3 < MAX_BYTES => Ok(offset),
        _ => Err(BAD_OFFSET),
    }
}

fn bit_at(value: &[u8], offset: u64) -> bool {
    let byte = (offset >> 3) as usize;
    value
        .get(byte)
        .is_some_and(|b| b & (0x80 >> (offset & 7)) != 0)
}

fn set_bit(value: &mut [u8], offset: u64, on: bool) {
    let byte = (offset >> 3) as usize;
    let mask = 0x80 >> (offset & 7);
    if on {
        value[byte] |= mask;
    } else {
        value[byte] &= !mask;
    }
}

/// SETBIT key offset 0|1: the bit's old value.
fn setbit(st: &Storage, args: &[Bytes]) -> Outcome {
    let offset = bit_offset(&args[2], None)?;
    let on = match parse_i64(&args[3]) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(BAD_BIT.into()),
    };
    let key = &args[1];
    let _guard = st.locks.lock(key);
    let old = st.read_to_write(key, now_ms())?;
    let (expire_at, mut payload) = value::editable(old);
    let needed = (offset >> 3) as usize + 1;
    let grows = payload.len() < needed;
    if grows {
        payload.resize(needed, 0);
    }
    let was = bit_at(&payload, offset);
    if grows || was != on {
        set_bit(&mut payload, offset, on);
        st.write_one(key, expire_at, &payload)?;
    }
    Ok(Reply::Int(i64::from(was)))
}

/// GETBIT key offset: 0 past the end or for a missing key.
fn getbit(st: &Storage, args: &[Bytes]) -> Outcome {
    let offset = bit_offset(&args[2], None)?;
    let value = st.read(&args[1], now_ms())?;
    Ok(Reply::Int(
        value.map_or(0, |v| i64::from(bit_at(&v.payload, offset))),
    ))
}

/// A range of BITCOUNT or BITPOS after Redis's index conversion: inclusive bit positions,
/// or `None` when it is empty.
fn bit_range(len: usize, start: i64, end: i64, in_bits: bool) -> Option<(u64, u64)> {
    let total = if in_bits { len as i64 * 8 } else { len as i64 };
    let clamp = |i: i64| if i < 0 { (total + i).max(0) } else { i };
    let (start, end) = (clamp(start), clamp(end).min(total - 1));
    if start > end {
        return None;
    }
    let (start, end) = (start as u64, end as u64);
    Some(if in_bits {
        (start, end)
    } else {
        (start * 8, end * 8 + 7)
    })
}

/// `BIT` or `BYTE`, the unit of a range (bytes by default).
fn unit_is_bits(arg: Option<&Bytes>) -> Result<bool, Reply> {
    match arg {
        None => Ok(false),
        Some(a) if is_opt(a, "bit") => Ok(true),
        Some(a) if is_opt(a, "byte") => Ok(false),
        Some(_) => Err(SYNTAX),
    }
}

fn count_ones(value: &[u8], first: u64, last: u64) -> u64 {
    let (first_byte, last_byte) = ((first >> 3) as usize, (last >> 3) as usize);
    let mut count: u64 = value[first_byte..=last_byte]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    // Take off the bits of the edge bytes outside the range.
    let before = (0xFFu16 << (8 - (first & 7))) as u8;
    let after = ((1u16 << (7 - (last & 7))) - 1) as u8;
    count -= u64::from((value[first_byte] & before).count_ones());
    count -= u64::from((value[last_byte] & after).count_ones());
    count
}

/// BITCOUNT key [start end [BYTE|BIT]]. As Redis 7.0 does, a missing key answers 0 before the
/// range is looked at.
fn bitcount(st: &Storage, args: &[Bytes]) -> Outcome {
    let Some(value) = st.read(&args[1], now_ms())? else {
        return Ok(Reply::Int(0));
    };
    let len = value.payload.len();
    let range = match args.len() {
        2 => bit_range(len, 0, len as i64 - 1, false),
        4 | 5 => {
            let start = int_arg(&args[2])?;
            let end = int_arg(&args[3])?;
            if start < 0 && end < 0 && start > end {
                return Ok(Reply::Int(0));
            }
            let in_bits = unit_is_bits(args.get(4))?;
            bit_range(len, start, end, in_bits)
        }
        _ => return Err(SYNTAX.into()),
    };
    Ok(Reply::Int(range.map_or(0, |(first, last)| {
        count_ones(&value.payload, first, last) as i64
    })))
}

/// The first bit equal to `bit` in the inclusive bit range, if any.
fn find_bit(value: &[u8], bit: bool, first: u64, last: u64) -> Option<u64> {
    let mut at = first;
    while at <= last {
        // Whole bytes at once when aligned.
        if at & 7 == 0 && at + 7 <= last {
            let byte = value[(at >> 3) as usize];
            let wanted = if bit { byte } else { !byte };
            if wanted != 0 {
                return Some(at + u64::from(wanted.leading_zeros()));
            }
            at += 8;
            continue;
        }
        if bit_at(value, at) == bit {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// BITPOS key 0|1 [start [end [BYTE|BIT]]]: the bit argument is checked first, then a missing
/// key answers (an endless run of zeros), then the range, as Redis 7.0 does.
fn bitpos(st: &Storage, args: &[Bytes]) -> Outcome {
    let bit = match int_arg(&args[2])? {
        0 => false,
        1 => true,
        _ => return Err(Reply::error("ERR The bit argument must be 1 or 0.").into()),
    };
    let Some(value) = st.read(&args[1], now_ms())? else {
        return Ok(Reply::Int(if bit { -1 } else { 0 }));
    };
    let len = value.payload.len();
    let (range, end_given) = match args.len() {
        3 => (bit_range(len, 0, len as i64 - 1, false), false),
        4..=6 => {
            let start = int_arg(&args[3])?;
            let in_bits = unit_is_bits(args.get(5))?;
            let end = match args.get(4) {
                Some(end) => int_arg(end)?,
                None if in_bits => len as i64 * 8 + 7,
                None => len as i64 - 1,
            };
            (bit_range(len, start, end, in_bits), args.len() >= 5)
        }
        _ => return Err(SYNTAX.into()),
    };
    let Some((first, last)) = range else {
        return Ok(Reply::Int(-1));
    };
    Ok(Reply::Int(
        match find_bit(&value.payload, bit, first, last) {
            Some(at) => at as i64,
            // No clear bit in the value: without an end, the one just past it.
            None if !bit && !end_given => (last + 1) as i64,
            None => -1,
        },
    ))
}

/// BITOP AND|OR|XOR|NOT destkey key [key ...]: the result's length; an empty result deletes
/// the destination.
fn bitop(st: &Storage, args: &[Bytes]) -> Outcome {
    #[derive(PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let op = match &args[1] {
        a if is_opt(a, "and") => Op::And,
        a if is_opt(a, "or") => Op::Or,
        a if is_opt(a, "xor") => Op::Xor,
        a if is_opt(a, "not") => Op::Not,
        _ => return Err(SYNTAX.into()),
    };
    if op == Op::Not && args.len() != 4 {
        return Err(Reply::error("ERR BITOP NOT must be called with a single source key.").into());
    }
    let (dest, sources) = (&args[2], &args[3..]);
    let _held = st.locks.lock_many(args[2..].iter().map(|k| &k[..]));
    let now = now_ms();
    let mut values = Vec::with_capacity(sources.len());
    for key in sources {
        values.push(st.read(key, now)?.map_or_else(Bytes::new, |v| v.payload));
    }
    let width = values.iter().map(Bytes::len).max().unwrap_or(0);
    if width == 0 {
        if st.engine.header(st.shard(dest), dest, now)?.is_some() {
            st.delete_one(dest)?;
        }
        return Ok(Reply::Int(0));
    }
    let byte = |v: &Bytes, i: usize| v.get(i).copied().unwrap_or(0);
    let result: Vec<u8> = (0..width)
        .map(|i| {
            let rest = values[1..].iter().map(|v| byte(v, i));
            let first = byte(&values[0], i);
            match op {
                Op::And => rest.fold(first, |a, b| a & b),
                Op::Or => rest.fold(first, |a, b| a | b),
                Op::Xor => rest.fold(first, |a, b| a ^ b),
                Op::Not => !first,
            }
        })
        .collect();
    st.write_one(dest, 0, &result)?;
    Ok(Reply::Int(width as i64))
}

/// BITFIELD's OVERFLOW modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

/// One BITFIELD operation, its type and offset parsed.
#[derive(Debug, Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

/// Redis's `getBitfieldTypeFromArgument`: `i1`…`i64` or `u1`…`u63` (the sign letter in lower
/// case only).
fn field_type(arg: &[u8]) -> Result<(bool, u32), Reply> {
    const BAD_TYPE: Reply = Reply::error(
        "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
    );
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(BAD_TYPE),
    };
    match parse_i64(&arg[1..]) {
        Some(bits @ 1..=64) if signed => Ok((true, bits as u32)),
        Some(bits @ 1..=63) if !signed => Ok((false, bits as u32)),
        _ => Err(BAD_TYPE),
    }
}

/// Parses BITFIELD's operations in Redis's order, failing at the first bad one.
fn parse_fields(args: &[Bytes]) -> Result<Vec<Field>, Reply> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut at = 0;
    while at < args.len() {
        let (name, more) = (&args[at], args.len() - at - 1);
        if is_opt(name, "overflow") && more >= 1 {
            overflow = match &args[at + 1] {
                a if is_opt(a, "wrap") => Overflow::Wrap,
                a if is_opt(a, "sat") => Overflow::Sat,
                a if is_opt(a, "fail") => Overflow::Fail,
                _ => return Err(Reply::error("ERR Invalid OVERFLOW type specified")),
            };
            at += 2;
            continue;
        }
        let get = is_opt(name, "get") && more >= 2;
        let set = is_opt(name, "set") && more >= 3;
        let incr = is_opt(name, "incrby") && more >= 3;
        if !(get || set || incr) {
            return Err(SYNTAX);
        }
        let (signed, bits) = field_type(&args[at + 1])?;
        let offset = bit_offset(&args[at + 2], Some(bits))?;
        let op = if get {
            FieldOp::Get
        } else {
            let n = parse_i64(&args[at + 3]).ok_or(NOT_INTEGER)?;
            if set {
                FieldOp::Set(n)
            } else {
                FieldOp::IncrBy(n)
            }
        };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
        at += if get { 3 } else { 4 };
    }
    Ok(fields)
}

fn get_unsigned(value: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits)).fold(0, |acc, j| {
        (acc << 1) | u64::from(bit_at(value, offset + j))
    })
}

fn get_signed(value: &[u8], offset: u64, bits: u32) -> i64 {
    let raw = get_unsigned(value, offset, bits);
    if bits < 64 && raw & (1 << (bits - 1)) != 0 {
        (raw | (u64::MAX << bits)) as i64
    } else {
        raw as i64
    }
}

fn set_field(value: &mut [u8], offset: u64, bits: u32, field: u64) {
    for j in 0..u64::from(bits) {
        let on = (field >> (u64::from(bits) - 1 - j)) & 1 == 1;
        set_bit(value, offset + j, on);
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: whether `value + incr` leaves the type's range,
/// and the value to store then (wrapped or saturated).
fn unsigned_overflow(value: u64, incr: i64, bits: u32, mode: Overflow) -> Option<u64> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let max_incr = max.wrapping_sub(value) as i64;
    let min_incr = (value as i64).wrapping_neg();
    let (over, saturated) = if value > max || (incr > 0 && incr > max_incr) {
        (true, max)
    } else if incr < 0 && incr < min_incr {
        (true, 0)
    } else {
        (false, 0)
    };
    over.then(|| match mode {
        Overflow::Wrap => value.wrapping_add(incr as u64) & !(u64::MAX << bits),
        _ => saturated,
    })
}

/// Redis's `checkSignedBitfieldOverflow`, likewise.
fn signed_overflow(value: i64, incr: i64, bits: u32, mode: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let max_incr = (max as u64).wrapping_sub(value as u64) as i64;
    let min_incr = min.wrapping_sub(value);
    let high = value > max
        || (bits != 64 && incr > max_incr)
        || (value >= 0 && incr > 0 && incr > max_incr);
    let low = value < min
        || (bits != 64 && incr < min_incr)
        || (value < 0 && incr < 0 && incr < min_incr);
    let saturated = if high {
        max
    } else if low {
        min
    } else {
        return None;
    };
    Some(match mode {
        Overflow::Wrap => {
            let sum = (value as u64).wrapping_add(incr as u64);
            if bits < 64 {
                let mask = u64::MAX << bits;
                if sum & (1 << (bits - 1)) != 0 {
                    (sum | mask) as i64
                } else {
                    (sum & !mask) as i64
                }
            } else {
                sum as i64
            }
        }
        _ => saturated,
    })
}

/// Runs one SET (`incr` false) or INCRBY of `n` on `value`: its reply (nil when OVERFLOW
/// FAIL refused it) and whether the value changed.
fn write_field(value: &mut [u8], f: &Field, n: i64, incr: bool) -> (Reply, bool) {
    let (old, new, reply) = if f.signed {
        let old = get_signed(value, f.offset, f.bits);
        let (base, by) = if incr { (old, n) } else { (n, 0) };
        let new = match signed_overflow(base, by, f.bits, f.overflow) {
            Some(_) if f.overflow == Overflow::Fail => return (Reply::Nil, false),
            Some(limited) => limited,
            None => base.wrapping_add(by),
        };
        (old as u64, new as u64, if incr { new } else { old })
    } else {
        let old = get_unsigned(value, f.offset, f.bits);
        let (base, by) = if incr { (old, n) } else { (n as u64, 0) };
        let new = match unsigned_overflow(base, by, f.bits, f.overflow) {
            Some(_) if f.overflow == Overflow::Fail => return (Reply::Nil, false),
            Some(limited) => limited,
            None => base.wrapping_add(by as u64),
        };
        (old, new, if incr { new as i64 } else { old as i64 })
    };
    set_field(value, f.offset, f.bits, new);
    // Compared as stored: a signed field's bits above its width do not count.
    let width_mask = u64::MAX >> (64 - f.bits);
    (Reply::Int(reply), old & width_mask != new & width_mask)
}

/// BITFIELD key [GET type offset] [SET type offset value] [INCRBY type offset increment]
/// [OVERFLOW WRAP|SAT|FAIL] … and BITFIELD_RO (GETs only). With any write, the value grows to
/// the farthest bit written before the operations run, as in Redis, even if OVERFLOW FAIL
/// then refuses them all.
fn bitfield(st: &Storage, args: &[Bytes], read_only: bool) -> Outcome {
    let fields = parse_fields(&args[2..])?;
    let key = &args[1];
    let writes = fields.iter().any(|f| f.op != FieldOp::Get);
    if !writes {
        let value = st.read(key, now_ms())?;
        let value = value.map_or_else(Bytes::new, |v| v.payload);
        return Ok(Reply::Array(
            fields
                .iter()
                .map(|f| {
                    Reply::Int(if f.signed {
                        get_signed(&value, f.offset, f.bits)
                    } else {
                        get_unsigned(&value, f.offset, f.bits) as i64
                    })
                })
                .collect(),
        ));
    }
    if read_only {
        return Err(Reply::error("ERR BITFIELD_RO only supports the GET subcommand").into());
    }
    let farthest = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| f.offset + u64::from(f.bits) - 1)
        .max()
        .unwrap_or(0);
    let _guard = st.locks.lock(key);
    let old = st.read_to_write(key, now_ms())?;
    let existed = old.is_some();
    let (expire_at, mut payload) = value::editable(old);
    let needed = (farthest >> 3) as usize + 1;
    let mut changed = !existed || payload.len() < needed;
    if payload.len() < needed {
        payload.resize(needed, 0);
    }
    let mut replies = Vec::with_capacity(fields.len());
    for f in &fields {
        replies.push(match f.op {
            FieldOp::Get if f.signed => Reply::Int(get_signed(&payload, f.offset, f.bits)),
            FieldOp::Get => Reply::Int(get_unsigned(&payload, f.offset, f.bits) as i64),
            FieldOp::Set(n) | FieldOp::IncrBy(n) => {
                let incr = matches!(f.op, FieldOp::IncrBy(_));
                let (reply, changes) = write_field(&mut payload, f, n, incr);
                changed |= changes;
                reply
            }
        });
    }
    if changed {
        st.write_one(key, expire_at, &payload)?;
    }
    Ok(Reply::Array(replies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_bounded_as_redis_bounds_them() {
        assert_eq!(bit_offset(b"0", None), Ok(0));
        assert_eq!(bit_offset(b"4294967295", None), Ok(4_294_967_295));
        assert_eq!(bit_offset(b"4294967296", None), Err(BAD_OFFSET));
        assert_eq!(bit_offset(b"-1", None), Err(BAD_OFFSET));
        assert_eq!(bit_offset(b"#3", None), Err(BAD_OFFSET));
        assert_eq!(bit_offset(b"#3", Some(8)), Ok(24));
        assert_eq!(bit_offset(b"#", Some(8)), Err(BAD_OFFSET));
    }

    #[test]
    fn counts_and_positions_respect_partial_bytes() {
        // "foobar": the example of Redis's documentation.
        let v = b"foobar";
        assert_eq!(count_ones(v, 0, 47), 26);
        let (first, last) = bit_range(v.len(), 1, 1, false).expect("range");
        assert_eq!(count_ones(v, first, last), 6);
        let (first, last) = bit_range(v.len(), 5, 30, true).expect("range");
        assert_eq!(count_ones(v, first, last), 17);
        assert_eq!(find_bit(b"\xff\xf0\x00", false, 0, 23), Some(12));
        assert_eq!(find_bit(b"\x00\xff\xf0", true, 2, 23), Some(8));
        assert_eq!(find_bit(b"\x00\x00\x00", true, 0, 23), None);
        assert_eq!(find_bit(b"\x0f", true, 0, 3), None);
        assert_eq!(find_bit(b"\x0f", true, 3, 7), Some(4));
    }

    #[test]
    fn fields_read_and_write_most_significant_bit_first() {
        let mut v = vec![0u8; 2];
        set_field(&mut v, 4, 8, 0xAB);
        assert_eq!(v, [0x0A, 0xB0]);
        assert_eq!(get_unsigned(&v, 4, 8), 0xAB);
        assert_eq!(get_signed(&v, 4, 8), 0xABu8 as i8 as i64);
        assert_eq!(get_unsigned(&v, 100, 8), 0, "past the end reads zeros");
    }

    #[test]
    fn overflow_wraps_saturates_or_fails_as_redis() {
        assert_eq!(unsigned_overflow(250, 10, 8, Overflow::Wrap), Some(4));
        assert_eq!(unsigned_overflow(250, 10, 8, Overflow::Sat), Some(255));
        assert_eq!(unsigned_overflow(5, -10, 8, Overflow::Sat), Some(0));
        assert_eq!(unsigned_overflow(5, -10, 8, Overflow::Wrap), Some(251));
        assert_eq!(unsigned_overflow(250, 5, 8, Overflow::Wrap), None);
        assert_eq!(signed_overflow(120, 10, 8, Overflow::Wrap), Some(-126));
        assert_eq!(signed_overflow(120, 10, 8, Overflow::Sat), Some(127));
        assert_eq!(signed_overflow(-120, -10, 8, Overflow::Sat), Some(-128));
        assert_eq!(
            signed_overflow(i64::MAX, 1, 64, Overflow::Wrap),
            Some(i64::MIN)
        );
        assert_eq!(signed_overflow(100, 0, 8, Overflow::Fail), None);
        assert_eq!(signed_overflow(300, 0, 8, Overflow::Fail), Some(127));
    }
}
