//! CLIENT SETNAME / SETINFO / INFO / LIST / KILL / HELP (GETNAME and ID are one-liners in the
//! dispatcher).

use std::fmt::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use ringkv_common::args::SYNTAX;
use ringkv_common::command::CommandSpec;
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::{Protocol, Reply};

use super::connection::BAD_CLIENT_NAME;
use super::{help_reply, quoted};
use crate::clients::{Described, Listed};
use crate::context::ServerContext;
use crate::session::{stored, valid_client_attr, Session};

/// CLIENT SETNAME name: an empty name clears it.
pub fn setname(name: &[u8], session: &mut Session) -> Reply {
    if !valid_client_attr(name) {
        return BAD_CLIENT_NAME;
    }
    session.set_name(name);
    Reply::Ok
}

/// CLIENT SETINFO LIB-NAME|LIB-VER value, as Redis 7.2 (client libraries send it on connect
/// and expect OK).
pub fn setinfo(attr: &[u8], value: &[u8], session: &mut Session) -> Reply {
    let slot = if attr.eq_ignore_ascii_case(b"lib-name") {
        &mut session.lib_name
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        &mut session.lib_ver
    } else {
        return Reply::error_owned(format!("ERR Unrecognized option '{}'", quoted(attr)));
    };
    if !valid_client_attr(value) {
        return Reply::error_owned(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            quoted(attr)
        ));
    }
    *slot = stored(value);
    Reply::Ok
}

/// What one CLIENT INFO or CLIENT LIST line shows.
struct LineOf<'a> {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    fd: i32,
    age: u64,
    idle: u64,
    described: &'a Described,
    cmd: Option<&'static CommandSpec>,
}

impl<'a> LineOf<'a> {
    /// The calling connection's own line: it is running a command now, so it is not idle.
    fn own(session: &Session, described: &'a Described) -> LineOf<'a> {
        LineOf {
            id: session.id,
            peer: session.peer,
            local: session.local,
            fd: session.fd,
            age: session.connected_at.elapsed().as_secs(),
            idle: 0,
            described,
            cmd: session.last_command,
        }
    }

    /// Another connection's line, as it last published itself.
    fn other(listed: &Listed, described: &'a Described) -> LineOf<'a> {
        LineOf {
            id: listed.id,
            peer: listed.peer,
            local: listed.local,
            fd: listed.fd,
            age: listed.connected_at.elapsed().as_secs(),
            idle: listed.idle_secs(),
            described,
            cmd: listed.last_command(),
        }
    }

    /// Appends the line, field for field as Redis 7.2 prints it. Buffers and memory are
    /// reported as 0: the proxy does not track them per client.
    fn write_to(&self, out: &mut String) {
        let d = self.described;
        let text = |v: &Option<Bytes>| v.as_deref().map(quoted).unwrap_or_default();
        let resp = match d.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        let (flags, multi) = match d.queued {
            Some(queued) => ("x", i64::try_from(queued).unwrap_or(i64::MAX)),
            None => ("N", -1),
        };
        let _ = writeln!(
            out,
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db={} sub=0 psub=0 \
             ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
             omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={resp} lib-name={} lib-ver={}",
            self.id,
            self.peer,
            self.local,
            self.fd,
            text(&d.name),
            self.age,
            self.idle,
            d.db,
            self.cmd.map_or("NULL", |spec| spec.name),
            d.user_name(),
            text(&d.lib_name),
            text(&d.lib_ver),
        );
    }
}

/// The CLIENT INFO line of this connection.
pub fn info_line(session: &Session) -> String {
    let described = Described::of(session);
    let mut line = String::with_capacity(320);
    LineOf::own(session, &described).write_to(&mut line);
    line
}

/// Redis's client types (`getClientTypeByName`): ringkv's clients are all `normal`, none is
/// a replica, a master or in pub/sub. `None` for a name Redis does not know.
fn is_normal_type(name: &[u8]) -> Option<bool> {
    let known = ["normal", "slave", "replica", "pubsub", "master"];
    let i = known
        .iter()
        .position(|k| name.eq_ignore_ascii_case(k.as_bytes()))?;
    Some(i == 0)
}

fn unknown_type(name: &[u8]) -> Reply {
    Reply::error_owned(format!("ERR Unknown client type '{}'", quoted(name)))
}

/// CLIENT LIST [TYPE type | ID id…], as Redis 7.0 parses it: one filter at most.
pub fn list(args: &[Bytes], session: &Session, ctx: &ServerContext) -> Reply {
    let mut out = String::new();
    let line = |out: &mut String, listed: &Listed| {
        if listed.id == session.id {
            let described = Described::of(session);
            LineOf::own(session, &described).write_to(out);
        } else {
            let described = listed.described();
            LineOf::other(listed, &described).write_to(out);
        }
    };
    match args {
        [] => ctx.clients.all().iter().for_each(|c| line(&mut out, c)),
        [filter, name] if filter.eq_ignore_ascii_case(b"type") => match is_normal_type(name) {
            None => return unknown_type(name),
            Some(true) => ctx.clients.all().iter().for_each(|c| line(&mut out, c)),
            Some(false) => {}
        },
        [filter, ids @ ..] if !ids.is_empty() && filter.eq_ignore_ascii_case(b"id") => {
            for id in ids {
                let Some(id) = parse_i64(id) else {
                    return Reply::error("ERR Invalid client ID");
                };
                let listed = u64::try_from(id).ok().and_then(|id| ctx.clients.get(id));
                if let Some(listed) = listed {
                    line(&mut out, &listed);
                }
            }
        }
        _ => return SYNTAX,
    }
    Reply::Verbatim(out.into())
}

/// Which clients CLIENT KILL closes.
#[derive(Default)]
struct KillFilter<'a> {
    id: Option<u64>,
    /// `Some(false)`: a type none of ringkv's clients has.
    normal: Option<bool>,
    addr: Option<&'a [u8]>,
    laddr: Option<&'a [u8]>,
    user: Option<&'a [u8]>,
    skip_me: bool,
}

impl KillFilter<'_> {
    fn matches(&self, id: u64, peer: SocketAddr, local: SocketAddr, user: &str) -> bool {
        let same = |want: Option<&[u8]>, addr: SocketAddr| {
            want.is_none_or(|want| want == addr.to_string().as_bytes())
        };
        self.id.is_none_or(|want| want == id)
            && self.normal != Some(false)
            && same(self.addr, peer)
            && same(self.laddr, local)
            && self.user.is_none_or(|want| want == user.as_bytes())
    }
}

/// CLIENT KILL ip:port (answers OK, or an error if no client has that address; the caller
/// may name itself) or CLIENT KILL with filters (ID, TYPE, ADDR, LADDR, USER, SKIPME; answers
/// how many it closed), as Redis 7.0 parses them. Another client closes once its batch in
/// progress is answered; the caller closes after this reply, as with QUIT.
pub fn kill(args: &[Bytes], session: &mut Session, ctx: &ServerContext) -> Reply {
    let old_form = args.len() == 1;
    let filter = if old_form {
        KillFilter {
            addr: Some(&args[0][..]),
            ..KillFilter::default()
        }
    } else {
        match kill_filter(args, ctx) {
            Ok(filter) => filter,
            Err(reply) => return reply,
        }
    };
    let mut killed = 0i64;
    for client in ctx.clients.all() {
        let me = client.id == session.id;
        // The caller's own entry too: AUTH, HELLO and RESET publish the user they set.
        let described = client.described();
        let user = described.user_name();
        if !filter.matches(client.id, client.peer, client.local, user) || (me && filter.skip_me) {
            continue;
        }
        if me {
            session.closing = true;
        } else {
            client.kill();
        }
        killed += 1;
    }
    match (old_form, killed) {
        (true, 0) => Reply::error("ERR No such client"),
        (true, _) => Reply::Ok,
        (false, n) => Reply::Int(n),
    }
}

/// Parses CLIENT KILL's `<option> <value>` pairs.
fn kill_filter<'a>(args: &'a [Bytes], ctx: &ServerContext) -> Result<KillFilter<'a>, Reply> {
    let mut filter = KillFilter {
        skip_me: true,
        ..KillFilter::default()
    };
    let mut pairs = args.chunks(2);
    for pair in pairs.by_ref() {
        let [option, value] = pair else {
            return Err(SYNTAX);
        };
        let is = |name: &str| option.eq_ignore_ascii_case(name.as_bytes());
        if is("id") {
            match parse_i64(value).filter(|&id| id >= 1) {
                Some(id) => filter.id = u64::try_from(id).ok(),
                None => return Err(Reply::error("ERR client-id should be greater than 0")),
            }
        } else if is("type") {
            filter.normal = Some(is_normal_type(value).ok_or_else(|| unknown_type(value))?);
        } else if is("addr") {
            filter.addr = Some(value);
        } else if is("laddr") {
            filter.laddr = Some(value);
        } else if is("user") {
            if !ctx.settings.acl.has_user(value) {
                return Err(Reply::error_owned(format!(
                    "ERR No such user '{}'",
                    quoted(value)
                )));
            }
            filter.user = Some(value);
        } else if is("skipme") {
            filter.skip_me = if value.eq_ignore_ascii_case(b"yes") {
                true
            } else if value.eq_ignore_ascii_case(b"no") {
                false
            } else {
                return Err(SYNTAX);
            };
        } else {
            return Err(SYNTAX);
        }
    }
    Ok(filter)
}

/// CLIENT HELP: the subcommands ringkv serves, in Redis's words.
pub fn help(container: &[u8]) -> Reply {
    help_reply(
        container,
        &[
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "    * ID <client-id>",
            "      Kill connections by client id.",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "    * ID <client-id> [<client-id> ...]",
            "      Return clients of specified IDs only.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are:",
            "    * LIB-NAME: the client lib name.",
            "    * LIB-VER: the client lib version.",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::session::test_session as session;

    fn err(reply: Reply) -> String {
        match reply {
            Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn setname_validates_and_empty_clears() {
        let mut s = session();
        assert_eq!(
            err(setname(b"a b", &mut s)),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        assert_eq!(
            err(setname(b"a\nb", &mut s)),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        assert_eq!(setname(b"worker-1", &mut s), Reply::Ok);
        assert_eq!(s.name.as_deref(), Some(&b"worker-1"[..]));
        assert_eq!(setname(b"", &mut s), Reply::Ok);
        assert_eq!(s.name, None);
    }

    #[test]
    fn setinfo_as_redis_7_2() {
        let mut s = session();
        assert_eq!(setinfo(b"LIB-NAME", b"redis-py", &mut s), Reply::Ok);
        assert_eq!(setinfo(b"lib-ver", b"5.0.1", &mut s), Reply::Ok);
        assert_eq!(
            err(setinfo(b"lib-color", b"x", &mut s)),
            "ERR Unrecognized option 'lib-color'"
        );
        assert_eq!(
            err(setinfo(b"Lib-Ver", b"1 2", &mut s)),
            "ERR Lib-Ver cannot contain spaces, newlines or special characters."
        );
        let line = info_line(&s);
        assert!(
            line.ends_with(" resp=2 lib-name=redis-py lib-ver=5.0.1\n"),
            "{line}"
        );
    }

    #[test]
    fn info_line_fields() {
        let mut s = session();
        s.last_command = ringkv_common::command::resolve(&[
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"INFO"),
        ])
        .ok();
        s.set_name(b"app");
        let line = info_line(&s);
        let prefix = format!("id={} addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=9 name=app age=0 idle=0 flags=N db=0 ", s.id);
        assert!(line.starts_with(&prefix), "{line}");
        assert!(
            line.contains(" cmd=client|info user=default redir=-1 resp=2 lib-name= lib-ver=\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }
}
