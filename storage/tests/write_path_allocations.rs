//! A pipeline's gathered writes cost the engine no allocation per request on the Rust side:
//! a group of SETs and MSETs none at all, a group of INCRs one (the map of what the group has
//! written). The standalone server and every storage node run their pipelines through this
//! path; RocksDB's own allocations (C++, not counted here) are in the README's Performance
//! section.
//!
//! A global allocator (`common/tests/support/counting_allocator.rs`) counts the allocations
//! of the thread that runs the groups. Its own file, so no other test runs in this process
//! meanwhile.

use bytes::Bytes;
use ringkv_common::command::gatherable;
use ringkv_common::resp::Reply;
use ringkv_storage::{Deferred, Fsync, Storage, StorageConfig, WriteGroup};

#[path = "../../common/tests/support/counting_allocator.rs"]
mod counting_allocator;
use counting_allocator::allocations;

/// Requests as a client pipelines them, over `make bench`'s key names and 64-byte values.
fn requests(words: &[&[&str]]) -> Vec<Vec<Bytes>> {
    words
        .iter()
        .map(|request| {
            request
                .iter()
                .map(|w| match *w {
                    "VALUE" => Bytes::from(vec![b'v'; 64]),
                    w => Bytes::copy_from_slice(w.as_bytes()),
                })
                .collect()
        })
        .collect()
}

/// Gathers `pipeline` into `group` and runs it, `rounds` times; returns the allocations of
/// the rounds and the last round's replies.
fn run_rounds(
    st: &Storage,
    group: &mut WriteGroup,
    pipeline: &[Vec<Bytes>],
    rounds: u64,
) -> (u64, Vec<Reply>) {
    let mut replies = Vec::with_capacity(pipeline.len());
    // A connection's parsed request, whose arguments the group takes.
    let mut args = Vec::with_capacity(32);
    let before = allocations();
    for _ in 0..rounds {
        replies.clear();
        for request in pipeline {
            args.clear();
            args.extend_from_slice(request);
            let (spec, what) = gatherable(&args).expect("every request gathers");
            group.push(spec, what, &mut args, 0, None);
        }
        st.execute_group(group, &mut replies, &mut Deferred::default());
        group.clear();
    }
    (allocations() - before, replies)
}

#[test]
fn gathered_writes_allocate_nothing_per_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st =
        Storage::open(StorageConfig::new(dir.path(), 256, false, Fsync::No)).expect("open storage");
    let mut group = WriteGroup::default();
    let sets = requests(&[
        &["SET", "key:000000000001", "VALUE"],
        &["SET", "key:000000000002", "VALUE"],
        &["SET", "key:000000000003", "VALUE"],
        &["SET", "key:000000000004", "VALUE"],
        &["SET", "key:000000000005", "VALUE"],
        &[
            "MSET",
            "key:000000000006",
            "VALUE",
            "key:000000000007",
            "VALUE",
            "key:000000000008",
            "VALUE",
            "key:000000000009",
            "VALUE",
            "key:000000000010",
            "VALUE",
            "key:000000000011",
            "VALUE",
            "key:000000000012",
            "VALUE",
            "key:000000000013",
            "VALUE",
            "key:000000000014",
            "VALUE",
            "key:000000000015",
            "VALUE",
        ],
    ]);
    let (incr, incrby): (&[&str], &[&str]) =
        (&["INCR", "counter:1"], &["INCRBY", "counter:2", "5"]);
    let incrs = [requests(&[incr; 8]), requests(&[incrby; 8])].concat();

    // The first rounds size the reused buffers: the group's, the replies', the batch's.
    let (_, replies) = run_rounds(&st, &mut group, &sets, 3);
    assert_eq!(replies, vec![Reply::Ok; sets.len()]);
    run_rounds(&st, &mut group, &incrs, 3);

    let rounds = 1000;
    let (allocations, replies) = run_rounds(&st, &mut group, &sets, rounds);
    assert_eq!(replies, vec![Reply::Ok; sets.len()]);
    assert_eq!(
        allocations, 0,
        "{rounds} groups of 5 SETs and an MSET of 10 keys allocated {allocations} times"
    );

    let (allocations, replies) = run_rounds(&st, &mut group, &incrs, rounds);
    let (first, second) = ((rounds + 3) * 8, (rounds + 3) * 8 * 5);
    assert_eq!(replies.first(), Some(&Reply::Int(first as i64 - 7)));
    assert_eq!(replies.last(), Some(&Reply::Int(second as i64)));
    assert!(
        allocations <= rounds,
        "{rounds} groups of 16 INCR/INCRBY allocated {allocations} times (one per group expected)"
    );
}
