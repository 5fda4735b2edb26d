//! ringkv-common: the pieces every ringkv process shares.
//!
//! - [`resp`]: request framing exactly as Redis frames requests, and reply encoding in RESP2
//!   or RESP3.
//! - [`command`]: the command table (name, arity, flags, key positions, docs) that drives
//!   dispatch, `COMMAND`, and routing.
//! - [`placement`]: the frozen key hash, hash tags, and key → shard.
//! - [`args`]: parsing numbers and options out of command arguments with Redis's errors.
//! - [`glob`]: Redis glob patterns (KEYS, SCAN MATCH, CONFIG GET).
//! - [`clock`]: wall-clock milliseconds, the unit of every expiry.

pub mod args;
pub mod clock;
pub mod command;
pub mod glob;
pub mod placement;
pub mod resp;
