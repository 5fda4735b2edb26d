//! TIME: the server's clock as Redis answers it, seconds and microseconds as two bulk strings.

use ringkv_common::clock::now_us;
use ringkv_common::resp::Reply;

/// TIME: `[unix seconds, microseconds]`.
pub fn time() -> Reply {
    let us = now_us();
    Reply::Array(vec![
        Reply::bulk_int(us / 1_000_000),
        Reply::bulk_int(us % 1_000_000),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_bulk_strings() {
        let Reply::Array(parts) = time() else {
            panic!("array")
        };
        let [Reply::Bulk(secs), Reply::Bulk(micros)] = &parts[..] else {
            panic!("two bulks: {parts:?}")
        };
        let secs: i64 = std::str::from_utf8(secs)
            .expect("utf8")
            .parse()
            .expect("integer");
        let micros: i64 = std::str::from_utf8(micros)
            .expect("utf8")
            .parse()
            .expect("integer");
        assert!(secs > 1_600_000_000);
        assert!((0..1_000_000).contains(&micros));
    }
}
