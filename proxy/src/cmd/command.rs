//! COMMAND, COMMAND COUNT / INFO / DOCS / LIST / GETKEYS / HELP: the command table described to
//! clients.
//! Client libraries and redis-cli read these to learn arities, key positions and argument
//! hints, so they come straight from the one table in common/.

use bytes::Bytes;
use ringkv_common::args::SYNTAX;
use ringkv_common::command::{all_specs, docs, lookup, named, CommandSpec, COMMANDS};
use ringkv_common::glob::glob_match;
use ringkv_common::resp::Reply;

use super::help_reply;

/// COMMAND: every command's INFO entry.
pub fn all_info() -> Reply {
    Reply::Array(COMMANDS.iter().map(docs::info_entry).collect())
}

/// COMMAND COUNT: the number of top-level commands.
pub fn count() -> Reply {
    Reply::Int(COMMANDS.len() as i64)
}

/// COMMAND INFO [name ...]: one entry per name, nil for names not served (`container|sub`
/// names a subcommand); all commands when no name is given.
pub fn info(names: &[Bytes]) -> Reply {
    if names.is_empty() {
        return all_info();
    }
    Reply::Array(
        names
            .iter()
            .map(|name| lookup(name).map_or(Reply::Nil, docs::info_entry))
            .collect(),
    )
}

/// COMMAND DOCS [name ...]: a map from name to documentation, leaving out unknown names; all
/// commands when no name is given.
pub fn docs(names: &[Bytes]) -> Reply {
    if names.is_empty() {
        return Reply::Map(COMMANDS.iter().map(docs::docs_entry).collect());
    }
    Reply::Map(
        names
            .iter()
            .filter_map(|name| lookup(name))
            .map(docs::docs_entry)
            .collect(),
    )
}

/// What COMMAND LIST keeps.
enum Filter {
    All,
    /// FILTERBY MODULE: ringkv has no modules.
    Nothing,
    /// FILTERBY ACLCAT, as `@category`.
    Category(String),
    /// FILTERBY PATTERN, matched without regard to case as Redis does.
    Pattern(Bytes),
}

impl Filter {
    fn keeps(&self, spec: &CommandSpec) -> bool {
        match self {
            Filter::All => true,
            Filter::Nothing => false,
            Filter::Category(category) => spec.acl_categories().contains(&category.as_str()),
            Filter::Pattern(pattern) => glob_match(pattern, spec.name.as_bytes(), true),
        }
    }
}

/// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]: every command and
/// subcommand name (`container|sub`), as Redis lists them.
pub fn list(options: &[Bytes]) -> Reply {
    let filter = match options {
        [] => Filter::All,
        [by, kind, arg] if by.eq_ignore_ascii_case(b"filterby") => {
            if kind.eq_ignore_ascii_case(b"module") {
                Filter::Nothing
            } else if kind.eq_ignore_ascii_case(b"aclcat") {
                Filter::Category(format!(
                    "@{}",
                    String::from_utf8_lossy(arg).to_ascii_lowercase()
                ))
            } else if kind.eq_ignore_ascii_case(b"pattern") {
                Filter::Pattern(arg.clone())
            } else {
                return SYNTAX;
            }
        }
        _ => return SYNTAX,
    };
    Reply::Array(
        all_specs()
            .filter(|spec| filter.keeps(spec))
            .map(|spec| Reply::Bulk(Bytes::from_static(spec.name.as_bytes())))
            .collect(),
    )
}

/// COMMAND GETKEYS command [arg ...]: the keys a full command names, with Redis's errors for
/// an unknown command, a wrong argument count, or a command without keys.
pub fn getkeys(command: &[Bytes]) -> Reply {
    let Ok(spec) = named(command) else {
        return Reply::error("ERR Invalid command specified");
    };
    if !spec.arity_ok(command.len()) {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    let keys: Vec<Reply> = spec
        .key_indexes(command.len())
        .map(|i| Reply::Bulk(command[i].clone()))
        .collect();
    if keys.is_empty() {
        return Reply::error("ERR The command has no key arguments");
    }
    Reply::Array(keys)
}

/// COMMAND HELP.
pub fn help(container: &[u8]) -> Reply {
    help_reply(
        container,
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_answers_nil_for_unknown_names() {
        let Reply::Array(entries) = info(&[
            Bytes::from("GET"),
            Bytes::from("nosuch"),
            Bytes::from("config|get"),
        ]) else {
            panic!("array");
        };
        assert_eq!(entries.len(), 3);
        assert!(matches!(&entries[0], Reply::Array(e) if e[0] == Reply::Bulk(Bytes::from("get"))));
        assert_eq!(entries[1], Reply::Nil);
        assert!(
            matches!(&entries[2], Reply::Array(e) if e[0] == Reply::Bulk(Bytes::from("config|get")))
        );
    }

    #[test]
    fn docs_skip_unknown_names() {
        let Reply::Map(entries) = docs(&[Bytes::from("nosuch"), Bytes::from("echo")]) else {
            panic!("map")
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, Reply::Bulk(Bytes::from("echo")));
        assert!(matches!(docs(&[]), Reply::Map(all) if all.len() == COMMANDS.len()));
    }

    #[test]
    fn count_matches_the_table() {
        assert_eq!(count(), Reply::Int(COMMANDS.len() as i64));
        assert!(matches!(all_info(), Reply::Array(all) if all.len() == COMMANDS.len()));
    }
}
