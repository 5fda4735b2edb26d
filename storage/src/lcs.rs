//! LCS: the longest common subsequence of two strings, computed and answered as Redis 7's
//! `lcsCommand` does (the same table, the same walk back, so the same matches in the same
//! order when several subsequences are equally long).

use bytes::Bytes;
use ringkv_common::args::{is_opt, NOT_INTEGER, SYNTAX};
use ringkv_common::resp::request::parse_i64;
use ringkv_common::resp::Reply;

/// The most memory the table may take: Redis's default `proto-max-bulk-len`, the bound it
/// puts on LCS's transient memory (and ringkv on every string a command builds).
const MAX_TABLE_BYTES: u64 = 512 * 1024 * 1024;

/// What LCS answers, from its options.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `LEN`: only the length.
    len: bool,
    /// `IDX`: the matching ranges and the length.
    idx: bool,
    /// `MINMATCHLEN n`: ranges shorter than this are left out (negative counts as 0).
    min_match_len: u64,
    /// `WITHMATCHLEN`: each range with its length.
    with_match_len: bool,
}

impl Options {
    /// Parses the options after the two keys, with Redis's errors.
    pub fn parse(args: &[Bytes]) -> Result<Options, Reply> {
        let mut options = Options::default();
        let mut rest = args.iter();
        while let Some(option) = rest.next() {
            if is_opt(option, "idx") {
                options.idx = true;
            } else if is_opt(option, "len") {
                options.len = true;
            } else if is_opt(option, "withmatchlen") {
                options.with_match_len = true;
            } else if let (true, Some(n)) = (is_opt(option, "minmatchlen"), rest.clone().next()) {
                rest.next();
                let n = parse_i64(n).ok_or(NOT_INTEGER)?;
                options.min_match_len = n.max(0) as u64;
            } else {
                return Err(SYNTAX);
            }
        }
        if options.len && options.idx {
            return Err(Reply::error(
                "ERR If you want both the length and indexes, please just use IDX.",
            ));
        }
        Ok(options)
    }
}

/// The reply to LCS of `a` and `b` (a missing key is the empty string).
pub fn answer(a: &[u8], b: &[u8], options: Options) -> Result<Reply, Reply> {
    let (Ok(alen), Ok(blen)) = (u32::try_from(a.len()), u32::try_from(b.len())) else {
        return Err(Reply::error("ERR String too long for LCS"));
    };
    if alen >= u32::MAX - 1 || blen >= u32::MAX - 1 {
        return Err(Reply::error("ERR String too long for LCS"));
    }
    let cells = (u64::from(alen) + 1) * (u64::from(blen) + 1);
    if cells.saturating_mul(4) > MAX_TABLE_BYTES {
        return Err(Reply::error(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let table = Table::build(a, b).ok_or(Reply::error(
        "ERR Insufficient memory, failed allocating transient memory for LCS",
    ))?;
    let total = table.at(a.len(), b.len());
    if options.len {
        return Ok(Reply::Int(i64::from(total)));
    }
    let (common, matches) = table.walk_back(a, b, options);
    if !options.idx {
        return Ok(Reply::Bulk(Bytes::from(common)));
    }
    Ok(Reply::Map(vec![
        (Reply::bulk_static(b"matches"), Reply::Array(matches)),
        (Reply::bulk_static(b"len"), Reply::Int(i64::from(total))),
    ]))
}

/// `LCS(i, j)`: the length of the longest common subsequence of `a[..i]` and `b[..j]`.
struct Table {
    cells: Vec<u32>,
    width: usize,
}

impl Table {
    /// Fills the table row by row; `None` if its memory cannot be had.
    fn build(a: &[u8], b: &[u8]) -> Option<Table> {
        let width = b.len() + 1;
        let size = (a.len() + 1).checked_mul(width)?;
        let mut cells = Vec::new();
        cells.try_reserve_exact(size).ok()?;
        cells.resize(size, 0);
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                cells[i * width + j] = if a[i - 1] == b[j - 1] {
                    cells[(i - 1) * width + j - 1] + 1
                } else {
                    cells[(i - 1) * width + j].max(cells[i * width + j - 1])
                };
            }
        }
        Some(Table { cells, width })
    }

    fn at(&self, i: usize, j: usize) -> u32 {
        self.cells[i * self.width + j]
    }

    /// Walks from the end of both strings back to a start, collecting the subsequence and,
    /// for IDX, its contiguous ranges from last to first, as Redis emits them.
    fn walk_back(&self, a: &[u8], b: &[u8], options: Options) -> (Vec<u8>, Vec<Reply>) {
        let mut left = self.at(a.len(), b.len()) as usize;
        let mut common = vec![0u8; left];
        let mut matches = Vec::new();
        // The range being grown backwards: (a start, a end, b start, b end).
        let mut range: Option<(usize, usize, usize, usize)> = None;
        let (mut i, mut j) = (a.len(), b.len());
        while i > 0 && j > 0 {
            let mut emit = false;
            if a[i - 1] == b[j - 1] {
                common[left - 1] = a[i - 1];
                range = match range {
                    None => Some((i - 1, i - 1, j - 1, j - 1)),
                    Some((a0, a1, b0, b1)) if a0 == i && b0 == j => Some((a0 - 1, a1, b0 - 1, b1)),
                    Some(open) => {
                        emit = true;
                        Some(open)
                    }
                };
                if let Some((a0, _, b0, _)) = range {
                    emit |= a0 == 0 || b0 == 0;
                }
                left -= 1;
                i -= 1;
                j -= 1;
            } else {
                if self.at(i - 1, j) > self.at(i, j - 1) {
                    i -= 1;
                } else {
                    j -= 1;
                }
                emit = range.is_some();
            }
            if emit {
                if let Some((a0, a1, b0, b1)) = range.take() {
                    let len = (a1 - a0 + 1) as u64;
                    if options.idx && (options.min_match_len == 0 || len >= options.min_match_len) {
                        matches.push(range_reply(a0, a1, b0, b1, options.with_match_len));
                    }
                }
            }
        }
        (common, matches)
    }
}

fn range_reply(a0: usize, a1: usize, b0: usize, b1: usize, with_len: bool) -> Reply {
    let pair = |x: usize, y: usize| Reply::Array(vec![Reply::Int(x as i64), Reply::Int(y as i64)]);
    let mut out = vec![pair(a0, a1), pair(b0, b1)];
    if with_len {
        out.push(Reply::Int((a1 - a0 + 1) as i64));
    }
    Reply::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str]) -> Result<Options, Reply> {
        let args: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        Options::parse(&args)
    }

    /// One match: `[[x0, y0], [x1, y1]]` (its range in each string), then its length if any.
    fn ints(pairs: &[(i64, i64)], len: Option<i64>) -> Reply {
        let mut out: Vec<Reply> = pairs
            .iter()
            .map(|&(x, y)| Reply::Array(vec![Reply::Int(x), Reply::Int(y)]))
            .collect();
        out.extend(len.map(Reply::Int));
        Reply::Array(out)
    }

    /// The example of Redis's documentation, answer for answer.
    #[test]
    fn answers_as_the_redis_documentation() {
        let (a, b) = (b"ohmytext".as_slice(), b"mynewtext".as_slice());
        let plain = opts(&[]).expect("no options");
        assert_eq!(answer(a, b, plain), Ok(Reply::Bulk(Bytes::from("mytext"))));
        let len = opts(&["LEN"]).expect("len");
        assert_eq!(answer(a, b, len), Ok(Reply::Int(6)));
        let idx = opts(&["idx"]).expect("idx");
        assert_eq!(
            answer(a, b, idx),
            Ok(Reply::Map(vec![
                (
                    Reply::bulk_static(b"matches"),
                    Reply::Array(vec![
                        ints(&[(4, 7), (5, 8)], None),
                        ints(&[(2, 3), (0, 1)], None),
                    ])
                ),
                (Reply::bulk_static(b"len"), Reply::Int(6)),
            ]))
        );
        let min = opts(&["IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"]).expect("min");
        assert_eq!(
            answer(a, b, min),
            Ok(Reply::Map(vec![
                (
                    Reply::bulk_static(b"matches"),
                    Reply::Array(vec![ints(&[(4, 7), (5, 8)], Some(4))])
                ),
                (Reply::bulk_static(b"len"), Reply::Int(6)),
            ]))
        );
    }

    #[test]
    fn empty_and_disjoint_strings_have_an_empty_subsequence() {
        let plain = Options::default();
        assert_eq!(answer(b"", b"abc", plain), Ok(Reply::Bulk(Bytes::new())));
        assert_eq!(answer(b"abc", b"xyz", plain), Ok(Reply::Bulk(Bytes::new())));
        let idx = opts(&["idx"]).expect("idx");
        assert_eq!(
            answer(b"", b"", idx),
            Ok(Reply::Map(vec![
                (Reply::bulk_static(b"matches"), Reply::Array(vec![])),
                (Reply::bulk_static(b"len"), Reply::Int(0)),
            ]))
        );
    }

    #[test]
    fn options_are_checked_as_redis_checks_them() {
        assert_eq!(
            opts(&["len", "idx"]),
            Err(Reply::error(
                "ERR If you want both the length and indexes, please just use IDX."
            ))
        );
        assert_eq!(opts(&["minmatchlen"]), Err(SYNTAX));
        assert_eq!(opts(&["minmatchlen", "x"]), Err(NOT_INTEGER));
        assert_eq!(opts(&["bogus"]), Err(SYNTAX));
        assert_eq!(opts(&["MinMatchLen", "-3"]).map(|o| o.min_match_len), Ok(0));
    }

    #[test]
    fn a_table_over_the_memory_bound_is_refused_before_it_is_built() {
        let long = vec![b'a'; 12_000];
        assert_eq!(
            answer(&long, &long, Options::default()),
            Err(Reply::error(
                "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
            ))
        );
    }
}
