//! Recording a command's metrics on the hot path allocates nothing.
//!
//! A global allocator (`support/counting_allocator.rs`) counts the allocations of the thread
//! that records. Its own file, so no other test runs in this process meanwhile.

use std::time::Duration;

use ringkv_common::command;
use ringkv_common::metrics::{CommandTable, Layer, Recorder};

#[path = "support/counting_allocator.rs"]
mod counting_allocator;
use counting_allocator::allocations;

static CLIENT: CommandTable = CommandTable::new(Layer::Client);
static STORAGE: CommandTable = CommandTable::new(Layer::Storage);

#[test]
fn recording_commands_allocates_nothing() {
    let recorder = Recorder::new();
    let handle = recorder.handle();
    let get = command::lookup(b"get").expect("GET is a command");
    let set = command::lookup(b"set").expect("SET is a command");
    // The first record builds the tables (registration allocates, once).
    metrics::with_local_recorder(&recorder, || {
        CLIENT.record(get, false, Duration::from_micros(30));
        STORAGE.record(get, false, Duration::from_micros(10));
    });

    let samples = 100_000u64;
    let before = allocations();
    for i in 0..samples {
        // Durations across every bucket, both outcomes, two commands.
        let took = Duration::from_nanos(i.wrapping_mul(7919) % 20_000_000_000);
        let spec = if i % 2 == 0 { get } else { set };
        CLIENT.record(spec, i % 7 == 0, took);
        STORAGE.record(spec, false, took);
    }
    let allocations = allocations() - before;
    assert_eq!(
        allocations, 0,
        "recording {samples} commands allocated {allocations} times"
    );

    // And every sample is there to scrape.
    let text = handle.render();
    let count = |line: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line:?} in\n{text}"))
    };
    let half = samples / 2;
    assert_eq!(
        count("ringkv_command_duration_seconds_count{command=\"get\"}"),
        half + 1
    );
    assert_eq!(
        count("ringkv_command_duration_seconds_count{command=\"set\"}"),
        half
    );
    assert_eq!(
        count("ringkv_storage_duration_seconds_count{command=\"get\"}"),
        half + 1
    );
    let errors = (0..samples).filter(|i| i % 2 == 0 && i % 7 == 0).count() as u64;
    assert_eq!(
        count("ringkv_commands_total{command=\"get\",outcome=\"error\"}"),
        errors
    );
}
