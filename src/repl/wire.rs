//! Frames over a blocking socket: reads whole frames into a reusable buffer, checking each
//! frame's header before waiting for (or allocating) its body.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::error::ReplError;
use crate::format::repl::{Frame, decode_frame, encode_frame};

/// Initial size of the read buffer; it grows to the largest frame received.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// What frames travel over: a socket, or a file of frames kept for later.
trait Channel: Read + Write + Send + std::fmt::Debug {}

impl<T: Read + Write + Send + std::fmt::Debug> Channel for T {}

/// A socket carrying shipping frames.
#[derive(Debug)]
pub struct FrameStream {
    stream: Box<dyn Channel>,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

impl FrameStream {
    /// Wraps `stream`; `received` are bytes already read from it (after the handshake command).
    #[must_use]
    pub fn new(stream: TcpStream, received: &[u8]) -> Self {
        let mut buffer = vec![0; READ_BUFFER_BYTES.max(received.len())];
        buffer[..received.len()].copy_from_slice(received);
        Self {
            stream: Box::new(stream),
            buffer,
            start: 0,
            end: received.len(),
            out: Vec::new(),
        }
    }

    /// Reads frames from a file of frames (the log buffered during a snapshot transfer).
    #[must_use]
    pub fn from_file(file: std::fs::File) -> Self {
        Self {
            stream: Box::new(file),
            buffer: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
            out: Vec::new(),
        }
    }

    /// Reads the next frame.
    ///
    /// # Errors
    /// A bad frame, end of stream, or socket errors (a read timeout among them).
    pub fn read_frame(&mut self) -> Result<Frame<'_>, ReplError> {
        match self.next_frame(false)? {
            Some(frame) => Ok(frame),
            None => unreachable!("end of stream is an error here"),
        }
    }

    /// Reads the next frame, or `None` at the end of the stream between frames.
    ///
    /// # Errors
    /// A bad frame, a stream that ends inside a frame, or read errors.
    pub fn read_frame_or_end(&mut self) -> Result<Option<Frame<'_>>, ReplError> {
        self.next_frame(true)
    }

    fn next_frame(&mut self, end_ok: bool) -> Result<Option<Frame<'_>>, ReplError> {
        let len = loop {
            if let Some((_, len)) = decode_frame(&self.buffer[self.start..self.end])? {
                break len;
            }
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buffer.len() {
                // The header was checked (length within its type's bound): safe to grow.
                let grown = self.buffer.len() * 2;
                self.buffer.resize(grown, 0);
            }
            let n = match self.stream.read(&mut self.buffer[self.end..]) {
                Ok(n) => n,
                // A signal (say the SIGCONT after a SIGSTOP) interrupted the read: nothing was
                // lost, read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 && end_ok && self.start == self.end {
                return Ok(None);
            }
            if n == 0 {
                return Err(ReplError::Io(std::sync::Arc::new(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )));
            }
            self.end += n;
        };
        let at = self.start;
        self.start += len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // Decoded twice (the CRC runs twice): the borrow of the buffer cannot outlive the loop.
        match decode_frame(&self.buffer[at..at + len])? {
            Some((frame, _)) => Ok(Some(frame)),
            None => unreachable!("a whole frame decoded a moment ago"),
        }
    }

    /// Queues `frame` for [`FrameStream::flush`].
    pub fn queue(&mut self, frame: &Frame<'_>) {
        encode_frame(&mut self.out, frame);
    }

    /// Writes every queued frame.
    ///
    /// # Errors
    /// Socket errors (a write timeout among them).
    pub fn flush(&mut self) -> Result<(), ReplError> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        if self.out.capacity() > 8 << 20 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Writes one frame now.
    ///
    /// # Errors
    /// Socket errors.
    pub fn send(&mut self, frame: &Frame<'_>) -> Result<(), ReplError> {
        self.queue(frame);
        self.flush()
    }
}
