//! Value header micro-benchmarks: every write encodes a record header with `value::header`
//! (the payload is copied once, into the write batch) and every read decodes one with
//! `value::Header::decode` before RocksDB's bytes become a reply.
//! Throughput is in records per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkv_storage::value::{encode, header, Header};

#[path = "../../common/benches/support/mod.rs"]
mod support;

/// A 64-byte value, the size the README's load figures use.
const PAYLOAD_64: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// No expiry, and a Unix-millisecond expiry (2023-11-14).
const EXPIRIES: [(&str, i64); 2] = [("no_expiry", 0), ("expiry", 1_700_000_000_123)];

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("value");
    group.throughput(Throughput::Elements(1));
    for (name, expire_at) in EXPIRIES {
        group.bench_function(BenchmarkId::new("encode_header", name), |b| {
            b.iter(|| header(black_box(expire_at)))
        });
        let record = encode(expire_at, PAYLOAD_64);
        group.bench_function(BenchmarkId::new("decode_64b", name), |b| {
            b.iter(|| Header::decode(black_box(&record)).map(|h| h.expired(1_700_000_000_000)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = headers
}
criterion_main!(benches);
