//! SCAN cursors: stateless, so any server holding the same data (a standalone server, or a
//! proxy walking the storage nodes shard by shard) can continue one. The shard sits in the top
//! 16 bits, and below it the top 48 bits of the scan-order hash of the next key to return.

/// Where the shard starts in a cursor.
pub const SHARD_SHIFT: u32 = 48;

/// The position-within-the-shard bits of a cursor.
pub const POSITION_MASK: u64 = (1 << SHARD_SHIFT) - 1;

/// The shard a cursor is in.
pub fn shard_of(cursor: u64) -> u64 {
    cursor >> SHARD_SHIFT
}

/// The cursor at the start of `shard`.
pub fn start_of(shard: u32) -> u64 {
    u64::from(shard) << SHARD_SHIFT
}

/// A cursor as Redis's `strtoul` reads it: optional sign, decimal digits, nothing else.
pub fn parse_cursor(arg: &[u8]) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
