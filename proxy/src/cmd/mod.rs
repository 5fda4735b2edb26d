//! Commands the proxy answers itself (route `Local` in the command table), one file per
//! family: connection (PING, ECHO, HELLO, QUIT, RESET, SELECT), CLIENT, COMMAND, CONFIG, INFO
//! and TIME, the transaction commands (MULTI, EXEC, DISCARD, WATCH, UNWATCH), and OBJECT HELP and MEMORY HELP (their other subcommands run where the key is). Each handler takes the already resolved arguments and returns a [`Reply`]; none
//! touches the socket.

mod client;
mod command;
mod config;
mod connection;
mod info;
mod time;
pub mod transaction;

use bytes::Bytes;
use ringkv_common::command::{Cmd, CommandSpec};
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::Reply;

use crate::context::ServerContext;
use crate::session::Session;

/// Runs a `Local` command. `resolve` has checked the arity against the table, so the
/// argument indexes below are in bounds.
pub async fn run(
    spec: &'static CommandSpec,
    args: &[Bytes],
    session: &mut Session,
    ctx: &ServerContext,
) -> Reply {
    match spec.cmd {
        Cmd::Ping => connection::ping(args),
        Cmd::Echo => Reply::Bulk(args[1].clone()),
        Cmd::Hello => connection::hello(args, session, &ctx.settings.acl),
        Cmd::Quit => {
            session.closing = true;
            Reply::Ok
        }
        Cmd::Auth => connection::auth(args, session, &ctx.settings.acl),
        Cmd::Reset => {
            session.reset(ctx.settings.acl.initial_user());
            Reply::status("RESET")
        }
        Cmd::Select => connection::select(&args[1]),
        Cmd::Multi => transaction::multi(session),
        Cmd::Discard => transaction::discard(session),
        Cmd::Watch => transaction::watch(&args[1..], session, ctx).await,
        Cmd::Unwatch => transaction::unwatch(session),
        Cmd::ClientSetname => client::setname(&args[2], session),
        Cmd::ClientGetname => session.name.clone().map_or(Reply::Nil, Reply::Bulk),
        Cmd::ClientId => Reply::Int(session.id as i64),
        Cmd::ClientSetinfo => client::setinfo(&args[2], &args[3], session),
        Cmd::ClientInfo => Reply::Verbatim(client::info_line(session).into()),
        Cmd::ClientList => client::list(&args[2..], session, ctx),
        Cmd::ClientKill => client::kill(&args[2..], session, ctx),
        Cmd::ClientHelp => client::help(&args[0]),
        Cmd::Command => command::all_info(),
        Cmd::CommandCount => command::count(),
        Cmd::CommandInfo => command::info(&args[2..]),
        Cmd::CommandDocs => command::docs(&args[2..]),
        Cmd::CommandList => command::list(&args[2..]),
        Cmd::CommandGetkeys => command::getkeys(&args[2..]),
        Cmd::CommandHelp => command::help(&args[0]),
        Cmd::ConfigGet => config::get(&args[2..], ctx),
        Cmd::ConfigSet => config::set(&args[2..], ctx),
        Cmd::ConfigResetstat => config::resetstat(ctx),
        Cmd::ConfigHelp => config::help(&args[0]),
        Cmd::SlowlogGet => slowlog_get(&args[1], &args[2..], ctx),
        Cmd::SlowlogLen => Reply::Int(i64::try_from(ctx.slowlog.len()).unwrap_or(i64::MAX)),
        Cmd::SlowlogReset => {
            ctx.slowlog.reset();
            Reply::Ok
        }
        Cmd::SlowlogHelp => help_reply(
            &args[0],
            &[
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
            ],
        ),
        Cmd::Info => info::info(&args[1..], ctx).await,
        Cmd::Time => time::time(),
        Cmd::ObjectHelp => object_help(&args[0]),
        Cmd::MemoryHelp => help_reply(
            &args[0],
            &[
                "USAGE <key> [SAMPLES <count>]",
                "    Return the bytes <key>'s records take in RocksDB before compression.",
            ],
        ),
        // The table routes nothing else here; a new Local entry without a handler says so
        // instead of taking the connection down.
        other => Reply::error_owned(format!(
            "ERR '{}' is not served by the proxy ({other:?})",
            spec.name
        )),
    }
}

/// SLOWLOG GET [count]: the newest `count` entries (10 by default, all for -1), with Redis's
/// errors (`typed`: the subcommand as the client spelled it).
fn slowlog_get(typed: &[u8], args: &[Bytes], ctx: &ServerContext) -> Reply {
    let count = match args {
        [] => Some(10),
        [count] => match parse_i64(count) {
            Some(-1) => None,
            Some(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Reply::error("ERR count should be greater than or equal to -1"),
        },
        _ => {
            return Reply::error_owned(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                quoted(typed)
            ))
        }
    };
    ctx.slowlog.get(count)
}

/// Whether running `cmd` may change what CLIENT LIST shows of the session (its name,
/// library, user, protocol or transaction): the session then publishes itself again. (EXEC,
/// which ends a transaction, is not run here and publishes in `dispatch`.)
pub fn changes_description(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Hello
            | Cmd::Auth
            | Cmd::Reset
            | Cmd::Select
            | Cmd::Multi
            | Cmd::Discard
            | Cmd::ClientSetname
            | Cmd::ClientSetinfo
    )
}

/// A HELP reply in Redis's shape: a title naming the container as the client typed it (upper
/// case), the given lines, then HELP's own entry, all as status lines.
pub fn help_reply(container: &[u8], lines: &[&'static str]) -> Reply {
    let name = String::from_utf8_lossy(container).to_ascii_uppercase();
    let mut out = Vec::with_capacity(lines.len() + 3);
    out.push(Reply::Status(
        format!("{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:").into(),
    ));
    out.extend(lines.iter().map(|line| Reply::status(line)));
    out.push(Reply::status("HELP"));
    out.push(Reply::status("    Prints this help."));
    Reply::Array(out)
}

/// OBJECT HELP, in Redis's words (the subcommands themselves run where the key is).
fn object_help(container: &[u8]) -> Reply {
    help_reply(
        container,
        &[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ],
    )
}

/// An argument as text for an error message that quotes it (invalid UTF-8 is replaced,
/// where C's `%s` would print the raw bytes).
pub(crate) fn quoted(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}
