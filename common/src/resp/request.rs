//! Client request framing, byte for byte as Redis frames requests.
//!
//! Redis accepts two request forms: multibulk (`*N\r\n$len\r\narg\r\n…`, what client libraries
//! send) and inline (a plain text line, what a person types into `nc`). Client libraries match
//! on the exact `Protocol error: …` wording, so the limits and messages here follow Redis 7's
//! `processMultibulkBuffer` / `processInlineBuffer` rather than a generic RESP decoder. The
//! parser is resumable: a large request that arrives in pieces is not rescanned from its start.

use bytes::{Buf, Bytes, BytesMut};

/// Longest inline request, and longest `*N` / `$N` header line, before the request is refused
/// (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX_SIZE: usize = 64 * 1024;

/// Most a parser reserves ahead of the bytes of a bulk argument that has been announced but
/// has not arrived: large enough that big values are read in few, large steps, small enough
/// that announcing (and never sending) the largest bulk costs a connection nothing much.
pub const MAX_PREALLOC: usize = 1 << 20;

/// Protocol limits a server enforces on requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest bulk argument (Redis's `proto-max-bulk-len`, 512 MiB by default).
    pub max_bulk_len: usize,
    /// Largest multibulk argument count (Redis 7 allows up to `INT_MAX`).
    pub max_multibulk_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
        }
    }
}

/// A malformed request. The message is what follows `ERR ` in the reply; after it the server
/// replies and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(what: &str) -> Self {
        ProtocolError(format!("Protocol error: {what}"))
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Resumable parser state for one connection's requests.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: RequestLimits,
    /// Arguments still expected by the multibulk request in progress (0: none in progress).
    pending: usize,
    /// Length of the bulk argument whose header has been read but whose body has not arrived.
    bulk_len: Option<usize>,
}

/// What one parse step found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request; its arguments were appended to the caller's vector.
    Request,
    /// A request with no arguments (`*0`, a blank inline line): nothing to run.
    Empty,
    /// More bytes are needed.
    Incomplete,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: RequestLimits) -> Self {
        RequestParser {
            limits,
            pending: 0,
            bulk_len: None,
        }
    }

    /// Takes the next request out of `buf`, appending its arguments to `args` (which the
    /// caller clears between requests; arguments share `buf`'s memory, nothing is copied).
    /// On `Incomplete`, arguments of a partly received multibulk request may already be in
    /// `args`: keep them and call again when more bytes arrive.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
    ) -> Result<Parsed, ProtocolError> {
        if self.pending == 0 && self.bulk_len.is_none() {
            match buf.first() {
                None => return Ok(Parsed::Incomplete),
                Some(b'*') => {}
                Some(_) => return parse_inline(buf, args),
            }
            let Some(line) = header_line(buf, "too big mbulk count string")? else {
                return Ok(Parsed::Incomplete);
            };
            let count = parse_i64(&buf[1..line]);
            let count = match count {
                Some(n) if n <= self.limits.max_multibulk_len as i64 => n,
                _ => return Err(ProtocolError::new("invalid multibulk length")),
            };
            buf.advance(line + 2);
            if count <= 0 {
                return Ok(Parsed::Empty);
            }
            self.pending = count as usize;
            args.reserve(self.pending.min(1024));
        }
        while self.pending > 0 {
            let len = match self.bulk_len {
                Some(len) => len,
                None => {
                    let Some(line) = header_line(buf, "too big bulk count string")? else {
                        return Ok(Parsed::Incomplete);
                    };
                    if buf[0] != b'$' {
                        let got = char::from(buf[0]);
                        return Err(ProtocolError(format!(
                            "Protocol error: expected '$', got '{got}'"
                        )));
                    }
                    let len = match parse_i64(&buf[1..line]) {
                        Some(n) if n >= 0 && n as u64 <= self.limits.max_bulk_len as u64 => {
                            n as usize
                        }
                        _ => return Err(ProtocolError::new("invalid bulk length")),
                    };
                    buf.advance(line + 2);
                    self.bulk_len = Some(len);
                    len
                }
            };
            if buf.len() < len + 2 {
                // Room for what is missing, but never more than MAX_PREALLOC ahead of the
                // bytes that arrived: a 16-byte header announcing 512 MiB must not make the
                // server reserve 512 MiB (per connection) before any of it is sent.
                buf.reserve((len + 2 - buf.len()).min(MAX_PREALLOC));
                return Ok(Parsed::Incomplete);
            }
            args.push(buf.split_to(len).freeze());
            // Like Redis, the two bytes after a bulk are skipped, not checked.
            buf.advance(2);
            self.bulk_len = None;
            self.pending -= 1;
        }
        Ok(Parsed::Request)
    }
}

/// Index of the `\r` ending the header line at the start of `buf`, once its `\n` has arrived.
fn header_line(buf: &[u8], too_big: &str) -> Result<Option<usize>, ProtocolError> {
    match buf.iter().position(|&b| b == b'\r') {
        None if buf.len() > INLINE_MAX_SIZE => Err(ProtocolError::new(too_big)),
        None => Ok(None),
        Some(cr) if cr + 2 > buf.len() => Ok(None),
        Some(cr) => Ok(Some(cr)),
    }
}

/// Redis's `string2ll`: optional '-', digits, no leading zeros or '+', no spaces, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            None
        } else {
            Some((value as i64).wrapping_neg())
        }
    } else {
        i64::try_from(value).ok()
    }
}

fn parse_inline(buf: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<Parsed, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_MAX_SIZE {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line_end = if newline > 0 && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    let split = split_args(&buf[..line_end]);
    buf.advance(newline + 1);
    let words = split.ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    if words.is_empty() {
        return Ok(Parsed::Empty);
    }
    args.extend(words.into_iter().map(Bytes::from));
    Ok(Parsed::Request)
}

/// Redis's `sdssplitargs`: whitespace-separated words, "double quotes" with `\xHH`, `\n`,
/// `\r`, `\t`, `\b`, `\a` escapes, and 'single quotes' with `\'`. `None` on unbalanced quotes
/// or a closing quote not followed by a space.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c);
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(words);
        }
        let mut word = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            if in_double {
                let b = *line.get(i)?;
                if b == b'\\' && line.get(i + 1) == Some(&b'x') {
                    let hex = |c: Option<&u8>| c.and_then(|c| char::from(*c).to_digit(16));
                    if let (Some(h), Some(l)) = (hex(line.get(i + 2)), hex(line.get(i + 3))) {
                        word.push((h * 16 + l) as u8);
                        i += 4;
                        continue;
                    }
                }
                if b == b'\\' && i + 1 < line.len() {
                    word.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                } else if b == b'"' {
                    if line.get(i + 1).is_some_and(|&c| !is_space(c)) {
                        return None;
                    }
                    in_double = false;
                    i += 1;
                    break;
                } else {
                    word.push(b);
                    i += 1;
                }
            } else if in_single {
                let b = *line.get(i)?;
                if b == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    word.push(b'\'');
                    i += 2;
                } else if b == b'\'' {
                    if line.get(i + 1).is_some_and(|&c| !is_space(c)) {
                        return None;
                    }
                    in_single = false;
                    i += 1;
                    break;
                } else {
                    word.push(b);
                    i += 1;
                }
            } else {
                match line.get(i) {
                    None => break,
                    Some(&b) if is_space(b) => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(&b) => word.push(b),
                }
                i += 1;
            }
        }
        let _ = (in_double, in_single);
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            let mut args = Vec::new();
            match parser.parse(&mut buf, &mut args)? {
                Parsed::Request => out.push(args),
                Parsed::Empty => {}
                Parsed::Incomplete => return Ok(out),
            }
        }
    }

    fn err(input: &[u8]) -> String {
        parse_all(input).expect_err("should be a protocol error").0
    }

    #[test]
    fn multibulk_requests_pipelined() {
        let reqs = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n").expect("valid");
        assert_eq!(
            reqs,
            vec![
                vec![Bytes::from("GET"), Bytes::from("k")],
                vec![Bytes::from("PING")]
            ]
        );
    }

    #[test]
    fn multibulk_arriving_byte_by_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n";
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut args = Vec::new();
        for (i, b) in input.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = parser.parse(&mut buf, &mut args).expect("valid");
            assert_eq!(got == Parsed::Request, i == input.len() - 1, "at byte {i}");
        }
        assert_eq!(
            args,
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v\r\nxy")]
        );
    }

    #[test]
    fn inline_requests() {
        let reqs = parse_all(b"SET k \"a b\\x41\"\r\nPING\n\r\n").expect("valid");
        assert_eq!(
            reqs,
            vec![
                vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("a bA")],
                vec![Bytes::from("PING")]
            ]
        );
        assert_eq!(
            parse_all(b"get 'it\\'s'\r\n").expect("valid"),
            vec![vec![Bytes::from("get"), Bytes::from("it's")]]
        );
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n")
                .expect("valid")
                .len(),
            1
        );
    }

    #[test]
    fn protocol_errors_match_redis() {
        assert_eq!(err(b"*abc\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            err(b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err(b"*1\r\n$abc\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(err(b"*1\r\n$-1\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$600000000\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"SET k \"unbalanced\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(b"SET k \"a\"b\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(&vec![b'a'; INLINE_MAX_SIZE + 1]),
            "Protocol error: too big inline request"
        );
        let mut long = b"*".to_vec();
        long.extend(vec![b'1'; INLINE_MAX_SIZE + 1]);
        assert_eq!(err(&long), "Protocol error: too big mbulk count string");
    }

    #[test]
    fn integers_parse_as_redis_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"01", b"+1", b" 1", b"1 ", b"-0", b"1.0"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
