//! Frames of the log-shipping protocol between a primary and its replicas (`docs/format.md`,
//! "Wire: log shipping"). Pure code: bytes in, frames out; fuzzed as `repl_frame`.
//!
//! Every frame is `[magic "SF": 2][type: 1][flags: 1][body_len: 4][crc32: 4][body]`, little
//! endian; the CRC covers the type, flags, length and body, so a damaged or misaligned frame
//! is never taken for another. `body_len` is checked against [`FRAME_BODY_MAX`] (and against
//! the type's own size) before anything is allocated for it.
//!
//! Records travel as byte ranges of the primary's segment files, exactly as they are on disk:
//! the replica writes them at the same offsets of a segment with the same header, so its copy
//! is byte-identical, and it checks every record's own CRC before it uses it.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::epochs::{EPOCH_WIRE_BYTES, EPOCHS_MAX, EpochHistory};
use super::{Epoch, Lsn, SEGMENT_HEADER_BYTES};

/// First bytes of every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"SF";
/// Bytes before a frame's body.
pub const FRAME_HEADER_BYTES: usize = 12;
/// Largest segment byte range one frame carries.
pub const SEGMENT_BYTES_MAX: usize = 4 << 20;
/// Largest frame body: a segment byte range plus its fixed fields.
pub const FRAME_BODY_MAX: usize = SEGMENT_BYTES_MAX + 24;
/// Magic at the start of a replica's hello.
pub const HELLO_MAGIC: [u8; 8] = *b"SHPLREPL";
/// The shipping protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest segment offset a frame may name (a segment holds at most one 1 GiB record beyond
/// its rotation size; 1 TiB is far past any real one and keeps a hostile peer from making the
/// receiver write at absurd offsets).
pub const SEGMENT_OFFSET_MAX: u64 = 1 << 40;
/// Longest reason text of a refusal.
pub const REASON_MAX_BYTES: usize = 1024;
/// Smallest segment file a peer may announce (the log's smallest rotation size).
pub const SEGMENT_CAPACITY_MIN: u64 = 4096;

const HELLO_BYTES: usize = 72;
const FENCE_BYTES: usize = 8;
/// Bytes of one peer in a peers frame.
pub const PEER_BYTES: usize = 44;
/// Most peers a peers frame lists.
pub const PEERS_MAX: usize = 64;
/// Smallest snapshot file: header, an empty zstd frame, trailer.
const SNAPSHOT_MIN_FILE_BYTES: u64 =
    (SNAPSHOT_HEADER_BYTES + super::snapshot::SNAPSHOT_TRAILER_BYTES) as u64;
const WELCOME_BYTES: usize = 40;
const HEARTBEAT_BYTES: usize = 32;
const ACK_BYTES: usize = 32;
/// Size of an authentication nonce and of a proof.
pub const AUTH_BYTES: usize = 32;

/// Frame type bytes.
mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REFUSE: u8 = 3;
    pub const SEGMENT_HEADER: u8 = 4;
    pub const SEGMENT_BYTES: u8 = 5;
    pub const HEARTBEAT: u8 = 6;
    pub const ACK: u8 = 7;
    pub const AUTH: u8 = 8;
    pub const SNAPSHOT_OFFER: u8 = 9;
    pub const SNAPSHOT_RESUME: u8 = 10;
    pub const SNAPSHOT_BYTES: u8 = 11;
    pub const HISTORY: u8 = 12;
    pub const FENCE: u8 = 13;
    pub const PEERS: u8 = 14;
}

/// Bytes of a snapshot file's header, as carried by a snapshot offer.
pub const SNAPSHOT_HEADER_BYTES: usize = super::snapshot::SNAPSHOT_HEADER_BYTES;
/// Largest snapshot file a primary may offer: its declared body cap, twice over (zstd never
/// grows incompressible data by that much), plus header and trailer.
pub const SNAPSHOT_FILE_MAX_BYTES: u64 = 2 * super::snapshot::SNAPSHOT_UNCOMPRESSED_MAX_BYTES;

/// A replica introducing itself (the first frame it sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the replica speaks.
    pub version: u16,
    /// The cluster whose log the replica holds (0: an empty replica that has none yet).
    pub cluster_id: u128,
    /// The replica's own identity, stable across its restarts.
    pub replica_id: u128,
    /// The last LSN the replica holds durably (0: none).
    pub last_lsn: Lsn,
    /// The epoch of that record.
    pub last_epoch: Epoch,
    /// The port the replica serves clients on (for `ROLE` and `INFO replication`).
    pub listen_port: u16,
    /// The replica's log digest at `last_lsn` (`format::digest`; 0: none, say for a
    /// compacted segment), so the primary checks more than one record's epoch.
    pub last_digest: u64,
    /// The highest epoch the replica knows of: a primary of an older epoch was replaced and
    /// steps down.
    pub highest_epoch: Epoch,
}

/// One replica of the sender's primary, as a peers frame lists it: who the others are and how
/// far they are, so a replica asked to take over can tell whether one of them is further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The replica's identity.
    pub replica_id: u128,
    /// Its address as the primary sees it (IPv4 as an IPv4-mapped IPv6 address).
    pub ip: std::net::Ipv6Addr,
    /// The port it serves clients on.
    pub port: u16,
    /// The last LSN it acknowledged as durable.
    pub durable_lsn: Lsn,
}

/// The primary accepting a replica: shipping starts after `start_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version both sides speak.
    pub version: u16,
    /// The primary's cluster.
    pub cluster_id: u128,
    /// The primary's current epoch.
    pub epoch: Epoch,
    /// The primary's durable LSN when it accepted.
    pub durable_lsn: Lsn,
    /// Records after this LSN follow.
    pub start_after: Lsn,
}

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum RefuseCode {
    /// The replica holds another cluster's log.
    ClusterMismatch = 1,
    /// The protocol versions have nothing in common.
    Version = 2,
    /// The replica needs records the primary no longer keeps (it needs a snapshot).
    NeedsSnapshot = 3,
    /// The replica holds records the primary does not have (a diverged history).
    Diverged = 4,
    /// Authentication failed or was missing.
    Auth = 5,
    /// Anything else (see the reason).
    Other = 6,
    /// The peer is of an older epoch than one this node has seen (a replaced primary).
    StaleEpoch = 7,
}

impl RefuseCode {
    fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::ClusterMismatch,
            2 => Self::Version,
            3 => Self::NeedsSnapshot,
            4 => Self::Diverged,
            5 => Self::Auth,
            6 => Self::Other,
            7 => Self::StaleEpoch,
            _ => return None,
        })
    }
}

/// One frame, borrowing its variable-size parts from the decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Replica → primary: who I am and what I have.
    Hello(Hello),
    /// Primary → replica: accepted.
    Welcome(Welcome),
    /// Either way: refused, with a reason for the operator.
    Refuse {
        /// Machine-readable cause.
        code: RefuseCode,
        /// Text for the log (UTF-8, at most [`REASON_MAX_BYTES`]).
        reason: &'a str,
    },
    /// Primary → replica: a segment starts; its 64-byte header, as on the primary's disk, and
    /// the size of its file there (a batch bigger than the rotation size gets a bigger file).
    SegmentHeader {
        /// The header bytes.
        header: &'a [u8; SEGMENT_HEADER_BYTES],
        /// The segment file's size on the primary, at least 4 KiB and at most 1 TiB.
        capacity: u64,
    },
    /// Primary → replica: bytes of a segment, at an offset, all of records durable on the
    /// primary. A record larger than a frame spans several; `last_lsn` names the last record
    /// that ends within these bytes (0 when none does).
    SegmentBytes {
        /// `first_lsn` of the segment (its name).
        segment: Lsn,
        /// Offset of `bytes` in the segment file.
        offset: u64,
        /// LSN of the last record that ends in `bytes`, or 0.
        last_lsn: Lsn,
        /// The records, as on disk.
        bytes: &'a [u8],
    },
    /// Primary → replica: liveness and progress, when idle and between batches.
    Heartbeat {
        /// The primary's durable LSN.
        durable_lsn: Lsn,
        /// The primary's clock, microseconds since the Unix epoch.
        clock_micros: u64,
        /// An LSN and the primary's running log digest there (0, 0: none yet).
        digest_lsn: Lsn,
        /// See `digest_lsn`.
        digest: u64,
    },
    /// Either way, before the hello when the primary has a password: a fresh nonce and a
    /// proof of knowing the password (an HMAC over both sides' nonces; the password itself
    /// never travels).
    Auth {
        /// The sender's nonce.
        nonce: &'a [u8; AUTH_BYTES],
        /// The sender's proof.
        proof: &'a [u8; AUTH_BYTES],
    },
    /// Primary → replica, instead of a welcome: the replica must be bootstrapped from this
    /// snapshot (its header, as in the file, and the file's size); the replica answers with
    /// [`Frame::SnapshotResume`].
    SnapshotOffer {
        /// The snapshot file's header.
        header: &'a [u8; SNAPSHOT_HEADER_BYTES],
        /// Bytes of the whole file.
        file_bytes: u64,
    },
    /// Replica → primary: send the offered snapshot from this byte on (what the replica kept
    /// of the same snapshot from an interrupted transfer, or 0).
    SnapshotResume {
        /// First byte wanted.
        offset: u64,
    },
    /// Primary → replica: bytes of the offered snapshot file, in order; after the last, a
    /// welcome follows and the log is shipped from just after the snapshot's LSN.
    SnapshotBytes {
        /// Offset of `bytes` in the file.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Primary → replica, before a welcome and before a refusal of a diverged replica: the
    /// primary's epoch history in wire form (`format::epochs`), checked when decoded.
    History {
        /// `[epoch: u32][start_lsn: u64]` per epoch, oldest first.
        entries: &'a [u8],
    },
    /// Either way: a node of this epoch exists; a primary of an older one must step down.
    Fence {
        /// The epoch.
        epoch: Epoch,
    },
    /// Primary → replica: the primary's other replicas, `PEER_BYTES` each, at most
    /// [`PEERS_MAX`]; decode them with [`peers`].
    Peers {
        /// The peers, encoded.
        entries: &'a [u8],
    },
    /// Replica → primary: progress (the write, flush and replay positions of `PostgreSQL`).
    Ack {
        /// Last LSN received and written.
        received: Lsn,
        /// Last LSN durable on the replica.
        durable: Lsn,
        /// Last LSN applied and visible to readers on the replica.
        applied: Lsn,
        /// The replica's clock, microseconds since the Unix epoch.
        clock_micros: u64,
    },
}

/// Why bytes are not a valid frame; the connection is dropped with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream does not start with a frame (wrong protocol, or lost alignment).
    #[error("bad frame magic {0:02x?}: the peer does not speak the shiplog shipping protocol")]
    BadMagic([u8; 2]),
    /// An unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Flags this version does not define.
    #[error("frame flags {0:#x} are not defined by this version")]
    BadFlags(u8),
    /// A body longer than the limit, or of the wrong size for its type.
    #[error("frame type {kind} with a body of {len} bytes (allowed: {allowed})")]
    BadLength {
        /// Frame type.
        kind: u8,
        /// Declared length.
        len: u64,
        /// What the type allows.
        allowed: &'static str,
    },
    /// The checksum does not match.
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A field has an invalid value.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

fn allowed(kind: u8) -> Option<(usize, usize, &'static str)> {
    Some(match kind {
        kind::HELLO => (HELLO_BYTES, HELLO_BYTES, "exactly 72"),
        kind::HISTORY => (
            EPOCH_WIRE_BYTES,
            EPOCH_WIRE_BYTES * EPOCHS_MAX,
            "12 to 786432, a multiple of 12",
        ),
        kind::FENCE => (FENCE_BYTES, FENCE_BYTES, "exactly 8"),
        kind::PEERS => (0, PEER_BYTES * PEERS_MAX, "0 to 2816, a multiple of 44"),
        kind::WELCOME => (WELCOME_BYTES, WELCOME_BYTES, "exactly 40"),
        kind::REFUSE => (2, 2 + REASON_MAX_BYTES, "2 to 1026"),
        kind::SEGMENT_HEADER => (
            SEGMENT_HEADER_BYTES + 8,
            SEGMENT_HEADER_BYTES + 8,
            "exactly 72",
        ),
        kind::SEGMENT_BYTES => (25, FRAME_BODY_MAX, "25 to 4 MiB + 24"),
        kind::HEARTBEAT => (HEARTBEAT_BYTES, HEARTBEAT_BYTES, "exactly 32"),
        kind::ACK => (ACK_BYTES, ACK_BYTES, "exactly 32"),
        kind::AUTH => (2 * AUTH_BYTES, 2 * AUTH_BYTES, "exactly 64"),
        kind::SNAPSHOT_OFFER => (
            SNAPSHOT_HEADER_BYTES + 8,
            SNAPSHOT_HEADER_BYTES + 8,
            "exactly 72",
        ),
        kind::SNAPSHOT_RESUME => (8, 8, "exactly 8"),
        kind::SNAPSHOT_BYTES => (9, 8 + SEGMENT_BYTES_MAX, "9 to 4 MiB + 8"),
        _ => return None,
    })
}

/// Decodes the frame at the start of `bytes`: `Ok(None)` if more bytes are needed (the header
/// is then already checked, so the caller may wait for the declared length safely), else the
/// frame and the bytes it took.
///
/// # Errors
/// Bad magic, unknown type or flags, a length out of bounds, a checksum mismatch, or an
/// invalid field.
pub fn decode_frame(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
        // Check what is there already, so garbage is refused without waiting for more.
        if let Some(&magic) = bytes.first_chunk::<2>()
            && magic != FRAME_MAGIC
        {
            return Err(FrameError::BadMagic(magic));
        }
        return Ok(None);
    };
    if header[..2] != FRAME_MAGIC {
        return Err(FrameError::BadMagic([header[0], header[1]]));
    }
    let kind = header[2];
    let flags = header[3];
    let (min, max, text) = allowed(kind).ok_or(FrameError::UnknownType(kind))?;
    if flags != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    let len = LE::read_u32(&header[4..8]) as usize;
    if len < min || len > max {
        return Err(FrameError::BadLength {
            kind,
            len: len as u64,
            allowed: text,
        });
    }
    let end = FRAME_HEADER_BYTES + len;
    let Some(body) = bytes.get(FRAME_HEADER_BYTES..end) else {
        return Ok(None);
    };
    let stored = LE::read_u32(&header[8..12]);
    let computed = frame_crc(&header[2..8], body);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(Some((decode_body(kind, body)?, end)))
}

fn frame_crc(header: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(body);
    hasher.finalize()
}

/// The body of a fixed-size frame as an array. [`allowed`] has already checked its length,
/// so the error is never returned; it keeps the decoder free of panics all the same.
fn fixed<const N: usize>(body: &[u8]) -> Result<&[u8; N], FrameError> {
    body.try_into()
        .map_err(|_| FrameError::Invalid("frame body size"))
}

/// The body after its first `N` bytes, which [`allowed`] guarantees (see [`fixed`]).
fn split_fixed<const N: usize>(body: &[u8]) -> Result<(&[u8; N], &[u8]), FrameError> {
    body.split_first_chunk()
        .ok_or(FrameError::Invalid("frame body size"))
}

fn decode_body(kind: u8, body: &[u8]) -> Result<Frame<'_>, FrameError> {
    Ok(match kind {
        kind::HELLO => decode_hello(fixed(body)?)?,
        kind::HISTORY | kind::FENCE | kind::PEERS => decode_failover_frame(kind, body)?,
        kind::WELCOME => decode_welcome(fixed(body)?)?,
        kind::REFUSE => {
            let (code, reason) = split_fixed::<2>(body)?;
            Frame::Refuse {
                code: RefuseCode::from_u16(LE::read_u16(code))
                    .ok_or(FrameError::Invalid("unknown refusal code"))?,
                reason: std::str::from_utf8(reason)
                    .map_err(|_| FrameError::Invalid("refusal reason is not UTF-8"))?,
            }
        }
        kind::SEGMENT_HEADER => decode_segment_header(body)?,
        kind::AUTH => {
            let (nonce, proof) = split_fixed::<AUTH_BYTES>(body)?;
            Frame::Auth {
                nonce,
                proof: proof
                    .try_into()
                    .map_err(|_| FrameError::Invalid("auth frame size"))?,
            }
        }
        kind::SEGMENT_BYTES => {
            let (fixed, bytes) = split_fixed::<24>(body)?;
            let segment = lsn(&fixed[0..8])?;
            let offset = LE::read_u64(&fixed[8..16]);
            let last_lsn = lsn(&fixed[16..24])?;
            if segment == 0 || (last_lsn != 0 && last_lsn < segment) {
                return Err(FrameError::Invalid(
                    "segment bytes with an LSN before their segment",
                ));
            }
            if offset < SEGMENT_HEADER_BYTES as u64
                || offset
                    .checked_add(body.len() as u64)
                    .is_none_or(|end| end > SEGMENT_OFFSET_MAX)
            {
                return Err(FrameError::Invalid(
                    "segment bytes outside the header-to-1-TiB range of a segment",
                ));
            }
            Frame::SegmentBytes {
                segment,
                offset,
                last_lsn,
                bytes,
            }
        }
        kind::SNAPSHOT_OFFER | kind::SNAPSHOT_RESUME | kind::SNAPSHOT_BYTES => {
            decode_snapshot_frame(kind, body)?
        }
        kind::HEARTBEAT => decode_heartbeat(fixed(body)?)?,
        _ => {
            debug_assert_eq!(kind, kind::ACK);
            decode_ack(fixed(body)?)?
        }
    })
}

fn decode_hello(body: &[u8; HELLO_BYTES]) -> Result<Frame<'_>, FrameError> {
    if body[..8] != HELLO_MAGIC {
        return Err(FrameError::Invalid("hello without the SHPLREPL magic"));
    }
    if body[10..12] != [0, 0] || body[58..60] != [0, 0] {
        return Err(FrameError::Invalid("reserved hello bytes are not zero"));
    }
    Ok(Frame::Hello(Hello {
        version: LE::read_u16(&body[8..10]),
        cluster_id: LE::read_u128(&body[12..28]),
        replica_id: LE::read_u128(&body[28..44]),
        last_lsn: lsn(&body[44..52])?,
        last_epoch: LE::read_u32(&body[52..56]),
        listen_port: LE::read_u16(&body[56..58]),
        last_digest: LE::read_u64(&body[60..68]),
        highest_epoch: LE::read_u32(&body[68..72]),
    }))
}

fn decode_welcome(body: &[u8; WELCOME_BYTES]) -> Result<Frame<'_>, FrameError> {
    if body[2..4] != [0, 0] {
        return Err(FrameError::Invalid("reserved welcome bytes are not zero"));
    }
    if LE::read_u64(&body[32..40]) > LE::read_u64(&body[24..32]) {
        return Err(FrameError::Invalid(
            "welcome starting after the durable LSN",
        ));
    }
    Ok(Frame::Welcome(Welcome {
        version: LE::read_u16(&body[0..2]),
        cluster_id: LE::read_u128(&body[4..20]),
        epoch: LE::read_u32(&body[20..24]),
        durable_lsn: lsn(&body[24..32])?,
        start_after: lsn(&body[32..40])?,
    }))
}

fn decode_heartbeat(body: &[u8; HEARTBEAT_BYTES]) -> Result<Frame<'_>, FrameError> {
    if LE::read_u64(&body[16..24]) == 0 && LE::read_u64(&body[24..32]) != 0 {
        return Err(FrameError::Invalid("heartbeat digest without an LSN"));
    }
    Ok(Frame::Heartbeat {
        durable_lsn: lsn(&body[0..8])?,
        clock_micros: LE::read_u64(&body[8..16]),
        digest_lsn: lsn(&body[16..24])?,
        digest: LE::read_u64(&body[24..32]),
    })
}

fn decode_failover_frame(kind: u8, body: &[u8]) -> Result<Frame<'_>, FrameError> {
    Ok(match kind {
        kind::HISTORY => {
            EpochHistory::from_wire(body).map_err(|_| {
                FrameError::Invalid("an epoch history out of order or of partial entries")
            })?;
            Frame::History { entries: body }
        }
        kind::FENCE => {
            let body = fixed::<FENCE_BYTES>(body)?;
            if body[4..8] != [0; 4] {
                return Err(FrameError::Invalid("reserved fence bytes are not zero"));
            }
            Frame::Fence {
                epoch: LE::read_u32(&body[0..4]),
            }
        }
        kind::PEERS => {
            let (entries, partial) = body.as_chunks::<PEER_BYTES>();
            if !partial.is_empty()
                || entries
                    .iter()
                    .any(|c| c[34..36] != [0, 0] || LE::read_u64(&c[36..44]) > super::LSN_MAX)
            {
                return Err(FrameError::Invalid(
                    "peers of partial entries, reserved bytes or LSNs out of range",
                ));
            }
            Frame::Peers { entries: body }
        }
        _ => unreachable!("called for failover frames only"),
    })
}

fn decode_ack(body: &[u8; ACK_BYTES]) -> Result<Frame<'_>, FrameError> {
    let (received, durable, applied) = (lsn(&body[0..8])?, lsn(&body[8..16])?, lsn(&body[16..24])?);
    if durable > received || applied > received {
        return Err(FrameError::Invalid(
            "ack with durable or applied past received",
        ));
    }
    Ok(Frame::Ack {
        received,
        durable,
        applied,
        clock_micros: LE::read_u64(&body[24..32]),
    })
}

fn decode_snapshot_frame(kind: u8, body: &[u8]) -> Result<Frame<'_>, FrameError> {
    Ok(match kind {
        kind::SNAPSHOT_OFFER => {
            let (header, file_bytes) = split_fixed::<SNAPSHOT_HEADER_BYTES>(body)?;
            let file_bytes = LE::read_u64(fixed::<8>(file_bytes)?);
            if !(SNAPSHOT_MIN_FILE_BYTES..=SNAPSHOT_FILE_MAX_BYTES).contains(&file_bytes) {
                return Err(FrameError::Invalid(
                    "snapshot file size outside what a snapshot can be",
                ));
            }
            Frame::SnapshotOffer { header, file_bytes }
        }
        kind::SNAPSHOT_RESUME => {
            let offset = LE::read_u64(fixed::<8>(body)?);
            if offset > SNAPSHOT_FILE_MAX_BYTES {
                return Err(FrameError::Invalid("snapshot offset beyond any snapshot"));
            }
            Frame::SnapshotResume { offset }
        }
        kind::SNAPSHOT_BYTES => {
            let (offset, bytes) = split_fixed::<8>(body)?;
            let offset = LE::read_u64(offset);
            if offset
                .checked_add(bytes.len() as u64)
                .is_none_or(|end| end > SNAPSHOT_FILE_MAX_BYTES)
            {
                return Err(FrameError::Invalid("snapshot bytes beyond any snapshot"));
            }
            Frame::SnapshotBytes { offset, bytes }
        }
        _ => unreachable!("called for snapshot frames only"),
    })
}

fn decode_segment_header(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (header, capacity) = split_fixed::<SEGMENT_HEADER_BYTES>(body)?;
    let capacity = LE::read_u64(fixed::<8>(capacity)?);
    if !(SEGMENT_CAPACITY_MIN..=SEGMENT_OFFSET_MAX).contains(&capacity) {
        return Err(FrameError::Invalid(
            "segment capacity outside 4 KiB to 1 TiB",
        ));
    }
    Ok(Frame::SegmentHeader { header, capacity })
}

fn lsn(bytes: &[u8]) -> Result<Lsn, FrameError> {
    let value = LE::read_u64(bytes);
    if value > super::LSN_MAX {
        return Err(FrameError::Invalid("LSN beyond 2^63 - 1"));
    }
    Ok(value)
}

/// Appends the encoding of `frame` to `out`.
///
/// # Panics
/// If the frame breaks the limits a decoder enforces (a caller bug: oversized segment bytes or
/// reason text).
pub fn encode_frame(out: &mut Vec<u8>, frame: &Frame<'_>) {
    let start = out.len();
    encode_unchecked(out, frame);
    debug_assert!(
        matches!(out.get(start..).map(decode_frame), Some(Ok(Some((_, n)))) if n == out.len() - start),
        "encoded a frame the decoder refuses: {frame:?}"
    );
}

fn encode_unchecked(out: &mut Vec<u8>, frame: &Frame<'_>) {
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES - 2]);
    let kind = match frame {
        Frame::Hello(h) => {
            out.extend_from_slice(&HELLO_MAGIC);
            put16(out, h.version);
            put16(out, 0);
            put128(out, h.cluster_id);
            put128(out, h.replica_id);
            put64(out, h.last_lsn);
            put32(out, h.last_epoch);
            put16(out, h.listen_port);
            put16(out, 0);
            put64(out, h.last_digest);
            put32(out, h.highest_epoch);
            kind::HELLO
        }
        Frame::History { .. } | Frame::Fence { .. } | Frame::Peers { .. } => {
            encode_failover_frame(out, frame)
        }
        Frame::Welcome(w) => {
            put16(out, w.version);
            put16(out, 0);
            put128(out, w.cluster_id);
            put32(out, w.epoch);
            put64(out, w.durable_lsn);
            put64(out, w.start_after);
            kind::WELCOME
        }
        Frame::Refuse { code, reason } => {
            assert!(reason.len() <= REASON_MAX_BYTES, "refusal reason too long");
            put16(out, *code as u16);
            out.extend_from_slice(reason.as_bytes());
            kind::REFUSE
        }
        Frame::Auth { nonce, proof } => {
            out.extend_from_slice(&[&nonce[..], &proof[..]].concat());
            kind::AUTH
        }
        Frame::SegmentHeader { header, capacity } => {
            out.extend_from_slice(&header[..]);
            put64(out, *capacity);
            kind::SEGMENT_HEADER
        }
        Frame::SegmentBytes {
            segment,
            offset,
            last_lsn,
            bytes,
        } => {
            assert!(
                !bytes.is_empty() && bytes.len() <= SEGMENT_BYTES_MAX,
                "segment bytes of {} bytes",
                bytes.len()
            );
            put64(out, *segment);
            put64(out, *offset);
            put64(out, *last_lsn);
            out.extend_from_slice(bytes);
            kind::SEGMENT_BYTES
        }
        Frame::SnapshotOffer { .. }
        | Frame::SnapshotResume { .. }
        | Frame::SnapshotBytes { .. } => encode_snapshot_frame(out, frame),
        Frame::Heartbeat {
            durable_lsn: a,
            clock_micros: b,
            digest_lsn: c,
            digest: d,
        } => {
            put_all(out, &[*a, *b, *c, *d]);
            kind::HEARTBEAT
        }
        Frame::Ack {
            received: a,
            durable: b,
            applied: c,
            clock_micros: d,
        } => {
            put_all(out, &[*a, *b, *c, *d]);
            kind::ACK
        }
    };
    let (header, body) = out
        .get_mut(start..)
        .and_then(<[u8]>::split_first_chunk_mut::<FRAME_HEADER_BYTES>)
        .unwrap_or_else(|| unreachable!("the header was reserved above"));
    header[2] = kind;
    LE::write_u32(
        &mut header[4..8],
        u32::try_from(body.len()).unwrap_or_else(|_| unreachable!("bodies are at most 4 MiB")),
    );
    let crc = frame_crc(&header[2..8], body);
    LE::write_u32(&mut header[8..12], crc);
}

fn encode_failover_frame(out: &mut Vec<u8>, frame: &Frame<'_>) -> u8 {
    match frame {
        Frame::History { entries } => {
            out.extend_from_slice(entries);
            kind::HISTORY
        }
        Frame::Fence { epoch } => {
            put32(out, *epoch);
            put32(out, 0);
            kind::FENCE
        }
        Frame::Peers { entries } => {
            out.extend_from_slice(entries);
            kind::PEERS
        }
        _ => unreachable!("called for failover frames only"),
    }
}

fn encode_snapshot_frame(out: &mut Vec<u8>, frame: &Frame<'_>) -> u8 {
    match frame {
        Frame::SnapshotOffer { header, file_bytes } => {
            out.extend_from_slice(&header[..]);
            put64(out, *file_bytes);
            kind::SNAPSHOT_OFFER
        }
        Frame::SnapshotResume { offset } => {
            put64(out, *offset);
            kind::SNAPSHOT_RESUME
        }
        Frame::SnapshotBytes { offset, bytes } => {
            assert!(
                !bytes.is_empty() && bytes.len() <= SEGMENT_BYTES_MAX,
                "snapshot bytes of {} bytes",
                bytes.len()
            );
            put64(out, *offset);
            out.extend_from_slice(bytes);
            kind::SNAPSHOT_BYTES
        }
        _ => unreachable!("called for snapshot frames only"),
    }
}

/// The peers a peers frame lists.
pub fn peers(entries: &[u8]) -> impl Iterator<Item = Peer> + '_ {
    entries.as_chunks::<PEER_BYTES>().0.iter().map(|c| Peer {
        replica_id: LE::read_u128(&c[0..16]),
        ip: std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&c[16..32]).unwrap_or([0; 16])),
        port: LE::read_u16(&c[32..34]),
        durable_lsn: LE::read_u64(&c[36..44]),
    })
}

/// Appends one peer's entry for a peers frame.
pub fn encode_peer(out: &mut Vec<u8>, peer: &Peer) {
    put128(out, peer.replica_id);
    out.extend_from_slice(&peer.ip.octets());
    put16(out, peer.port);
    put16(out, 0);
    put64(out, peer.durable_lsn.min(super::LSN_MAX));
}

fn put_all(out: &mut Vec<u8>, values: &[u64]) {
    for v in values {
        put64(out, *v);
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put128(out: &mut Vec<u8>, v: u128) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;

    fn examples() -> Vec<Frame<'static>> {
        static HEADER: [u8; SEGMENT_HEADER_BYTES] = [7; SEGMENT_HEADER_BYTES];
        static SNAPSHOT: [u8; SNAPSHOT_HEADER_BYTES] = [9; SNAPSHOT_HEADER_BYTES];
        // Epoch 1 from LSN 1, epoch 2 from LSN 101.
        static HISTORY: [u8; 24] = [
            1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 101, 0, 0, 0, 0, 0, 0, 0,
        ];
        static PEERS: [u8; PEER_BYTES] = {
            let mut p = [0u8; PEER_BYTES];
            p[0] = 7;
            p[31] = 1;
            p[32] = 0xe9;
            p[33] = 0x18;
            p[36] = 42;
            p
        };
        vec![
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                cluster_id: 0xfeed,
                replica_id: 42,
                last_lsn: 10,
                last_epoch: 1,
                listen_port: 6381,
                last_digest: 0x0123_4567_89ab_cdef,
                highest_epoch: 3,
            }),
            Frame::History { entries: &HISTORY },
            Frame::Fence { epoch: 4 },
            Frame::Peers { entries: &[] },
            Frame::Peers { entries: &PEERS },
            Frame::Welcome(Welcome {
                version: 1,
                cluster_id: 0xfeed,
                epoch: 1,
                durable_lsn: 99,
                start_after: 10,
            }),
            Frame::Refuse {
                code: RefuseCode::ClusterMismatch,
                reason: "replica of cluster 1, this is cluster 2",
            },
            Frame::SegmentHeader {
                header: &HEADER,
                capacity: 64 << 20,
            },
            Frame::SegmentBytes {
                segment: 1,
                offset: 64,
                last_lsn: 3,
                bytes: b"records",
            },
            Frame::Heartbeat {
                durable_lsn: 5,
                clock_micros: 1_700_000_000_000_000,
                digest_lsn: 5,
                digest: 0x00ab_cdef,
            },
            Frame::Ack {
                received: 5,
                durable: 4,
                applied: 3,
                clock_micros: 1,
            },
            Frame::SnapshotOffer {
                header: &SNAPSHOT,
                file_bytes: 1 << 20,
            },
            Frame::SnapshotResume { offset: 4096 },
            Frame::SnapshotBytes {
                offset: 4096,
                bytes: b"zstd frame bytes",
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_every_prefix_asks_for_more() {
        for frame in examples() {
            let mut bytes = Vec::new();
            encode_frame(&mut bytes, &frame);
            assert_eq!(decode_frame(&bytes), Ok(Some((frame, bytes.len()))));
            for end in 0..bytes.len() {
                assert_eq!(
                    decode_frame(&bytes[..end]),
                    Ok(None),
                    "{frame:?} cut at {end}"
                );
            }
            for bit in 0..bytes.len() * 8 {
                let mut damaged = bytes.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    !matches!(decode_frame(&damaged), Ok(Some((f, _))) if f == frame),
                    "{frame:?}: flipping bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn hostile_headers_are_refused_before_waiting_for_the_body() {
        assert_eq!(decode_frame(b"+O"), Err(FrameError::BadMagic(*b"+O")));
        let mut huge = b"SF\x05\x00".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_frame(&huge),
            Err(FrameError::BadLength { .. })
        ));
        let mut short_hello = b"SF\x01\x00".to_vec();
        short_hello.extend_from_slice(&68u32.to_le_bytes());
        short_hello.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_frame(&short_hello),
            Err(FrameError::BadLength { .. })
        ));
        assert_eq!(
            decode_frame(b"SF\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
            Err(FrameError::UnknownType(15))
        );
    }
}
