//! Point reads through `Storage::execute`, with the key in a memtable and with it in an SST
//! file. Every GET, and the read half of every INCR, takes one of these two paths; a key
//! lands in an SST file whenever RocksDB flushes, which at the default WAL bound happens
//! every 512 MiB of writes, so the SST path is what the first read of each key after a flush
//! costs. 256 shards of 390 keys, 64-byte values: the `make bench` key space. The block cache
//! is warm (Criterion's warm-up reads every key), as it is on a server that has been serving.
//! Throughput is in reads per second, on one thread.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringkv_common::command::lookup;
use ringkv_common::resp::Reply;
use ringkv_storage::{Fsync, Storage, StorageConfig};

#[path = "../../common/benches/support/mod.rs"]
mod support;

/// The `make bench` key space and shard count.
const KEYS: usize = 100_000;
const SHARDS: u32 = 256;

fn point_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let st = Storage::open(StorageConfig::new(dir.path(), SHARDS, false, Fsync::No))
        .expect("open storage");
    let set = lookup(b"SET").expect("SET is a command");
    let get = lookup(b"GET").expect("GET is a command");
    let value = Bytes::from(vec![b'v'; 64]);
    // Keys in a fixed pseudo-random order, so successive reads land in unrelated shards
    // as redis-benchmark's `-r` keys do.
    let keys: Vec<Bytes> = (0..KEYS)
        .map(|i| Bytes::from(format!("key:{:012}", (i * 7919) % KEYS)))
        .collect();
    for key in &keys {
        let reply = st.execute(
            set,
            &[Bytes::from_static(b"SET"), key.clone(), value.clone()],
        );
        assert!(!reply.is_error(), "SET failed: {reply:?}");
    }
    // Both cases must read a stored value, not measure a miss.
    let found = |st: &Storage| {
        let reply = st.execute(get, &[Bytes::from_static(b"GET"), keys[KEYS / 2].clone()]);
        assert_eq!(
            reply,
            Reply::Bulk(value.clone()),
            "GET did not find its key"
        );
    };
    found(&st);

    let mut group = c.benchmark_group("point_read");
    group.throughput(Throughput::Elements(1));
    let mut read = |name: &str, st: &Storage| {
        let mut next = keys.iter().cycle();
        let mut args = [Bytes::from_static(b"GET"), Bytes::new()];
        group.bench_function(name, |b| {
            b.iter(|| {
                args[1] = next.next().cloned().unwrap_or_default();
                black_box(st.execute(get, &args))
            })
        });
    };
    read("memtable", &st);
    st.flush().expect("flush the memtables");
    let tables = std::fs::read_dir(dir.path())
        .expect("read the data directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "sst"))
        .count();
    assert!(tables >= SHARDS as usize, "flush left {tables} SST files");
    found(&st);
    read("sst", &st);
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = point_reads
}
criterion_main!(benches);
