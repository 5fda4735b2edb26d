//! COMMAND, COMMAND COUNT / INFO / DOCS / HELP: the command table described to clients.
//! Client libraries and redis-cli read these to learn arities, key positions and argument
//! hints, so they come straight from the one table in common/.

use bytes::Bytes;
use ringkv_common::command::{docs, lookup, COMMANDS};
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

/// COMMAND HELP.
pub fn help(container: &[u8]) -> Reply {
    help_reply(
        container,
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
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
