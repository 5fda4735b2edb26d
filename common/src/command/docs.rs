//! COMMAND INFO and COMMAND DOCS replies, derived from the command table.
//!
//! redis-cli builds its argument hints from COMMAND DOCS, so each entry's `syntax` (Redis's
//! documentation notation, e.g. `key [NX | XX]`) is parsed into the argument tree Redis 7
//! publishes: names, types, tokens, and the optional / multiple flags.

use bytes::Bytes;

use super::{flag, CommandSpec};
use crate::resp::Reply;

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

fn status(text: &'static str) -> Reply {
    Reply::status(text)
}

/// The COMMAND INFO entry of one command, as Redis 7 shapes it.
pub fn info_entry(spec: &CommandSpec) -> Reply {
    let flags = flag::NAMES
        .iter()
        .filter(|(bit, _)| spec.has(*bit))
        .map(|(_, name)| status(name))
        .collect();
    let categories = spec.acl_categories().into_iter().map(status).collect();
    let key_specs = if spec.keys.first == 0 {
        Vec::new()
    } else {
        let k = spec.keys;
        let flags: &[&'static str] = if spec.has(flag::WRITE) {
            &["RW", "update"]
        } else {
            &["RO", "access"]
        };
        let last = if k.last < 0 { k.last } else { k.last - k.first };
        vec![Reply::Map(vec![
            (
                bulk("flags"),
                Reply::Set(flags.iter().map(|f| status(f)).collect()),
            ),
            (
                bulk("begin_search"),
                Reply::Map(vec![
                    (bulk("type"), bulk("index")),
                    (
                        bulk("spec"),
                        Reply::Map(vec![(bulk("index"), Reply::Int(k.first.into()))]),
                    ),
                ]),
            ),
            (
                bulk("find_keys"),
                Reply::Map(vec![
                    (bulk("type"), bulk("range")),
                    (
                        bulk("spec"),
                        Reply::Map(vec![
                            (bulk("lastkey"), Reply::Int(last.into())),
                            (bulk("keystep"), Reply::Int(k.step.into())),
                            (bulk("limit"), Reply::Int(0)),
                        ]),
                    ),
                ]),
            ),
        ])]
    };
    // Redis sends an absent subcommand list as an empty set, a present one as an array.
    let subcommands = if spec.subcommands.is_empty() {
        Reply::Set(Vec::new())
    } else {
        Reply::Array(spec.subcommands.iter().map(info_entry).collect())
    };
    Reply::Array(vec![
        bulk(spec.name),
        Reply::Int(spec.arity.into()),
        Reply::Set(flags),
        Reply::Int(spec.keys.first.into()),
        Reply::Int(spec.keys.last.into()),
        Reply::Int(spec.keys.step.into()),
        Reply::Set(categories),
        Reply::Set(Vec::new()),
        Reply::Set(key_specs),
        subcommands,
    ])
}

/// The COMMAND DOCS entry of one command (name, then its documentation map).
pub fn docs_entry(spec: &CommandSpec) -> (Reply, Reply) {
    let mut fields = vec![
        (bulk("summary"), bulk(spec.summary)),
        (bulk("since"), bulk(spec.since)),
        (bulk("group"), bulk(spec.group)),
    ];
    let args = parse_syntax(spec.syntax);
    if !args.is_empty() {
        fields.push((
            bulk("arguments"),
            Reply::Array(args.iter().map(Arg::to_reply).collect()),
        ));
    }
    if !spec.subcommands.is_empty() {
        fields.push((
            bulk("subcommands"),
            Reply::Map(spec.subcommands.iter().map(docs_entry).collect()),
        ));
    }
    (bulk(spec.name), Reply::Map(fields))
}

/// One argument of a command's syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Its name (lower case).
    pub name: String,
    /// Redis's argument type: key, string, integer, pure-token, oneof, block.
    pub kind: &'static str,
    /// The literal word that introduces it (`EX` in `EX seconds`).
    pub token: Option<String>,
    /// Whether it may be left out.
    pub optional: bool,
    /// Whether it may repeat.
    pub multiple: bool,
    /// The alternatives of a oneof, or the parts of a block.
    pub children: Vec<Arg>,
}

impl Arg {
    fn plain(name: &str) -> Arg {
        let kind = match name {
            "key" | "newkey" | "key1" | "key2" | "source" | "destination" => "key",
            "seconds"
            | "milliseconds"
            | "unix-time-seconds"
            | "unix-time-milliseconds"
            | "offset"
            | "start"
            | "end"
            | "index"
            | "increment"
            | "decrement"
            | "cursor"
            | "count"
            | "protover"
            | "destination-db"
            | "min-match-len" => "integer",
            _ => "string",
        };
        Arg {
            name: name.to_string(),
            kind,
            token: None,
            optional: false,
            multiple: false,
            children: Vec::new(),
        }
    }

    fn to_reply(&self) -> Reply {
        let mut fields = vec![
            (bulk("name"), bulk(&self.name)),
            (bulk("type"), bulk(self.kind)),
        ];
        if let Some(token) = &self.token {
            fields.push((bulk("token"), bulk(token)));
        }
        let mut flags = Vec::new();
        if self.optional {
            flags.push(status("optional"));
        }
        if self.multiple {
            flags.push(status("multiple"));
        }
        if !flags.is_empty() {
            fields.push((bulk("flags"), Reply::Array(flags)));
        }
        if !self.children.is_empty() {
            fields.push((
                bulk("arguments"),
                Reply::Array(self.children.iter().map(Arg::to_reply).collect()),
            ));
        }
        Reply::Map(fields)
    }
}

/// Parses Redis's documentation notation into an argument tree.
pub fn parse_syntax(syntax: &str) -> Vec<Arg> {
    let spaced = syntax.replace('[', " [ ").replace(']', " ] ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    parse_seq(&tokens, &mut pos, true)
}

fn is_token(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

fn parse_seq(tokens: &[&str], pos: &mut usize, top_level: bool) -> Vec<Arg> {
    let mut seq: Vec<Arg> = Vec::new();
    while let Some(&word) = tokens.get(*pos) {
        match word {
            "]" | "|" => break,
            "..." => {
                if let Some(last) = seq.last_mut() {
                    last.multiple = true;
                }
                *pos += 1;
            }
            "[" => {
                *pos += 1;
                let mut alternatives = vec![parse_seq(tokens, pos, false)];
                while tokens.get(*pos) == Some(&"|") {
                    *pos += 1;
                    alternatives.push(parse_seq(tokens, pos, false));
                }
                *pos += 1; // the closing bracket
                let mut group = group_of(alternatives);
                // `key [key ...]` is one repeated argument, as Redis documents it.
                if group.multiple && seq.last().is_some_and(|prev| prev.name == group.name) {
                    if let Some(prev) = seq.last_mut() {
                        prev.multiple = true;
                    }
                    continue;
                }
                group.optional = true;
                seq.push(group);
            }
            _ => {
                *pos += 1;
                let arg = if is_token(word) {
                    match tokens.get(*pos) {
                        Some(next)
                            if !is_token(next) && !matches!(*next, "[" | "]" | "|" | "...") =>
                        {
                            *pos += 1;
                            let mut arg = Arg::plain(next);
                            arg.token = Some(word.to_string());
                            arg
                        }
                        _ => Arg {
                            kind: "pure-token",
                            token: Some(word.to_string()),
                            ..Arg::plain(&word.to_ascii_lowercase())
                        },
                    }
                } else {
                    Arg::plain(word)
                };
                seq.push(arg);
            }
        }
    }
    // `A | B` outside brackets (CLIENT SETINFO) is a required oneof.
    if top_level && tokens.get(*pos) == Some(&"|") && seq.len() == 1 {
        let mut alternatives = vec![seq];
        while tokens.get(*pos) == Some(&"|") {
            *pos += 1;
            alternatives.push(parse_seq(tokens, pos, false));
        }
        return vec![group_of(alternatives)];
    }
    seq
}

fn group_of(mut alternatives: Vec<Vec<Arg>>) -> Arg {
    let single = |mut seq: Vec<Arg>| -> Arg {
        if seq.len() == 1 {
            seq.remove(0)
        } else {
            let name = seq
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join("-");
            Arg {
                kind: "block",
                children: seq,
                ..Arg::plain(&name)
            }
        }
    };
    if alternatives.len() == 1 {
        return single(alternatives.remove(0));
    }
    let children: Vec<Arg> = alternatives.into_iter().map(single).collect();
    let name = if children.iter().all(|c| c.kind == "pure-token") {
        "condition".to_string()
    } else {
        "expiration".to_string()
    };
    Arg {
        kind: "oneof",
        children,
        ..Arg::plain(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_syntax_becomes_redis_argument_tree() {
        let args =
            parse_syntax("key value [NX | XX] [GET] [EX seconds | PX milliseconds | KEEPTTL]");
        let names: Vec<_> = args
            .iter()
            .map(|a| (a.name.as_str(), a.kind, a.optional))
            .collect();
        assert_eq!(
            names,
            vec![
                ("key", "key", false),
                ("value", "string", false),
                ("condition", "oneof", true),
                ("get", "pure-token", true),
                ("expiration", "oneof", true)
            ]
        );
        let expiration = &args[4].children;
        assert_eq!(expiration[0].token.as_deref(), Some("EX"));
        assert_eq!(expiration[0].name, "seconds");
        assert_eq!(expiration[2].kind, "pure-token");
    }

    #[test]
    fn repeated_keys_collapse_to_multiple() {
        let args = parse_syntax("key [key ...]");
        assert_eq!(args.len(), 1);
        assert!(args[0].multiple);
        let pairs = parse_syntax("key value [key value ...]");
        assert_eq!(pairs.len(), 3);
    }
}
