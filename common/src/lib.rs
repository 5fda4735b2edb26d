//! ringkv-common: the pieces every ringkv process shares.
//!
//! - [`resp`]: request framing exactly as Redis frames requests, and reply encoding in RESP2
//!   or RESP3.
//! - [`command`]: the command table (name, arity, flags, key positions, docs) that drives
//!   dispatch, `COMMAND`, and routing.
//! - [`cursor`]: the SCAN cursor layout (shard, position), shared by storage and proxy.
//! - [`placement`]: the frozen key hash, hash tags, and key → shard.
//! - [`ring`]: the consistent-hash ring (virtual nodes, weights, zones): each shard's order
//!   of preference over the storage nodes, by a frozen specification.
//! - [`balance`]: turns the ring's preferences into the assignment, every node within its
//!   share and moving as few shards as possible from the previous map.
//! - [`shardmap`]: the documents kept in etcd: cluster config, node records, the versioned
//!   shard map.
//! - [`etcd`]: the etcd key layout (one source of truth) and async helpers to read, write by
//!   compare-and-swap, register under a lease, and watch.
//! - [`internal`]: the proxy ↔ storage-node protocol: the shard/epoch envelope and the typed
//!   MOVED / STALE refusals.
//! - [`metrics`]: the Prometheus metric names, the exporter, per-command handles.
//! - [`acl`]: users and permissions (`--requirepass`, the ACL file subset), Redis's errors.
//! - [`args`]: parsing numbers and options out of command arguments with Redis's errors.
//! - [`glob`]: Redis glob patterns (KEYS, SCAN MATCH, CONFIG GET).
//! - [`transaction`]: MULTI/EXEC's queued commands, WATCH's digests, and the form a
//!   transaction travels in to a storage node.
//! - [`signal`]: SIGTERM / SIGINT, the shutdown signals of every binary.
//! - [`clock`]: wall-clock milliseconds, the unit of every expiry.
//! - [`event_loops`]: event-loop threads, one single-threaded runtime per core, each serving
//!   its connections from accept to close (the standalone server, the proxy, the storage
//!   node).

pub mod acl;
pub mod args;
pub mod balance;
pub mod clock;
pub mod command;
pub mod cursor;
pub mod etcd;
pub mod event_loops;
pub mod glob;
pub mod internal;
pub mod metrics;
pub mod placement;
pub mod resp;
pub mod ring;
pub mod shardmap;
pub mod signal;
pub mod transaction;
