//! Redis's glob matching (`stringmatchlen`), for KEYS, SCAN MATCH and CONFIG GET.

/// Whether `string` matches `pattern`: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x` escapes.
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    glob_at(pattern, string, nocase, 0)
}

fn fold(b: u8, nocase: bool) -> u8 {
    if nocase {
        b.to_ascii_lowercase()
    } else {
        b
    }
}

fn glob_at(mut p: &[u8], mut s: &[u8], nocase: bool, depth: u32) -> bool {
    // Redis bounds recursion the same way, against patterns like "a*a*a*a*…".
    if depth > 1000 {
        return false;
    }
    while let Some(&pc) = p.first() {
        match pc {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for start in 0..=s.len() {
                    if glob_at(&p[1..], &s[start..], nocase, depth + 1) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
            }
            b'[' => {
                let Some(&c) = s.first() else { return false };
                p = &p[1..];
                let negate = p.first() == Some(&b'^');
                if negate {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    match p {
                        [] => {
                            // Unterminated class: Redis treats the end as closing it.
                            break;
                        }
                        [b'\\', esc, rest @ ..] => {
                            matched |= *esc == c;
                            p = rest;
                        }
                        [b']', ..] => break,
                        [lo, b'-', hi, rest @ ..] if *hi != b']' || rest.is_empty() => {
                            let (mut lo, mut hi) = (fold(*lo, nocase), fold(*hi, nocase));
                            if lo > hi {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            let c = fold(c, nocase);
                            matched |= c >= lo && c <= hi;
                            p = rest;
                        }
                        [x, rest @ ..] => {
                            matched |= fold(*x, nocase) == fold(c, nocase);
                            p = rest;
                        }
                    }
                }
                if matched == negate {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if s.first().map(|&c| fold(c, nocase)) != Some(fold(p[0], nocase)) {
                    return false;
                }
                s = &s[1..];
            }
            _ => {
                if s.first().map(|&c| fold(c, nocase)) != Some(fold(pc, nocase)) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
    }
    s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_as_redis() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes(), false);
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hallo"));
        assert!(m("key:*", "key:1"));
        assert!(!m("key:?", "key:10"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn nocase_for_config_names() {
        assert!(glob_match(b"MAX*", b"maxmemory", true));
        assert!(!glob_match(b"MAX*", b"maxmemory", false));
    }
}
