//! CLIENT SETNAME / SETINFO / INFO / HELP (GETNAME and ID are one-liners in the dispatcher).

use std::fmt::Write;

use bytes::Bytes;
use ringkv_common::resp::{Protocol, Reply};

use super::connection::BAD_CLIENT_NAME;
use super::{help_reply, quoted};
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

/// The CLIENT INFO line, field for field as Redis 7.2 prints it. Buffers and memory are
/// reported as 0: the proxy does not track them per client.
pub fn info_line(session: &Session) -> String {
    let text = |v: &Option<Bytes>| v.as_deref().map(quoted).unwrap_or_default();
    let resp = match session.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    let mut line = String::with_capacity(320);
    let _ = writeln!(
        line,
        "id={} addr={} laddr={} fd={} name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 multi=-1 \
         qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
         cmd=client|info user={} redir=-1 resp={} lib-name={} lib-ver={}",
        session.id,
        session.peer,
        session.local,
        session.fd,
        text(&session.name),
        session.connected_at.elapsed().as_secs(),
        session.db,
        session.user.as_ref().map_or("default", |u| u.name.as_str()),
        resp,
        text(&session.lib_name),
        text(&session.lib_ver),
    );
    line
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

    fn session() -> Session {
        Session::new(
            "127.0.0.1:5000".parse().expect("addr"),
            "127.0.0.1:6379".parse().expect("addr"),
            9,
        )
    }

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
