//! The request parser on arbitrary bytes: parsed in one piece, byte by byte, and in chunks
//! whose sizes the input decides, every way must give the same requests and the same protocol
//! error, never panic, never stop making progress, never produce more argument bytes than
//! arrived, and never reserve much more than arrived (an announced bulk's length is a promise,
//! not bytes: at most `MAX_PREALLOC` is reserved ahead).

use bytes::{Bytes, BytesMut};
use ringkv_common::resp::request::{
    Parsed, ProtocolError, RequestLimits, RequestParser, MAX_PREALLOC,
};

/// What a connection makes of a byte stream: the requests in order (an empty request is
/// recorded as an empty vector), then the protocol error that closed it, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Requests, in order.
    pub requests: Vec<Vec<Bytes>>,
    /// The protocol error that ended the stream.
    pub error: Option<ProtocolError>,
}

/// Runs every check on `input`; panics on a violation.
pub fn check(input: &[u8]) {
    let whole = feed(input, std::iter::empty());
    let by_byte = feed(input, std::iter::repeat(1));
    assert_eq!(whole, by_byte, "byte by byte differs from one piece");
    let chunked = feed(input, chunk_sizes(input));
    assert_eq!(whole, chunked, "chunked differs from one piece");
}

/// Feeds `input` to one parser in the given chunk sizes (once they run out, the rest in one
/// piece), the way a connection does: append what arrived, then parse until `Incomplete` or
/// an error.
pub fn feed(input: &[u8], chunks: impl Iterator<Item = usize>) -> Outcome {
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::new();
    let mut args = Vec::new();
    let mut requests = Vec::new();
    let mut rest = input;
    let mut chunks = chunks.fuse();
    loop {
        let take = chunks.next().unwrap_or(rest.len()).max(1).min(rest.len());
        let (now, later) = rest.split_at(take);
        buf.extend_from_slice(now);
        rest = later;
        // Every step but the last consumes bytes, so the steps are bounded by the input.
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= input.len() + 2, "the parser makes no progress");
            let before = buf.len();
            let parsed = parser.parse(&mut buf, &mut args);
            // Growth may double a buffer; anything beyond that was reserved for bytes that
            // have not arrived.
            assert!(
                buf.capacity() <= 2 * (input.len() + MAX_PREALLOC) + 4096,
                "{} input bytes, buffer capacity {}",
                input.len(),
                buf.capacity()
            );
            match parsed {
                Ok(Parsed::Request) => {
                    let total: usize = args.iter().map(Bytes::len).sum();
                    assert!(!args.is_empty(), "a request without arguments");
                    assert!(total <= input.len(), "arguments larger than the input");
                    requests.push(std::mem::take(&mut args));
                }
                Ok(Parsed::Empty) => {
                    assert!(args.is_empty(), "an empty request with arguments");
                    assert!(buf.len() < before, "an empty request consumed nothing");
                    requests.push(Vec::new());
                }
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    assert!(e.0.starts_with("Protocol error: "), "{e}");
                    return Outcome {
                        requests,
                        error: Some(e),
                    };
                }
            }
        }
        if rest.is_empty() {
            return Outcome {
                requests,
                error: None,
            };
        }
    }
}

/// Chunk sizes from a small generator seeded by the input, so that every mutation also tries
/// another way of splitting it.
pub fn chunk_sizes(input: &[u8]) -> impl Iterator<Item = usize> {
    let mut state = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Some(1 + (state % 17) as usize)
    })
}
