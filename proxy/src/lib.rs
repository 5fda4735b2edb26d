//! ringkv-proxy: the client-facing server of ringkv, and the standalone `ringkv` binary.
//!
//! Data flows one way through these modules:
//! socket → [`connection`] → [`dispatch`] → [`cmd`] or [`backend`] → reply → socket.
//!
//! - [`config`]: the command line, validated once at start; bad values name their flag.
//! - [`server`]: the listener and accept loop; stops accepting on a signal, drains, flushes.
//! - [`shutdown`]: shutdown as a type, which every connection task holds until it ends.
//! - [`connection`]: one task per client: reads a batch of pipelined requests, runs them in
//!   order, writes all their replies at once.
//! - [`session`]: per-connection state (protocol version, client id and name).
//! - [`clients`]: every connected client as other connections see it (CLIENT LIST, KILL).
//! - [`dispatch`]: looks a request up in the command table and routes it.
//! - [`cmd`]: the commands the proxy answers itself (PING, HELLO, CLIENT, COMMAND, CONFIG,
//!   INFO, TIME…).
//! - [`backend`]: where every other command goes; today the in-process storage engine, in a
//!   cluster the remote storage nodes.
//! - [`cluster`]: the cluster backend of `ringkv-proxy`: the etcd follower, the routing table,
//!   per-shard requests, multi-key split and merge, fan-out, retries on MOVED / STALE.
//! - [`pool`]: pooled, pipelined connections to one storage node, for the cluster backend.
//! - [`context`]: what all connections share: settings, counters, backend.
//! - [`stats`]: lock-free counters for INFO.
//! - [`command_stats`]: INFO commandstats and errorstats, counted per thread.
//! - [`slowlog`]: SLOWLOG, the last commands slower than `slowlog-log-slower-than`.
//! - [`tls`]: TLS on the client port (rustls).
//! - [`process`]: facts about this process for INFO (memory, CPU, OS).

#![warn(missing_docs)]

pub mod backend;
pub mod clients;
pub mod cluster;
pub mod cmd;
pub mod command_stats;
pub mod config;
pub mod connection;
pub mod context;
pub mod dispatch;
pub mod pool;
pub mod process;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod slowlog;
pub mod stats;
pub mod tls;
