//! The client's half of RESP: encode a command, decode a reply. Pure code, bytes in and values
//! out, no I/O: the admin tool, the load generator, a promotion's peer queries, the replica's
//! handshake and the tests all decode replies here, and `fuzz/fuzz_targets/resp_reply.rs`
//! fuzzes it. The server's half (requests in, replies out) is [`super::resp`].
//!
//! Strict: every line ends in CRLF, every length is a decimal in range, and an incomplete reply
//! is told apart from a malformed one, because replies are read from a socket in whatever
//! pieces the kernel hands over. Every length is checked against [`Limits`] before anything is
//! allocated for it, and an aggregate's elements are stored as they arrive, never reserved by
//! the count it declares, so a hostile server cannot make a client allocate much more than it
//! sent.
//!
//! The types decoded are RESP2's and the RESP3 types [`super::resp::ReplyWriter`] writes:
//!
//! ```text
//! +<text>\r\n                 simple string      -<text>\r\n          error
//! :<i64>\r\n                  integer            $<len>\r\n<bytes>\r\n bulk string ($-1: null)
//! *<count>\r\n<replies>       array (*-1: null)  _\r\n                 null (RESP3)
//! =<len>\r\n<fmt:3>:<text>\r\n verbatim (RESP3)  %<pairs>\r\n<replies> map (RESP3)
//! ~<count>\r\n<replies>       set (RESP3)
//! ```

use thiserror::Error;

use super::resp::parse_decimal;

/// Bounds a reply must stay within. [`Limits::DEFAULT`] suits every client shiplog has; a
/// caller with a tighter need overrides a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest simple string, error, integer or length line, CRLF excluded.
    pub line_max_bytes: usize,
    /// Largest bulk or verbatim string.
    pub bulk_max_bytes: usize,
    /// Most elements of one array or set (a map's pairs count twice).
    pub aggregate_max_len: usize,
    /// Most aggregates nested one inside another.
    pub depth_max: usize,
}

impl Limits {
    /// The defaults: 64 KiB lines, as Redis' own inline limit; 64 MiB bulk strings, a `GET` of
    /// the largest value the load generator writes (16 MiB) with room to spare, and far more
    /// than any `INFO`; 65,536 elements per aggregate (the demo's `MGET` and `SCAN` batches are
    /// 1,000); 8 levels of nesting (`ROLE` nests 3).
    pub const DEFAULT: Self = Self {
        line_max_bytes: 64 << 10,
        bulk_max_bytes: 64 << 20,
        aggregate_max_len: 1 << 16,
        depth_max: 8,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One reply, borrowing the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+text`: a status such as `OK`.
    Simple(&'a [u8]),
    /// `-text`: an error reply, such as `READONLY ...`; the command failed.
    Error(&'a [u8]),
    /// `:n`.
    Integer(i64),
    /// `$len` and the bytes; `None` for RESP2's null bulk string `$-1` (a missing key).
    Bulk(Option<&'a [u8]>),
    /// `*count` and the elements; `None` for RESP2's null array `*-1`.
    Array(Option<Vec<Reply<'a>>>),
    /// `_`: RESP3's null.
    Null,
    /// `=len` then `fmt:text`: RESP3's verbatim string (`INFO`).
    Verbatim {
        /// The three-byte format, `txt` or `mkd`.
        format: &'a [u8],
        /// The text after `fmt:`.
        text: &'a [u8],
    },
    /// `%pairs` and the keys and values: RESP3's map.
    Map(Vec<(Reply<'a>, Reply<'a>)>),
    /// `~count` and the elements: RESP3's set.
    Set(Vec<Reply<'a>>),
}

impl Reply<'_> {
    /// A short printable form, for error messages about an unexpected reply.
    #[must_use]
    pub fn describe(&self) -> String {
        const SHOWN_BYTES: usize = 80;
        let text = |bytes: &[u8]| {
            let shown = bytes.get(..SHOWN_BYTES).unwrap_or(bytes);
            String::from_utf8_lossy(shown).into_owned()
        };
        match self {
            Self::Simple(s) => format!("+{}", text(s)),
            Self::Error(e) => format!("-{}", text(e)),
            Self::Integer(n) => format!(":{n}"),
            Self::Bulk(None) | Self::Null => "(nil)".to_owned(),
            Self::Bulk(Some(b)) => format!("bulk of {} bytes", b.len()),
            Self::Verbatim { text, .. } => format!("verbatim text of {} bytes", text.len()),
            Self::Array(None) => "(nil array)".to_owned(),
            Self::Array(Some(items)) => format!("array of {} elements", items.len()),
            Self::Map(pairs) => format!("map of {} pairs", pairs.len()),
            Self::Set(items) => format!("set of {} elements", items.len()),
        }
    }

    /// The text of a simple string or an error reply, for messages.
    #[must_use]
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Simple(text) | Self::Error(text) => {
                Some(String::from_utf8_lossy(text).into_owned())
            }
            _ => None,
        }
    }
}

/// Bytes that are not a valid reply, or a reply past one of its [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The first byte names no reply type this client decodes.
    #[error("unknown reply type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A line ends in a bare `\n`, or has a `\r` not followed by `\n`.
    #[error("a reply line is not terminated by CRLF")]
    MissingCrlf,
    /// A line grew past [`Limits::line_max_bytes`] without its CRLF.
    #[error("a reply line is longer than {max} bytes")]
    LineTooLong {
        /// The bound.
        max: usize,
    },
    /// An integer reply is not a decimal that fits in 64 bits.
    #[error("integer reply {0:?} is not a decimal")]
    BadInteger(String),
    /// A length or count is not a decimal, or is negative where no null is allowed.
    #[error("length {0:?} is not a count")]
    BadLength(String),
    /// A bulk or verbatim string longer than [`Limits::bulk_max_bytes`] (or the bound a
    /// streamed head was given).
    #[error("a bulk string of {len} bytes is longer than the bound of {max}")]
    BulkTooLong {
        /// The length the reply declares.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// An aggregate of more elements than [`Limits::aggregate_max_len`].
    #[error("an aggregate of {len} elements is larger than the bound of {max}")]
    AggregateTooLong {
        /// The element count the reply declares (twice the pairs of a map).
        len: u64,
        /// The bound.
        max: usize,
    },
    /// Aggregates nested deeper than [`Limits::depth_max`].
    #[error("aggregates nested deeper than {max}")]
    TooDeep {
        /// The bound.
        max: usize,
    },
    /// A bulk or verbatim string's bytes are not followed by CRLF.
    #[error("a bulk string is not terminated by CRLF after its declared length")]
    UnterminatedBulk,
    /// A verbatim string does not start with a three-byte format and `:`.
    #[error("a verbatim string does not start with a three-byte format and ':'")]
    BadVerbatim,
    /// RESP3's null `_` followed by text before its CRLF.
    #[error("a null reply carries {0} bytes of data")]
    NullWithData(usize),
}

/// What a parse took and left: the value and the input after it; `None` while the input holds
/// only a prefix of it.
type Step<'a, T> = Result<Option<(T, &'a [u8])>, ReplyError>;

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
    // Decimal digits without a `format!` allocation: this runs for every request. Pushed
    // lowest first, then turned around.
    let start = out.len();
    let mut n = n;
    loop {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a value below 10 fits in u8"
        )]
        let digit = (n % 10) as u8;
        out.push(b'0' + digit);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if let Some(digits) = out.get_mut(start..) {
        digits.reverse();
    }
    out.extend_from_slice(b"\r\n");
}

/// Decodes one reply from the start of `buffer`: the reply and the bytes it took, `None` if
/// the buffer holds only a prefix of a reply so far (read more and call again).
///
/// # Errors
/// When the bytes cannot be the start of a valid reply within `limits`, whatever follows.
pub fn parse_reply<'a>(
    buffer: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Reply<'a>, usize)>, ReplyError> {
    Ok(parse_value(buffer, limits, 0)?.map(|(reply, rest)| (reply, buffer.len() - rest.len())))
}

/// The start of a reply whose bulk body the caller reads itself (a snapshot, too large to hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head<'a> {
    /// `$len\r\n`: `len` bytes and a CRLF follow, not decoded.
    Bulk(u64),
    /// Any other reply, decoded whole (`$-1` included).
    Other(Reply<'a>),
}

/// Decodes the head of a reply from the start of `buffer`: a bulk string's length line alone
/// (its length at most `bulk_max_bytes`, whatever `limits` say), or any other reply whole; and
/// the bytes it took. `None` while incomplete.
///
/// # Errors
/// As [`parse_reply`], and a bulk string longer than `bulk_max_bytes`.
pub fn parse_head<'a>(
    buffer: &'a [u8],
    limits: &Limits,
    bulk_max_bytes: u64,
) -> Result<Option<(Head<'a>, usize)>, ReplyError> {
    let Some(after_tag) = buffer.strip_prefix(b"$") else {
        return Ok(parse_reply(buffer, limits)?.map(|(reply, used)| (Head::Other(reply), used)));
    };
    let Some((line, rest)) = line(after_tag, limits.line_max_bytes)? else {
        return Ok(None);
    };
    let used = buffer.len() - rest.len();
    let head = match length(line)? {
        None => Head::Other(Reply::Bulk(None)),
        Some(len) if len > bulk_max_bytes => {
            return Err(ReplyError::BulkTooLong {
                len,
                max: bulk_max_bytes,
            });
        }
        Some(len) => Head::Bulk(len),
    };
    Ok(Some((head, used)))
}

/// One reply at the start of `input`, enclosed in `depth` aggregates.
fn parse_value<'a>(input: &'a [u8], limits: &Limits, depth: usize) -> Step<'a, Reply<'a>> {
    let Some((&tag, after_tag)) = input.split_first() else {
        return Ok(None);
    };
    if !matches!(
        tag,
        b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b'=' | b'%' | b'~'
    ) {
        return Err(ReplyError::UnknownType(tag));
    }
    let Some((line, rest)) = line(after_tag, limits.line_max_bytes)? else {
        return Ok(None);
    };
    let done = |reply| Ok(Some((reply, rest)));
    match tag {
        b'+' => done(Reply::Simple(line)),
        b'-' => done(Reply::Error(line)),
        b':' => match parse_decimal(line) {
            Some(n) => done(Reply::Integer(n)),
            None => Err(ReplyError::BadInteger(lossy(line))),
        },
        b'_' if line.is_empty() => done(Reply::Null),
        b'_' => Err(ReplyError::NullWithData(line.len())),
        b'$' => match length(line)? {
            None => done(Reply::Bulk(None)),
            Some(len) => Ok(blob(rest, len, limits)?.map(|(b, rest)| (Reply::Bulk(Some(b)), rest))),
        },
        b'=' => {
            let len = length(line)?.ok_or_else(|| ReplyError::BadLength(lossy(line)))?;
            let Some((bytes, rest)) = blob(rest, len, limits)? else {
                return Ok(None);
            };
            let Some((format, [b':', text @ ..])) = bytes.split_at_checked(3) else {
                return Err(ReplyError::BadVerbatim);
            };
            Ok(Some((Reply::Verbatim { format, text }, rest)))
        }
        b'*' => match length(line)? {
            None => done(Reply::Array(None)),
            Some(count) => {
                let count = aggregate_len(count, 1, limits, depth)?;
                Ok(elements(rest, count, limits, depth)?
                    .map(|(items, rest)| (Reply::Array(Some(items)), rest)))
            }
        },
        b'~' => {
            let count = length(line)?.ok_or_else(|| ReplyError::BadLength(lossy(line)))?;
            let count = aggregate_len(count, 1, limits, depth)?;
            Ok(
                elements(rest, count, limits, depth)?
                    .map(|(items, rest)| (Reply::Set(items), rest)),
            )
        }
        _ => {
            // `%`: a map of `pairs` keys and values.
            let pairs = length(line)?.ok_or_else(|| ReplyError::BadLength(lossy(line)))?;
            let pairs = aggregate_len(pairs, 2, limits, depth)?;
            Ok(map_pairs(rest, pairs, limits, depth)?
                .map(|(pairs, rest)| (Reply::Map(pairs), rest)))
        }
    }
}

/// The line at the start of `input` (without its CRLF) and the input after the CRLF; `None`
/// while the CRLF has not arrived.
fn line(input: &[u8], max: usize) -> Step<'_, &[u8]> {
    let window = input.get(..max.saturating_add(2)).unwrap_or(input);
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if window.len() > max {
            return Err(ReplyError::LineTooLong { max });
        }
        return Ok(None);
    };
    if end > max {
        return Err(ReplyError::LineTooLong { max });
    }
    let Some((line, tail)) = input.split_at_checked(end) else {
        return Ok(None);
    };
    match tail {
        [b'\r', b'\n', rest @ ..] => Ok(Some((line, rest))),
        [b'\r'] => Ok(None),
        _ => Err(ReplyError::MissingCrlf),
    }
}

/// A bulk or aggregate length: `None` for -1 (null), an error for any other negative number or
/// anything that is not a decimal.
fn length(line: &[u8]) -> Result<Option<u64>, ReplyError> {
    match parse_decimal(line) {
        Some(-1) => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| ReplyError::BadLength(lossy(line))),
        None => Err(ReplyError::BadLength(lossy(line))),
    }
}

/// `len` bytes at the start of `input` and the input after their CRLF.
fn blob<'a>(input: &'a [u8], len: u64, limits: &Limits) -> Step<'a, &'a [u8]> {
    let too_long = || ReplyError::BulkTooLong {
        len,
        max: u64::try_from(limits.bulk_max_bytes).unwrap_or(u64::MAX),
    };
    let len = usize::try_from(len).map_err(|_| too_long())?;
    if len > limits.bulk_max_bytes {
        return Err(too_long());
    }
    let Some((bytes, tail)) = input.split_at_checked(len) else {
        return Ok(None);
    };
    match tail {
        [b'\r', b'\n', rest @ ..] => Ok(Some((bytes, rest))),
        [] | [b'\r'] => Ok(None),
        _ => Err(ReplyError::UnterminatedBulk),
    }
}

/// An aggregate's declared count of entries of `width` replies each, checked against the
/// element bound and the nesting bound before any element is read.
fn aggregate_len(
    count: u64,
    width: u64,
    limits: &Limits,
    depth: usize,
) -> Result<usize, ReplyError> {
    let elements = count.saturating_mul(width);
    let max = limits.aggregate_max_len;
    if usize::try_from(elements).map_or(true, |n| n > max) {
        return Err(ReplyError::AggregateTooLong { len: elements, max });
    }
    if depth >= limits.depth_max {
        return Err(ReplyError::TooDeep {
            max: limits.depth_max,
        });
    }
    // At most `max` (a usize) over `width` (at least 1).
    usize::try_from(count).map_err(|_| ReplyError::AggregateTooLong { len: elements, max })
}

/// `count` replies one after the other, inside an aggregate at `depth`.
fn elements<'a>(
    mut input: &'a [u8],
    count: usize,
    limits: &Limits,
    depth: usize,
) -> Step<'a, Vec<Reply<'a>>> {
    // Grows with the elements that arrived, never with the declared count alone.
    let mut items = Vec::new();
    for _ in 0..count {
        let Some((item, rest)) = parse_value(input, limits, depth + 1)? else {
            return Ok(None);
        };
        items.push(item);
        input = rest;
    }
    Ok(Some((items, input)))
}

/// `pairs` keys and values, inside a map at `depth`.
fn map_pairs<'a>(
    mut input: &'a [u8],
    pairs: usize,
    limits: &Limits,
    depth: usize,
) -> Step<'a, Vec<(Reply<'a>, Reply<'a>)>> {
    let mut out = Vec::new();
    for _ in 0..pairs {
        let Some((key, rest)) = parse_value(input, limits, depth + 1)? else {
            return Ok(None);
        };
        let Some((value, rest)) = parse_value(rest, limits, depth + 1)? else {
            return Ok(None);
        };
        out.push((key, value));
        input = rest;
    }
    Ok(Some((out, input)))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use proptest::prelude::*;

    use super::*;
    use crate::format::resp::{Protocol, ReplyWriter};

    fn whole(bytes: &[u8]) -> Reply<'_> {
        let (reply, used) = parse_reply(bytes, &Limits::DEFAULT).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "the whole reply is consumed");
        reply
    }

    fn parse(bytes: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ReplyError> {
        parse_reply(bytes, &Limits::DEFAULT)
    }

    #[test]
    fn decodes_each_resp2_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple(b"OK"));
        assert_eq!(
            whole(b"-READONLY You can't write\r\n"),
            Reply::Error(b"READONLY You can't write")
        );
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(whole(b"$5\r\nhe\r\no\r\n"), Reply::Bulk(Some(b"he\r\no")));
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Some(b"")));
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(whole(b"*0\r\n"), Reply::Array(Some(Vec::new())));
        assert_eq!(
            whole(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x"))]))
            ]))
        );
    }

    #[test]
    fn decodes_each_resp3_type_the_server_writes() {
        assert_eq!(whole(b"_\r\n"), Reply::Null);
        assert_eq!(
            whole(b"=8\r\ntxt:a\r\nb\r\n"),
            Reply::Verbatim {
                format: b"txt",
                text: b"a\r\nb"
            }
        );
        assert_eq!(
            whole(b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n"),
            Reply::Map(vec![
                (Reply::Simple(b"a"), Reply::Integer(1)),
                (Reply::Bulk(Some(b"b")), Reply::Null),
            ])
        );
        assert_eq!(
            whole(b"~2\r\n+x\r\n+y\r\n"),
            Reply::Set(vec![Reply::Simple(b"x"), Reply::Simple(b"y")])
        );
        assert_eq!(whole(b"%0\r\n"), Reply::Map(Vec::new()));
    }

    #[test]
    fn a_reply_followed_by_more_takes_only_its_bytes() {
        let (reply, used) = parse(b"+OK\r\n$-1\r\n").unwrap().unwrap();
        assert_eq!(reply, Reply::Simple(b"OK"));
        assert_eq!(used, 5);
    }

    #[test]
    fn every_prefix_of_a_valid_reply_is_incomplete_not_an_error() {
        let replies: [&[u8]; 9] = [
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":123\r\n",
            b"$11\r\nhello world\r\n",
            b"*2\r\n$1\r\na\r\n$-1\r\n",
            b"_\r\n",
            b"=6\r\ntxt:ab\r\n",
            b"%1\r\n+k\r\n~1\r\n:2\r\n",
            b"~0\r\n",
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                assert_eq!(
                    parse(reply.get(..cut).unwrap()),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: [(&[u8], ReplyError); 16] = [
            (b"?x\r\n", ReplyError::UnknownType(b'?')),
            (b"#t\r\n", ReplyError::UnknownType(b'#')),
            (b"+OK\n", ReplyError::MissingCrlf),
            (b"+O\rK\r\n", ReplyError::MissingCrlf),
            (b"$3\r\nabcd\r\n", ReplyError::UnterminatedBulk),
            (b":12a\r\n", ReplyError::BadInteger("12a".into())),
            (b":\r\n", ReplyError::BadInteger(String::new())),
            (b"$-2\r\n", ReplyError::BadLength("-2".into())),
            (b"$01\r\nx\r\n", ReplyError::BadLength("01".into())),
            (b"*x\r\n", ReplyError::BadLength("x".into())),
            (b"%-1\r\n", ReplyError::BadLength("-1".into())),
            (b"~-1\r\n", ReplyError::BadLength("-1".into())),
            (b"=-1\r\n", ReplyError::BadLength("-1".into())),
            (b"=3\r\ntxt\r\n", ReplyError::BadVerbatim),
            (b"=4\r\ntxt-\r\n", ReplyError::BadVerbatim),
            (b"_x\r\n", ReplyError::NullWithData(1)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse(bytes),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let max = Limits::DEFAULT.depth_max;
        let at_bound = "*1\r\n".repeat(max) + ":1\r\n";
        assert!(matches!(parse(at_bound.as_bytes()), Ok(Some(_))));
        let deeper = "*1\r\n".repeat(max + 1) + ":1\r\n";
        assert_eq!(parse(deeper.as_bytes()), Err(ReplyError::TooDeep { max }));
        let tight = Limits {
            depth_max: 1,
            ..Limits::DEFAULT
        };
        assert_eq!(
            parse_reply(b"%1\r\n+k\r\n~0\r\n", &tight),
            Err(ReplyError::TooDeep { max: 1 })
        );
    }

    #[test]
    fn lengths_past_their_bounds_are_refused_before_any_allocation() {
        let limits = Limits::DEFAULT;
        let bulk = format!("${}\r\n", limits.bulk_max_bytes + 1);
        assert!(matches!(
            parse(bulk.as_bytes()),
            Err(ReplyError::BulkTooLong { .. })
        ));
        let array = format!("*{}\r\n", limits.aggregate_max_len + 1);
        assert!(matches!(
            parse(array.as_bytes()),
            Err(ReplyError::AggregateTooLong { .. })
        ));
        let map = format!("%{}\r\n", limits.aggregate_max_len / 2 + 1);
        assert!(matches!(
            parse(map.as_bytes()),
            Err(ReplyError::AggregateTooLong { .. })
        ));
        assert!(matches!(
            parse(b"$99999999999999999999999\r\n"),
            Err(ReplyError::BadLength(_))
        ));
        let small = Limits {
            bulk_max_bytes: 2,
            aggregate_max_len: 1,
            ..Limits::DEFAULT
        };
        assert!(matches!(parse_reply(b"$2\r\nab\r\n", &small), Ok(Some(_))));
        assert!(matches!(
            parse_reply(b"=7\r\ntxt:abc\r\n", &small),
            Err(ReplyError::BulkTooLong { len: 7, max: 2 })
        ));
        assert_eq!(
            parse_reply(b"~2\r\n", &small),
            Err(ReplyError::AggregateTooLong { len: 2, max: 1 })
        );
    }

    #[test]
    fn a_line_without_end_is_cut_off_at_its_bound() {
        let max = Limits::DEFAULT.line_max_bytes;
        let mut long = vec![b'+'];
        long.extend(std::iter::repeat_n(b'a', max));
        assert_eq!(parse(&long), Ok(None), "exactly at the bound: may end");
        long.push(b'\r');
        assert_eq!(parse(&long), Ok(None), "its CR may be followed by LF");
        long.push(b'\n');
        assert!(matches!(parse(&long), Ok(Some(_))));
        let mut over = vec![b'+'];
        over.extend(std::iter::repeat_n(b'a', max + 1));
        assert_eq!(parse(&over), Err(ReplyError::LineTooLong { max }));
        over.extend_from_slice(b"\r\n");
        assert_eq!(parse(&over), Err(ReplyError::LineTooLong { max }));
    }

    #[test]
    fn a_streamed_head_leaves_the_bulk_body_undecoded() {
        let limits = Limits::DEFAULT;
        assert_eq!(
            parse_head(b"$5\r\nhel", &limits, 5),
            Ok(Some((Head::Bulk(5), 4)))
        );
        assert_eq!(parse_head(b"$5\r", &limits, 5), Ok(None));
        assert_eq!(
            parse_head(b"$6\r\nhello!\r\n", &limits, 5),
            Err(ReplyError::BulkTooLong { len: 6, max: 5 })
        );
        assert_eq!(
            parse_head(b"-ERR no\r\n", &limits, 5),
            Ok(Some((Head::Other(Reply::Error(b"ERR no")), 9)))
        );
        assert_eq!(
            parse_head(b"$-1\r\n", &limits, 5),
            Ok(Some((Head::Other(Reply::Bulk(None)), 5)))
        );
        // Larger than any bulk string `limits` allow in a whole reply: the caller streams it.
        let huge = format!("${}\r\n", u64::MAX >> 2);
        assert!(matches!(
            parse_head(huge.as_bytes(), &limits, u64::MAX),
            Ok(Some((Head::Bulk(_), _)))
        ));
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

    #[test]
    fn commands_decode_back_through_the_servers_parser() {
        use crate::format::resp::{RequestLimits, parse_request};
        let args: [&[u8]; 4] = [b"AUTH", b"a b\r\n", b"", &[0xff; 300]];
        let mut out = Vec::new();
        encode_command(&mut out, &args);
        let limits = RequestLimits {
            bulk_max: 1 << 10,
            args_max: 8,
            authenticated: true,
        };
        let request = parse_request(&out, &limits).unwrap().unwrap();
        assert_eq!(request.consumed, out.len());
        assert_eq!(request.arg_slices(&out), args);
    }

    /// A reply as the server holds it before writing it.
    #[derive(Debug, Clone)]
    enum Value {
        Simple(String),
        Error(String),
        Integer(i64),
        Bulk(Vec<u8>),
        Null,
        Verbatim(String),
        Array(Vec<Value>),
        Map(Vec<(Value, Value)>),
        Set(Vec<Value>),
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[ -~]{0,20}".prop_map(Value::Simple),
            "[A-Z]{1,8} [ -~]{0,20}".prop_map(Value::Error),
            any::<i64>().prop_map(Value::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bulk),
            Just(Value::Null),
            "[ -~\r\n]{0,40}".prop_map(Value::Verbatim),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..3)
                    .prop_map(Value::Map),
                proptest::collection::vec(inner, 0..5).prop_map(Value::Set),
            ]
        })
    }

    fn write(value: &Value, w: &mut ReplyWriter<'_>) {
        match value {
            Value::Simple(s) => w.simple(s),
            Value::Error(e) => w.error(e),
            Value::Integer(n) => w.integer(*n),
            Value::Bulk(b) => w.bulk(b),
            Value::Null => w.null(),
            Value::Verbatim(t) => w.verbatim(t),
            Value::Array(items) => {
                w.array(items.len());
                for item in items {
                    write(item, w);
                }
            }
            Value::Map(pairs) => {
                w.map(pairs.len());
                for (k, v) in pairs {
                    write(k, w);
                    write(v, w);
                }
            }
            Value::Set(items) => {
                w.set(items.len());
                for item in items {
                    write(item, w);
                }
            }
        }
    }

    /// The reply a client decodes from `value` written in `protocol`.
    fn expected(value: &Value, protocol: Protocol) -> Reply<'_> {
        fn all(items: &[Value], protocol: Protocol) -> Vec<Reply<'_>> {
            items.iter().map(|i| expected(i, protocol)).collect()
        }
        match (value, protocol) {
            (Value::Simple(s), _) => Reply::Simple(s.as_bytes()),
            (Value::Error(e), _) => Reply::Error(e.as_bytes()),
            (Value::Integer(n), _) => Reply::Integer(*n),
            (Value::Bulk(b), _) => Reply::Bulk(Some(b)),
            (Value::Null, Protocol::Resp2) => Reply::Bulk(None),
            (Value::Null, Protocol::Resp3) => Reply::Null,
            (Value::Verbatim(t), Protocol::Resp2) => Reply::Bulk(Some(t.as_bytes())),
            (Value::Verbatim(t), Protocol::Resp3) => Reply::Verbatim {
                format: b"txt",
                text: t.as_bytes(),
            },
            (Value::Array(items), _) | (Value::Set(items), Protocol::Resp2) => {
                Reply::Array(Some(all(items, protocol)))
            }
            (Value::Set(items), Protocol::Resp3) => Reply::Set(all(items, protocol)),
            (Value::Map(pairs), Protocol::Resp2) => Reply::Array(Some(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [expected(k, protocol), expected(v, protocol)])
                    .collect(),
            )),
            (Value::Map(pairs), Protocol::Resp3) => Reply::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (expected(k, protocol), expected(v, protocol)))
                    .collect(),
            ),
        }
    }

    proptest! {
        /// What the server's writer writes, this decodes, in both protocols; each strict prefix
        /// is incomplete, and bytes after the reply are left alone.
        #[test]
        fn replies_the_server_writes_decode_to_what_it_wrote(
            value in value(),
            resp3 in any::<bool>(),
        ) {
            let protocol = if resp3 { Protocol::Resp3 } else { Protocol::Resp2 };
            let mut out = Vec::new();
            write(&value, &mut ReplyWriter { out: &mut out, protocol });
            let len = out.len();
            for cut in 0..len {
                prop_assert_eq!(parse(out.get(..cut).unwrap()), Ok(None));
            }
            out.extend_from_slice(b"+next\r\n");
            prop_assert_eq!(parse(&out), Ok(Some((expected(&value, protocol), len))));
        }
    }
}
