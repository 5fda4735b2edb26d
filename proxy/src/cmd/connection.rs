//! PING, HELLO and SELECT (ECHO, QUIT and RESET are one-liners in the dispatcher), with
//! Redis 7's replies and errors.

use bytes::Bytes;
use ringkv_common::acl::{Acl, AUTH_WITHOUT_PASSWORD, NOAUTH_HELLO, WRONGPASS};
use ringkv_common::args::{is_opt, NOT_INTEGER};
use ringkv_common::command::wrong_arity;
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::{Protocol, Reply};

use super::quoted;
use crate::session::{valid_client_attr, Session};

/// The Redis version clients are told they talk to: the command set and replies are Redis
/// 7.0's, and client libraries pick their features by this number.
pub const REDIS_VERSION: &str = "7.0.0";

/// Redis's error for a client name with spaces or other unprintable bytes.
pub const BAD_CLIENT_NAME: Reply =
    Reply::error("ERR Client names cannot contain spaces, newlines or special characters.");

/// PING [message]: `+PONG`, or the message as a bulk string.
pub fn ping(args: &[Bytes]) -> Reply {
    match args {
        [_] => Reply::status("PONG"),
        [_, message] => Reply::Bulk(message.clone()),
        _ => wrong_arity("ping"),
    }
}

/// A HELLO request's options, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol asked for; `None` keeps the current one.
    pub protocol: Option<Protocol>,
    /// AUTH username and password.
    pub auth: Option<(Bytes, Bytes)>,
    /// SETNAME's name (the last one given wins, as in Redis).
    pub setname: Option<Bytes>,
}

/// Parses `HELLO [protover [AUTH username password] [SETNAME clientname]]` in Redis's order:
/// the version first (not an integer, then unsupported), then the options left to right.
pub fn parse_hello(args: &[Bytes]) -> Result<Hello, Reply> {
    let mut hello = Hello {
        protocol: None,
        auth: None,
        setname: None,
    };
    let Some(version) = args.get(1) else {
        return Ok(hello);
    };
    hello.protocol = match parse_i64(version) {
        None => {
            return Err(Reply::error(
                "ERR Protocol version is not an integer or out of range",
            ))
        }
        Some(2) => Some(Protocol::Resp2),
        Some(3) => Some(Protocol::Resp3),
        Some(_) => return Err(Reply::error("NOPROTO unsupported protocol version")),
    };
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = &args[i];
        if is_opt(opt, "AUTH") && more >= 2 {
            hello.auth = Some((args[i + 1].clone(), args[i + 2].clone()));
            i += 3;
        } else if is_opt(opt, "SETNAME") && more >= 1 {
            if !valid_client_attr(&args[i + 1]) {
                return Err(BAD_CLIENT_NAME);
            }
            hello.setname = Some(args[i + 1].clone());
            i += 2;
        } else {
            return Err(Reply::error_owned(format!(
                "ERR Syntax error in HELLO option '{}'",
                quoted(opt)
            )));
        }
    }
    Ok(hello)
}

/// AUTH [username] password: authenticates as `username` (`default` with one argument).
pub fn auth(args: &[Bytes], session: &mut Session, acl: &Acl) -> Reply {
    let (user, password) = match args {
        [_, password] => {
            if !acl.default_has_password() {
                return AUTH_WITHOUT_PASSWORD;
            }
            (&b"default"[..], password)
        }
        [_, user, password] => (&user[..], password),
        _ => return ringkv_common::args::SYNTAX,
    };
    match acl.authenticate(user, password) {
        Some(user) => {
            session.user = Some(user);
            Reply::Ok
        }
        None => WRONGPASS,
    }
}

/// HELLO: switches the protocol, authenticates, names the connection, and describes the
/// server. A connection that is not authenticated must authenticate in the same HELLO.
pub fn hello(args: &[Bytes], session: &mut Session, acl: &Acl) -> Reply {
    let hello = match parse_hello(args) {
        Ok(hello) => hello,
        Err(reply) => return reply,
    };
    match &hello.auth {
        Some((user, password)) => match acl.authenticate(user, password) {
            Some(user) => session.user = Some(user),
            None => return WRONGPASS,
        },
        None if session.user.is_none() => return NOAUTH_HELLO,
        None => {}
    }
    if let Some(name) = &hello.setname {
        session.set_name(name);
    }
    if let Some(protocol) = hello.protocol {
        session.protocol = protocol;
    }
    let proto = match session.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    let field = |name: &'static str| Reply::bulk_static(name.as_bytes());
    Reply::Map(vec![
        (field("server"), field("redis")),
        (field("version"), field(REDIS_VERSION)),
        (field("proto"), Reply::Int(proto)),
        (field("id"), Reply::Int(session.id as i64)),
        (field("mode"), field("standalone")),
        (field("role"), field("master")),
        (field("modules"), Reply::Array(Vec::new())),
    ])
}

/// SELECT index: there is one database, 0. Errors as Redis's `getIntFromObjectOrReply`
/// then `selectDb`.
pub fn select(index: &[u8]) -> Reply {
    match parse_i64(index) {
        None => NOT_INTEGER,
        Some(n) if i32::try_from(n).is_err() => {
            Reply::error("ERR value is out of range, value must between -2147483648 and 2147483647")
        }
        Some(0) => Reply::Ok,
        Some(_) => Reply::error("ERR DB index is out of range"),
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

    fn err(reply: Reply) -> String {
        match reply {
            Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn hello_versions() {
        assert_eq!(parse_hello(&args(&["HELLO"])).map(|h| h.protocol), Ok(None));
        assert_eq!(
            parse_hello(&args(&["HELLO", "3"])).map(|h| h.protocol),
            Ok(Some(Protocol::Resp3))
        );
        assert_eq!(
            parse_hello(&args(&["HELLO", "2"])).map(|h| h.protocol),
            Ok(Some(Protocol::Resp2))
        );
        for bad in ["abc", "3.0", "", "99999999999999999999"] {
            let e = parse_hello(&args(&["HELLO", bad])).expect_err(bad);
            assert_eq!(
                err(e),
                "ERR Protocol version is not an integer or out of range"
            );
        }
        for unsupported in ["1", "4", "-1", "0"] {
            let e = parse_hello(&args(&["HELLO", unsupported])).expect_err(unsupported);
            assert_eq!(err(e), "NOPROTO unsupported protocol version");
        }
    }

    #[test]
    fn hello_options() {
        let h = parse_hello(&args(&[
            "hello", "3", "auth", "default", "pw", "setname", "a", "SETNAME", "b",
        ]))
        .expect("valid");
        assert_eq!(h.auth, Some((Bytes::from("default"), Bytes::from("pw"))));
        assert_eq!(h.setname, Some(Bytes::from("b")));
        let e = parse_hello(&args(&["HELLO", "3", "AUTH", "x"])).expect_err("AUTH needs two");
        assert_eq!(err(e), "ERR Syntax error in HELLO option 'AUTH'");
        let e = parse_hello(&args(&["HELLO", "3", "setname"])).expect_err("SETNAME needs one");
        assert_eq!(err(e), "ERR Syntax error in HELLO option 'setname'");
        let e = parse_hello(&args(&["HELLO", "3", "FOO"])).expect_err("unknown");
        assert_eq!(err(e), "ERR Syntax error in HELLO option 'FOO'");
        let e = parse_hello(&args(&["HELLO", "3", "SETNAME", "a b"])).expect_err("bad name");
        assert_eq!(
            err(e),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        assert_eq!(
            parse_hello(&args(&["HELLO", "2", "SETNAME", ""])).map(|h| h.setname),
            Ok(Some(Bytes::new()))
        );
    }

    #[test]
    fn hello_switches_protocol_and_describes_the_server() {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let acl = Acl::open();
        let mut session = Session::new(addr, addr, 3);
        session.user = acl.initial_user();
        let Reply::Map(fields) =
            hello(&args(&["HELLO", "3", "SETNAME", "app"]), &mut session, &acl)
        else {
            panic!("HELLO answers a map");
        };
        assert_eq!(session.protocol, Protocol::Resp3);
        assert_eq!(session.name.as_deref(), Some(&b"app"[..]));
        assert_eq!(fields.len(), 7);
        assert_eq!(fields[2], (Reply::bulk_static(b"proto"), Reply::Int(3)));
        assert_eq!(fields[3].1, Reply::Int(session.id as i64));

        let e = hello(
            &args(&["HELLO", "2", "AUTH", "bob", "pw"]),
            &mut session,
            &acl,
        );
        assert_eq!(
            err(e),
            "WRONGPASS invalid username-password pair or user is disabled."
        );
        assert_eq!(
            session.protocol,
            Protocol::Resp3,
            "a failed HELLO changes nothing"
        );
    }

    #[test]
    fn auth_and_hello_follow_the_default_users_password() {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let acl = Acl::with_requirepass("sekret");
        let mut session = Session::new(addr, addr, 3);
        session.user = acl.initial_user();
        assert!(session.user.is_none());
        assert_eq!(
            hello(&args(&["HELLO", "3"]), &mut session, &acl),
            NOAUTH_HELLO
        );
        assert_eq!(
            auth(&args(&["AUTH", "nope"]), &mut session, &acl),
            WRONGPASS
        );
        assert_eq!(
            auth(&args(&["AUTH", "sekret"]), &mut session, &acl),
            Reply::Ok
        );
        assert_eq!(
            session.user.as_ref().map(|u| u.name.as_str()),
            Some("default")
        );
        let open = Acl::open();
        assert_eq!(
            auth(&args(&["AUTH", "x"]), &mut session, &open),
            AUTH_WITHOUT_PASSWORD
        );
        assert_eq!(
            auth(&args(&["AUTH", "default", "x"]), &mut session, &open),
            Reply::Ok,
            "the open default user takes any password"
        );
    }

    #[test]
    fn ping_forms() {
        assert_eq!(ping(&args(&["PING"])), Reply::status("PONG"));
        assert_eq!(ping(&args(&["PING", "hi"])), Reply::Bulk(Bytes::from("hi")));
        assert_eq!(
            err(ping(&args(&["PING", "a", "b"]))),
            "ERR wrong number of arguments for 'ping' command"
        );
    }

    #[test]
    fn select_only_database_zero() {
        assert_eq!(select(b"0"), Reply::Ok);
        assert_eq!(err(select(b"1")), "ERR DB index is out of range");
        assert_eq!(err(select(b"-1")), "ERR DB index is out of range");
        assert_eq!(
            err(select(b"abc")),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err(select(b"1.5")),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err(select(b"99999999999")),
            "ERR value is out of range, value must between -2147483648 and 2147483647"
        );
    }
}
