//! The stored value header: `Header::decode` on arbitrary bytes never panics and agrees with
//! the documented layout, and `encode` → `decode` round-trips type, expiry and payload.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringkv_storage::value::{encode, Header, ValueType, FORMAT_VERSION, HEADER_LEN};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Bytes as RocksDB might hand them back (foreign, truncated, another version…).
    record: Vec<u8>,
    expire_at: i64,
    payload: Vec<u8>,
    now: i64,
}

fuzz_target!(|input: Input| {
    let Input {
        record,
        expire_at,
        payload,
        now,
    } = input;

    // Decoding arbitrary bytes: accepted exactly when the layout says so.
    let decoded = Header::decode(&record);
    let well_formed = record.len() >= HEADER_LEN
        && record[0] == FORMAT_VERSION
        && record[1] == ValueType::String as u8;
    assert_eq!(decoded.is_some(), well_formed, "{record:?}");
    if let Some(header) = decoded {
        let at = i64::from_be_bytes(record[2..HEADER_LEN].try_into().expect("8 bytes"));
        assert_eq!(header.kind, ValueType::String);
        assert_eq!(header.expire_at, at);
        // Re-encoding what was decoded gives the same bytes back.
        assert_eq!(encode(header.expire_at, &record[HEADER_LEN..]), record);
    }

    // Encoding then decoding round-trips.
    let record = encode(expire_at, &payload);
    assert_eq!(record.len(), HEADER_LEN + payload.len());
    let header = Header::decode(&record).expect("an encoded record decodes");
    assert_eq!(header.kind, ValueType::String);
    assert_eq!(header.expire_at, expire_at);
    assert_eq!(&record[HEADER_LEN..], &payload[..]);

    // Expiry: 0 never expires; otherwise expired exactly from expire_at on.
    assert_eq!(header.expired(now), expire_at != 0 && expire_at <= now);
});
