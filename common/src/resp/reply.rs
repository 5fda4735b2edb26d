//! Replies, and their encoding in RESP2 or RESP3.
//!
//! Commands build a protocol-neutral [`Reply`]; the connection encodes it for the protocol its
//! client chose with `HELLO`. Keeping one value type means a command is written once and the
//! RESP2/RESP3 differences (nulls, maps, sets, doubles, booleans, verbatim text) live here.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, the default for every new connection.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// A reply to one command, independent of the protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`, the commonest reply, without building a string.
    Ok,
    /// A simple status string such as `PONG` (no CR or LF inside).
    Status(Bytes),
    /// An error; the text is the whole message after `-`, code first (`ERR syntax error`).
    Error(Bytes),
    /// An integer.
    Int(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// A missing array: `*-1` in RESP2, `_` in RESP3.
    NilArray,
    /// An ordered list.
    Array(Vec<Reply>),
    /// Field/value pairs: a map in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// An unordered collection: a set in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// A floating point number: a double in RESP3, a bulk string in RESP2.
    Double(f64),
    /// A boolean: `#t`/`#f` in RESP3, the integers 1/0 in RESP2.
    Bool(bool),
    /// Text for humans (INFO, CLIENT INFO): verbatim `txt` in RESP3, a bulk string in RESP2.
    Verbatim(Bytes),
}

impl Reply {
    /// A status reply from static text.
    pub const fn status(text: &'static str) -> Reply {
        Reply::Status(Bytes::from_static(text.as_bytes()))
    }

    /// An error reply from static text, which must start with its code (`ERR …`).
    pub const fn error(text: &'static str) -> Reply {
        Reply::Error(Bytes::from_static(text.as_bytes()))
    }

    /// An error reply from a formatted message, which must start with its code.
    pub fn error_owned(text: String) -> Reply {
        Reply::Error(Bytes::from(text))
    }

    /// A bulk reply from static bytes.
    pub const fn bulk_static(bytes: &'static [u8]) -> Reply {
        Reply::Bulk(Bytes::from_static(bytes))
    }

    /// A bulk reply holding an integer's decimal text.
    pub fn bulk_int(n: i64) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(
            itoa::Buffer::new().format(n).as_bytes(),
        ))
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends this reply's encoding for `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Ok => out.put_slice(b"+OK\r\n"),
            Reply::Status(s) => line(out, b'+', s),
            Reply::Error(e) => line(out, b'-', e),
            Reply::Int(n) => int_line(out, b':', *n),
            Reply::Bulk(b) => bulk(out, b'$', b),
            Reply::Nil if resp3 => out.put_slice(b"_\r\n"),
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::NilArray if resp3 => out.put_slice(b"_\r\n"),
            Reply::NilArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                int_line(out, b'*', items.len() as i64);
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Reply::Set(items) => {
                int_line(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    int_line(out, b'%', pairs.len() as i64);
                } else {
                    int_line(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(protocol, out);
                    v.encode(protocol, out);
                }
            }
            Reply::Double(d) => {
                let text = format_double(*d);
                if resp3 {
                    line(out, b',', text.as_bytes());
                } else {
                    bulk(out, b'$', text.as_bytes());
                }
            }
            Reply::Bool(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Bool(b) => int_line(out, b':', i64::from(*b)),
            Reply::Verbatim(text) if resp3 => {
                int_line(out, b'=', text.len() as i64 + 4);
                out.put_slice(b"txt:");
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Reply::Verbatim(text) => bulk(out, b'$', text),
        }
    }
}

fn line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(prefix);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

fn int_line(out: &mut BytesMut, prefix: u8, n: i64) {
    line(out, prefix, itoa::Buffer::new().format(n).as_bytes());
}

fn bulk(out: &mut BytesMut, prefix: u8, data: &[u8]) {
    out.reserve(data.len() + 16);
    int_line(out, prefix, data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Formats a double as Redis does for RESP (`%.17g`, with `inf`/`-inf`/`nan`).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if d == d.trunc() && d.abs() < 1e17 {
        format!("{}", d as i64)
    } else {
        let mut buf = ryu::Buffer::new();
        buf.format(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(reply: &Reply, protocol: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(protocol, &mut out);
        out.to_vec()
    }

    #[test]
    fn nulls_differ_by_protocol() {
        assert_eq!(enc(&Reply::Nil, Protocol::Resp2), b"$-1\r\n");
        assert_eq!(enc(&Reply::NilArray, Protocol::Resp2), b"*-1\r\n");
        assert_eq!(enc(&Reply::Nil, Protocol::Resp3), b"_\r\n");
    }

    #[test]
    fn maps_flatten_in_resp2() {
        let map = Reply::Map(vec![(Reply::bulk_static(b"a"), Reply::Int(1))]);
        assert_eq!(enc(&map, Protocol::Resp2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, Protocol::Resp3), b"%1\r\n$1\r\na\r\n:1\r\n");
    }

    #[test]
    fn verbatim_and_bool() {
        assert_eq!(
            enc(&Reply::Verbatim(Bytes::from("hi")), Protocol::Resp3),
            b"=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            enc(&Reply::Verbatim(Bytes::from("hi")), Protocol::Resp2),
            b"$2\r\nhi\r\n"
        );
        assert_eq!(enc(&Reply::Bool(true), Protocol::Resp2), b":1\r\n");
        assert_eq!(enc(&Reply::Bool(false), Protocol::Resp3), b"#f\r\n");
    }

    #[test]
    fn bulk_and_errors() {
        assert_eq!(
            enc(&Reply::Bulk(Bytes::from("a\r\nb")), Protocol::Resp2),
            b"$4\r\na\r\nb\r\n"
        );
        assert_eq!(
            enc(&Reply::error("ERR syntax error"), Protocol::Resp3),
            b"-ERR syntax error\r\n"
        );
        assert_eq!(enc(&Reply::Int(-5), Protocol::Resp2), b":-5\r\n");
    }
}
