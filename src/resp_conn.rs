//! A blocking RESP client connection: a `TcpStream`, one write buffer of queued commands and
//! one read buffer of replies decoded by [`crate::format::resp_reply`]. The admin tool
//! (`shiplog status`, `promote`, `snapshot create --from`), the load generator and a
//! promotion's peer queries all talk to a server through it, so a reply is framed, bounded and
//! timed out the same way everywhere.
//!
//! It lives beside `format/` rather than in it because it does I/O, and outside `loadgen/` and
//! `server/` because both use it (the server's promotion asks its peers where they stand).
//!
//! Every read and write is bounded by the timeout given at connect time (or set later), and
//! the read buffer by the reply limits, so a hung or hostile server can neither hang a client
//! nor make it allocate much. A command's reply borrows the read buffer until the next call.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::format::resp_reply::{
    Head, Limits, Reply, ReplyError, encode_command, parse_head, parse_reply,
};

/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Why talking to a server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// `HOST:PORT` does not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address given.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No address accepted the connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address given.
        addr: String,
        /// The last address' error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed.
    #[error("{addr}: {source}")]
    Io {
        /// The server's address.
        addr: String,
        /// What the socket reported.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection.
    #[error("{addr}: the server closed the connection")]
    Closed {
        /// The server's address.
        addr: String,
    },
    /// A reply did not arrive within the timeout.
    #[error("{addr}: no reply within {timeout_ms} ms")]
    Timeout {
        /// The server's address.
        addr: String,
        /// The timeout that passed.
        timeout_ms: u128,
    },
    /// The server sent bytes that are not a RESP reply, or one past the client's limits.
    #[error("{addr}: malformed reply: {source}")]
    Malformed {
        /// The server's address.
        addr: String,
        /// What is wrong with the bytes.
        #[source]
        source: ReplyError,
    },
    /// A well-formed reply that the command cannot have (a status where a value belongs).
    #[error("{addr}: unexpected reply to {command}: {reply}")]
    Unexpected {
        /// The server's address.
        addr: String,
        /// The command sent.
        command: &'static str,
        /// The reply, shortened for display.
        reply: String,
    },
}

/// One connection to a RESP server.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    addr: String,
    read_buf: ReadBuffer,
    /// Requests queued since the last flush.
    write_buf: Vec<u8>,
    /// The read and write timeout, for messages.
    timeout: Option<Duration>,
    limits: Limits,
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`), trying each address it resolves to; `timeout` bounds
    /// each connection attempt and every later read and write, so a stalled server fails the
    /// client instead of hanging it. Replies are bounded by [`Limits::DEFAULT`].
    ///
    /// # Errors
    /// When the address does not resolve or no address accepts the connection.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, ConnError> {
        let resolved = addr
            .to_socket_addrs()
            .map_err(|source| ConnError::Resolve {
                addr: addr.to_owned(),
                source,
            })?;
        let mut last = None;
        for resolved in resolved {
            match TcpStream::connect_timeout(&resolved, timeout) {
                Ok(stream) => return Self::from_stream(addr, stream, timeout),
                Err(e) => last = Some(e),
            }
        }
        Err(ConnError::Connect {
            addr: addr.to_owned(),
            source: last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
            }),
        })
    }

    fn from_stream(addr: &str, stream: TcpStream, timeout: Duration) -> Result<Self, ConnError> {
        let setup = || -> io::Result<()> {
            // Requests are flushed whole; Nagle would only hold the next one back.
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))
        };
        setup().map_err(|source| ConnError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
        Ok(Self {
            stream,
            addr: addr.to_owned(),
            read_buf: ReadBuffer {
                bytes: vec![0; READ_CHUNK_BYTES],
                start: 0,
                end: 0,
                handed_out: 0,
            },
            write_buf: Vec::new(),
            timeout: Some(timeout),
            limits: Limits::DEFAULT,
        })
    }

    /// Bounds replies by `limits` instead of [`Limits::DEFAULT`].
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The server's address, as given.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Bounds each later read and write (`None`: wait for ever).
    ///
    /// # Errors
    /// The socket refuses the setting.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ConnError> {
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|e| self.io_error(e))?;
        self.timeout = timeout;
        Ok(())
    }

    /// Queues a command; nothing is sent before [`Self::flush`].
    pub fn queue(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.write_buf, args);
    }

    /// Whether commands are queued and not yet sent.
    #[must_use]
    pub fn has_queued(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Sends every queued command in one write.
    ///
    /// # Errors
    /// When the write fails or times out.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf);
        self.write_buf.clear();
        result.map_err(|e| self.io_error(e))
    }

    /// The next reply if it has fully arrived (`None`: read more first). It borrows the read
    /// buffer, and is consumed at the next call.
    ///
    /// # Errors
    /// When the received bytes are not a valid reply within the limits.
    pub fn take_reply(&mut self) -> Result<Option<Reply<'_>>, ConnError> {
        let limits = &self.limits;
        self.read_buf
            .take(|pending| parse_reply(pending, limits))
            .map_err(|source| malformed(&self.addr, source))
    }

    /// Reads once from the socket (blocking up to the timeout) into the read buffer.
    ///
    /// # Errors
    /// When the server closed the connection, the read failed, or nothing came in time.
    pub fn read_some(&mut self) -> Result<(), ConnError> {
        let max = self
            .limits
            .bulk_max_bytes
            .saturating_add(2 * READ_CHUNK_BYTES);
        if !self.read_buf.make_room(max) {
            // Many bulk strings in one aggregate: the codec bounds each, this the sum.
            return Err(self.unexpected("any command", format!("a reply longer than {max} bytes")));
        }
        loop {
            match self.stream.read(self.read_buf.free()) {
                Ok(0) => {
                    return Err(ConnError::Closed {
                        addr: self.addr.clone(),
                    });
                }
                Ok(n) => {
                    self.read_buf.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ConnError::Timeout {
                        addr: self.addr.clone(),
                        timeout_ms: self.timeout.unwrap_or_default().as_millis(),
                    });
                }
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Waits for the next reply (of a command sent before).
    ///
    /// # Errors
    /// As [`Self::read_some`] and [`Self::take_reply`].
    pub fn read_reply(&mut self) -> Result<Reply<'_>, ConnError> {
        // Learn that a reply is whole first, then decode it again to hand it out: a reply
        // returned from inside the read loop would keep the buffer borrowed across the reads.
        while !self.reply_ready()? {
            self.read_some()?;
        }
        let limits = &self.limits;
        match self.read_buf.take(|pending| parse_reply(pending, limits)) {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(ConnError::Closed {
                addr: self.addr.clone(),
            }),
            Err(source) => Err(malformed(&self.addr, source)),
        }
    }

    /// Sends one command and waits for its reply (an error reply is a reply, not an `Err`).
    ///
    /// # Errors
    /// As [`Self::flush`] and [`Self::read_reply`].
    ///
    /// # Panics
    /// When replies to pipelined requests are still unread (a bug in the caller).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply<'_>, ConnError> {
        assert!(
            self.read_buf.pending().is_empty(),
            "a blocking command on a connection with unread replies would read the wrong one"
        );
        self.queue(args);
        self.flush()?;
        self.read_reply()
    }

    /// Sends one command whose reply may be a bulk string too large to hold: returns
    /// [`Head::Bulk`] with its length, at most `bulk_max_bytes`, leaving the body and its CRLF
    /// to be read from [`Self::into_body`]; any other reply is decoded whole.
    ///
    /// # Errors
    /// As [`Self::command`], and a bulk string longer than `bulk_max_bytes`.
    pub fn command_streamed(
        &mut self,
        args: &[&[u8]],
        bulk_max_bytes: u64,
    ) -> Result<Head<'_>, ConnError> {
        self.queue(args);
        self.flush()?;
        // As in `read_reply`: learn that the head is whole, then decode it again to hand it out.
        loop {
            match parse_head(self.read_buf.pending(), &self.limits, bulk_max_bytes) {
                Ok(Some(_)) => break,
                Ok(None) => self.read_some()?,
                Err(source) => return Err(malformed(&self.addr, source)),
            }
        }
        let limits = &self.limits;
        match self
            .read_buf
            .take(|pending| parse_head(pending, limits, bulk_max_bytes))
        {
            Ok(Some(head)) => Ok(head),
            Ok(None) => Err(ConnError::Closed {
                addr: self.addr.clone(),
            }),
            Err(source) => Err(malformed(&self.addr, source)),
        }
    }

    /// The rest of the byte stream after a [`Head::Bulk`]: what was read past the head, then
    /// the socket.
    #[must_use]
    pub fn into_body(mut self) -> impl Read {
        let buffered = self.read_buf.pending().to_vec();
        io::Cursor::new(buffered).chain(self.stream)
    }

    /// The error for an unexpected reply to `command`.
    #[must_use]
    pub fn unexpected(&self, command: &'static str, reply: String) -> ConnError {
        ConnError::Unexpected {
            addr: self.addr.clone(),
            command,
            reply,
        }
    }

    /// Whether a whole reply has arrived.
    fn reply_ready(&mut self) -> Result<bool, ConnError> {
        match parse_reply(self.read_buf.pending(), &self.limits) {
            Ok(found) => Ok(found.is_some()),
            Err(source) => Err(malformed(&self.addr, source)),
        }
    }

    fn io_error(&self, source: io::Error) -> ConnError {
        ConnError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

fn malformed(addr: &str, source: ReplyError) -> ConnError {
    ConnError::Malformed {
        addr: addr.to_owned(),
        source,
    }
}

/// Received bytes: `bytes[start..end]` are not yet taken.
#[derive(Debug)]
struct ReadBuffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of the value last handed out, dropped at the next call (the value borrowed them
    /// until then).
    handed_out: usize,
}

impl ReadBuffer {
    /// The bytes not yet taken.
    fn pending(&mut self) -> &[u8] {
        self.settle();
        self.bytes.get(self.start..self.end).unwrap_or_default()
    }

    /// The room after the bytes received.
    fn free(&mut self) -> &mut [u8] {
        self.bytes.get_mut(self.end..).unwrap_or_default()
    }

    /// Decodes a value from the pending bytes with `parse` (which says how many it took) and
    /// hands it out; the bytes are dropped at the next call.
    fn take<'a, T>(
        &'a mut self,
        parse: impl FnOnce(&'a [u8]) -> Result<Option<(T, usize)>, ReplyError>,
    ) -> Result<Option<T>, ReplyError> {
        self.settle();
        let pending = self.bytes.get(self.start..self.end).unwrap_or_default();
        let Some((value, used)) = parse(pending)? else {
            return Ok(None);
        };
        self.handed_out = used;
        Ok(Some(value))
    }

    /// Drops the bytes of the value last handed out.
    fn settle(&mut self) {
        self.start += std::mem::take(&mut self.handed_out);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for one more read: moves undecoded bytes to the front, or grows up to `max` bytes;
    /// false when the buffer is full at `max`.
    fn make_room(&mut self, max: usize) -> bool {
        self.settle();
        if self.bytes.len() - self.end >= READ_CHUNK_BYTES / 4 {
            return true;
        }
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.bytes.len() - self.end < READ_CHUNK_BYTES / 4 {
            let grown = self.bytes.len().saturating_mul(2).min(max);
            if grown <= self.bytes.len() {
                return false;
            }
            self.bytes.resize(grown, 0);
        }
        true
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use std::net::TcpListener;

    use super::*;

    /// A server that answers with `script`, sent in pieces of `piece` bytes.
    fn serve(script: &'static [u8], piece: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).unwrap();
            for chunk in script.chunks(piece) {
                stream.write_all(chunk).unwrap();
                stream.flush().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        addr
    }

    fn connect(addr: &str) -> Connection {
        Connection::connect(addr, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn replies_arriving_in_pieces_are_reassembled_in_order() {
        let addr = serve(b"$13\r\nrole:master\r\n\r\n+OK\r\n", 3);
        let mut con = connect(&addr);
        con.queue(&[b"INFO"]);
        con.queue(&[b"PING"]);
        con.flush().unwrap();
        assert_eq!(
            con.read_reply().unwrap(),
            Reply::Bulk(Some(b"role:master\r\n"))
        );
        assert_eq!(con.read_reply().unwrap(), Reply::Simple(b"OK"));
    }

    #[test]
    fn error_and_malformed_replies_are_told_apart() {
        let addr = serve(b"-READONLY no writes here\r\n", 64);
        let reply = connect(&addr)
            .command(&[b"SET", b"k", b"v"])
            .unwrap()
            .describe();
        assert_eq!(reply, "-READONLY no writes here");

        let addr = serve(b"$3\r\nabcXY", 64);
        let e = connect(&addr).command(&[b"GET", b"k"]).unwrap_err();
        assert!(matches!(e, ConnError::Malformed { .. }), "{e}");

        let addr = serve(b"$3\r\nab", 64);
        let e = connect(&addr).command(&[b"GET", b"k"]).unwrap_err();
        assert!(matches!(e, ConnError::Closed { .. }), "{e}");
    }

    #[test]
    fn a_streamed_bulk_body_is_read_after_its_head() {
        let addr = serve(b"$11\r\nhello world\r\n", 6);
        let mut con = connect(&addr);
        assert_eq!(
            con.command_streamed(&[b"SHIPLOG.SNAPSHOT"], 11).unwrap(),
            Head::Bulk(11)
        );
        let mut body = Vec::new();
        con.into_body().read_to_end(&mut body).unwrap();
        assert_eq!(body, b"hello world\r\n");

        let addr = serve(b"$12\r\nhello world!\r\n", 64);
        let e = connect(&addr)
            .command_streamed(&[b"SHIPLOG.SNAPSHOT"], 11)
            .unwrap_err();
        assert!(e.to_string().contains("longer than the bound of 11"), "{e}");
    }

    #[test]
    fn nobody_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = Connection::connect(&addr, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().starts_with("cannot connect to"), "{e}");
        let e = Connection::connect("no-port-here", Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().starts_with("cannot resolve"), "{e}");
    }
}
