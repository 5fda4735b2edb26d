//! Placement micro-benchmarks: every keyed request hashes its key to a shard
//! (`placement::shard_of`), and the ring (`Ring::primary`) decides which node a shard
//! prefers when a map is balanced. Throughput is in keys (or shards) per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkv_common::placement::{shard_of, stable_hash};
use ringkv_common::ring::{Ring, RingNode};

mod support;

/// A plain key and a hash-tagged one (only `user1000` is hashed).
const KEYS: [(&str, &[u8]); 2] = [
    ("plain", b"key:000000123456"),
    ("hash_tag", b"{user1000}:profile"),
];

fn key_to_shard(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement");
    group.throughput(Throughput::Elements(1));
    group.bench_function("stable_hash/plain", |b| {
        b.iter(|| stable_hash(black_box(KEYS[0].1)))
    });
    for shards in [256u32, 4096] {
        for (name, key) in KEYS {
            let id = BenchmarkId::new(format!("shard_of/{name}"), shards);
            group.bench_function(id, |b| {
                b.iter(|| shard_of(black_box(key), black_box(shards)))
            });
        }
    }
    group.finish();
}

/// `count` nodes of weight 1 spread over three zones.
fn ring_of(count: usize) -> Ring {
    Ring::new((0..count).map(|i| RingNode {
        id: format!("node-{i:02}"),
        zone: format!("zone-{}", i % 3),
        weight: 1,
    }))
    .expect("distinct ids, small weights")
}

fn ring_primary(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    for nodes in [3usize, 30] {
        let ring = ring_of(nodes);
        group.bench_function(BenchmarkId::new("primary", format!("{nodes}_nodes")), |b| {
            // Walk the shards so each lookup lands somewhere else on the circle.
            let mut shard = 0u32;
            b.iter(|| {
                shard = (shard + 1) % 4096;
                ring.primary(black_box(shard)).map(|node| node.id.len())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = key_to_shard, ring_primary
}
criterion_main!(benches);
