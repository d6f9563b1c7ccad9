//! Redis' glob patterns (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*`, `?`, `[abc]`, `[^a-z]`, and
//! `\` to escape. Matching backtracks only to the last `*`, so any pattern runs in time
//! proportional to pattern × key, never exponentially (Redis had to add a limit for that).

/// Whether `text` matches the glob `pattern`.
#[must_use]
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                while pattern.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p == pattern.len() {
                    return true;
                }
                star = Some((p, t));
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                t += 1;
            }
            None => match star {
                Some((after, matched)) => {
                    p = after;
                    t = matched + 1;
                    star = Some((after, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`; returns the index after
/// the class on a match. An unclosed class runs to the end of the pattern, as in Redis.
fn match_class(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(i) {
            None => break,
            Some(b']') => {
                i += 1;
                break;
            }
            Some(b'\\') if i + 1 < pattern.len() => {
                matched |= pattern[i + 1] == c;
                i += 2;
            }
            Some(&low) if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() => {
                let high = pattern[i + 2];
                let (low, high) = if low <= high {
                    (low, high)
                } else {
                    (high, low)
                };
                matched |= (low..=high).contains(&c);
                i += 3;
            }
            Some(&other) => {
                matched |= other == c;
                i += 1;
            }
        }
    }
    (matched != negate).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_examples() {
        let yes: [(&[u8], &[u8]); 9] = [
            (b"h?llo", b"hello"),
            (b"h*llo", b"heeeello"),
            (b"h[ae]llo", b"hallo"),
            (b"h[^e]llo", b"hallo"),
            (b"h[a-b]llo", b"hbllo"),
            (b"*", b""),
            (b"a\\*b", b"a*b"),
            (b"*:*:x", b"a:b:c:x"),
            (b"key:*", b"key:000000012345"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{p:?} {t:?}");
        }
        let no: [(&[u8], &[u8]); 6] = [
            (b"h[^e]llo", b"hello"),
            (b"h[a-b]llo", b"hcllo"),
            (b"h?llo", b"hllo"),
            (b"a\\*b", b"axb"),
            (b"*:x", b"a:b"),
            (b"", b"a"),
        ];
        for (p, t) in no {
            assert!(!glob_match(p, t), "{p:?} {t:?}");
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".repeat(20);
        let text = vec![b'a'; 10_000];
        assert!(!glob_match(&pattern, &text));
    }
}
