//! A tiny blocking RESP2 client for `shiplog status` and `shiplog snapshot create --from`: one
//! connection, one command at a time, every read bounded in time and in size, so a hung or
//! hostile server cannot hang the tool or make it allocate much (a snapshot's bulk body is
//! streamed by the caller, never held).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest reply line (a simple string, an error, an integer or a length), CRLF included.
const LINE_MAX_BYTES: usize = 64 << 10;
/// Largest bulk string accepted: `INFO` is a few KiB even with every slot and many replicas.
const BULK_MAX_BYTES: usize = 16 << 20;
/// Most elements of one array.
const ARRAY_MAX: usize = 1 << 16;
/// Deepest nesting of arrays (`ROLE` nests three deep).
const DEPTH_MAX: usize = 8;

/// One reply, as RESP2 has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(String),
    /// `-text`: the command failed.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` and the bytes, or `$-1` (none).
    Bulk(Option<Vec<u8>>),
    /// `*count` and the elements, or `*-1` (none).
    Array(Option<Vec<Reply>>),
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The socket failed or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection before the reply was complete.
    #[error("the connection closed before the reply was complete")]
    Closed,
    /// The bytes are not a RESP2 reply, or break a bound above.
    #[error("not a RESP reply: {0}")]
    Protocol(&'static str),
}

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `HOST:PORT` does not resolve.
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        /// The address given.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// No address accepted the connection.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The address given.
        target: String,
        /// The last address' error.
        source: std::io::Error,
    },
    /// Sending a command or reading its reply failed.
    #[error("{target}: {source}")]
    Exchange {
        /// The address given.
        target: String,
        /// Why.
        source: ReadError,
    },
}

/// A connection to a RESP server.
#[derive(Debug)]
pub struct Client {
    target: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to `target` (`HOST:PORT`), trying each address it resolves to; `timeout` bounds
    /// each connection attempt and every later read and write.
    ///
    /// # Errors
    /// The name does not resolve, or no address accepts the connection.
    pub fn connect(target: &str, timeout: Duration) -> Result<Self, ClientError> {
        let resolve = |source| ClientError::Resolve {
            target: target.to_owned(),
            source,
        };
        let addrs: Vec<_> = target.to_socket_addrs().map_err(resolve)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => return Self::from_stream(target, stream, timeout),
                Err(e) => last = e,
            }
        }
        Err(ClientError::Connect {
            target: target.to_owned(),
            source: last,
        })
    }

    /// Connects as [`Client::connect`] does, then sends `AUTH` with the password in
    /// `password_file`, when one is given.
    ///
    /// # Errors
    /// The file cannot be read, the connection fails, or the server refuses the password; the
    /// text says which.
    pub fn connect_with_auth(
        target: &str,
        timeout: Duration,
        password_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let password = password_file
            .map(shiplog::server::config::read_password_file)
            .transpose()?;
        let mut client = Self::connect(target, timeout).map_err(|e| e.to_string())?;
        if let Some(password) = &password {
            match client
                .command(&[b"AUTH", password])
                .map_err(|e| e.to_string())?
            {
                Reply::Simple(_) => {}
                Reply::Error(e) => return Err(format!("{target} refused AUTH: {e}")),
                other => return Err(format!("{target} answered AUTH with {other:?}")),
            }
        }
        Ok(client)
    }

    fn from_stream(
        target: &str,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let setup = || -> std::io::Result<Self> {
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            // Requests are one small write each, answered before the next is sent.
            stream.set_nodelay(true)?;
            Ok(Self {
                target: target.to_owned(),
                reader: BufReader::new(stream.try_clone()?),
                writer: stream,
            })
        };
        setup().map_err(|source| ClientError::Connect {
            target: target.to_owned(),
            source,
        })
    }

    /// Sends one command and reads its reply (an error reply is a reply, not an `Err`).
    ///
    /// # Errors
    /// The socket fails or times out, or the reply breaks the protocol or a bound.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, ClientError> {
        self.exchange(args).map_err(|source| ClientError::Exchange {
            target: self.target.clone(),
            source,
        })
    }

    /// Sends one command whose reply may be a bulk string too large to hold: returns
    /// [`Head::Bulk`] with its length, at most `bulk_max_bytes`, leaving the body and its CRLF
    /// to be read from [`Client::body`]; any other reply is read whole.
    ///
    /// # Errors
    /// As [`Client::command`].
    pub fn command_streamed(
        &mut self,
        args: &[&[u8]],
        bulk_max_bytes: u64,
    ) -> Result<Head, ClientError> {
        let mut exchange = || -> Result<Head, ReadError> {
            self.writer.write_all(&encode_command(args))?;
            self.writer.flush()?;
            read_head(&mut self.reader, bulk_max_bytes)
        };
        exchange().map_err(|source| ClientError::Exchange {
            target: self.target.clone(),
            source,
        })
    }

    /// The connection's reader, for the body of a [`Head::Bulk`].
    pub fn body(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    /// Bounds each later read and write (`None`: wait for ever).
    ///
    /// # Errors
    /// The socket refuses the setting.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.writer.set_read_timeout(timeout)?;
        self.writer.set_write_timeout(timeout)
    }

    fn exchange(&mut self, args: &[&[u8]]) -> Result<Reply, ReadError> {
        self.writer.write_all(&encode_command(args))?;
        self.writer.flush()?;
        read_reply(&mut self.reader, 0)
    }
}

/// A command as a RESP multibulk request.
// *<args>\r\n then, per argument, $<len>\r\n<bytes>\r\n
fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One line without its CRLF, at most [`LINE_MAX_BYTES`] long.
fn read_line(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let limit = u64::try_from(LINE_MAX_BYTES).unwrap_or(u64::MAX);
    reader.take(limit).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(ReadError::Closed);
    }
    match line.strip_suffix(b"\r\n") {
        Some(body) => Ok(body.to_vec()),
        None if line.len() >= LINE_MAX_BYTES => Err(ReadError::Protocol("line too long")),
        None => Err(ReadError::Closed),
    }
}

/// A length or count: -1 (none) or a non-negative number at most `max`.
fn read_length(body: &[u8], max: usize) -> Result<Option<usize>, ReadError> {
    let text = std::str::from_utf8(body).map_err(|_| ReadError::Protocol("length is not text"))?;
    if text == "-1" {
        return Ok(None);
    }
    let n: usize = text
        .parse()
        .map_err(|_| ReadError::Protocol("length is not a number"))?;
    if n > max {
        return Err(ReadError::Protocol("length over the client's bound"));
    }
    Ok(Some(n))
}

/// The start of a reply whose bulk body is streamed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// `$len`: `len` bytes and a CRLF follow, unread.
    Bulk(u64),
    /// Any other reply, read whole (`$-1` included).
    Other(Reply),
}

/// Reads a reply's first line: a bulk string's length (at most `bulk_max_bytes`), or the whole
/// of any other reply.
pub fn read_head(reader: &mut impl BufRead, bulk_max_bytes: u64) -> Result<Head, ReadError> {
    let line = read_line(reader)?;
    let Some((b'$', body)) = line.split_first() else {
        // Not a bulk string: parse the line again as the start of a whole reply.
        let mut again = line;
        again.extend_from_slice(b"\r\n");
        return read_reply(&mut again.as_slice().chain(reader), 0).map(Head::Other);
    };
    let text = std::str::from_utf8(body).map_err(|_| ReadError::Protocol("length is not text"))?;
    if text == "-1" {
        return Ok(Head::Other(Reply::Bulk(None)));
    }
    let len: u64 = text
        .parse()
        .map_err(|_| ReadError::Protocol("length is not a number"))?;
    if len > bulk_max_bytes {
        return Err(ReadError::Protocol("length over the client's bound"));
    }
    Ok(Head::Bulk(len))
}

/// Reads one complete reply; `depth` is how many arrays enclose it.
pub fn read_reply(reader: &mut impl BufRead, depth: usize) -> Result<Reply, ReadError> {
    if depth > DEPTH_MAX {
        return Err(ReadError::Protocol("arrays nested too deep"));
    }
    let line = read_line(reader)?;
    let Some((&kind, body)) = line.split_first() else {
        return Err(ReadError::Protocol("empty line"));
    };
    let text = || String::from_utf8_lossy(body).into_owned();
    match kind {
        b'+' => Ok(Reply::Simple(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => text()
            .parse()
            .map(Reply::Integer)
            .map_err(|_| ReadError::Protocol("integer is not a number")),
        b'$' => {
            let Some(len) = read_length(body, BULK_MAX_BYTES)? else {
                return Ok(Reply::Bulk(None));
            };
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    ReadError::Closed
                } else {
                    ReadError::Io(e)
                }
            })?;
            if data.split_off(len) != b"\r\n" {
                return Err(ReadError::Protocol("bulk string is not terminated by CRLF"));
            }
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let Some(count) = read_length(body, ARRAY_MAX)? else {
                return Ok(Reply::Array(None));
            };
            // Grows with the elements that arrive, never with the declared count alone.
            let mut items = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                items.push(read_reply(reader, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(ReadError::Protocol("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, ReadError> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn reads_each_reply_type() {
        assert_eq!(parse(b"+OK\r\n").ok(), Some(Reply::Simple("OK".into())));
        assert_eq!(
            parse(b"-NOAUTH Authentication required.\r\n").ok(),
            Some(Reply::Error("NOAUTH Authentication required.".into()))
        );
        assert_eq!(parse(b":-7\r\n").ok(), Some(Reply::Integer(-7)));
        assert_eq!(
            parse(b"$5\r\na\r\nbc\r\n").ok(),
            Some(Reply::Bulk(Some(b"a\r\nbc".to_vec())))
        );
        assert_eq!(parse(b"$-1\r\n").ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            parse(b"*2\r\n$1\r\nx\r\n*1\r\n:1\r\n").ok(),
            Some(Reply::Array(Some(vec![
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Array(Some(vec![Reply::Integer(1)])),
            ])))
        );
    }

    #[test]
    fn refuses_truncated_malformed_and_oversized_replies() {
        assert!(matches!(parse(b""), Err(ReadError::Closed)));
        assert!(matches!(parse(b"$5\r\nab"), Err(ReadError::Closed)));
        assert!(matches!(parse(b"+OK"), Err(ReadError::Closed)));
        assert!(matches!(parse(b"$2\r\nabcd"), Err(ReadError::Protocol(_))));
        assert!(matches!(parse(b"?\r\n"), Err(ReadError::Protocol(_))));
        assert!(matches!(parse(b"$-2\r\n"), Err(ReadError::Protocol(_))));
        assert!(matches!(
            parse(b"$99999999999\r\n"),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(parse(b"*999999\r\n"), Err(ReadError::Protocol(_))));
        let deep = "*1\r\n".repeat(DEPTH_MAX + 2) + ":1\r\n";
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(ReadError::Protocol(_))
        ));
        let long = vec![b'+'; LINE_MAX_BYTES + 10];
        assert!(matches!(parse(&long), Err(ReadError::Protocol(_))));
    }

    #[test]
    fn a_streamed_head_leaves_the_bulk_body_unread() {
        let mut input: &[u8] = b"$5\r\nhello\r\n";
        assert_eq!(read_head(&mut input, 5).ok(), Some(Head::Bulk(5)));
        assert_eq!(input, b"hello\r\n");
        let mut input: &[u8] = b"$6\r\nhello!\r\n";
        assert!(matches!(
            read_head(&mut input, 5),
            Err(ReadError::Protocol(_))
        ));
        let mut input: &[u8] = b"-ERR no\r\n";
        assert_eq!(
            read_head(&mut input, 5).ok(),
            Some(Head::Other(Reply::Error("ERR no".into())))
        );
        let mut input: &[u8] = b"*1\r\n:1\r\n";
        assert_eq!(
            read_head(&mut input, 5).ok(),
            Some(Head::Other(Reply::Array(Some(vec![Reply::Integer(1)]))))
        );
        let mut input: &[u8] = b"$-1\r\n";
        assert_eq!(
            read_head(&mut input, 5).ok(),
            Some(Head::Other(Reply::Bulk(None)))
        );
    }

    #[test]
    fn encodes_binary_arguments_with_their_lengths() {
        assert_eq!(
            encode_command(&[b"AUTH", b"a b\r\n"]),
            b"*2\r\n$4\r\nAUTH\r\n$5\r\na b\r\n\r\n"
        );
    }
}
