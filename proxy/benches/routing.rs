//! Routing micro-benchmarks: before anything goes to a storage node, the proxy resolves the
//! command name in the command table, hashes each key to a shard, and looks the shard's
//! primary up in the current routing table. Throughput is in requests (or keys) per second.
//!
//! The table is built once, outside the timing, as the etcd follower builds it: shard →
//! primary from a ring of nodes, no connection pools (nothing here touches the network).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkv_common::command::{lookup, resolve};
use ringkv_common::placement::shard_of;
use ringkv_common::ring::{Ring, RingNode};
use ringkv_proxy::cluster::routes::{Node, Routes};
use ringkv_proxy::cluster::Shared;

#[path = "../../common/benches/support/mod.rs"]
mod support;

/// A 64-byte value, the size the README's load figures use.
const VALUE_64: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The routing table of a cluster of `nodes` storage nodes and `shards` shards, each shard's
/// primary the ring's first choice.
fn routes(nodes: usize, shards: u32) -> Routes {
    let ring = Ring::new((0..nodes).map(|i| RingNode {
        id: format!("node-{i:02}"),
        zone: String::new(),
        weight: 1,
    }))
    .expect("distinct ids, small weights");
    let primaries = (0..shards)
        .map(|s| {
            let primary = ring.primary(s).expect("every node has weight 1");
            ring.index_of(&primary.id).expect("a node of the ring")
        })
        .collect();
    let nodes = ring
        .nodes()
        .iter()
        .map(|n| {
            Arc::new(Node {
                id: n.id.clone(),
                addr: None,
                pool: None,
                registered: true,
            })
        })
        .collect();
    Routes {
        epoch: 7,
        primaries,
        nodes,
    }
}

/// A request as the parser hands it over: name first, then arguments.
fn request(args: &[&[u8]]) -> Vec<Bytes> {
    args.iter().map(|a| Bytes::copy_from_slice(a)).collect()
}

/// `name` followed by 10 keys (and a 64-byte value after each key for MSET).
fn multi_key_request(name: &[u8], with_values: bool) -> Vec<Bytes> {
    let mut args = vec![Bytes::copy_from_slice(name)];
    for i in 0..10 {
        args.push(Bytes::from(format!("key:{i:012}")));
        if with_values {
            args.push(Bytes::from_static(VALUE_64));
        }
    }
    args
}

fn command_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lookup/GET", |b| b.iter(|| lookup(black_box(b"GET"))));
    group.bench_function("lookup/mget", |b| b.iter(|| lookup(black_box(b"mget"))));
    let set = request(&[b"SET", b"key:000000123456", VALUE_64]);
    group.bench_function("resolve/SET", |b| {
        b.iter(|| resolve(black_box(&set)).map(|spec| spec.name))
    });
    let setname = request(&[b"CLIENT", b"SETNAME", b"bench"]);
    group.bench_function("resolve/CLIENT_SETNAME", |b| {
        b.iter(|| resolve(black_box(&setname)).map(|spec| spec.name))
    });
    group.finish();
}

fn key_to_node(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    let key: &[u8] = b"key:000000123456";
    for (nodes, shards) in [(3usize, 256u32), (30, 4096)] {
        let table = routes(nodes, shards);
        let id = BenchmarkId::new("key_to_node", format!("{nodes}_nodes_{shards}_shards"));
        group.bench_function(id, |b| {
            b.iter(|| {
                let shard = shard_of(black_box(key), table.shards());
                table.primary(shard).map(|node| node.id.len())
            })
        });
    }

    // What `Cluster::execute` does for a single-key command before it sends: resolve the
    // name, find the key, hash it, load the current table (one atomic load), find the node.
    let shared = Shared::new();
    shared.routes.store(Some(Arc::new(routes(3, 256))));
    let get = request(&[b"GET", b"key:000000123456"]);
    group.bench_function("get_request_to_node/3_nodes_256_shards", |b| {
        b.iter(|| {
            let args = black_box(&get);
            let spec = resolve(args).expect("a known command");
            let key = spec.key_indexes(args.len()).next().expect("GET has a key");
            let table = shared.routes.load_full().expect("a table was stored");
            let shard = shard_of(&args[key], table.shards());
            table.primary(shard).map(|node| node.id.len())
        })
    });
    group.finish();
}

/// The per-key part of a multi-key command's split: its key positions from the table, each
/// key's shard. (Grouping the keys by shard happens inside `Cluster`, which has no public
/// function for it, so it is not measured here.)
fn multi_key_shards(c: &mut Criterion) {
    let mut group = c.benchmark_group("multi_key");
    group.throughput(Throughput::Elements(10));
    let table = routes(3, 256);
    for (name, args) in [
        ("mget_10_keys", multi_key_request(b"MGET", false)),
        ("mset_10_keys", multi_key_request(b"MSET", true)),
    ] {
        let spec = resolve(&args).expect("a known command with a valid arity");
        group.bench_function(BenchmarkId::new("key_shards", name), |b| {
            b.iter(|| {
                let args = black_box(&args);
                let mut shards = [0u32; 10];
                for (slot, i) in shards.iter_mut().zip(spec.key_indexes(args.len())) {
                    *slot = shard_of(&args[i], table.shards());
                }
                shards
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = command_table, key_to_node, multi_key_shards
}
criterion_main!(benches);
