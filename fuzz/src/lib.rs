//! The checks behind the fuzz targets, shared with the stable regression tests
//! (`common/tests/fuzz_regressions.rs`, `storage/tests/fuzz_regressions.rs` include these files
//! by path), so that a crasher replays through exactly the code that found it.
//!
//! - [`resp`]: feeds bytes to the request parser in one piece, byte by byte and in chunks,
//!   and checks that every way gives the same requests and error.
//! - [`commands`]: resolves argument vectors and runs them on the engine.

pub mod commands;
pub mod resp;
