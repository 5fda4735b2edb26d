//! Glob patterns exactly as Redis's `stringmatchlen` reads them: `*`, `?`, `[abc]`, `[^a]`,
//! `[a-z]` and `\` escapes. KEYS and SCAN MATCH use it case-sensitively, CONFIG GET
//! case-insensitively.

/// Whether `string` matches `pattern`; `nocase` compares ASCII letters case-insensitively.
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut give_up = false;
    match_from(pattern, string, nocase, &mut give_up, 0)
}

/// One matching attempt. `give_up` is Redis's `skipLongerMatches`: once the rest of a pattern
/// after a `*` has failed against every suffix, earlier `*`s cannot help, which keeps
/// patterns such as `a*a*a*a*b` linear instead of exponential.
fn match_from(pat: &[u8], s: &[u8], nocase: bool, give_up: &mut bool, nesting: u32) -> bool {
    // Redis's protection against abusive patterns.
    if nesting > 1000 {
        return false;
    }
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0usize, 0usize);
    while pi < pat.len() && si < s.len() {
        match pat[pi] {
            b'*' => {
                while pi + 1 < pat.len() && pat[pi + 1] == b'*' {
                    pi += 1;
                }
                if pi + 1 == pat.len() {
                    return true;
                }
                while si < s.len() {
                    if match_from(&pat[pi + 1..], &s[si..], nocase, give_up, nesting + 1) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    si += 1;
                }
                *give_up = true;
                return false;
            }
            b'?' => si += 1,
            b'[' => {
                pi += 1;
                let negate = pat.get(pi) == Some(&b'^');
                if negate {
                    pi += 1;
                }
                let mut matched = false;
                loop {
                    if pi + 1 < pat.len() && pat[pi] == b'\\' {
                        pi += 1;
                        matched |= pat[pi] == s[si];
                    } else if pat.get(pi) == Some(&b']') {
                        break;
                    } else if pi >= pat.len() {
                        // An unterminated class: step back so the advance below ends the pattern.
                        pi -= 1;
                        break;
                    } else if pi + 2 < pat.len() && pat[pi + 1] == b'-' {
                        let (mut start, mut end, mut c) = (pat[pi], pat[pi + 2], s[si]);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        if nocase {
                            start = start.to_ascii_lowercase();
                            end = end.to_ascii_lowercase();
                            c = c.to_ascii_lowercase();
                        }
                        pi += 2;
                        matched |= (start..=end).contains(&c);
                    } else {
                        matched |= eq(pat[pi], s[si]);
                    }
                    pi += 1;
                }
                if matched == negate {
                    return false;
                }
                si += 1;
            }
            b'\\' => {
                if pi + 1 < pat.len() {
                    pi += 1;
                }
                if !eq(pat[pi], s[si]) {
                    return false;
                }
                si += 1;
            }
            c => {
                if !eq(c, s[si]) {
                    return false;
                }
                si += 1;
            }
        }
        pi += 1;
        if si == s.len() {
            while pat.get(pi) == Some(&b'*') {
                pi += 1;
            }
            break;
        }
    }
    pi == pat.len() && si == s.len()
}

/// Whether a pattern has any special character; CONFIG GET looks such names up exactly.
pub fn is_pattern(pattern: &[u8]) -> bool {
    pattern.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes(), false)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(
            !m("*", ""),
            "as Redis: a pattern never matches the empty string"
        );
        assert!(m("*", "anything"));
        assert!(m("*fsync*", "appendfsync"));
        assert!(m("*fsync*", "fsync"));
        assert!(m("max*", "maxmemory"));
        assert!(!m("max*", "amax"));
        assert!(m("p?rt", "port"));
        assert!(!m("p?rt", "prt"));
        assert!(m("h*llo", "hllo"));
        assert!(m("a**b", "axxb"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(m("a*", "a"));
        assert!(!m("a", ""));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(m("h[ae]llo", "hello"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(
            m("h[b-a]llo", "hallo"),
            "reversed ranges work as Redis's do"
        );
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("[\\]]", "]"));
        assert!(
            m("a[bc", "ab"),
            "an unterminated class still matches its members"
        );
    }

    #[test]
    fn escapes() {
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(
            m("a\\", "a\\") || !m("a\\", "a\\"),
            "a trailing backslash does not panic"
        );
    }

    #[test]
    fn case_insensitive_when_asked() {
        assert!(glob_match(b"P*RT", b"port", true));
        assert!(glob_match(b"[A-Z]ort", b"port", true));
        assert!(!glob_match(b"P*RT", b"port", false));
    }

    #[test]
    fn pathological_patterns_finish() {
        let s = "a".repeat(60);
        assert!(!m("a*a*a*a*a*a*a*a*a*a*a*a*b", &s));
    }

    #[test]
    fn patterns_are_recognised() {
        assert!(is_pattern(b"*"));
        assert!(is_pattern(b"a[b]"));
        assert!(!is_pattern(b"port"));
    }

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
