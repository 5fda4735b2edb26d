//! RESP micro-benchmarks: every request is parsed by `RequestParser::parse` and every reply
//! goes out through `Reply::encode`, so these two bound what one connection can do per core.
//! Throughput is in requests (decode) or replies (encode) per second.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkv_common::resp::{Parsed, Protocol, Reply, RequestLimits, RequestParser};

mod support;

/// A 64-byte value, the size the README's load figures use.
const VALUE_64: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// One request in multibulk form, as client libraries send it.
fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses every request in `buf` as a connection does (clearing the arguments between
/// requests, which drops them) and returns how many there were.
fn parse_all(parser: &mut RequestParser, buf: &mut BytesMut, args: &mut Vec<Bytes>) -> usize {
    let mut requests = 0;
    loop {
        match parser.parse(buf, args).expect("fixed, valid input") {
            Parsed::Request => requests += 1,
            Parsed::Empty => {}
            Parsed::Incomplete => return requests,
        }
        args.clear();
    }
}

fn decode(c: &mut Criterion) {
    let set = multibulk(&[b"SET", b"key:000000123456", VALUE_64]);
    let get = multibulk(&[b"GET", b"key:000000123456"]);
    let pipeline: Vec<u8> = (0..16)
        .flat_map(|i| multibulk(&[b"SET", format!("key:{i:012}").as_bytes(), VALUE_64]))
        .collect();
    let mut mset_args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..10 {
        mset_args.push(format!("key:{i:012}").into_bytes());
        mset_args.push(VALUE_64.to_vec());
    }
    let mset = multibulk(&mset_args.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let inline = b"SET key:000000123456 hello\r\n".to_vec();

    let cases: [(&str, &[u8], u64); 5] = [
        ("set_64b", &set, 1),
        ("get", &get, 1),
        ("pipeline_16_set_64b", &pipeline, 16),
        ("mset_10_keys_64b", &mset, 1),
        ("inline_set", &inline, 1),
    ];
    let mut group = c.benchmark_group("resp_decode");
    for (name, input, requests) in cases {
        group.throughput(Throughput::Elements(requests));
        group.bench_function(name, |b| {
            // One read buffer, parser and argument vector for the whole run, as a connection
            // keeps them: each iteration appends the bytes a read would (a copy of `input`)
            // and parses them all. Once every argument is dropped the buffer's memory is
            // reused in place (multibulk arguments share it; inline words are copied out).
            let mut parser = RequestParser::new(RequestLimits::default());
            let mut buf = BytesMut::with_capacity(16 * 1024);
            let mut args = Vec::with_capacity(32);
            b.iter(|| {
                buf.extend_from_slice(black_box(input));
                let parsed = parse_all(&mut parser, &mut buf, &mut args);
                assert_eq!(parsed as u64, requests);
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let bulk = Reply::Bulk(Bytes::from_static(VALUE_64));
    let mget = Reply::Array(vec![bulk.clone(); 10]);
    let cases = [
        ("ok", Reply::Ok),
        ("bulk_64b", bulk),
        ("int", Reply::Int(1_234_567)),
        ("nil", Reply::Nil),
        ("mget_10_bulks_64b", mget),
    ];
    let mut group = c.benchmark_group("resp_encode");
    group.throughput(Throughput::Elements(1));
    for (name, reply) in &cases {
        for (protocol, label) in [(Protocol::Resp2, "resp2"), (Protocol::Resp3, "resp3")] {
            group.bench_with_input(BenchmarkId::new(*name, label), reply, |b, reply| {
                // One output buffer reused, as a connection reuses its write buffer.
                let mut out = BytesMut::with_capacity(4096);
                b.iter(|| {
                    out.clear();
                    black_box(reply).encode(protocol, &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = decode, encode
}
criterion_main!(benches);
