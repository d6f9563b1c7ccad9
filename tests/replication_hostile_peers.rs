//! Hostile peers on both ends of a shipping session, against real `shiplogd` processes.
//!
//! A primary meets replicas that send garbage, promise gigabyte frames, speak another protocol
//! version, or claim another cluster's or a diverged log: it closes or refuses each at once and
//! goes on serving clients with its data unchanged. A replica meets a fake primary (a socket in
//! this test) that ships records out of LSN order, with a bad record CRC, from another cluster,
//! of a stale epoch, or in a frame with a bad frame CRC: it applies nothing of those bytes,
//! reports why (`INFO replication` and its log), and reconnects.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon::{Daemon, info_field, start_replica, wait_caught_up, wait_until};
use redis::Commands;
use shiplog::engine::CompactionOptions;
use shiplog::format::repl::{
    FRAME_BODY_MAX, FRAME_HEADER_BYTES, Frame, Hello, PROTOCOL_VERSION, RefuseCode, Welcome,
    decode_frame, encode_frame,
};
use shiplog::format::{
    RecordMeta, SEGMENT_HEADER_BYTES, SegmentHeader, decode_record, encode_record,
};
use shiplog::wal::Options;
use shiplog::{Db, DbOptions, Lsn};

/// The command a replica sends to turn its client connection into a shipping session.
const HANDSHAKE: &[u8] = b"*1\r\n$12\r\nSHIPLOG.SHIP\r\n";

/// How long a peer waits for the other side to close a connection it must drop. A third of the
/// primary's 30 s shipping timeout: a primary that waited for a body it was promised, instead
/// of refusing the header, keeps the connection open well past this.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Generous deadline for anything a live node does at once (seconds, for `wait_until`).
const DEADLINE_SECS: u64 = 30;

fn frame_bytes(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, frame);
    out
}

/// Reads from `stream` into `buffer` until a whole frame is there, and hands it to `f`.
fn read_frame<T>(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    f: impl FnOnce(Frame<'_>) -> T,
) -> T {
    loop {
        if let Some((frame, len)) = decode_frame(buffer).unwrap() {
            let out = f(frame);
            buffer.drain(..len);
            return out;
        }
        let mut chunk = [0; 64 << 10];
        let n = stream.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "the peer closed the connection while a frame was expected"
        );
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Reads (and drops) whatever the peer still sends until it closes the connection; false if
/// it is still open after [`CLOSE_WITHIN`].
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    let deadline = Instant::now() + CLOSE_WITHIN;
    let mut scratch = [0; 64 << 10];
    while Instant::now() < deadline {
        match stream.read(&mut scratch) {
            Ok(0) => return true,
            Ok(_) => {}
            // Bytes the peer never read make its close a reset.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("reading from the peer: {e}"),
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Hostile replicas against a real primary.

/// A hostile replica: a raw socket that already switched to shipping frames.
struct Peer {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Peer {
    /// Connects to `primary` and sends the handshake command, with `pipelined` bytes in the
    /// same write; the primary answers `+OK` either way.
    fn ship(primary: SocketAddr, pipelined: &[u8]) -> Self {
        let mut stream = TcpStream::connect(primary).unwrap();
        stream.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
        let mut first = HANDSHAKE.to_vec();
        first.extend_from_slice(pipelined);
        stream.write_all(&first).unwrap();
        let mut ok = [0; 5];
        stream.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n", "the handshake command is accepted");
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends raw bytes; the primary may already have closed (that is what the caller checks).
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn hello(&mut self, hello: Hello) {
        self.send(&frame_bytes(&Frame::Hello(hello)));
    }

    /// The primary's answer to a hello, past the epoch history it sends first.
    fn refusal(&mut self) -> (RefuseCode, String) {
        loop {
            let answer = read_frame(&mut self.stream, &mut self.buffer, |frame| match frame {
                Frame::History { .. } => None,
                Frame::Refuse { code, reason } => Some((code, reason.to_owned())),
                other => panic!("expected a refusal, got {other:?}"),
            });
            if let Some(answer) = answer {
                return answer;
            }
        }
    }

    fn welcome(&mut self) -> Welcome {
        loop {
            let answer = read_frame(&mut self.stream, &mut self.buffer, |frame| match frame {
                Frame::History { .. } => None,
                Frame::Welcome(welcome) => Some(welcome),
                other => panic!("expected a welcome, got {other:?}"),
            });
            if let Some(answer) = answer {
                return answer;
            }
        }
    }

    fn closed_by_primary(&mut self) -> bool {
        closed_by_peer(&mut self.stream)
    }
}

const PRIMARY_KEYS: usize = 20;

/// A primary holding `PRIMARY_KEYS` keys; returns it and its durable LSN.
fn primary_with_keys(dir: &Path) -> (Daemon, u64) {
    let primary = Daemon::start(dir, &[]);
    let mut con = primary.client();
    for i in 0..PRIMARY_KEYS {
        let _: () = con.set(format!("key:{i}"), format!("value:{i}")).unwrap();
    }
    let durable = lsn_field(&mut con, "master_repl_offset");
    assert!(durable >= PRIMARY_KEYS as u64);
    (primary, durable)
}

/// The primary answers clients as before, with the same data and log, and lists no replica.
fn assert_unharmed(primary: &Daemon, durable: u64, after: &str) {
    let mut con = primary.client();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "after {after}");
    for i in 0..PRIMARY_KEYS {
        let value: Option<String> = con.get(format!("key:{i}")).unwrap();
        assert_eq!(value, Some(format!("value:{i}")), "key:{i} after {after}");
    }
    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, PRIMARY_KEYS, "after {after}");
    assert_eq!(
        lsn_field(&mut con, "master_repl_offset"),
        durable,
        "the log is unchanged after {after}"
    );
    assert!(
        wait_until(DEADLINE_SECS, || info_field(
            &mut con,
            "replication",
            "connected_slaves"
        )
        .as_deref()
            == Some("0")),
        "no replica is listed after {after}"
    );
}

fn lsn_field(con: &mut redis::Connection, field: &str) -> u64 {
    info_field(con, "replication", field)
        .unwrap_or_else(|| panic!("INFO replication has no {field}"))
        .parse()
        .unwrap()
}

/// The primary's cluster id, from `master_replid` (the id in hex, then eight zeros).
fn cluster_of(node: &Daemon) -> u128 {
    let replid = info_field(&mut node.client(), "replication", "master_replid").unwrap();
    u128::from_str_radix(&replid[..32], 16).unwrap()
}

fn hello(cluster_id: u128, last_lsn: Lsn, last_epoch: u32) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster_id,
        replica_id: 0x00ba_dbad,
        last_lsn,
        last_epoch,
        listen_port: 1,
        last_digest: 0,
        highest_epoch: 1,
    }
}

#[test]
fn a_primary_drops_bytes_that_are_not_frames_without_waiting_for_a_promised_body() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, durable) = primary_with_keys(dir.path());
    let rss_before_kib = primary.rss_kib();

    let hello_frame = frame_bytes(&Frame::Hello(hello(0, 0, 0)));
    let mut wrong_magic = hello_frame.clone();
    wrong_magic[..2].copy_from_slice(b"FS");
    // A segment-bytes frame header declaring a body far past the frame limit, and one just
    // past it; a hello declaring a gigabyte. No body follows any of them.
    let header_declaring = |frame: &Frame<'_>, len: u32| {
        let mut header = frame_bytes(frame)[..FRAME_HEADER_BYTES].to_vec();
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header
    };
    let bytes_frame = Frame::SegmentBytes {
        segment: 1,
        offset: SEGMENT_HEADER_BYTES as u64,
        last_lsn: 1,
        bytes: b"x",
    };
    let just_past = u32::try_from(FRAME_BODY_MAX + 1).unwrap();
    let ack_first = frame_bytes(&Frame::Ack {
        received: 0,
        durable: 0,
        applied: 0,
        clock_micros: 0,
    });
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("zero bytes", vec![0; 64]),
        ("a hello with the wrong magic", wrong_magic),
        (
            "a 4 GiB segment-bytes header",
            header_declaring(&bytes_frame, u32::MAX),
        ),
        (
            "a segment-bytes header just past the frame limit",
            header_declaring(&bytes_frame, just_past),
        ),
        (
            "a 1 GiB hello header",
            header_declaring(&Frame::Hello(hello(0, 0, 0)), 1 << 30),
        ),
        ("an acknowledgement instead of a hello", ack_first),
    ];
    for (what, bytes) in &cases {
        // Sent after the +OK ...
        let mut peer = Peer::ship(primary.addr, &[]);
        peer.send(bytes);
        assert!(
            peer.closed_by_primary(),
            "{what}: the primary keeps the connection open"
        );
        assert_unharmed(&primary, durable, what);
        // ... and pipelined with the handshake command, so the shipping thread finds them
        // already received, the moment it starts.
        for round in 0..20 {
            let mut peer = Peer::ship(primary.addr, bytes);
            assert!(
                peer.closed_by_primary(),
                "{what}, pipelined (round {round}): the primary keeps the connection open"
            );
        }
        assert_unharmed(&primary, durable, what);
    }
    for why in ["bad frame magic", "with a body of 4294967295 bytes"] {
        assert!(
            primary.wait_for_log(why),
            "the primary does not log why it dropped a peer ({why:?})"
        );
    }
    // Its memory did not grow with the declared lengths (a buffer zeroed for 4 GiB would
    // show here; the prompt closes above are the proof that no body was waited for).
    let rss_after_kib = primary.rss_kib();
    assert!(
        rss_after_kib < rss_before_kib + (64 << 10),
        "resident memory grew from {rss_before_kib} KiB to {rss_after_kib} KiB"
    );
    // A well-behaved replica is still welcome, and the primary still takes writes.
    let mut peer = Peer::ship(primary.addr, &[]);
    peer.hello(hello(0, 0, 0));
    let welcome = peer.welcome();
    assert_eq!(welcome.cluster_id, cluster_of(&primary));
    assert_eq!(welcome.start_after, 0);
    drop(peer);
    let mut con = primary.client();
    let _: () = con.set("after", "hostile peers").unwrap();
    drop(con);
    primary.stop();
}

#[test]
fn a_primary_refuses_replicas_of_another_version_cluster_or_history_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, durable) = primary_with_keys(dir.path());
    let cluster = cluster_of(&primary);

    // A well-behaved replica learns the epoch, and resumes after the primary's last record.
    let mut peer = Peer::ship(primary.addr, &[]);
    peer.hello(hello(0, 0, 0));
    let welcome = peer.welcome();
    assert_eq!(welcome.cluster_id, cluster);
    let epoch = welcome.epoch;
    drop(peer);
    let mut peer = Peer::ship(primary.addr, &[]);
    peer.hello(hello(cluster, durable, epoch));
    assert_eq!(peer.welcome().start_after, durable);
    drop(peer);
    assert_unharmed(&primary, durable, "well-behaved replicas");

    let other_cluster = cluster ^ 0x5a5a_5a5a;
    let cases: Vec<(&str, Hello, RefuseCode, Vec<String>)> = vec![
        (
            "a newer protocol version",
            Hello {
                version: PROTOCOL_VERSION + 1,
                ..hello(0, 0, 0)
            },
            RefuseCode::Version,
            vec![format!("protocol {}", PROTOCOL_VERSION + 1)],
        ),
        (
            "protocol version 0",
            Hello {
                version: 0,
                ..hello(cluster, 1, epoch)
            },
            RefuseCode::Version,
            vec!["protocol 0".into()],
        ),
        (
            "another cluster's log",
            hello(other_cluster, 3, epoch),
            RefuseCode::ClusterMismatch,
            vec![format!("{other_cluster:032x}"), format!("{cluster:032x}")],
        ),
        (
            "a log past the primary's",
            hello(cluster, durable + 1, epoch),
            RefuseCode::Diverged,
            vec![format!("LSN {}", durable + 1), format!("LSN {durable}")],
        ),
        (
            "a log far past the primary's",
            hello(cluster, 1 << 62, epoch),
            RefuseCode::Diverged,
            vec![format!("LSN {}", 1u64 << 62)],
        ),
        (
            "another epoch at the primary's last LSN",
            hello(cluster, durable, epoch + 1),
            RefuseCode::Diverged,
            vec![format!("epoch {}", epoch + 1), format!("epoch {epoch}")],
        ),
        (
            "an older epoch at an earlier LSN",
            hello(cluster, 2, epoch.wrapping_sub(1)),
            RefuseCode::Diverged,
            vec![format!("epoch {}", epoch.wrapping_sub(1))],
        ),
    ];
    for (what, hello, code, needles) in cases {
        let mut peer = Peer::ship(primary.addr, &[]);
        peer.hello(hello);
        let (got, reason) = peer.refusal();
        assert_eq!(got, code, "{what}: {reason}");
        for needle in &needles {
            assert!(
                reason.contains(needle.as_str()),
                "{what}: the reason {reason:?} does not name {needle:?}"
            );
        }
        assert!(
            peer.closed_by_primary(),
            "{what}: the primary keeps the connection open after refusing"
        );
        assert!(
            primary.wait_for_log(&reason),
            "{what}: the primary does not log the refusal"
        );
        assert_unharmed(&primary, durable, what);
    }
    let mut con = primary.client();
    let _: () = con.set("after", "refusals").unwrap();
    drop(con);
    primary.stop();
}

// ---------------------------------------------------------------------------------------------
// Hostile primaries against a real replica.

/// A real log of SETs (`key:{i}` = `value:{i}` at LSN i), written by the engine, so shipped
/// records are ones a replica can apply; and its first segment, as shipping offers it.
struct Source {
    cluster: u128,
    header: [u8; SEGMENT_HEADER_BYTES],
    capacity: u64,
    /// Offset of the first record in the segment.
    offset: u64,
    /// Each record's bytes, as on disk; record i has LSN i + 1.
    records: Vec<Vec<u8>>,
}

impl Source {
    fn new(count: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = DbOptions {
            wal: Options {
                segment_bytes: 1 << 20,
                prepare_next_segment: false,
                ..Options::default()
            },
            compaction: CompactionOptions {
                enabled: false,
                ..CompactionOptions::default()
            },
            ..DbOptions::default()
        };
        let db = Db::open(dir.path(), options).unwrap();
        for i in 1..=count {
            let lsn = db
                .put(key(i).as_bytes(), format!("value:{i}").as_bytes())
                .unwrap();
            assert_eq!(lsn, i as u64, "one record per SET");
        }
        let wal = db.wal();
        let chunk = wal
            .ship_chunk(&wal.ship_position_after(0).unwrap(), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(chunk.last_lsn, count as u64, "one chunk holds them all");
        let header = chunk.header.unwrap();
        let salt = SegmentHeader::decode(&header).unwrap().salt;
        let mut records = Vec::new();
        let mut at = 0;
        while at < chunk.bytes.len() {
            let len = decode_record(&chunk.bytes[at..], salt)
                .unwrap()
                .encoded_bytes();
            records.push(chunk.bytes[at..at + len].to_vec());
            at += len;
        }
        assert_eq!(records.len(), count);
        Self {
            cluster: wal.cluster_id(),
            header,
            capacity: chunk.capacity,
            offset: chunk.offset,
            records,
        }
    }

    fn segment(&self) -> Lsn {
        SegmentHeader::decode(&self.header).unwrap().first_lsn
    }

    fn salt(&self) -> u32 {
        SegmentHeader::decode(&self.header).unwrap().salt
    }

    /// Offset in the segment of record `index` (0-based).
    fn offset_of(&self, index: usize) -> u64 {
        self.offset
            + self.records[..index]
                .iter()
                .map(|r| r.len() as u64)
                .sum::<u64>()
    }

    fn header_frame(&self) -> Vec<u8> {
        frame_bytes(&Frame::SegmentHeader {
            header: &self.header,
            capacity: self.capacity,
        })
    }

    /// A segment-bytes frame of `bytes` at the offset of record `index`, ending with record
    /// `last_index`.
    fn bytes_frame(&self, index: usize, last_index: usize, bytes: &[u8]) -> Vec<u8> {
        frame_bytes(&Frame::SegmentBytes {
            segment: self.segment(),
            offset: self.offset_of(index),
            last_lsn: last_index as u64 + 1,
            bytes,
        })
    }

    /// Records `range`, as they are.
    fn bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        self.records[range].concat()
    }

    /// Record `index` rewritten with another epoch (a valid record: its CRC is recomputed).
    fn with_epoch(&self, index: usize, epoch: u32) -> Vec<u8> {
        let record = decode_record(&self.records[index], self.salt()).unwrap();
        let meta = RecordMeta {
            epoch,
            ..record.meta()
        };
        let mut out = Vec::new();
        encode_record(&mut out, self.salt(), &meta, record.payload);
        assert_eq!(out.len(), self.records[index].len());
        out
    }
}

fn key(i: usize) -> String {
    format!("key:{i}")
}

/// A fake primary: a listener the replica is pointed at, speaking the protocol by hand.
struct FakePrimary {
    listener: TcpListener,
    addr: SocketAddr,
}

/// One session of the replica with the fake primary, after the hello.
struct Session {
    stream: TcpStream,
}

impl FakePrimary {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        Self { listener, addr }
    }

    /// Waits for the replica's next connection, answers the handshake command and reads the
    /// hello; panics if none comes within the deadline.
    fn accept(&self) -> (Session, Hello) {
        let deadline = Instant::now() + Duration::from_secs(DEADLINE_SECS);
        let mut stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "the replica does not reconnect to its primary"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(DEADLINE_SECS)))
            .unwrap();
        let mut command = [0; HANDSHAKE.len()];
        stream.read_exact(&mut command).unwrap();
        assert_eq!(&command[..], HANDSHAKE, "the replica's handshake command");
        stream.write_all(b"+OK\r\n").unwrap();
        let mut buffer = Vec::new();
        let hello = read_frame(&mut stream, &mut buffer, |frame| match frame {
            Frame::Hello(hello) => hello,
            other => panic!("expected a hello, got {other:?}"),
        });
        assert!(
            buffer.is_empty(),
            "nothing follows the hello before the welcome"
        );
        assert_eq!(hello.version, PROTOCOL_VERSION);
        (Session { stream }, hello)
    }
}

impl Session {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Accepts the replica as a primary of `cluster` whose log ends at `durable`.
    /// Welcomes the replica as a primary of the newest epoch it knows.
    fn welcome(&mut self, hello: &Hello, cluster: u128, durable: Lsn) {
        self.send(&frame_bytes(&Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            cluster_id: cluster,
            epoch: hello.highest_epoch.max(1),
            durable_lsn: durable.max(hello.last_lsn),
            start_after: hello.last_lsn,
        })));
    }

    /// Sends the hostile bytes; the replica may close the connection before it read them all.
    fn send_hostile(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn closed_by_replica(&mut self) -> bool {
        closed_by_peer(&mut self.stream)
    }
}

/// The replica holds exactly keys `1..=through` of `count`, and LSNs through `through_lsn`.
fn assert_replica_holds(replica: &Daemon, through: usize, count: usize, through_lsn: Lsn) {
    let mut con = replica.client();
    assert_eq!(lsn_field(&mut con, "replica_received_lsn"), through_lsn);
    assert_eq!(lsn_field(&mut con, "replica_applied_lsn"), through_lsn);
    for i in 1..=count {
        let value: Option<String> = con.get(key(i)).unwrap();
        if i <= through {
            assert_eq!(value, Some(format!("value:{i}")), "{} is lost", key(i));
        } else {
            assert_eq!(value, None, "{} was applied from refused bytes", key(i));
        }
    }
}

/// The replica reports `needle` as its last error in `INFO replication` and in its log. Call
/// it before accepting its next connection: a welcome clears the error.
fn assert_reported(replica: &Daemon, needle: &str) {
    let mut con = replica.client();
    let mut last = None;
    let reported = wait_until(DEADLINE_SECS, || {
        last = info_field(&mut con, "replication", "replica_last_error");
        last.as_deref().is_some_and(|e| e.contains(needle))
    });
    assert!(
        reported,
        "replica_last_error is {last:?}, expected it to contain {needle:?}"
    );
    assert_eq!(
        info_field(&mut con, "replication", "master_link_status").as_deref(),
        Some("down")
    );
    assert!(
        replica.wait_for_log(needle),
        "the replica's log does not mention {needle:?}:\n{}",
        replica.log()
    );
}

/// Waits until the replica has applied through `lsn`.
fn wait_applied(replica: &Daemon, lsn: Lsn) {
    let mut con = replica.client();
    assert!(
        wait_until(DEADLINE_SECS, || info_field(
            &mut con,
            "replication",
            "replica_applied_lsn"
        )
        .and_then(|v| v.parse::<u64>().ok())
            >= Some(lsn)),
        "the replica does not apply through LSN {lsn}"
    );
}

/// Ships `bad` (frames after the welcome) to a new replica from an empty directory; it must
/// refuse them with `needle`, apply none of them, reconnect, and then take the right records.
fn an_empty_replica_refuses(bad: &[u8], needle: &str, source: &Source) {
    let count = source.records.len();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakePrimary::start();
    let replica = start_replica(dir.path(), fake.addr);
    let (mut session, hello) = fake.accept();
    assert_eq!(
        (hello.cluster_id, hello.last_lsn),
        (0, 0),
        "an empty replica"
    );
    session.welcome(&hello, source.cluster, count as u64);
    session.send_hostile(bad);
    assert!(
        session.closed_by_replica(),
        "the replica keeps a connection that sent {needle:?}"
    );
    assert_reported(&replica, needle);
    assert_replica_holds(&replica, 0, count, 0);

    // It reconnects, still empty, and takes the same records shipped right.
    let (mut session, hello) = fake.accept();
    assert_eq!(hello.last_lsn, 0, "nothing was kept from the refused bytes");
    session.welcome(&hello, source.cluster, count as u64);
    session.send(&source.header_frame());
    session.send(&source.bytes_frame(0, count - 1, &source.bytes(0..count)));
    wait_applied(&replica, count as u64);
    assert_replica_holds(&replica, count, count, count as u64);
    let mut con = replica.client();
    assert_eq!(
        info_field(&mut con, "replication", "master_link_status").as_deref(),
        Some("up")
    );
    assert_eq!(
        info_field(&mut con, "replication", "replica_last_error"),
        None
    );
    drop(con);
    replica.stop();
}

#[test]
fn a_replica_refuses_records_out_of_lsn_order_and_applies_none_of_them() {
    let source = Source::new(5);
    // Records 1, 3, 2, 4, 5 in one frame: record 1 is fine, and is not applied either.
    let shuffled = [
        &source.records[0][..],
        &source.records[2],
        &source.records[1],
        &source.records[3],
        &source.records[4],
    ]
    .concat();
    let mut bad = source.header_frame();
    bad.extend(source.bytes_frame(0, 4, &shuffled));
    an_empty_replica_refuses(&bad, "record LSN 3 where LSN 2 comes next", &source);

    // A log that starts at LSN 2.
    let mut bad = source.header_frame();
    bad.extend(source.bytes_frame(0, 4, &source.bytes(1..5)));
    an_empty_replica_refuses(&bad, "record LSN 2 where LSN 1 comes next", &source);
}

#[test]
fn a_replica_refuses_a_record_with_a_bad_crc_and_applies_none_of_the_frame() {
    let source = Source::new(5);
    let mut damaged = source.bytes(0..5);
    // The last payload byte of record 3 (the frame's own CRC is computed over the damage).
    let end_of_third = usize::try_from(source.offset_of(3) - source.offset).unwrap();
    damaged[end_of_third - 1] ^= 0x01;
    let mut bad = source.header_frame();
    bad.extend(source.bytes_frame(0, 4, &damaged));
    // Refused by the record check (the frame is intact), at the damaged record.
    let needle = format!(
        "refused shipped log at segment 1, offset {}: checksum mismatch",
        source.offset_of(2)
    );
    an_empty_replica_refuses(&bad, &needle, &source);
}

#[test]
fn a_replica_refuses_a_frame_with_a_bad_frame_crc_even_when_its_records_are_valid() {
    let source = Source::new(5);
    // The stored frame CRC is off by one bit; every record inside is intact.
    let mut frame = source.bytes_frame(0, 4, &source.bytes(0..5));
    frame[8] ^= 0x01;
    let mut bad = source.header_frame();
    bad.extend(&frame);
    an_empty_replica_refuses(&bad, "frame checksum mismatch", &source);

    // A damaged segment header frame.
    let mut header = source.header_frame();
    let last = header.len() - 1;
    header[last] ^= 0x80;
    an_empty_replica_refuses(&header, "frame checksum mismatch", &source);
}

#[test]
fn a_replica_of_one_cluster_refuses_a_segment_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &[]);
    let replica = start_replica(&dir.path().join("r"), primary.addr);
    let mut p = primary.client();
    for i in 1..=10 {
        let _: () = p.set(format!("ours:{i}"), i).unwrap();
    }
    assert!(wait_caught_up(&primary, &replica, DEADLINE_SECS));
    let ours = cluster_of(&primary);
    let held = lsn_field(&mut p, "master_repl_offset");

    // Pointed at a fake primary of another cluster.
    let theirs = Source::new(5);
    assert_ne!(theirs.cluster, ours);
    let fake = FakePrimary::start();
    let mut r = replica.client();
    let reply: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(fake.addr.port())
        .query(&mut r)
        .unwrap();
    assert_eq!(reply, "OK");
    let (mut session, hello) = fake.accept();
    assert_eq!(
        (hello.cluster_id, hello.last_lsn),
        (ours, held),
        "the replica introduces itself with its own log"
    );
    // Its segment header names the next LSN here: only the cluster gives it away.
    let foreign = SegmentHeader {
        first_lsn: held + 1,
        ..SegmentHeader::decode(&theirs.header).unwrap()
    }
    .encode();
    let mut bad = frame_bytes(&Frame::SegmentHeader {
        header: &foreign,
        capacity: theirs.capacity,
    });
    bad.extend(frame_bytes(&Frame::SegmentBytes {
        segment: held + 1,
        offset: theirs.offset,
        last_lsn: held + 1,
        bytes: &theirs.records[0],
    }));
    session.welcome(&hello, theirs.cluster, held + 5);
    session.send_hostile(&bad);
    assert!(session.closed_by_replica());
    assert_reported(
        &replica,
        &format!("the primary's log is cluster {:032x}", theirs.cluster),
    );
    // Its own cluster's log and keys are intact; none of the other cluster's arrived.
    assert_eq!(lsn_field(&mut r, "replica_received_lsn"), held);
    assert_eq!(lsn_field(&mut r, "replica_applied_lsn"), held);
    assert_eq!(cluster_of(&replica), ours);
    for i in 1..=10 {
        let v: Option<i32> = r.get(format!("ours:{i}")).unwrap();
        assert_eq!(v, Some(i));
    }
    for i in 1..=5 {
        let v: Option<String> = r.get(key(i)).unwrap();
        assert_eq!(v, None);
    }
    let (session, hello) = fake.accept();
    assert_eq!(
        (hello.cluster_id, hello.last_lsn),
        (ours, held),
        "it reconnects"
    );
    drop(session);

    // Back to its own primary, it follows it again.
    let _: () = p.set("ours:11", 11).unwrap();
    let reply: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.addr.port())
        .query(&mut r)
        .unwrap();
    assert_eq!(reply, "OK");
    assert!(wait_caught_up(&primary, &replica, DEADLINE_SECS));
    let v: Option<i32> = r.get("ours:11").unwrap();
    assert_eq!(v, Some(11));
    drop((p, r));
    replica.stop();
    primary.stop();
}

#[test]
fn a_replica_refuses_records_and_segments_of_an_older_epoch() {
    let source = Source::new(5);
    let dir = tempfile::tempdir().unwrap();
    let fake = FakePrimary::start();
    let replica = start_replica(dir.path(), fake.addr);
    let (mut session, hello) = fake.accept();

    // Records 1 to 3 of epoch 2, in a segment of epoch 2: taken.
    let header = SegmentHeader {
        epoch: 2,
        ..SegmentHeader::decode(&source.header).unwrap()
    };
    let newer: Vec<u8> = (0..3).flat_map(|i| source.with_epoch(i, 2)).collect();
    session.welcome(&hello, source.cluster, 5);
    session.send(&frame_bytes(&Frame::SegmentHeader {
        header: &header.encode(),
        capacity: source.capacity,
    }));
    session.send(&source.bytes_frame(0, 2, &newer));
    wait_applied(&replica, 3);
    assert_replica_holds(&replica, 3, 5, 3);

    // Records 4 and 5 of epoch 1 after them: refused.
    session.send_hostile(&source.bytes_frame(3, 4, &source.bytes(3..5)));
    assert!(session.closed_by_replica());
    assert_reported(&replica, "record of epoch 1 after epoch 2");
    assert_replica_holds(&replica, 3, 5, 3);

    // It comes back with its epoch-2 log; a new segment of epoch 1 is refused.
    let (mut session, hello) = fake.accept();
    assert_eq!(
        (hello.cluster_id, hello.last_lsn, hello.last_epoch),
        (source.cluster, 3, 2)
    );
    let stale = SegmentHeader {
        first_lsn: 4,
        epoch: 1,
        salt: header.salt ^ 0x55,
        ..header
    };
    let stale_salt = stale.salt;
    let stale = stale.encode();
    let mut bad = frame_bytes(&Frame::SegmentHeader {
        header: &stale,
        capacity: source.capacity,
    });
    // Records 4 and 5 as that segment would hold them.
    let mut records = Vec::new();
    for i in 3..5 {
        let record = decode_record(&source.records[i], source.salt()).unwrap();
        encode_record(&mut records, stale_salt, &record.meta(), record.payload);
    }
    bad.extend(frame_bytes(&Frame::SegmentBytes {
        segment: 4,
        offset: SEGMENT_HEADER_BYTES as u64,
        last_lsn: 5,
        bytes: &records,
    }));
    session.welcome(&hello, source.cluster, 5);
    session.send_hostile(&bad);
    assert!(session.closed_by_replica());
    assert_reported(&replica, "segment of epoch 1 after records of epoch 2");
    assert_replica_holds(&replica, 3, 5, 3);

    // A primary of epoch 1 is not followed at all: the replica fences it and leaves.
    let (mut session, hello) = fake.accept();
    assert_eq!(
        (hello.last_lsn, hello.last_epoch, hello.highest_epoch),
        (3, 2, 2)
    );
    session.send(&frame_bytes(&Frame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        cluster_id: source.cluster,
        epoch: 1,
        durable_lsn: 5,
        start_after: 3,
    })));
    let mut buffer = Vec::new();
    let fence = read_frame(&mut session.stream, &mut buffer, |frame| match frame {
        Frame::Fence { epoch } => epoch,
        other => panic!("expected a fence, got {other:?}"),
    });
    assert_eq!(fence, 2);
    assert!(session.closed_by_replica());
    assert_reported(&replica, "older than epoch 2");
    assert_replica_holds(&replica, 3, 5, 3);

    // And it keeps coming back, with the same log.
    let (session, hello) = fake.accept();
    assert_eq!((hello.last_lsn, hello.last_epoch), (3, 2));
    drop(session);
    replica.stop();
}

#[test]
fn a_replica_refuses_records_its_engine_cannot_apply_and_writes_none_of_them() {
    let source = Source::new(3);
    let dir = tempfile::tempdir().unwrap();
    let fake = FakePrimary::start();
    let replica = start_replica(dir.path(), fake.addr);
    let (mut session, hello) = fake.accept();
    // Record 2 is a valid log record (CRC, LSN, epoch), but its payload is no key-value
    // operation: a put whose key length runs past the payload.
    let salt = source.salt();
    let mut bytes = source.records[0].clone();
    let second = decode_record(&source.records[1], salt).unwrap();
    encode_record(&mut bytes, salt, &second.meta(), &[0xff; 3]);
    bytes.extend_from_slice(&source.records[2]);
    session.welcome(&hello, source.cluster, 3);
    session.send(&source.header_frame());
    session.send_hostile(&frame_bytes(&Frame::SegmentBytes {
        segment: source.segment(),
        offset: source.offset,
        last_lsn: 3,
        bytes: &bytes,
    }));
    assert!(session.closed_by_replica());
    assert_reported(&replica, "not a valid key-value operation");
    assert_replica_holds(&replica, 0, 3, 0);
    let (session, hello) = fake.accept();
    assert_eq!(
        hello.last_lsn, 0,
        "nothing of the refused bytes is in its log"
    );
    drop(session);
    replica.stop();
    // And it starts again.
    let replica = Daemon::try_start(dir.path(), &["--replica-of", &fake.addr.to_string()])
        .unwrap_or_else(|log| panic!("the replica does not start again:\n{log}"));
    replica.stop();
}

#[test]
fn a_primary_told_that_another_node_started_its_own_epoch_steps_down() {
    // Only the node that started an epoch sends a fence of it: a primary fenced with its own
    // epoch shares it with another node's promotion, and must stop taking writes.
    let dir = tempfile::tempdir().unwrap();
    let (primary, _) = primary_with_keys(dir.path());
    let epoch: u32 = info_field(&mut primary.client(), "replication", "epoch")
        .unwrap()
        .parse()
        .unwrap();
    let mut peer = Peer::ship(primary.addr, &[]);
    peer.send(&frame_bytes(&Frame::Fence { epoch }));
    let (code, reason) = peer.refusal();
    assert_eq!(code, RefuseCode::StaleEpoch, "{reason}");
    assert_eq!(
        info_field(&mut primary.client(), "replication", "fenced_by_epoch"),
        Some(epoch.to_string())
    );
    let refused: redis::RedisResult<()> = primary.client().set("after", "the fence");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("replaced by a failover")),
        "{refused:?}"
    );
    assert!(primary.wait_for_log("another node started this node's epoch too"));
    primary.stop();
}

#[test]
fn a_replica_answers_a_fence_notice_and_its_next_promotion_goes_above_that_epoch() {
    // A promoted node keeps telling its old primary about the new epoch until it hears back.
    // The old primary may be a replica by then: it used to drop the connection unread, which
    // the sender took as heard, so the epoch was never learned and a later promotion of that
    // node could start the same epoch again.
    let dir = tempfile::tempdir().unwrap();
    let (primary, durable) = primary_with_keys(&dir.path().join("primary"));
    let replica = start_replica(&dir.path().join("replica"), primary.addr);
    wait_applied(&replica, durable);
    let mut notice = Peer::ship(replica.addr, &[]);
    notice.send(&frame_bytes(&Frame::Fence { epoch: 7 }));
    let (code, reason) = notice.refusal();
    assert_eq!(code, RefuseCode::Other, "{reason}");
    assert!(reason.contains("epoch 7 noted"), "{reason}");
    // Anything else is still dropped unanswered.
    let mut hello_peer = Peer::ship(replica.addr, &[]);
    hello_peer.hello(hello(cluster_of(&primary), durable, 1));
    assert!(hello_peer.closed_by_primary(), "a replica ships nothing");

    primary.stop();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica.client())
        .unwrap();
    assert_eq!(
        info_field(&mut replica.client(), "replication", "epoch").as_deref(),
        Some("8"),
        "the promotion goes above the epoch of the notice:\n{}",
        replica.log()
    );
    replica.stop();
}

#[test]
fn a_fence_notice_closed_unanswered_is_not_taken_as_heard() {
    // A node closes a shipping connection unread while it stops, or while it already reads as
    // many notices as it will: the promoted node must try again, not stop telling it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let node = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut handshake = vec![0; HANDSHAKE.len()];
        stream.read_exact(&mut handshake).unwrap();
        assert_eq!(handshake, HANDSHAKE);
        stream.write_all(b"+OK\r\n").unwrap();
        // Read (so the close is a clean end of stream, not a reset) and not answered.
        let mut notice = vec![0; frame_bytes(&Frame::Fence { epoch: 3 }).len()];
        stream.read_exact(&mut notice).unwrap();
    });
    let options = shiplog::repl::link::LinkOptions::new(addr.to_string(), 1, 0);
    let sent = shiplog::repl::link::send_fence(&options, 3);
    node.join().unwrap();
    assert!(sent.is_err(), "{sent:?}");
}
