//! INFO [section ...]: Redis's `# Section` / `field:value` text with CRLF line endings, in
//! Redis's section order whatever order they were asked in. Monitoring tools and client
//! libraries parse it, so field names are Redis's.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use ringkv_common::clock::now_us;
use ringkv_common::resp::Reply;
use ringkv_storage::StorageStats;

use super::connection::REDIS_VERSION;
use crate::context::ServerContext;
use crate::process;

/// The sections ringkv reports, in the order Redis prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Version, process, uptime.
    Server,
    /// Connected clients.
    Clients,
    /// Memory in use.
    Memory,
    /// Loading and saving.
    Persistence,
    /// Counters.
    Stats,
    /// Role (always master).
    Replication,
    /// CPU time.
    Cpu,
    /// Loaded modules (none).
    Modules,
    /// Calls, time, rejections and failures per command (only when asked for by name, or
    /// with `all` or `everything`, as in Redis).
    Commandstats,
    /// Error replies per error code.
    Errorstats,
    /// Whether cluster mode is on.
    Cluster,
    /// Keys per database.
    Keyspace,
}

impl Section {
    /// Every section, in output order.
    pub const ALL: [Section; 12] = [
        Section::Server,
        Section::Clients,
        Section::Memory,
        Section::Persistence,
        Section::Stats,
        Section::Replication,
        Section::Cpu,
        Section::Modules,
        Section::Commandstats,
        Section::Errorstats,
        Section::Cluster,
        Section::Keyspace,
    ];

    /// The lower-case name clients ask for.
    pub fn name(self) -> &'static str {
        match self {
            Section::Server => "server",
            Section::Clients => "clients",
            Section::Memory => "memory",
            Section::Persistence => "persistence",
            Section::Stats => "stats",
            Section::Replication => "replication",
            Section::Cpu => "cpu",
            Section::Modules => "modules",
            Section::Commandstats => "commandstats",
            Section::Errorstats => "errorstats",
            Section::Cluster => "cluster",
            Section::Keyspace => "keyspace",
        }
    }

    /// The header line's title.
    fn title(self) -> &'static str {
        match self {
            Section::Server => "Server",
            Section::Clients => "Clients",
            Section::Memory => "Memory",
            Section::Persistence => "Persistence",
            Section::Stats => "Stats",
            Section::Replication => "Replication",
            Section::Cpu => "CPU",
            Section::Modules => "Modules",
            Section::Commandstats => "Commandstats",
            Section::Errorstats => "Errorstats",
            Section::Cluster => "Cluster",
            Section::Keyspace => "Keyspace",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// Which sections a request asks for, as a bit set: none given and `default` mean every
/// section ringkv has but commandstats, `all` and `everything` add it; unknown names are
/// ignored, as Redis does.
pub fn selected(args: &[Bytes]) -> u16 {
    let every = Section::ALL.iter().fold(0, |bits, s| bits | s.bit());
    let default = every & !Section::Commandstats.bit();
    if args.is_empty() {
        return default;
    }
    let mut bits = 0;
    for arg in args {
        if arg.eq_ignore_ascii_case(b"default") {
            bits |= default;
        } else if [&b"all"[..], b"everything"]
            .iter()
            .any(|word| arg.eq_ignore_ascii_case(word))
        {
            bits = every;
        } else if let Some(section) = Section::ALL
            .iter()
            .find(|s| arg.eq_ignore_ascii_case(s.name().as_bytes()))
        {
            bits |= section.bit();
        }
    }
    bits
}

/// INFO: gathers the engine's figures only when a section that shows them is asked for
/// (counting keys walks every shard).
pub async fn info(args: &[Bytes], ctx: &ServerContext) -> Reply {
    let bits = selected(args);
    let needs_engine = bits & (Section::Stats.bit() | Section::Keyspace.bit()) != 0;
    let engine = if needs_engine {
        ctx.backend.stats().await
    } else {
        None
    };
    Reply::Verbatim(Bytes::from(render(bits, ctx, &engine.unwrap_or_default())))
}

/// The INFO text of the selected sections.
pub fn render(bits: u16, ctx: &ServerContext, engine: &StorageStats) -> String {
    let mut out = String::with_capacity(2048);
    for section in Section::ALL.iter().filter(|s| bits & s.bit() != 0) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {}\r\n", section.title());
        match section {
            Section::Commandstats => {
                for (name, counts) in ctx.stats.commands.commands() {
                    let _ = write!(out, "cmdstat_{name}:{}\r\n", counts.render());
                }
            }
            Section::Errorstats => {
                for (code, count) in ctx.stats.commands.errors() {
                    let _ = write!(out, "errorstat_{code}:count={count}\r\n");
                }
            }
            _ => {
                for (field, value) in fields(*section, ctx, engine) {
                    let _ = write!(out, "{field}:{value}\r\n");
                }
            }
        }
    }
    out
}

/// The `field:value` lines of one section.
fn fields(
    section: Section,
    ctx: &ServerContext,
    engine: &StorageStats,
) -> Vec<(&'static str, String)> {
    let stats = &ctx.stats;
    let uptime = ctx.started.elapsed().as_secs();
    let count = |n: u64| n.to_string();
    match section {
        Section::Server => vec![
            ("redis_version", REDIS_VERSION.into()),
            ("ringkv_version", env!("CARGO_PKG_VERSION").into()),
            ("redis_git_sha1", "00000000".into()),
            ("redis_git_dirty", "0".into()),
            ("redis_mode", "standalone".into()),
            ("os", process::os_name().into()),
            ("arch_bits", (usize::BITS).to_string()),
            ("process_id", std::process::id().to_string()),
            ("run_id", ctx.run_id.clone()),
            ("tcp_port", ctx.settings.addr.port().to_string()),
            ("server_time_usec", now_us().to_string()),
            ("uptime_in_seconds", count(uptime)),
            ("uptime_in_days", count(uptime / 86_400)),
            ("executable", process::executable().into()),
            ("config_file", String::new()),
        ],
        Section::Clients => vec![
            (
                "connected_clients",
                count(stats.connected_clients.load(Relaxed)),
            ),
            ("cluster_connections", "0".into()),
            ("maxclients", count(ctx.settings.limits.maxclients)),
            ("blocked_clients", "0".into()),
            ("tracking_clients", "0".into()),
            ("clients_in_timeout_table", "0".into()),
        ],
        Section::Memory => {
            let rss = process::rss_bytes();
            vec![
                ("used_memory", count(rss)),
                ("used_memory_human", process::bytes_to_human(rss)),
                ("used_memory_rss", count(rss)),
                ("used_memory_rss_human", process::bytes_to_human(rss)),
                ("maxmemory", "0".into()),
                ("maxmemory_human", "0B".into()),
                ("maxmemory_policy", "noeviction".into()),
                ("mem_allocator", "mimalloc".into()),
            ]
        }
        Section::Persistence => vec![
            ("loading", "0".into()),
            ("async_loading", "0".into()),
            ("rdb_changes_since_last_save", "0".into()),
            ("rdb_bgsave_in_progress", "0".into()),
            ("rdb_last_save_time", count(ctx.started_unix)),
            ("rdb_last_bgsave_status", "ok".into()),
            ("aof_enabled", "0".into()),
            ("aof_rewrite_in_progress", "0".into()),
            ("aof_last_write_status", "ok".into()),
        ],
        Section::Stats => vec![
            (
                "total_connections_received",
                count(stats.connections_received.load(Relaxed)),
            ),
            (
                "total_commands_processed",
                count(stats.commands_processed.load(Relaxed)),
            ),
            ("instantaneous_ops_per_sec", count(stats.ops_per_sec())),
            (
                "total_net_input_bytes",
                count(stats.net_input_bytes.load(Relaxed)),
            ),
            (
                "total_net_output_bytes",
                count(stats.net_output_bytes.load(Relaxed)),
            ),
            (
                "instantaneous_input_kbps",
                format!("{:.2}", stats.input_kbps()),
            ),
            (
                "instantaneous_output_kbps",
                format!("{:.2}", stats.output_kbps()),
            ),
            (
                "rejected_connections",
                count(stats.rejected_connections.load(Relaxed)),
            ),
            ("expired_keys", count(engine.expired_keys)),
            ("evicted_keys", "0".into()),
            ("keyspace_hits", count(engine.keyspace_hits)),
            ("keyspace_misses", count(engine.keyspace_misses)),
            // Errors from a master or an AOF Redis did not expect: ringkv has neither.
            ("unexpected_error_replies", "0".into()),
            (
                "total_error_replies",
                count(stats.error_replies.load(Relaxed)),
            ),
        ],
        Section::Replication => vec![
            ("role", "master".into()),
            ("connected_slaves", "0".into()),
            ("master_repl_offset", "0".into()),
        ],
        Section::Cpu => {
            let (user, sys) = process::cpu_seconds();
            vec![
                ("used_cpu_sys", format!("{sys:.6}")),
                ("used_cpu_user", format!("{user:.6}")),
            ]
        }
        // Listed by `render`, one line per command or error code.
        Section::Modules | Section::Commandstats | Section::Errorstats => Vec::new(),
        // Not Redis Cluster's protocol (clients must not try to follow MOVED): the cluster is
        // behind this proxy, which reports it in its own fields.
        Section::Cluster => match ctx.backend.cluster_status() {
            None => vec![
                ("cluster_enabled", "0".into()),
                ("ringkv_mode", "standalone".into()),
            ],
            Some(status) => vec![
                ("cluster_enabled", "0".into()),
                ("ringkv_mode", "proxy".into()),
                ("ringkv_map_epoch", count(status.epoch)),
                ("ringkv_shards", count(u64::from(status.shards))),
                ("ringkv_nodes", count(status.map_nodes as u64)),
                (
                    "ringkv_nodes_registered",
                    count(status.registered_nodes as u64),
                ),
                ("ringkv_etcd_reachable", count(u64::from(status.etcd_up))),
            ],
        },
        Section::Keyspace if engine.keys > 0 => {
            vec![(
                "db0",
                format!("keys={},expires={},avg_ttl=0", engine.keys, engine.expires),
            )]
        }
        Section::Keyspace => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn section_selection() {
        let every = selected(&args(&["ALL"]));
        assert_eq!(every.count_ones() as usize, Section::ALL.len());
        assert_eq!(selected(&args(&["everything"])), every);
        let default = selected(&[]);
        assert_eq!(default, every & !Section::Commandstats.bit());
        assert_eq!(selected(&args(&["default"])), default);
        assert_eq!(
            selected(&args(&["default", "commandstats"])),
            every,
            "a section named besides default is added to it"
        );
        assert_eq!(selected(&args(&["nosuch"])), 0);
        assert_eq!(
            selected(&args(&["KEYSPACE", "server", "keyspace"])),
            Section::Server.bit() | Section::Keyspace.bit()
        );
        assert_eq!(
            selected(&args(&["latencystats"])),
            0,
            "sections ringkv lacks are ignored"
        );
    }
}
