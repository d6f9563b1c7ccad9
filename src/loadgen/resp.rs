//! The client's half of RESP2: encode a command, decode one reply. Pure code, no I/O, so the
//! parser is tested on bytes alone. Strict: every line ends in CRLF, every length is a decimal
//! in range, and an incomplete reply is told apart from a malformed one, because the load
//! generator reads replies from a socket in whatever pieces the kernel hands over.

use crate::format::resp::parse_decimal;

/// Longest status, error or integer line accepted. Redis' own are short; a longer one is not a
/// reply this client asked for.
pub const LINE_MAX_BYTES: usize = 64 << 10;
/// Largest bulk string accepted: a `GET` of a value this tool wrote (`--value-bytes` is at most
/// [`super::VALUE_MAX_BYTES`]) or an `INFO` text.
pub const BULK_MAX_BYTES: usize = 64 << 20;
/// Most elements of one array. The tool sends no command whose reply is an array; this only
/// bounds what a broken server can make it allocate.
pub const ARRAY_MAX_LEN: usize = 1 << 16;
/// Deepest nesting of arrays.
pub const ARRAY_MAX_DEPTH: usize = 4;

/// One reply, borrowing the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+text`: a status such as `OK`.
    Status(&'a [u8]),
    /// `-text`: an error reply, such as `READONLY ...`.
    Error(&'a [u8]),
    /// `:n`.
    Integer(i64),
    /// `$len` and the bytes; `None` for the null bulk string `$-1` (a missing key).
    Bulk(Option<&'a [u8]>),
    /// `*count` and the elements; `None` for the null array `*-1`.
    Array(Option<Vec<Reply<'a>>>),
}

impl Reply<'_> {
    /// A short printable form, for error messages about an unexpected reply.
    #[must_use]
    pub fn describe(&self) -> String {
        const SHOWN_BYTES: usize = 80;
        let text = |bytes: &[u8]| {
            let shown = &bytes[..bytes.len().min(SHOWN_BYTES)];
            String::from_utf8_lossy(shown).into_owned()
        };
        match self {
            Self::Status(s) => format!("+{}", text(s)),
            Self::Error(e) => format!("-{}", text(e)),
            Self::Integer(n) => format!(":{n}"),
            Self::Bulk(None) => "(nil)".to_owned(),
            Self::Bulk(Some(b)) => format!("bulk of {} bytes", b.len()),
            Self::Array(None) => "(nil array)".to_owned(),
            Self::Array(Some(items)) => format!("array of {} elements", items.len()),
        }
    }
}

/// Bytes that are not a valid RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The first byte names no RESP2 type.
    #[error("unknown reply type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A line ends in a bare `\n`, or a `\r` is not followed by `\n`, or a bulk string is not
    /// followed by CRLF.
    #[error("reply line is not terminated by CRLF")]
    MissingCrlf,
    /// A line grew past [`LINE_MAX_BYTES`] without its CRLF.
    #[error("reply line longer than {LINE_MAX_BYTES} bytes")]
    LineTooLong,
    /// An integer reply is not a decimal.
    #[error("integer reply is not a decimal")]
    BadInteger,
    /// A bulk or array length is not a decimal, is negative other than -1, or is past its
    /// bound.
    #[error("bad length {0:?}")]
    BadLength(String),
    /// Arrays nested deeper than [`ARRAY_MAX_DEPTH`].
    #[error("arrays nested deeper than {ARRAY_MAX_DEPTH}")]
    TooDeep,
}

/// Appends `args` as a RESP multibulk request to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // *<count>\r\n then $<len>\r\n<arg>\r\n per argument.
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag);
    // Decimal digits without a `format!` allocation: this runs for every request.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a value below 10 fits in u8"
        )]
        let digit = (n % 10) as u8;
        digits[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Decodes one reply from the start of `buffer`: the reply and the bytes it took, `None` if
/// the buffer holds only a prefix of a reply so far.
///
/// # Errors
/// When the bytes cannot be the start of a valid reply, whatever follows.
pub fn parse_reply(buffer: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ReplyError> {
    parse_at(buffer, 0, 0)
}

fn parse_at(
    buffer: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ReplyError> {
    let Some(&tag) = buffer.get(at) else {
        return Ok(None);
    };
    if !matches!(tag, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(ReplyError::UnknownType(tag));
    }
    let Some((line, next)) = line(buffer, at + 1)? else {
        return Ok(None);
    };
    match tag {
        b'+' => Ok(Some((Reply::Status(line), next))),
        b'-' => Ok(Some((Reply::Error(line), next))),
        b':' => {
            let n = parse_decimal(line).ok_or(ReplyError::BadInteger)?;
            Ok(Some((Reply::Integer(n), next)))
        }
        b'$' => {
            let Some(len) = length(line, BULK_MAX_BYTES)? else {
                return Ok(Some((Reply::Bulk(None), next)));
            };
            // <len bytes>\r\n
            let end = next + len;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            if &buffer[end..end + 2] != b"\r\n" {
                return Err(ReplyError::MissingCrlf);
            }
            Ok(Some((Reply::Bulk(Some(&buffer[next..end])), end + 2)))
        }
        _ => {
            let Some(count) = length(line, ARRAY_MAX_LEN)? else {
                return Ok(Some((Reply::Array(None), next)));
            };
            if depth >= ARRAY_MAX_DEPTH {
                return Err(ReplyError::TooDeep);
            }
            // Grows with the elements that arrived, never with the declared count alone.
            let mut items = Vec::new();
            let mut next = next;
            for _ in 0..count {
                let Some((item, after)) = parse_at(buffer, next, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                next = after;
            }
            Ok(Some((Reply::Array(Some(items)), next)))
        }
    }
}

/// The line starting at `at` (without its CRLF) and the offset after the CRLF; `None` while
/// the CRLF has not arrived.
fn line(buffer: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ReplyError> {
    let rest = &buffer[at.min(buffer.len())..];
    let window = &rest[..rest.len().min(LINE_MAX_BYTES + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => Err(ReplyError::MissingCrlf),
        Some(i) if i + 1 == window.len() => {
            if i + 1 > LINE_MAX_BYTES + 1 {
                Err(ReplyError::LineTooLong)
            } else {
                Ok(None)
            }
        }
        Some(i) if window[i + 1] == b'\n' => {
            if i > LINE_MAX_BYTES {
                return Err(ReplyError::LineTooLong);
            }
            Ok(Some((&rest[..i], at + i + 2)))
        }
        Some(_) => Err(ReplyError::MissingCrlf),
        None if window.len() > LINE_MAX_BYTES => Err(ReplyError::LineTooLong),
        None => Ok(None),
    }
}

/// A bulk or array length: `None` for -1 (null), an error outside `0..=max`.
fn length(line: &[u8], max: usize) -> Result<Option<usize>, ReplyError> {
    let bad = || ReplyError::BadLength(String::from_utf8_lossy(line).into_owned());
    match parse_decimal(line).ok_or_else(bad)? {
        -1 => Ok(None),
        n => match usize::try_from(n) {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(bad()),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn whole(bytes: &[u8]) -> Reply<'_> {
        let (reply, used) = parse_reply(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "the whole reply is consumed");
        reply
    }

    #[test]
    fn decodes_each_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Status(b"OK"));
        assert_eq!(
            whole(b"-READONLY You can't write\r\n"),
            Reply::Error(b"READONLY You can't write")
        );
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(whole(b"$5\r\nhe\r\no\r\n"), Reply::Bulk(Some(b"he\r\no")));
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Some(b"")));
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            whole(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x"))]))
            ]))
        );
    }

    #[test]
    fn a_reply_followed_by_more_takes_only_its_bytes() {
        let (reply, used) = parse_reply(b"+OK\r\n$-1\r\n").unwrap().unwrap();
        assert_eq!(reply, Reply::Status(b"OK"));
        assert_eq!(used, 5);
    }

    #[test]
    fn every_prefix_of_a_valid_reply_is_incomplete_not_an_error() {
        let replies: [&[u8]; 5] = [
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":123\r\n",
            b"$11\r\nhello world\r\n",
            b"*2\r\n$1\r\na\r\n$-1\r\n",
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                assert_eq!(
                    parse_reply(&reply[..cut]),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: [(&[u8], ReplyError); 10] = [
            (b"?x\r\n", ReplyError::UnknownType(b'?')),
            (b"+OK\n", ReplyError::MissingCrlf),
            (b"+O\rK\r\n", ReplyError::MissingCrlf),
            (b"$3\r\nabcd\r\n", ReplyError::MissingCrlf),
            (b":12a\r\n", ReplyError::BadInteger),
            (b":\r\n", ReplyError::BadInteger),
            (b"$-2\r\n", ReplyError::BadLength("-2".into())),
            (b"$01\r\nx\r\n", ReplyError::BadLength("01".into())),
            (b"*x\r\n", ReplyError::BadLength("x".into())),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", ReplyError::TooDeep),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse_reply(bytes),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn lengths_past_their_bounds_are_refused_before_any_allocation() {
        let bulk = format!("${}\r\n", BULK_MAX_BYTES + 1);
        assert!(matches!(
            parse_reply(bulk.as_bytes()),
            Err(ReplyError::BadLength(_))
        ));
        let array = format!("*{}\r\n", ARRAY_MAX_LEN + 1);
        assert!(matches!(
            parse_reply(array.as_bytes()),
            Err(ReplyError::BadLength(_))
        ));
        assert!(matches!(
            parse_reply(b"$99999999999999999999999\r\n"),
            Err(ReplyError::BadLength(_))
        ));
    }

    #[test]
    fn a_line_without_end_is_cut_off_at_its_bound() {
        let mut long = vec![b'+'];
        long.extend(std::iter::repeat_n(b'a', LINE_MAX_BYTES));
        assert_eq!(
            parse_reply(&long),
            Ok(None),
            "exactly at the bound: may end"
        );
        long.push(b'a');
        long.push(b'a');
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));
        let mut at_bound = vec![b'+'];
        at_bound.extend(std::iter::repeat_n(b'a', LINE_MAX_BYTES));
        at_bound.extend_from_slice(b"\r\n");
        assert!(matches!(parse_reply(&at_bound), Ok(Some(_))));
    }

    #[test]
    fn commands_encode_as_multibulk() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        encode_command(&mut out, &[b"GET", &[b'x'; 12]]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$12\r\nxxxxxxxxxxxx\r\n"
        );
    }
}
