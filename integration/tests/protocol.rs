//! Wire-protocol robustness: malformed requests get Redis's exact `-ERR Protocol error: ...`
//! and the connection closes, while every other connection keeps working; odd but valid
//! framing (empty lines, `*0`, byte-at-a-time writes, huge multibulk counts) is accepted
//! exactly as redis-server accepts it.
//!
//! Every case runs against ringkv and a reference redis-server 7.0; the expected bytes in the
//! tables were observed from redis-server 7.0.15 and are asserted against it too, so a table
//! entry that stops describing Redis fails loudly instead of testing ringkv against nonsense.

use std::time::Duration;

use ringkv_integration::{encode_command, escape, Closing, Reply, RespClient, Server};

/// How long to wait for a server to close a connection after a protocol error.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

struct Malformed {
    what: &'static str,
    input: Vec<u8>,
    /// What redis-server answers before closing.
    reply: &'static [u8],
}

fn malformed_cases() -> Vec<Malformed> {
    let case = |what, input: &[u8], reply| Malformed {
        what,
        input: input.to_vec(),
        reply,
    };
    let mut cases = vec![
        case(
            "non-numeric multibulk length",
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        case(
            "empty multibulk length",
            b"*\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        case(
            "multibulk length with a plus sign",
            b"*+1\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        case(
            "multibulk length with a leading zero",
            b"*01\r\n$4\r\nPING\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        case(
            "multibulk length with a trailing space",
            b"*1 \r\n$4\r\nPING\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        case(
            "multibulk length above INT_MAX",
            b"*2147483648\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        case(
            "integer where a bulk string is expected",
            b"*1\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        case(
            "simple string where a bulk string is expected",
            b"*1\r\n+ok\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        case(
            "nested array in a request",
            b"*1\r\n*1\r\n",
            b"-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        case(
            "non-numeric bulk length",
            b"*1\r\n$abc\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        case(
            "empty bulk length",
            b"*1\r\n$\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        case(
            "negative bulk length",
            b"*1\r\n$-1\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        case(
            "bulk length with a plus sign",
            b"*1\r\n$+4\r\nPING\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        case(
            "bulk length over 512 MiB",
            b"*1\r\n$600000000\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        case(
            "bulk length one byte over 512 MiB",
            b"*1\r\n$536870913\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        case(
            "inline command with an unclosed double quote",
            b"\"unbalanced\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        case(
            "inline command with an unclosed single quote",
            b"SET 'a b\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        case(
            "inline closing quote followed by a letter",
            b"GET \"a\"b\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        case(
            "commands before the malformed frame are answered first",
            b"*1\r\n$4\r\nPING\r\n*abc\r\n",
            b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ];
    // Longer than the 64 KiB inline limit, with no newline. 66,000 bytes so that redis-server
    // reads all of it before answering (no unread data, so the close is a FIN, not a reset).
    cases.push(Malformed {
        what: "inline request over 64 KiB without a newline",
        input: vec![b'x'; 66_000],
        reply: b"-ERR Protocol error: too big inline request\r\n",
    });
    let mut mbulk = b"*".to_vec();
    mbulk.extend(std::iter::repeat_n(b'1', 66_000));
    cases.push(Malformed {
        what: "multibulk count line over 64 KiB",
        input: mbulk,
        reply: b"-ERR Protocol error: too big mbulk count string\r\n",
    });
    let mut bulk = b"*1\r\n$".to_vec();
    bulk.extend(std::iter::repeat_n(b'1', 66_000));
    cases.push(Malformed {
        what: "bulk length line over 64 KiB",
        input: bulk,
        reply: b"-ERR Protocol error: too big bulk count string\r\n",
    });
    cases
}

fn send_and_wait_for_close(server: &Server, input: &[u8]) -> Closing {
    let mut client = server.connect();
    client
        .send_raw(input)
        .unwrap_or_else(|e| panic!("{:?}: writing: {e}", server.flavor()));
    client.read_until_closed(CLOSE_DEADLINE)
}

fn show(closing: &Closing) -> String {
    format!(
        "\"{}\" (closed: {})",
        escape(&closing.bytes),
        closing.closed
    )
}

fn assert_serves(client: &mut RespClient, who: &str) {
    assert_eq!(
        client.cmd(&["PING"]),
        Reply::Simple(b"PONG".to_vec()),
        "{who}: a bystander connection stopped working"
    );
}

#[test]
fn malformed_requests_get_redis_protocol_errors_and_close_only_that_connection() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let mut bystander = ringkv.connect();
    assert_eq!(
        bystander.cmd(&["SET", "bystander", "still here"]),
        Reply::Simple(b"OK".to_vec())
    );
    let mut failures = Vec::new();
    for case in malformed_cases() {
        let expected = Closing {
            bytes: case.reply.to_vec(),
            closed: true,
        };
        let from_redis = send_and_wait_for_close(&redis, &case.input);
        assert_eq!(
            from_redis,
            expected,
            "test table is wrong: redis-server answers {} to {}",
            show(&from_redis),
            case.what
        );
        let from_ringkv = send_and_wait_for_close(&ringkv, &case.input);
        if from_ringkv != from_redis {
            failures.push(format!(
                "{}: sent \"{}\"\n    ringkv: {}\n    redis:  {}",
                case.what,
                escape(&case.input[..case.input.len().min(40)]),
                show(&from_ringkv),
                show(&from_redis)
            ));
        }
        assert_serves(&mut bystander, "ringkv");
    }
    assert_eq!(
        bystander.cmd(&["GET", "bystander"]),
        Reply::Bulk(b"still here".to_vec()),
        "ringkv lost data of another connection"
    );
    assert!(
        failures.is_empty(),
        "ringkv differs from redis-server on malformed input:\n{}",
        failures.join("\n")
    );
}

/// Inputs that are odd but valid: each is followed by `ECHO sentinel`, and everything the
/// server answers up to the sentinel's reply must match redis-server byte for byte.
fn accepted_cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty multibulk is ignored", b"*0\r\n".to_vec()),
        ("negative multibulk count is ignored", b"*-1\r\n".to_vec()),
        ("empty inline lines are ignored", b"\r\n\n\r\n".to_vec()),
        ("inline command with LF only", b"PING\n".to_vec()),
        (
            "inline command with surrounding spaces",
            b"   ECHO   a   \r\n".to_vec(),
        ),
        (
            "a bulk frame outside a multibulk is an inline command named '$4'",
            b"$4\r\nPING\r\n".to_vec(),
        ),
        (
            "inline quoting and escapes",
            b"SET \"q k\" \"a\\x00b\\r\\n\\t\\\\\"\r\nGET \"q k\"\r\nECHO 'it\\'s'\r\n".to_vec(),
        ),
        (
            "empty bulk argument",
            b"*3\r\n$3\r\nSET\r\n$1\r\ne\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$1\r\ne\r\n".to_vec(),
        ),
        ("empty command name", b"*1\r\n$0\r\n\r\n".to_vec()),
        (
            "many commands in one write",
            (0..500)
                .flat_map(|i| encode_command(&["INCR", &format!("pipelined{}", i % 7)]))
                .collect(),
        ),
    ]
}

const SENTINEL: &str = "sentinel-7c1e";

fn replies_until_sentinel(server: &Server, input: &[u8], byte_at_a_time: bool) -> Vec<u8> {
    let mut client = server.connect();
    let mut request = input.to_vec();
    request.extend(encode_command(&["ECHO", SENTINEL]));
    if byte_at_a_time {
        for byte in &request {
            client
                .send_raw(std::slice::from_ref(byte))
                .unwrap_or_else(|e| panic!("{:?}: writing one byte: {e}", server.flavor()));
        }
    } else {
        client
            .send_raw(&request)
            .unwrap_or_else(|e| panic!("{:?}: writing: {e}", server.flavor()));
    }
    let mut seen = Vec::new();
    loop {
        let frame = client.read_frame().unwrap_or_else(|e| {
            panic!(
                "{:?}: reading replies to \"{}\": {e}",
                server.flavor(),
                escape(input)
            )
        });
        if frame.reply == Reply::Bulk(SENTINEL.as_bytes().to_vec()) {
            return seen;
        }
        seen.extend(frame.raw);
    }
}

#[test]
fn unusual_but_valid_framing_is_answered_like_redis() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let mut failures = Vec::new();
    for (what, input) in accepted_cases() {
        let expected = replies_until_sentinel(&redis, &input, false);
        let actual = replies_until_sentinel(&ringkv, &input, false);
        if actual != expected {
            failures.push(format!(
                "{what}:\n    ringkv: \"{}\"\n    redis:  \"{}\"",
                escape(&actual),
                escape(&expected)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "ringkv differs from redis-server:\n{}",
        failures.join("\n")
    );
}

#[test]
fn requests_written_one_byte_at_a_time_are_reassembled() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let mut input = encode_command(&["SET", "split", "a\r\nb"]);
    input.extend(encode_command(&["GET", "split"]));
    input.extend(b"ECHO inline\r\n");
    input.extend(encode_command(&["MSET", "{t}1", "x", "{t}2", "y"]));
    input.extend(encode_command(&["MGET", "{t}1", "{t}2", "missing"]));
    let expected = replies_until_sentinel(&redis, &input, true);
    let actual = replies_until_sentinel(&ringkv, &input, true);
    assert_eq!(
        escape(&actual),
        escape(&expected),
        "byte-at-a-time requests answered differently"
    );
}

#[test]
fn multibulk_with_over_a_million_arguments_is_accepted() {
    // redis-server 7.0 limits the multibulk count to INT_MAX, not 1024*1024: a request with
    // 1,048,577 arguments is a valid (if large) EXISTS.
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    let keys = 1_048_576;
    let mut request = format!("*{}\r\n$6\r\nEXISTS\r\n", keys + 1).into_bytes();
    for _ in 0..keys {
        request.extend_from_slice(b"$1\r\nk\r\n");
    }
    for server in [&redis, &ringkv] {
        let mut client = server.connect();
        client
            .set_read_timeout(Duration::from_secs(60))
            .expect("set_read_timeout");
        client
            .send_raw(&request)
            .unwrap_or_else(|e| panic!("{:?}: writing 7 MB request: {e}", server.flavor()));
        let reply = client
            .read_reply()
            .unwrap_or_else(|e| panic!("{:?}: huge EXISTS: {e}", server.flavor()));
        assert_eq!(
            reply,
            Reply::Integer(0),
            "{:?}: EXISTS with 1,048,576 keys",
            server.flavor()
        );
        assert_serves(&mut client, &format!("{:?}", server.flavor()));
    }
}

#[test]
fn quit_replies_ok_and_closes_the_connection() {
    let ringkv = Server::ringkv(&[]);
    let redis = Server::redis(&[]);
    for server in [&redis, &ringkv] {
        let closing = send_and_wait_for_close(server, b"*1\r\n$4\r\nQUIT\r\n");
        assert_eq!(
            closing,
            Closing {
                bytes: b"+OK\r\n".to_vec(),
                closed: true
            },
            "{:?}: QUIT",
            server.flavor()
        );
    }
}

#[test]
fn protocol_error_on_one_connection_leaves_many_others_working() {
    let ringkv = Server::ringkv(&[]);
    let mut others: Vec<RespClient> = (0..20).map(|_| ringkv.connect()).collect();
    for (i, client) in others.iter_mut().enumerate() {
        let key = format!("other:{i}");
        assert_eq!(
            client.cmd(&["SET", &key, "v"]),
            Reply::Simple(b"OK".to_vec())
        );
    }
    for _ in 0..20 {
        let closing = send_and_wait_for_close(&ringkv, b"*1\r\n$abc\r\n");
        assert!(
            closing.closed,
            "ringkv kept a connection open after a protocol error"
        );
    }
    for (i, client) in others.iter_mut().enumerate() {
        let key = format!("other:{i}");
        assert_eq!(
            client.cmd(&["GET", &key]),
            Reply::Bulk(b"v".to_vec()),
            "connection {i} after protocol errors elsewhere"
        );
    }
}
