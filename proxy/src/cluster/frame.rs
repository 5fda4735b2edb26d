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

/// A storage node's LCS reply for the client: with IDX it is Redis's two-entry map
/// (`matches`, `len`), which the node's RESP2 sent as a flat array; a RESP3 client must get a
/// map again. Every other LCS reply passes unchanged.
pub fn lcs_reply(reply: Reply) -> Reply {
    match reply {
        Reply::Array(items) if is_lcs_map(&items) => {
            let mut items = items.into_iter();
            let mut pairs = Vec::with_capacity(2);
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                pairs.push((key, value));
            }
            Reply::Map(pairs)
        }
        other => other,
    }
}

fn is_lcs_map(items: &[Reply]) -> bool {
    matches!(
        items,
        [Reply::Bulk(m), Reply::Array(_), Reply::Bulk(l), Reply::Int(_)]
            if &m[..] == b"matches" && &l[..] == b"len"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_lcs_idx_reply_becomes_a_map_again() {
        let flat = Reply::Array(vec![
            Reply::bulk_static(b"matches"),
            Reply::Array(vec![]),
            Reply::bulk_static(b"len"),
            Reply::Int(0),
        ]);
        assert_eq!(
            lcs_reply(flat),
            Reply::Map(vec![
                (Reply::bulk_static(b"matches"), Reply::Array(vec![])),
                (Reply::bulk_static(b"len"), Reply::Int(0)),
            ])
        );
        assert_eq!(lcs_reply(Reply::Int(6)), Reply::Int(6));
        assert_eq!(
            lcs_reply(Reply::bulk_static(b"mytext")),
            Reply::bulk_static(b"mytext")
        );
    }

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
