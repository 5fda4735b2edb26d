//! A storage node's RESP2 reply as the protocol-neutral [`Reply`] the client's connection
//! encodes (RESP2 or RESP3). Storage nodes only answer with simple strings, errors,
//! integers, bulk strings, nulls and arrays, so nothing is lost on the way.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;
use ringkv_common::resp::Reply;

/// Converts a decoded frame.
pub fn to_reply(frame: BytesFrame) -> Reply {
    match frame {
        BytesFrame::SimpleString(s) if &s[..] == b"OK" => Reply::Ok,
        BytesFrame::SimpleString(s) => Reply::Status(s),
        BytesFrame::Error(e) => Reply::Error(Bytes::copy_from_slice(e.as_bytes())),
        BytesFrame::Integer(n) => Reply::Int(n),
        BytesFrame::BulkString(b) => Reply::Bulk(b),
        BytesFrame::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        BytesFrame::Null => Reply::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_kind_converts() {
        assert_eq!(
            to_reply(BytesFrame::SimpleString(Bytes::from_static(b"OK"))),
            Reply::Ok
        );
        assert_eq!(
            to_reply(BytesFrame::SimpleString(Bytes::from_static(b"PONG"))),
            Reply::status("PONG")
        );
        assert_eq!(
            to_reply(BytesFrame::Error("ERR x".into())),
            Reply::error("ERR x")
        );
        assert_eq!(to_reply(BytesFrame::Integer(-3)), Reply::Int(-3));
        assert_eq!(to_reply(BytesFrame::Null), Reply::Nil);
        assert_eq!(
            to_reply(BytesFrame::Array(vec![
                BytesFrame::BulkString(Bytes::from_static(b"a")),
                BytesFrame::Null
            ])),
            Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"a")), Reply::Nil])
        );
    }
}
