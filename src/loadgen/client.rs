//! A small blocking RESP client: only what the load generator sends (`SET`, `GET`, `INFO`,
//! `REPLICAOF`), pipelined through one write buffer, replies decoded strictly from one read
//! buffer. The socket stays blocking; a caller that waits on several connections at once
//! polls their descriptors first (see `workload`), so a read here never waits past a send
//! that falls due.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::error::LoadError;
use super::resp::{BULK_MAX_BYTES, Reply, encode_command, parse_reply};

/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Largest read buffer: one largest bulk reply and one read beyond it.
const READ_BUFFER_MAX_BYTES: usize = BULK_MAX_BYTES + 2 * READ_CHUNK_BYTES;

/// One connection to a RESP server.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    addr: String,
    /// Received bytes: `read_buf[start..end]` are not yet decoded.
    read_buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Requests queued since the last flush.
    write_buf: Vec<u8>,
    timeout: Duration,
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`); `timeout` bounds the connect and every later read and
    /// write, so a stalled server fails the run instead of hanging it.
    ///
    /// # Errors
    /// When the address does not resolve or no address accepts the connection.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, LoadError> {
        let io_error = |source| LoadError::Io {
            addr: addr.to_owned(),
            source,
        };
        let mut last = None;
        for resolved in addr.to_socket_addrs().map_err(io_error)? {
            match TcpStream::connect_timeout(&resolved, timeout) {
                Ok(stream) => {
                    // Requests are flushed whole; Nagle would only hold the next pipeline back.
                    stream.set_nodelay(true).map_err(io_error)?;
                    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
                    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
                    return Ok(Self {
                        stream,
                        addr: addr.to_owned(),
                        read_buf: vec![0; READ_CHUNK_BYTES],
                        start: 0,
                        end: 0,
                        write_buf: Vec::new(),
                        timeout,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(io_error(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
        })))
    }

    /// The server's address, as given.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
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
    pub fn flush(&mut self) -> Result<(), LoadError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf);
        self.write_buf.clear();
        result.map_err(|e| self.io_error(e))
    }

    /// Decodes the next reply if it has fully arrived, hands it to `f` and consumes it.
    ///
    /// # Errors
    /// When the received bytes are not a valid reply.
    pub fn take_reply<R>(
        &mut self,
        f: impl FnOnce(Reply<'_>) -> R,
    ) -> Result<Option<R>, LoadError> {
        match parse_reply(&self.read_buf[self.start..self.end]) {
            Ok(Some((reply, used))) => {
                let out = f(reply);
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Some(out))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(LoadError::Malformed {
                addr: self.addr.clone(),
                source,
            }),
        }
    }

    /// Reads once from the socket (blocking up to the timeout) into the read buffer.
    ///
    /// # Errors
    /// When the server closed the connection, the read failed, or nothing came in time.
    pub fn read_some(&mut self) -> Result<(), LoadError> {
        self.make_room()?;
        loop {
            match self.stream.read(&mut self.read_buf[self.end..]) {
                Ok(0) => {
                    return Err(LoadError::Closed {
                        addr: self.addr.clone(),
                    });
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(LoadError::Timeout {
                        addr: self.addr.clone(),
                        timeout_ms: self.timeout.as_millis(),
                    });
                }
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Sends one command and waits for its reply, which `f` inspects.
    ///
    /// # Errors
    /// As [`Self::flush`], [`Self::read_some`] and [`Self::take_reply`].
    ///
    /// # Panics
    /// When replies to pipelined requests are still unread (a bug in the caller).
    pub fn command<R>(
        &mut self,
        args: &[&[u8]],
        f: impl FnOnce(Reply<'_>) -> R,
    ) -> Result<R, LoadError> {
        assert!(
            self.start == self.end,
            "a blocking command on a connection with unread replies would read the wrong one"
        );
        self.queue(args);
        self.flush()?;
        while !self.reply_ready()? {
            self.read_some()?;
        }
        match self.take_reply(f)? {
            Some(out) => Ok(out),
            None => unreachable!("a reply found complete is taken whole"),
        }
    }

    /// Whether a whole reply has arrived.
    fn reply_ready(&self) -> Result<bool, LoadError> {
        match parse_reply(&self.read_buf[self.start..self.end]) {
            Ok(found) => Ok(found.is_some()),
            Err(source) => Err(LoadError::Malformed {
                addr: self.addr.clone(),
                source,
            }),
        }
    }

    /// `SET key value`, which must answer `+OK`.
    ///
    /// # Errors
    /// On any other reply, or as [`Self::command`].
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
        let ok = self.command(&[b"SET", key, value], |reply| match reply {
            Reply::Status(b"OK") => Ok(()),
            other => Err(other.describe()),
        })?;
        ok.map_err(|reply| self.unexpected("SET", reply))
    }

    /// `GET key`: whether the value there is `expected` (false for a missing key or another
    /// value).
    ///
    /// # Errors
    /// On an error reply or a reply that is not a bulk string, or as [`Self::command`].
    pub fn get_is(&mut self, key: &[u8], expected: &[u8]) -> Result<bool, LoadError> {
        let is = self.command(&[b"GET", key], |reply| match reply {
            Reply::Bulk(value) => Ok(value == Some(expected)),
            other => Err(other.describe()),
        })?;
        is.map_err(|reply| self.unexpected("GET", reply))
    }

    /// `INFO section`: the text of the reply.
    ///
    /// # Errors
    /// On a reply that is not a bulk string, or as [`Self::command`].
    pub fn info(&mut self, section: &str) -> Result<String, LoadError> {
        let text = self.command(&[b"INFO", section.as_bytes()], |reply| match reply {
            Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(text).into_owned()),
            other => Err(other.describe()),
        })?;
        text.map_err(|reply| self.unexpected("INFO", reply))
    }

    /// `REPLICAOF host port`: the node starts following that primary.
    ///
    /// # Errors
    /// On an error reply, or as [`Self::command`].
    pub fn replicaof(&mut self, primary: &str) -> Result<(), LoadError> {
        let (host, port) = primary
            .rsplit_once(':')
            .ok_or_else(|| LoadError::Options(format!("{primary} is not HOST:PORT")))?;
        let ok = self.command(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()], |reply| {
            match reply {
                // `OK`, or `OK Already connected to specified master`.
                Reply::Status(status) if status.starts_with(b"OK") => Ok(()),
                other => Err(other.describe()),
            }
        })?;
        ok.map_err(|reply| self.unexpected("REPLICAOF", reply))
    }

    /// The error for an unexpected reply to `command`.
    #[must_use]
    pub fn unexpected(&self, command: &'static str, reply: String) -> LoadError {
        LoadError::Unexpected {
            addr: self.addr.clone(),
            command,
            reply,
        }
    }

    fn io_error(&self, source: io::Error) -> LoadError {
        LoadError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Room for one more read: move undecoded bytes to the front, or grow up to the bound.
    fn make_room(&mut self) -> Result<(), LoadError> {
        if self.read_buf.len() - self.end >= READ_CHUNK_BYTES / 4 {
            return Ok(());
        }
        if self.start > 0 {
            self.read_buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.read_buf.len() - self.end < READ_CHUNK_BYTES / 4 {
            let grown = (self.read_buf.len() * 2).min(READ_BUFFER_MAX_BYTES);
            if grown <= self.read_buf.len() {
                // The parser refuses any reply this large first; this is the last line.
                return Err(self.unexpected(
                    "any command",
                    format!("a reply longer than {READ_BUFFER_MAX_BYTES} bytes"),
                ));
            }
            self.read_buf.resize(grown, 0);
        }
        Ok(())
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// The value of `field` in an `INFO` text (`field:value` lines).
#[must_use]
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim_end)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use std::net::TcpListener;

    use super::*;

    #[test]
    fn info_fields_are_found_by_their_whole_name() {
        let info =
            "# Replication\r\nrole:slave\r\nreplica_applied_lsn:42\r\nreplica_applied_lsn_x:7\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "replica_applied_lsn"), Some("42"));
        assert_eq!(info_field(info, "replica_applied"), None);
        assert_eq!(info_field(info, "missing"), None);
    }

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

    #[test]
    fn a_reply_arriving_in_pieces_is_reassembled() {
        let addr = serve(b"$13\r\nrole:master\r\n\r\n", 3);
        let mut con = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        assert_eq!(con.info("replication").unwrap(), "role:master\r\n");
    }

    #[test]
    fn error_and_malformed_replies_are_errors_not_panics() {
        let addr = serve(b"-READONLY no writes here\r\n", 64);
        let mut con = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = con.set(b"k", b"v").unwrap_err();
        assert!(e.to_string().contains("READONLY"), "{e}");

        let addr = serve(b"$3\r\nabcXY", 64);
        let mut con = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = con.get_is(b"k", b"abc").unwrap_err();
        assert!(matches!(e, LoadError::Malformed { .. }), "{e}");

        let addr = serve(b"$3\r\nab", 64);
        let mut con = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = con.get_is(b"k", b"abc").unwrap_err();
        assert!(matches!(e, LoadError::Closed { .. }), "{e}");
    }
}
