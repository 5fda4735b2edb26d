//! CONFIG GET / SET / RESETSTAT / HELP over a small table of the parameters clients and tools
//! ask Redis for. Only the slow log's two parameters change at run time; for any other, CONFIG
//! SET accepts only a value equal to the current one (so `CONFIG SET save ""` from a test
//! harness succeeds) and otherwise answers as Redis does for an immutable parameter.

use bytes::Bytes;
use ringkv_common::args::SYNTAX;
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::Reply;

use super::{help_reply, quoted};
use crate::context::{ServerContext, TCP_KEEPALIVE_SECS};
use ringkv_common::glob::{glob_match, is_pattern};

/// Every parameter CONFIG GET knows, with its current value, in a fixed order. The names are
/// Redis's, plus ringkv's own `shards` and `in-memory`.
pub fn config_table(ctx: &ServerContext) -> Vec<(&'static str, String)> {
    let s = &ctx.settings;
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        ("bind", s.addr.ip().to_string()),
        ("port", s.addr.port().to_string()),
        ("dir", s.dir.display().to_string()),
        ("databases", "1".into()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("appendfsync", s.fsync.name().into()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("maxclients", s.limits.maxclients.to_string()),
        ("timeout", s.limits.timeout.to_string()),
        ("tcp-keepalive", TCP_KEEPALIVE_SECS.to_string()),
        ("proto-max-bulk-len", ctx.limits.max_bulk_len.to_string()),
        ("requirepass", String::new()),
        ("cluster-enabled", "no".into()),
        ("daemonize", "no".into()),
        (
            "slowlog-log-slower-than",
            ctx.slowlog.slower_than_us().to_string(),
        ),
        ("slowlog-max-len", ctx.slowlog.max_len().to_string()),
        ("shards", s.shards.to_string()),
        ("in-memory", yes_no(s.in_memory)),
    ]
}

/// The parameters matching any of `patterns`, each once, in the order first matched. A
/// pattern without glob characters is an exact, case-insensitive name and keeps the
/// spelling it was asked with; a glob matches case-insensitively and gives the table's name.
pub fn config_get(patterns: &[Bytes], table: &[(&'static str, String)]) -> Vec<(Bytes, Bytes)> {
    let mut seen = vec![false; table.len()];
    let mut found = Vec::new();
    for pattern in patterns {
        let exact = !is_pattern(pattern);
        for (i, (name, value)) in table.iter().enumerate() {
            if seen[i] {
                continue;
            }
            let hit = if exact {
                name.as_bytes().eq_ignore_ascii_case(pattern)
            } else {
                glob_match(pattern, name.as_bytes(), true)
            };
            if hit {
                seen[i] = true;
                let key = if exact {
                    pattern.clone()
                } else {
                    Bytes::from_static(name.as_bytes())
                };
                found.push((key, Bytes::copy_from_slice(value.as_bytes())));
            }
        }
    }
    found
}

/// CONFIG GET parameter [parameter ...]: a map (a flat array in RESP2).
pub fn get(patterns: &[Bytes], ctx: &ServerContext) -> Reply {
    let table = config_table(ctx);
    Reply::Map(
        config_get(patterns, &table)
            .into_iter()
            .map(|(k, v)| (Reply::Bulk(k), Reply::Bulk(v)))
            .collect(),
    )
}

/// The parameters CONFIG SET changes, each an integer with the range Redis accepts.
const SETTABLE: [(&str, i64, i64); 2] = [
    ("slowlog-log-slower-than", -1, i64::MAX),
    ("slowlog-max-len", 0, i64::MAX),
];

/// CONFIG SET parameter value [parameter value ...]: all of them or, on an error, none.
pub fn set(pairs: &[Bytes], ctx: &ServerContext) -> Reply {
    match config_set(pairs, &config_table(ctx)) {
        Ok(changes) => {
            for (name, value) in changes {
                match name {
                    "slowlog-log-slower-than" => ctx.slowlog.set_slower_than_us(value),
                    _ => ctx
                        .slowlog
                        .set_max_len(usize::try_from(value).unwrap_or(usize::MAX)),
                }
            }
            Reply::Ok
        }
        Err(reply) => reply,
    }
}

/// CONFIG SET against `table`, checked in Redis's order: pairs, then unknown names, then
/// parameters that cannot change (here: any value but the current one), then duplicates,
/// then the values of those that can ([`SETTABLE`]), which are returned to be applied.
pub fn config_set(
    pairs: &[Bytes],
    table: &[(&'static str, String)],
) -> Result<Vec<(&'static str, i64)>, Reply> {
    if pairs.len() & 1 == 1 {
        return Err(SYNTAX);
    }
    let settable = |name: &[u8]| {
        SETTABLE
            .iter()
            .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(name))
    };
    let position = |name: &[u8]| {
        table
            .iter()
            .position(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
    };
    if let Some(unknown) = pairs
        .chunks(2)
        .map(|p| &p[0])
        .find(|name| position(name).is_none())
    {
        return Err(Reply::error_owned(format!(
            "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
            quoted(unknown)
        )));
    }
    let failed = |name: &[u8], why: &str| {
        Reply::error_owned(format!(
            "ERR CONFIG SET failed (possibly related to argument '{}') - {why}",
            quoted(name)
        ))
    };
    let mut seen = Vec::new();
    for pair in pairs.chunks(2) {
        let (name, value) = (&pair[0], &pair[1]);
        let Some(i) = position(name) else { continue };
        if settable(name).is_none() && !table[i].1.as_bytes().eq_ignore_ascii_case(value) {
            return Err(failed(name, "can't set immutable config"));
        }
        if seen.contains(&i) {
            return Err(failed(name, "duplicate parameter"));
        }
        seen.push(i);
    }
    let mut changes = Vec::new();
    for pair in pairs.chunks(2) {
        let (name, value) = (&pair[0], &pair[1]);
        let Some(&(setting, min, max)) = settable(name) else {
            continue;
        };
        let Some(number) = parse_i64(value) else {
            return Err(failed(name, "argument couldn't be parsed into an integer"));
        };
        if !(min..=max).contains(&number) {
            return Err(failed(
                name,
                &format!("argument must be between {min} and {max} inclusive"),
            ));
        }
        changes.push((setting, number));
    }
    Ok(changes)
}

/// CONFIG RESETSTAT: zeroes INFO's counters.
pub fn resetstat(ctx: &ServerContext) -> Reply {
    ctx.stats.reset();
    ctx.backend.reset_stats();
    Reply::Ok
}

/// CONFIG HELP.
pub fn help(container: &[u8]) -> Reply {
    help_reply(
        container,
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<(&'static str, String)> {
        vec![
            ("port", "6379".into()),
            ("appendonly", "no".into()),
            ("appendfsync", "everysec".into()),
            ("save", String::new()),
            ("maxmemory", "0".into()),
        ]
    }

    fn get(patterns: &[&str]) -> Vec<(String, String)> {
        let patterns: Vec<Bytes> = patterns
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect();
        config_get(&patterns, &table())
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn exact_names_keep_their_spelling() {
        assert_eq!(get(&["PORT"]), vec![pair("PORT", "6379")]);
        assert_eq!(get(&["nosuch"]), vec![]);
        assert_eq!(get(&["save"]), vec![pair("save", "")]);
    }

    #[test]
    fn globs_match_case_insensitively_and_give_table_names() {
        assert_eq!(get(&["*FSYNC*"]), vec![pair("appendfsync", "everysec")]);
        assert_eq!(
            get(&["append*"]),
            vec![pair("appendonly", "no"), pair("appendfsync", "everysec")]
        );
        assert_eq!(get(&["*"]).len(), 5);
        assert_eq!(
            get(&["p?rt", "[ms]a*"]),
            vec![
                pair("port", "6379"),
                pair("save", ""),
                pair("maxmemory", "0")
            ]
        );
    }

    #[test]
    fn each_parameter_once() {
        assert_eq!(get(&["port", "port", "p*"]), vec![pair("port", "6379")]);
        assert_eq!(get(&["maxmemory", "*"]).len(), 5);
        assert_eq!(get(&["maxmemory", "*"])[0], pair("maxmemory", "0"));
    }

    fn set(words: &[&str]) -> Reply {
        let pairs: Vec<Bytes> = words
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect();
        match config_set(&pairs, &table()) {
            Ok(changes) => {
                assert!(changes.is_empty(), "{changes:?}");
                Reply::Ok
            }
            Err(reply) => reply,
        }
    }

    fn err(reply: Reply) -> String {
        match reply {
            Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn the_slow_logs_parameters_are_set_checked_and_all_or_nothing() {
        let mut table = table();
        table.push(("slowlog-log-slower-than", "10000".into()));
        table.push(("slowlog-max-len", "128".into()));
        let words = |w: &[&str]| -> Vec<Bytes> {
            w.iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect()
        };
        assert_eq!(
            config_set(
                &words(&["SLOWLOG-LOG-SLOWER-THAN", "0", "slowlog-max-len", "5"]),
                &table
            ),
            Ok(vec![("slowlog-log-slower-than", 0), ("slowlog-max-len", 5)])
        );
        let refused = |w: &[&str]| match config_set(&words(w), &table) {
            Err(Reply::Error(e)) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("{w:?}: {other:?}"),
        };
        assert_eq!(
            refused(&["slowlog-log-slower-than", "abc"]),
            "ERR CONFIG SET failed (possibly related to argument 'slowlog-log-slower-than') - argument couldn't be parsed into an integer"
        );
        assert_eq!(
            refused(&["slowlog-max-len", "-1"]),
            "ERR CONFIG SET failed (possibly related to argument 'slowlog-max-len') - argument must be between 0 and 9223372036854775807 inclusive"
        );
        assert_eq!(
            refused(&["slowlog-max-len", "1", "port", "1"]),
            "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
        );
    }

    #[test]
    fn set_accepts_only_the_current_values() {
        assert_eq!(set(&["save", ""]), Reply::Ok);
        assert_eq!(set(&["APPENDONLY", "NO", "port", "6379"]), Reply::Ok);
        assert_eq!(err(set(&["save", "", "port"])), "ERR syntax error");
        assert_eq!(
            err(set(&["foo", "1"])),
            "ERR Unknown option or number of arguments for CONFIG SET - 'foo'"
        );
        assert_eq!(
            err(set(&["port", "1", "foo", "1"])),
            "ERR Unknown option or number of arguments for CONFIG SET - 'foo'"
        );
        assert_eq!(
            err(set(&["maxmemory", "100mb"])),
            "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - can't set immutable config"
        );
        assert_eq!(
            err(set(&["save", "", "SAVE", ""])),
            "ERR CONFIG SET failed (possibly related to argument 'SAVE') - duplicate parameter"
        );
    }
}
