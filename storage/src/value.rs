//! The stored value format: a small fixed header, then the payload.
//!
//! `[version: u8][type: u8][expire_at_ms: u64 big-endian][payload…]`. The version lets the
//! format change without a migration of old records; the type answers TYPE without decoding
//! the payload; the expiry lives with the value so one read answers GET and TTL together, and
//! the compaction filter can drop expired records without any other lookup.

use bytes::Bytes;

/// Current header format.
pub const FORMAT_VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 10;

/// Value types; only strings today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueType {
    /// A Redis string.
    String = 0,
}

/// A decoded header: type and expiry (0: no expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the payload holds.
    pub kind: ValueType,
    /// Unix milliseconds after which the value no longer exists; 0 for none.
    pub expire_at: i64,
}

impl Header {
    /// Decodes the header of a stored record; `None` if it is not one this build understands.
    pub fn decode(record: &[u8]) -> Option<Header> {
        if record.len() < HEADER_LEN
            || record[0] != FORMAT_VERSION
            || record[1] != ValueType::String as u8
        {
            return None;
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&record[2..10]);
        Some(Header {
            kind: ValueType::String,
            expire_at: i64::from_be_bytes(at),
        })
    }

    /// Whether a value with this header has expired at `now` (Unix ms).
    pub fn expired(&self, now: i64) -> bool {
        self.expire_at != 0 && self.expire_at <= now
    }
}

/// Encodes a record: header then payload, in one allocation.
pub fn encode(expire_at: i64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
    record.extend_from_slice(&header(expire_at));
    record.extend_from_slice(payload);
    record
}

/// A string record's header, for writers that copy header and payload straight into a
/// batch.
#[inline]
pub fn header(expire_at: i64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = FORMAT_VERSION;
    out[1] = ValueType::String as u8;
    out[2..].copy_from_slice(&expire_at.to_be_bytes());
    out
}

/// A live value read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Unix ms expiry, 0 for none.
    pub expire_at: i64,
    /// The string.
    pub payload: Bytes,
}

/// The expiry and an owned copy of the bytes of a value a command edits (APPEND, SETRANGE,
/// SETBIT, BITFIELD): a missing key is an empty string without an expiry.
pub fn editable(value: Option<Value>) -> (i64, Vec<u8>) {
    match value {
        Some(v) => (v.expire_at, v.payload.to_vec()),
        None => (0, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let record = encode(1_700_000_000_123, b"hello");
        let header = Header::decode(&record).expect("valid");
        assert_eq!(header.expire_at, 1_700_000_000_123);
        assert_eq!(&record[HEADER_LEN..], b"hello");
        assert!(header.expired(1_700_000_000_123));
        assert!(!header.expired(1_700_000_000_122));
    }

    #[test]
    fn no_expiry_never_expires() {
        let header = Header::decode(&encode(0, b"")).expect("valid");
        assert!(!header.expired(i64::MAX));
    }

    #[test]
    fn foreign_records_are_refused() {
        assert_eq!(Header::decode(b"short"), None);
        let mut record = encode(0, b"x");
        record[0] = 99;
        assert_eq!(Header::decode(&record), None);
    }

    /// Golden bytes: a stored record must decode the same in every later version.
    #[test]
    fn format_is_frozen() {
        assert_eq!(encode(258, b"v"), vec![1, 0, 0, 0, 0, 0, 0, 0, 1, 2, b'v']);
    }
}
