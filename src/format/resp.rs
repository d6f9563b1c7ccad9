//! The Redis serialization protocol (RESP): client requests in, replies out. Pure code: bytes
//! in, values out, no I/O, so the request parser is fuzzed on its own (`fuzz/fuzz_targets/
//! resp_request.rs`). Error texts are Redis' own, so clients and operators see what they know.

use std::ops::Range;

use thiserror::Error;

/// Longest inline request (a line of text without the `*` prefix), as in Redis.
pub const INLINE_MAX_BYTES: usize = 64 << 10;
/// Longest `*<count>` or `$<len>` line, as in Redis: anything longer is not a number.
const COUNT_LINE_MAX_BYTES: usize = 64;
/// Arguments and bulk length a connection may send before it authenticates (Redis' fix for
/// CVE-2021-32675: an unauthenticated client cannot make the server allocate much).
pub const UNAUTHENTICATED_ARGS_MAX: usize = 10;
/// See [`UNAUTHENTICATED_ARGS_MAX`].
pub const UNAUTHENTICATED_BULK_MAX: usize = 16 << 10;
/// Argument slots reserved up front, whatever count a request declares: memory grows with the
/// arguments that arrive, never with the declared count.
const ARGS_PREALLOC_MAX: usize = 1024;

/// Limits a request must stay within; checked before anything is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest bulk string (one argument), in bytes.
    pub bulk_max: usize,
    /// Most arguments in one request.
    pub args_max: usize,
    /// Whether the connection has authenticated (or needs no authentication).
    pub authenticated: bool,
}

/// A request that breaks the protocol; the connection is answered with
/// `-ERR Protocol error: <message>` and closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*<count>` is not a number in range.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$<len>` is not a number in range.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// An element of a multibulk request is not a bulk string.
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A `*` or `$` line grew past any valid number.
    #[error("too big mbulk count string")]
    CountLineTooLong,
    /// A `$` line grew past any valid number.
    #[error("too big bulk count string")]
    BulkLineTooLong,
    /// An inline request longer than [`INLINE_MAX_BYTES`].
    #[error("too big inline request")]
    InlineTooLong,
    /// An inline request with an unclosed quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string not followed by CRLF.
    #[error("bulk string is not terminated by CRLF")]
    MissingCrlf,
    /// More arguments than an unauthenticated connection may send.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    /// A longer argument than an unauthenticated connection may send.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulk,
}

/// Where the arguments of a parsed request are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arguments {
    /// Byte ranges into the parsed buffer (the usual, multibulk form: no copy).
    Ranges(Vec<Range<usize>>),
    /// Arguments of an inline request, unquoted (they differ from the bytes sent).
    Owned(Vec<Vec<u8>>),
}

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the buffer the request took, including its terminator.
    pub consumed: usize,
    /// Its arguments; empty for a blank line or `*0`, which Redis ignores.
    pub args: Arguments,
}

impl Request {
    /// The arguments as slices (of `buffer` for the multibulk form).
    ///
    /// # Panics
    /// When `buffer` is not (a prefix-preserving extension of) the buffer the request was
    /// parsed from, so that an argument's range lies beyond it: a caller bug.
    #[must_use]
    pub fn arg_slices<'a>(&'a self, buffer: &'a [u8]) -> Vec<&'a [u8]> {
        match &self.args {
            Arguments::Ranges(ranges) => ranges
                .iter()
                .map(|r| {
                    buffer
                        .get(r.clone())
                        .expect("a request's ranges lie in the buffer it was parsed from")
                })
                .collect(),
            Arguments::Owned(args) => args.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// Parses the first request in `buffer`. `Ok(None)` means it is not complete yet: read more
/// and call again with the longer buffer (nothing is consumed until a request is whole).
///
/// # Errors
/// A request that breaks the protocol or `limits`.
pub fn parse_request(
    buffer: &[u8],
    limits: &RequestLimits,
) -> Result<Option<Request>, ProtocolError> {
    parse_request_resuming(buffer, limits, &mut None)
}

/// The arguments of a multibulk request parsed so far, so that parsing resumes where it
/// stopped when more bytes arrive instead of starting over (a request of a million small
/// arguments arriving in small reads would otherwise cost quadratic time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    count: usize,
    ranges: Vec<Range<usize>>,
    /// Offset of the next argument.
    at: usize,
}

/// [`parse_request`], resuming from `partial` (left by the previous call on a shorter prefix
/// of the same buffer, whose first byte is still the request's first byte).
///
/// # Errors
/// A request that breaks the protocol or `limits`.
pub fn parse_request_resuming(
    buffer: &[u8],
    limits: &RequestLimits,
    partial: &mut Option<Partial>,
) -> Result<Option<Request>, ProtocolError> {
    match buffer.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buffer, limits, partial),
        Some(_) => parse_inline(buffer),
    }
}

/// The line starting at `at`, without its `\r\n`, and the offset after it. `at` is at most
/// `buffer.len()` (an offset past the end reads as no bytes yet).
fn line(buffer: &[u8], at: usize, max: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let rest = buffer.get(at..).unwrap_or_default();
    let window = rest.get(..max + 2).unwrap_or(rest);
    match window.windows(2).position(|w| w == b"\r\n") {
        // `end` is inside `window`, so the `Err` is never taken.
        Some(end) => Ok(Some((window.get(..end).ok_or(())?, at + end + 2))),
        None if window.len() >= max + 2 => Err(()),
        None => Ok(None),
    }
}

/// A decimal as Redis' `string2ll` reads it: optional `-`, digits, no `+`, no spaces, and no
/// leading zero (so no `-0` either) unless the whole number is `0`. Command arguments that are
/// integers are read the same way.
#[must_use]
pub fn parse_decimal(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.first() == Some(&b'0') && bytes != b"0")
    {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn parse_multibulk(
    buffer: &[u8],
    limits: &RequestLimits,
    partial: &mut Option<Partial>,
) -> Result<Option<Request>, ProtocolError> {
    let mut state = if let Some(state) = partial.take() {
        state
    } else {
        let Some((count_line, at)) =
            line(buffer, 1, COUNT_LINE_MAX_BYTES).map_err(|()| ProtocolError::CountLineTooLong)?
        else {
            return Ok(None);
        };
        let count = parse_decimal(count_line).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if count > i64::from(i32::MAX) {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        if count <= 0 {
            // Redis ignores `*0` and `*-1` requests.
            return Ok(Some(Request {
                consumed: at,
                args: Arguments::Ranges(Vec::new()),
            }));
        }
        let count = usize::try_from(count).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
        if !limits.authenticated && count > UNAUTHENTICATED_ARGS_MAX {
            return Err(ProtocolError::UnauthenticatedMultibulk);
        }
        if count > limits.args_max {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        Partial {
            count,
            ranges: Vec::with_capacity(count.min(ARGS_PREALLOC_MAX)),
            at,
        }
    };
    debug_assert!(state.at <= buffer.len(), "resumed on a shorter buffer");
    while state.ranges.len() < state.count {
        let at = state.at;
        let Some(&marker) = buffer.get(at) else {
            *partial = Some(state);
            return Ok(None);
        };
        if marker != b'$' {
            return Err(ProtocolError::ExpectedBulk(char::from(marker)));
        }
        let Some((len_line, start)) = line(buffer, at + 1, COUNT_LINE_MAX_BYTES)
            .map_err(|()| ProtocolError::BulkLineTooLong)?
        else {
            *partial = Some(state);
            return Ok(None);
        };
        let len = parse_decimal(len_line)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ProtocolError::InvalidBulkLength)?;
        if !limits.authenticated && len > UNAUTHENTICATED_BULK_MAX {
            return Err(ProtocolError::UnauthenticatedBulk);
        }
        if len > limits.bulk_max {
            return Err(ProtocolError::InvalidBulkLength);
        }
        // `len` is at most `bulk_max` (itself bounded by the caller), so this cannot overflow.
        let end = start + len;
        let Some(terminator) = buffer.get(end..end + 2) else {
            *partial = Some(state);
            return Ok(None);
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        state.ranges.push(start..end);
        state.at = end + 2;
    }
    Ok(Some(Request {
        consumed: state.at,
        args: Arguments::Ranges(state.ranges),
    }))
}

fn parse_inline(buffer: &[u8]) -> Result<Option<Request>, ProtocolError> {
    let window = buffer.get(..=INLINE_MAX_BYTES).unwrap_or(buffer);
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if window.len() > INLINE_MAX_BYTES {
            return Err(ProtocolError::InlineTooLong);
        }
        return Ok(None);
    };
    // `newline` is inside `window`, so the error is never returned.
    let mut text = window.get(..newline).ok_or(ProtocolError::InlineTooLong)?;
    if let Some(stripped) = text.strip_suffix(b"\r") {
        text = stripped;
    }
    let args = split_args(text).ok_or(ProtocolError::UnbalancedQuotes)?;
    Ok(Some(Request {
        consumed: newline + 1,
        args: Arguments::Owned(args),
    }))
}

/// Splits an inline request into arguments the way `redis-cli` and Redis do: whitespace
/// separates, `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`.
/// `None` for an unclosed quote or a quote not followed by whitespace.
#[must_use]
pub fn split_args(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while text.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if i == text.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = text.get(i).copied();
            if in_double {
                let next = text.get(i + 1).copied();
                match (c?, hex_escape(text.get(i + 1..i + 4)), next) {
                    (b'\\', Some(byte), _) => {
                        current.push(byte);
                        i += 3;
                    }
                    (b'\\', None, Some(escaped)) => {
                        i += 1;
                        current.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    (b'"', _, _) => {
                        // The closing quote must end the argument.
                        if next.is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (other, _, _) => current.push(other),
                }
            } else if in_single {
                match c? {
                    b'\\' if text.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        current.push(b'\'');
                    }
                    b'\'' => {
                        if text.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => current.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => current.push(other),
                }
            }
            i += 1;
        }
        args.push(current);
    }
}

/// The byte of a `\xHH` escape, given the three bytes after the backslash.
fn hex_escape(escape: Option<&[u8]>) -> Option<u8> {
    let &[b'x', high, low] = escape? else {
        return None;
    };
    if !(high.is_ascii_hexdigit() && low.is_ascii_hexdigit()) {
        return None;
    }
    let hex = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    };
    Some(hex(high) * 16 + hex(low))
}

/// Which protocol a connection speaks: RESP2 by default, RESP3 after `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2.
    Resp2,
    /// RESP3.
    Resp3,
}

/// Appends replies to an output buffer in the connection's protocol.
#[derive(Debug)]
pub struct ReplyWriter<'a> {
    /// The buffer replies are appended to.
    pub out: &'a mut Vec<u8>,
    /// The protocol they are written in.
    pub protocol: Protocol,
}

impl ReplyWriter<'_> {
    /// `+OK`-style simple string (must not contain CR or LF).
    pub fn simple(&mut self, text: &str) {
        debug_assert!(!text.contains(['\r', '\n']));
        self.out.push(b'+');
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.out.extend_from_slice(b"+OK\r\n");
    }

    /// An error reply; `text` starts with its code (`ERR`, `WRONGTYPE`, ...). CR and LF are
    /// replaced by spaces, as Redis does, so a client-supplied name cannot break the framing.
    pub fn error(&mut self, text: &str) {
        self.out.push(b'-');
        self.out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.out.extend_from_slice(b"\r\n");
    }

    /// An integer.
    pub fn integer(&mut self, n: i64) {
        self.out.push(b':');
        self.out.extend_from_slice(n.to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// A bulk string.
    pub fn bulk(&mut self, bytes: &[u8]) {
        self.bulk_header(bytes.len());
        self.out.extend_from_slice(bytes);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The `$<len>\r\n` before a bulk string's bytes (for callers that send the bytes
    /// themselves), to be followed by the bytes and `\r\n`.
    pub fn bulk_header(&mut self, len: usize) {
        self.out.push(b'$');
        self.out.extend_from_slice(len.to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// A verbatim text reply (`INFO`): a bulk string in RESP2, `=` with `txt:` in RESP3.
    pub fn verbatim(&mut self, text: &str) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.out.push(b'=');
                self.out
                    .extend_from_slice((text.len() + 4).to_string().as_bytes());
                self.out.extend_from_slice(b"\r\ntxt:");
                self.out.extend_from_slice(text.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.out.extend_from_slice(b"_\r\n"),
        }
    }

    /// The header of an array of `len` elements (which follow).
    pub fn array(&mut self, len: usize) {
        self.out.push(b'*');
        self.out.extend_from_slice(len.to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// The header of a map of `len` pairs: `%` in RESP3, a flat array of `2 * len` in RESP2.
    pub fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.array(len * 2),
            Protocol::Resp3 => {
                self.out.push(b'%');
                self.out.extend_from_slice(len.to_string().as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The header of a set of `len` elements: `~` in RESP3, an array in RESP2.
    pub fn set(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.array(len),
            Protocol::Resp3 => {
                self.out.push(b'~');
                self.out.extend_from_slice(len.to_string().as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;

    const OPEN: RequestLimits = RequestLimits {
        bulk_max: 512 << 20,
        args_max: 1 << 20,
        authenticated: true,
    };

    fn args(buffer: &[u8]) -> Vec<Vec<u8>> {
        let request = parse_request(buffer, &OPEN).unwrap().unwrap();
        assert_eq!(request.consumed, buffer.len());
        request
            .arg_slices(buffer)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn multibulk_and_every_prefix_of_it() {
        let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
        assert_eq!(args(full), vec![b"SET".to_vec(), b"k".to_vec(), Vec::new()]);
        for end in 0..full.len() {
            assert_eq!(parse_request(&full[..end], &OPEN), Ok(None), "prefix {end}");
        }
    }

    #[test]
    fn resuming_gives_the_same_request_as_parsing_whole() {
        let full = b"*4\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n$0\r\n\r\n";
        let whole = parse_request(full, &OPEN).unwrap().unwrap();
        let mut partial = None;
        for end in 0..full.len() {
            assert_eq!(
                parse_request_resuming(&full[..end], &OPEN, &mut partial),
                Ok(None),
                "prefix {end}"
            );
        }
        assert_eq!(
            parse_request_resuming(full, &OPEN, &mut partial),
            Ok(Some(whole))
        );
        assert_eq!(partial, None);
    }

    #[test]
    fn inline_with_quotes() {
        assert_eq!(
            args(b"set \"a b\\x41\\n\" 'it\\'s'\r\n"),
            vec![b"set".to_vec(), b"a bA\n".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(args(b"  \n"), Vec::<Vec<u8>>::new());
        assert_eq!(
            parse_request(b"set \"abc\n", &OPEN),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocation() {
        let cases: [(&[u8], ProtocolError); 10] = [
            (b"*-5x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*-0\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*-01\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n$-0\r\n\r\n", ProtocolError::InvalidBulkLength),
            (b"*99999999999\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$536870913\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n:1\r\n", ProtocolError::ExpectedBulk(':')),
            (b"*1\r\n$1\r\nab\r\n", ProtocolError::MissingCrlf),
            (&[b'*'; 100], ProtocolError::CountLineTooLong),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_request(input, &OPEN), Err(expected), "{input:?}");
        }
        let guest = RequestLimits {
            authenticated: false,
            ..OPEN
        };
        assert_eq!(
            parse_request(b"*11\r\n", &guest),
            Err(ProtocolError::UnauthenticatedMultibulk)
        );
        assert_eq!(
            parse_request(b"*1\r\n$16385\r\n", &guest),
            Err(ProtocolError::UnauthenticatedBulk)
        );
    }

    #[test]
    fn replies_in_both_protocols() {
        let mut out = Vec::new();
        let mut w = ReplyWriter {
            out: &mut out,
            protocol: Protocol::Resp2,
        };
        w.null();
        w.map(1);
        w.error("ERR a\r\nb");
        assert_eq!(out, b"$-1\r\n*2\r\n-ERR a  b\r\n");
        let mut out = Vec::new();
        let mut w = ReplyWriter {
            out: &mut out,
            protocol: Protocol::Resp3,
        };
        w.null();
        w.map(1);
        w.verbatim("x");
        assert_eq!(out, b"_\r\n%1\r\n=5\r\ntxt:x\r\n");
    }
}
