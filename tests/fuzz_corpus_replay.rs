//! Replays the checked-in fuzz seed corpus (`fuzz/seeds/<target>/`) through the same functions
//! the cargo-fuzz targets call, so every seed and every minimized crash becomes a regression test
//! under plain `cargo test` on stable.
//!
//! The generated part of the corpus is built by [`generated_seeds`] from the public format API.
//! Regenerate it after a format change with
//! `cargo test --test fuzz_corpus_replay -- --ignored write_generated_seeds`;
//! `generated_seeds_are_checked_in` fails while the files on disk are stale.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use byteorder::{ByteOrder, LittleEndian as LE};
use shiplog::format::{
    BATCH_CONTINUES, FormatError, LSN_MAX, RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX_BYTES,
    RecordKind, RecordMeta, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader, TailState, classify_tail,
    decode_record, encode_record, scan_records,
};
use shiplog::fuzzing;

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("seeds")
        .join(target)
}

/// Every regular file in `fuzz/seeds/<target>/`, sorted by name.
fn seed_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&path).unwrap();
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Runs `body` over every seed of `target`, reporting every seed that panics (not just the first).
fn replay(target: &str, body: fn(&[u8])) {
    let seeds = seed_files(target);
    assert!(
        !seeds.is_empty(),
        "no seeds in {}: the replay would pass vacuously",
        seeds_dir(target).display()
    );
    let failed: Vec<&str> = seeds
        .iter()
        .filter(|(_, bytes)| catch_unwind(AssertUnwindSafe(|| body(bytes))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} `{target}` seeds panicked: {failed:?}",
        failed.len(),
        seeds.len()
    );
}

#[test]
fn record_seeds_do_not_panic() {
    replay("record", fuzzing::record_decode);
}

#[test]
fn segment_recovery_seeds_do_not_panic() {
    replay("segment_recovery", fuzzing::segment_recovery);
}

#[test]
fn kv_payload_seeds_do_not_panic() {
    replay("kv_payload", fuzzing::kv_payload);
}

#[test]
fn checkpoint_seeds_do_not_panic() {
    replay("checkpoint", fuzzing::checkpoint);
}

#[test]
fn resp_request_seeds_do_not_panic() {
    replay("resp_request", fuzzing::resp_request);
}

#[test]
fn resp_reply_seeds_do_not_panic() {
    replay("resp_reply", fuzzing::resp_reply);
}

#[test]
fn config_seeds_do_not_panic() {
    replay("config", fuzzing::config);
}

#[test]
fn http_request_seeds_do_not_panic() {
    replay("http_request", fuzzing::http_request);
}

#[test]
fn repl_frame_seeds_do_not_panic() {
    replay("repl_frame", fuzzing::repl_frame);
}

#[test]
fn replica_files_seeds_do_not_panic() {
    replay("replica_files", fuzzing::replica_files);
}

#[test]
fn epoch_history_seeds_do_not_panic() {
    replay("epoch_history", fuzzing::epoch_history);
}

#[test]
fn snapshot_seeds_do_not_panic() {
    replay("snapshot", fuzzing::snapshot);
}

#[test]
fn snapshot_file_seeds_do_not_panic() {
    replay("snapshot_file", fuzzing::snapshot_file);
}

/// Every target replayed above; `every_fuzz_target_is_replayed` keeps it in step with
/// `fuzz/Cargo.toml`.
const REPLAYED_TARGETS: [&str; 13] = [
    "epoch_history",
    "record",
    "segment_recovery",
    "kv_payload",
    "checkpoint",
    "resp_request",
    "resp_reply",
    "config",
    "http_request",
    "repl_frame",
    "replica_files",
    "snapshot",
    "snapshot_file",
];

/// A cargo-fuzz target added without seeds and a replay test would only be fuzzed, never tested.
#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest).unwrap();
    let targets: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| {
            bin.lines()
                .find_map(|line| line.trim().strip_prefix("name = "))
                .map(|name| name.trim_matches('"'))
        })
        .collect();
    assert!(!targets.is_empty(), "no [[bin]] targets in fuzz/Cargo.toml");
    for target in &targets {
        assert!(
            REPLAYED_TARGETS.contains(target),
            "fuzz target {target} has no replay test here"
        );
        assert!(
            !seed_files(target).is_empty(),
            "fuzz target {target} has no seeds"
        );
    }
    for target in REPLAYED_TARGETS {
        assert!(
            targets.contains(&target),
            "{target} is replayed but is not a fuzz target"
        );
    }
}

/// Makes sure the hand-written RESP seeds reach what their names say. The first byte picks the
/// limits (see `shiplog::fuzzing::resp_request`); the requests are consumed one after the other
/// and the last outcome is checked.
#[test]
fn resp_request_seeds_parse_as_named() {
    use shiplog::format::resp::{ProtocolError as E, RequestLimits, parse_request};
    #[derive(Debug, PartialEq)]
    enum Last {
        Complete,
        Incomplete,
        Refused(E),
    }
    for (name, bytes) in seed_files("resp_request") {
        let expected = match name.as_str() {
            n if n.starts_with("cmin_") || n.starts_with("crash_") => continue,
            "inline_no_newline"
            | "pipeline_truncated_last"
            | "pipeline_mixed_inline_multibulk"
            | "count_at_args_max"
            | "lf_only_line_endings" => Last::Incomplete,
            "inline_unbalanced_quote" | "inline_quote_then_text" => {
                Last::Refused(E::UnbalancedQuotes)
            }
            "star_minus_zero"
            | "count_leading_zero"
            | "count_plus_sign"
            | "count_huge"
            | "count_i32_max"
            | "small_args_max_over"
            | "all_limits_small" => Last::Refused(E::InvalidMultibulkLength),
            "bulk_len_minus_zero"
            | "bulk_len_negative"
            | "bulk_len_huge"
            | "bulk_len_i64_overflow"
            | "small_bulk_max_over" => Last::Refused(E::InvalidBulkLength),
            "count_line_too_long" => Last::Refused(E::CountLineTooLong),
            "wrong_type_marker" => Last::Refused(E::ExpectedBulk(':')),
            "missing_crlf_after_bulk" => Last::Refused(E::MissingCrlf),
            "unauthenticated_too_many_args" => Last::Refused(E::UnauthenticatedMultibulk),
            "unauthenticated_bulk_over" => Last::Refused(E::UnauthenticatedBulk),
            _ => Last::Complete,
        };
        let selector = bytes[0];
        let limits = RequestLimits {
            bulk_max: if selector & 2 == 0 { 512 << 20 } else { 64 },
            args_max: if selector & 4 == 0 { 1 << 20 } else { 8 },
            authenticated: selector & 1 == 0,
        };
        let mut buffer = &bytes[1..];
        let last = loop {
            match parse_request(buffer, &limits) {
                Ok(Some(request)) if request.consumed == buffer.len() => break Last::Complete,
                Ok(Some(request)) => buffer = &buffer[request.consumed..],
                Ok(None) => break Last::Incomplete,
                Err(e) => break Last::Refused(e),
            }
        };
        assert_eq!(last, expected, "resp_request seed {name}");
    }
}

/// Makes sure the hand-written reply seeds reach what their names say. The first byte picks the
/// limits (see `shiplog::fuzzing::resp_reply`); the replies are decoded one after the other and
/// the last outcome is checked.
#[test]
fn resp_reply_seeds_parse_as_named() {
    use shiplog::format::resp_reply::{Limits, ReplyError as E, parse_reply};
    #[derive(Debug, PartialEq)]
    enum Last {
        Complete,
        Incomplete,
        Refused(E),
    }
    let small = Limits {
        line_max_bytes: 16,
        bulk_max_bytes: 8,
        aggregate_max_len: 4,
        depth_max: 2,
    };
    for (name, bytes) in seed_files("resp_reply") {
        let expected = match name.as_str() {
            n if n.starts_with("cmin_") || n.starts_with("crash_") => continue,
            n if n.starts_with("truncated_") => Last::Incomplete,
            "unknown_type" => Last::Refused(E::UnknownType(b'?')),
            "bare_lf" => Last::Refused(E::MissingCrlf),
            "bulk_not_terminated" => Last::Refused(E::UnterminatedBulk),
            "bulk_len_leading_zero" => Last::Refused(E::BadLength("01".into())),
            "integer_not_decimal" => Last::Refused(E::BadInteger("12a".into())),
            "verbatim_bad_format" => Last::Refused(E::BadVerbatim),
            "null_with_data" => Last::Refused(E::NullWithData(1)),
            "small_too_deep" => Last::Refused(E::TooDeep { max: 2 }),
            "small_bulk_over" => Last::Refused(E::BulkTooLong { len: 9, max: 8 }),
            "small_line_too_long" => Last::Refused(E::LineTooLong { max: 16 }),
            "small_aggregate_over" => Last::Refused(E::AggregateTooLong { len: 5, max: 4 }),
            _ => Last::Complete,
        };
        let limits = if bytes[0] & 1 == 0 {
            Limits::DEFAULT
        } else {
            small
        };
        let mut buffer = &bytes[1..];
        let last = loop {
            match parse_reply(buffer, &limits) {
                Ok(Some((_, used))) if used == buffer.len() => break Last::Complete,
                Ok(Some((_, used))) => buffer = &buffer[used..],
                Ok(None) => break Last::Incomplete,
                Err(e) => break Last::Refused(e),
            }
        };
        assert_eq!(last, expected, "resp_reply seed {name}");
    }
}

/// Requests at the size limits, too large for checked-in seeds (and for libFuzzer's default
/// `-max_len`), through the same checks as the fuzzer's inputs.
#[test]
fn resp_requests_at_the_size_limits() {
    use shiplog::format::resp::{
        INLINE_MAX_BYTES, ProtocolError, RequestLimits, UNAUTHENTICATED_BULK_MAX, parse_request,
    };
    let guest = RequestLimits {
        bulk_max: 512 << 20,
        args_max: 1 << 20,
        authenticated: false,
    };
    let mut longest_line = vec![b'a'; INLINE_MAX_BYTES];
    longest_line.push(b'\n');
    let mut too_long = vec![b'a'; INLINE_MAX_BYTES + 1];
    let mut bulk_at_limit =
        format!("*2\r\n$4\r\nAUTH\r\n${UNAUTHENTICATED_BULK_MAX}\r\n").into_bytes();
    bulk_at_limit.extend(vec![b'p'; UNAUTHENTICATED_BULK_MAX]);
    bulk_at_limit.extend_from_slice(b"\r\n");
    let cases: [(&[u8], Result<usize, ProtocolError>); 3] = [
        (&longest_line, Ok(INLINE_MAX_BYTES + 1)),
        (&too_long, Err(ProtocolError::InlineTooLong)),
        (&bulk_at_limit, Ok(bulk_at_limit.len())),
    ];
    for (input, expected) in cases {
        let parsed = parse_request(input, &guest).map(|r| r.map(|r| r.consumed));
        assert_eq!(parsed, expected.map(Some), "{} bytes", input.len());
        for selector in b'0'..=b'7' {
            let mut data = vec![selector];
            data.extend_from_slice(input);
            fuzzing::resp_request(&data);
        }
    }
    too_long.push(b'\n');
    assert_eq!(
        parse_request(&too_long, &guest),
        Err(ProtocolError::InlineTooLong)
    );
}

#[test]
fn generated_seeds_are_checked_in() {
    for (target, seeds) in generated_seeds() {
        let dir = seeds_dir(target);
        for (name, bytes) in seeds {
            let path = dir.join(name);
            let on_disk = fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run the ignored write_generated_seeds",
                    path.display()
                )
            });
            assert!(
                on_disk == bytes,
                "{} is stale; run the ignored write_generated_seeds",
                path.display()
            );
        }
    }
}

/// Writes the generated seeds into `fuzz/seeds/`; files not generated here (minimized crashes,
/// corpus kept from fuzzing runs) are left alone.
#[test]
#[ignore = "writes into fuzz/seeds/; run by hand after a format change"]
fn write_generated_seeds() {
    for (target, seeds) in generated_seeds() {
        let dir = seeds_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seed generation. Everything is deterministic so the files on disk can be checked for staleness.

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Largest seed we are willing to check in; keeps libFuzzer's inferred `-max_len` modest.
const SEED_MAX_BYTES: usize = 16 * 1024;

const SALT: u32 = 0x5eed_5a17;
const OTHER_SALT: u32 = 0x0bad_5a17;
const CLUSTER_ID: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
const FIRST_LSN: u64 = 100;
const EPOCH: u32 = 3;

fn generated_seeds() -> Vec<(&'static str, Seeds)> {
    let record = record_seeds();
    let segment = segment_seeds();
    for (name, bytes) in record.iter().chain(&segment) {
        assert!(bytes.len() <= SEED_MAX_BYTES, "seed {name} is too large");
    }
    let repl = repl_frame_seeds();
    vec![
        ("record", record),
        ("segment_recovery", segment),
        ("repl_frame", repl),
        ("snapshot", snapshot_seeds()),
        ("snapshot_file", snapshot_file_seeds()),
    ]
}

/// An uncompressed snapshot image, and damaged and lying ones.
fn snapshot_seeds() -> Seeds {
    use shiplog::format::snapshot::{SnapshotHeader, SnapshotTrailer, encode_entry};
    let mut body = Vec::new();
    for (key, value) in [
        (&b"alpha"[..], &b"1"[..]),
        (b"beta", b""),
        (b"gamma", &[0xff; 40]),
    ] {
        encode_entry(&mut body, key, value);
    }
    let header = SnapshotHeader {
        cluster_id: CLUSTER_ID,
        lsn: FIRST_LSN,
        epoch: EPOCH,
        key_count: 3,
        uncompressed_bytes: body.len() as u64,
    };
    let mut image = header.encode().to_vec();
    image.extend_from_slice(&body);
    let crc = crc32fast::hash(&image);
    image.extend_from_slice(
        &SnapshotTrailer {
            body_bytes: body.len() as u64,
            crc,
        }
        .encode(),
    );
    let mut seeds: Seeds = vec![("gen_snapshot", image.clone())];
    let lying = SnapshotHeader {
        key_count: 2,
        ..header
    };
    let mut short = lying.encode().to_vec();
    short.extend_from_slice(&body);
    seeds.push(("gen_snapshot_count_lie", short));
    let mut unordered = header.encode().to_vec();
    let mut reversed = Vec::new();
    encode_entry(&mut reversed, b"beta", b"");
    encode_entry(&mut reversed, b"alpha", b"1");
    unordered.extend_from_slice(&reversed);
    seeds.push(("gen_snapshot_unordered", unordered));
    let mut damaged = image;
    damaged[20] ^= 1;
    seeds.push(("gen_snapshot_bad_header_crc", damaged));
    seeds
}

/// Whole snapshot files written by the library (an empty store, a store of a few keys), and
/// damaged ones.
fn snapshot_file_seeds() -> Seeds {
    use shiplog::engine::{Db, DbOptions};
    let dir = tempfile::tempdir().unwrap();
    // A fixed cluster id: the generated files must be the same at every run.
    let options = DbOptions {
        wal: shiplog::wal::Options {
            cluster_id: Some(CLUSTER_ID),
            ..shiplog::wal::Options::default()
        },
        ..DbOptions::default()
    };
    let db = Db::open(dir.path(), options).unwrap();
    let empty = {
        let mut out = Vec::new();
        shiplog::snapshot::write_snapshot(&db.freeze().unwrap(), &mut out, 1, &mut |_| {}).unwrap();
        out
    };
    db.put(b"alpha", b"1").unwrap();
    db.put(b"beta", b"").unwrap();
    db.put(b"gamma", &[0x5a; 300]).unwrap();
    db.delete(b"beta").unwrap();
    let small = {
        let mut out = Vec::new();
        shiplog::snapshot::write_snapshot(&db.freeze().unwrap(), &mut out, 1, &mut |_| {}).unwrap();
        out
    };
    let mut seeds: Seeds = vec![
        ("gen_snapshot_file_empty", empty),
        ("gen_snapshot_file", small.clone()),
    ];
    seeds.push((
        "gen_snapshot_file_truncated",
        small[..small.len() - 30].to_vec(),
    ));
    let mut flipped = small.clone();
    flipped[80] ^= 0x04;
    seeds.push(("gen_snapshot_file_flipped", flipped));
    let mut trailing = small;
    trailing.push(0);
    seeds.push(("gen_snapshot_file_trailing", trailing));
    seeds
}

/// One of each shipping frame, a stream of several, and damaged ones.
fn repl_frame_seeds() -> Seeds {
    static SNAPSHOT_HEADER: [u8; 64] = [0x33; 64];
    use shiplog::format::repl::{Frame, Hello, RefuseCode, Welcome, encode_frame};
    let header = SegmentHeader {
        cluster_id: CLUSTER_ID,
        first_lsn: FIRST_LSN,
        epoch: EPOCH,
        salt: SALT,
        compacted_through: None,
    }
    .encode();
    let mut records = Vec::new();
    for i in 0..3 {
        encode_record(
            &mut records,
            SALT,
            &meta(FIRST_LSN + i, EPOCH, 1, false),
            &payload(20, i as u8),
        );
    }
    let mut history = Vec::new();
    shiplog::format::epochs::EpochHistory::from_entries(vec![
        shiplog::format::epochs::EpochStart {
            epoch: 1,
            start_lsn: 1,
        },
        shiplog::format::epochs::EpochStart {
            epoch: 2,
            start_lsn: FIRST_LSN,
        },
    ])
    .unwrap()
    .to_wire(&mut history);
    let mut peers = Vec::new();
    shiplog::format::repl::encode_peer(
        &mut peers,
        &shiplog::format::repl::Peer {
            replica_id: 9,
            ip: std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            port: 6382,
            durable_lsn: FIRST_LSN + 1,
        },
    );
    let frames: Vec<(&'static str, Frame<'_>)> = vec![
        (
            "gen_hello",
            Frame::Hello(Hello {
                version: 2,
                cluster_id: CLUSTER_ID,
                replica_id: 7,
                last_lsn: FIRST_LSN - 1,
                last_epoch: EPOCH,
                listen_port: 6381,
                last_digest: 0,
                highest_epoch: 1,
            }),
        ),
        (
            "gen_welcome",
            Frame::Welcome(Welcome {
                version: 1,
                cluster_id: CLUSTER_ID,
                epoch: EPOCH,
                durable_lsn: FIRST_LSN + 2,
                start_after: FIRST_LSN - 1,
            }),
        ),
        (
            "gen_refuse",
            Frame::Refuse {
                code: RefuseCode::ClusterMismatch,
                reason: "replica of another cluster",
            },
        ),
        (
            "gen_segment_header",
            Frame::SegmentHeader {
                header: &header,
                capacity: 64 << 20,
            },
        ),
        (
            "gen_segment_bytes",
            Frame::SegmentBytes {
                segment: FIRST_LSN,
                offset: SEGMENT_HEADER_BYTES as u64,
                last_lsn: FIRST_LSN + 2,
                bytes: &records,
            },
        ),
        (
            "gen_heartbeat",
            Frame::Heartbeat {
                durable_lsn: FIRST_LSN + 2,
                clock_micros: 1_764_000_000_000_000,
                digest_lsn: FIRST_LSN + 2,
                digest: 0x1234_5678_9abc_def0,
            },
        ),
        (
            "gen_ack",
            Frame::Ack {
                received: FIRST_LSN + 2,
                durable: FIRST_LSN + 1,
                applied: FIRST_LSN,
                clock_micros: 1_764_000_000_000_001,
            },
        ),
        (
            "gen_auth",
            Frame::Auth {
                nonce: &[0x5a; 32],
                proof: &[0xa5; 32],
            },
        ),
        (
            "gen_snapshot_offer",
            Frame::SnapshotOffer {
                header: &SNAPSHOT_HEADER,
                file_bytes: 1 << 20,
            },
        ),
        ("gen_history", Frame::History { entries: &history }),
        ("gen_fence", Frame::Fence { epoch: 3 }),
        ("gen_peers", Frame::Peers { entries: &peers }),
        (
            "gen_snapshot_resume",
            Frame::SnapshotResume { offset: 4096 },
        ),
        (
            "gen_snapshot_bytes",
            Frame::SnapshotBytes {
                offset: 64,
                bytes: b"(zstd frame bytes)",
            },
        ),
    ];
    let mut seeds: Seeds = Vec::new();
    let mut stream = Vec::new();
    for (name, frame) in &frames {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, frame);
        stream.extend_from_slice(&bytes);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        seeds.push((name, bytes));
        seeds.push((
            Box::leak(format!("{name}_bad_crc").into_boxed_str()),
            flipped,
        ));
    }
    seeds.push(("gen_stream", stream.clone()));
    seeds.push(("gen_stream_truncated", stream[..stream.len() - 5].to_vec()));
    let mut huge = b"SF\x05\x00".to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    seeds.push(("gen_huge_length", huge));
    seeds.push(("gen_resp_instead", b"+OK\r\n".to_vec()));
    seeds
}

fn kind(value: u8) -> RecordKind {
    RecordKind::new(value).unwrap()
}

/// Deterministic, non-trivial payload bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Header fields of a record written right after its predecessor became durable.
fn meta(lsn: u64, epoch: u32, kind_value: u8, continues: bool) -> RecordMeta {
    RecordMeta {
        lsn,
        epoch,
        kind: kind(kind_value),
        batch_continues: continues,
        durable_lsn: lsn.saturating_sub(1),
    }
}

fn record(
    salt: u32,
    lsn: u64,
    epoch: u32,
    kind_value: u8,
    continues: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(
        &mut out,
        salt,
        &meta(lsn, epoch, kind_value, continues),
        body,
    );
    out
}

/// A record whose kind byte is written raw (possibly invalid) with a correct CRC, so decoding
/// gets past the checksum and reaches the kind check.
fn record_with_raw_kind(salt: u32, lsn: u64, epoch: u32, kind_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = record(salt, lsn, epoch, 1, false, body);
    out[20] = kind_byte;
    fix_record_crc(&mut out, salt);
    out
}

fn fix_record_crc(bytes: &mut [u8], salt: u32) {
    let mut crc = crc32fast::Hasher::new_with_initial(salt);
    crc.update(&bytes[4..]);
    LE::write_u32(&mut bytes[0..4], crc.finalize());
}

fn flip_bit(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn with_salt_prefix(salt: u32, record_bytes: &[u8]) -> Vec<u8> {
    let mut out = salt.to_le_bytes().to_vec();
    out.extend_from_slice(record_bytes);
    out
}

fn header(first_lsn: u64, epoch: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    SegmentHeader {
        cluster_id: CLUSTER_ID,
        first_lsn,
        epoch,
        salt: SALT,
        compacted_through: None,
    }
    .encode()
}

/// A header with one field patched and its CRC recomputed, so decoding reaches the later checks.
fn patched_header(patch: impl FnOnce(&mut [u8; SEGMENT_HEADER_BYTES])) -> Vec<u8> {
    let mut bytes = header(FIRST_LSN, EPOCH);
    patch(&mut bytes);
    let crc = crc32fast::hash(&bytes[..60]);
    LE::write_u32(&mut bytes[60..], crc);
    bytes.to_vec()
}

/// `(kind, continues, payload length)` of the records in the standard valid segment: single
/// records of several sizes and kinds, and a three-record batch.
const VALID_LAYOUT: [(u8, bool, usize); 7] = [
    (1, false, 0),
    (2, false, 1),
    (0x7f, false, 37),
    (3, true, 12),
    (3, true, 200),
    (4, false, 5),
    (5, false, 64),
];

/// Header plus records `FIRST_LSN..` laid out as `layout`, all valid under `SALT`.
fn segment(layout: &[(u8, bool, usize)]) -> Vec<u8> {
    let mut out = header(FIRST_LSN, EPOCH).to_vec();
    for (i, &(k, continues, len)) in layout.iter().enumerate() {
        let lsn = FIRST_LSN + i as u64;
        encode_record(
            &mut out,
            SALT,
            &meta(lsn, EPOCH, k, continues),
            &payload(len, i as u8),
        );
    }
    out
}

fn valid_segment() -> Vec<u8> {
    segment(&VALID_LAYOUT)
}

fn next_lsn() -> u64 {
    FIRST_LSN + VALID_LAYOUT.len() as u64
}

fn record_seeds() -> Seeds {
    let mut seeds: Seeds = Vec::new();
    let mut add = |name: &'static str, salt: u32, bytes: &[u8]| {
        seeds.push((name, with_salt_prefix(salt, bytes)));
    };

    // Valid records of several sizes, kinds, LSNs, epochs and salts.
    add(
        "valid_empty_payload_kind1",
        SALT,
        &record(SALT, 1, 1, 1, false, &[]),
    );
    add(
        "valid_1b_kind2",
        SALT,
        &record(SALT, 2, 1, 2, false, &payload(1, 1)),
    );
    add(
        "valid_37b_kind_max",
        SALT,
        &record(SALT, 77, 9, 0x7f, false, &payload(37, 2)),
    );
    add(
        "valid_300b_batch_continues",
        SALT,
        &record(SALT, 1000, 2, 5, true, &payload(300, 3)),
    );
    add(
        "valid_4000b_max_lsn_max_epoch",
        SALT,
        &record(SALT, LSN_MAX, u32::MAX, 6, false, &payload(4000, 4)),
    );
    add(
        "valid_salt_zero",
        0,
        &record(0, 3, 0, 1, false, &payload(8, 5)),
    );
    add(
        "valid_salt_all_ones",
        u32::MAX,
        &record(u32::MAX, 4, 1, 9, true, &payload(8, 6)),
    );

    // A batch of three: only the first decodes here, the rest is trailing input.
    let mut batch = record(SALT, 10, 4, 2, true, &payload(20, 7));
    batch.extend(record(SALT, 11, 4, 2, true, &payload(3, 8)));
    batch.extend(record(SALT, 12, 4, 3, false, &payload(50, 9)));
    add("batch_of_three", SALT, &batch);
    let mut trailing = record(SALT, 13, 4, 1, false, &payload(9, 10));
    trailing.extend(payload(40, 11));
    add("valid_then_trailing_garbage", SALT, &trailing);

    // Truncations.
    let full = record(SALT, 20, 1, 1, false, &payload(64, 12));
    add("truncated_header", SALT, &full[..RECORD_HEADER_BYTES - 5]);
    add("truncated_payload", SALT, &full[..full.len() - 7]);
    add("salt_only_no_record", SALT, &[]);

    // Length fields at and past the limit, checked before anything is read.
    let mut oversized = full.clone();
    LE::write_u32(&mut oversized[4..8], u32::MAX);
    add("oversized_length_u32_max", SALT, &oversized);
    let mut just_over = full.clone();
    LE::write_u32(&mut just_over[4..8], RECORD_PAYLOAD_MAX_BYTES + 1);
    add("length_just_over_max", SALT, &just_over);
    let mut at_max = full.clone();
    LE::write_u32(&mut at_max[4..8], RECORD_PAYLOAD_MAX_BYTES);
    add("length_at_max_truncated", SALT, &at_max);

    // Corruption the checksum must catch.
    let mut flipped = full.clone();
    flip_bit(&mut flipped, (RECORD_HEADER_BYTES + 10) * 8 + 3);
    add("flipped_bit_payload", SALT, &flipped);
    let mut flipped = full.clone();
    flip_bit(&mut flipped, 8 * 8);
    add("flipped_bit_lsn", SALT, &flipped);
    let mut flipped = full.clone();
    flip_bit(&mut flipped, 31);
    add("flipped_bit_crc", SALT, &flipped);
    add(
        "wrong_salt",
        SALT,
        &record(OTHER_SALT, 20, 1, 1, false, &payload(64, 12)),
    );

    // Invalid kinds behind a correct checksum.
    add(
        "bad_kind_zero_valid_crc",
        SALT,
        &record_with_raw_kind(SALT, 30, 1, 0, &payload(4, 13)),
    );
    add(
        "bad_kind_batch_flag_only_valid_crc",
        SALT,
        &record_with_raw_kind(SALT, 31, 1, BATCH_CONTINUES, &payload(4, 14)),
    );
    add("zeros_64", 0, &[0; 64]);

    // `record_decode` also decodes the bytes as a segment header.
    let mut with_header = header(FIRST_LSN, EPOCH).to_vec();
    with_header.extend(record(SALT, FIRST_LSN, EPOCH, 1, false, &payload(16, 15)));
    add("segment_header_then_record", SALT, &with_header);

    for (name, bytes) in &seeds {
        check_record_seed(name, bytes);
    }
    seeds
}

/// Makes sure each record seed exercises what its name says.
fn check_record_seed(name: &str, bytes: &[u8]) {
    let salt = LE::read_u32(&bytes[..4]);
    let result = decode_record(&bytes[4..], salt);
    let ok = match name {
        n if n.starts_with("valid") || n == "batch_of_three" => result.is_ok(),
        "truncated_header" | "truncated_payload" | "salt_only_no_record" => {
            matches!(result, Err(FormatError::Truncated { .. }))
        }
        "length_at_max_truncated" => matches!(result, Err(FormatError::Truncated { .. })),
        "oversized_length_u32_max" | "length_just_over_max" => {
            matches!(result, Err(FormatError::LengthTooLarge { .. }))
        }
        n if n.starts_with("flipped_bit") || n == "wrong_salt" || n == "zeros_64" => {
            matches!(result, Err(FormatError::ChecksumMismatch { .. }))
        }
        n if n.starts_with("bad_kind") => matches!(result, Err(FormatError::BadKind(_))),
        "segment_header_then_record" => {
            result.is_err() && SegmentHeader::decode(&bytes[4..]).is_ok()
        }
        other => panic!("no expectation for record seed {other}"),
    };
    assert!(ok, "record seed {name} decodes as {result:?}");
}

fn segment_seeds() -> Seeds {
    let mut seeds: Seeds = Vec::new();
    let valid = valid_segment();
    let next = next_lsn();

    seeds.push(("header_only", header(FIRST_LSN, EPOCH).to_vec()));
    seeds.push(("header_only_first_lsn_zero", header(0, 0).to_vec()));
    seeds.push(("valid_segment", valid.clone()));

    // Many small records: several sparse-index entries, several batches.
    let many: Vec<(u8, bool, usize)> = (0..40)
        .map(|i| (1 + (i % 5) as u8, i % 4 == 1, (i * 7) % 23))
        .collect();
    seeds.push(("valid_many_small_records", segment(&many)));

    // One large record, so the fuzzer also sees lengths in the kilobytes.
    seeds.push((
        "valid_large_record",
        segment(&[(1, false, 3), (2, false, 12 * 1024), (3, false, 0)]),
    ));

    // First LSN at the top of the range: the expected LSN saturates.
    let mut top = header(LSN_MAX - 1, EPOCH).to_vec();
    top.extend(record(SALT, LSN_MAX - 1, EPOCH, 1, false, &payload(3, 20)));
    top.extend(record(SALT, LSN_MAX, EPOCH, 1, false, &payload(3, 21)));
    seeds.push(("first_lsn_near_max", top));

    // Torn tails: part of the next record, or garbage, after the valid records.
    let torn_record = record(SALT, next, EPOCH, 1, false, &payload(100, 22));
    let mut torn = valid.clone();
    torn.extend_from_slice(&torn_record[..30]);
    seeds.push(("torn_tail_partial_record", torn));
    let mut torn = valid.clone();
    torn.extend_from_slice(&torn_record[..RECORD_HEADER_BYTES - 3]);
    seeds.push(("torn_tail_partial_header", torn));
    let mut garbage = valid.clone();
    garbage.extend(payload(90, 23).iter().map(|b| b | 1));
    seeds.push(("torn_tail_garbage", garbage));

    // A zeroed tail (preallocated space), and a torn write inside zeroed space.
    let mut zeroed = valid.clone();
    zeroed.extend_from_slice(&[0; 512]);
    seeds.push(("zeroed_tail", zeroed));
    let mut zeroed_torn = valid.clone();
    zeroed_torn.extend_from_slice(&torn_record[..40]);
    zeroed_torn.extend_from_slice(&[0; 256]);
    seeds.push(("zeroed_tail_after_torn_record", zeroed_torn));

    // A batch whose last record never made it: recovery must cut back to the batch start.
    let mut open_batch = valid.clone();
    open_batch.extend(record(SALT, next, EPOCH, 2, true, &payload(10, 24)));
    open_batch.extend(record(SALT, next + 1, EPOCH, 2, true, &payload(10, 25)));
    seeds.push(("incomplete_batch_at_end", open_batch.clone()));
    open_batch.extend_from_slice(&record(SALT, next + 2, EPOCH, 2, false, &payload(10, 26))[..15]);
    seeds.push(("incomplete_batch_then_torn", open_batch));

    // A bad record followed by a valid one: corruption, not a tear.
    let mut bad_then_valid = valid.clone();
    let mut bad = record(SALT, next, EPOCH, 1, false, &payload(24, 27));
    flip_bit(&mut bad, (RECORD_HEADER_BYTES + 3) * 8);
    bad_then_valid.extend(bad);
    bad_then_valid.extend(record(SALT, next + 1, EPOCH, 1, false, &payload(24, 28)));
    seeds.push(("bad_record_then_valid", bad_then_valid));

    // A bit flipped in the payload of the third record: valid records follow the damage.
    let mut flipped = valid.clone();
    let middle = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES * 3 + 1 + 5;
    flip_bit(&mut flipped, middle * 8 + 6);
    seeds.push(("flipped_bit_record", flipped));

    // An oversized length field after the valid records, with data behind it.
    let mut oversized = valid.clone();
    let mut huge = record(SALT, next, EPOCH, 1, false, &payload(32, 29));
    LE::write_u32(&mut huge[4..8], u32::MAX);
    oversized.extend(huge);
    oversized.extend(record(SALT, next + 1, EPOCH, 1, false, &payload(8, 30)));
    seeds.push(("oversized_length_field", oversized));

    // A valid record far past the LSN window after bad bytes: not evidence of corruption.
    let mut far = valid.clone();
    far.extend(payload(30, 31).iter().map(|b| b | 0x40));
    far.extend(record(
        SALT,
        next + 1_000_000,
        EPOCH,
        1,
        false,
        &payload(8, 32),
    ));
    seeds.push(("far_future_record_after_garbage", far));

    // Sequence violations.
    let mut gap = valid.clone();
    gap.extend(record(SALT, next + 1, EPOCH, 1, false, &payload(8, 33)));
    seeds.push(("lsn_gap", gap));
    let mut regressed = valid.clone();
    regressed.extend(record(SALT, next, EPOCH - 1, 1, false, &payload(8, 34)));
    seeds.push(("epoch_regressed", regressed));
    let mut bumped = valid.clone();
    bumped.extend(record(SALT, next, EPOCH + 1, 1, false, &payload(8, 35)));
    bumped.extend(record(SALT, next + 1, EPOCH + 1, 2, false, &payload(8, 36)));
    seeds.push(("epoch_bumped_mid_segment", bumped));

    // A recycled segment: stale records written under an older salt follow the valid ones.
    let mut stale = valid.clone();
    stale.extend(record(OTHER_SALT, next, EPOCH, 1, false, &payload(16, 37)));
    stale.extend(record(
        OTHER_SALT,
        next + 1,
        EPOCH,
        1,
        false,
        &payload(16, 38),
    ));
    seeds.push(("stale_salt_records", stale));

    // An invalid kind behind a correct checksum.
    let mut bad_kind = valid.clone();
    bad_kind.extend(record_with_raw_kind(SALT, next, EPOCH, 0, &payload(6, 39)));
    seeds.push(("bad_kind_record", bad_kind));

    // Header problems: every one makes the scan fail before any record.
    let records = &valid[SEGMENT_HEADER_BYTES..];
    let with_records = |mut head: Vec<u8>| {
        head.extend_from_slice(records);
        head
    };
    let mut bad_magic = valid.clone();
    bad_magic[0] = b'X';
    seeds.push(("header_bad_magic", bad_magic));
    let mut bad_crc = valid.clone();
    flip_bit(&mut bad_crc, 33 * 8);
    seeds.push(("header_bad_crc", bad_crc));
    seeds.push((
        "header_unsupported_version",
        with_records(patched_header(|h| LE::write_u16(&mut h[8..10], 2))),
    ));
    seeds.push((
        "header_flags_not_zero",
        with_records(patched_header(|h| LE::write_u16(&mut h[10..12], 1))),
    ));
    seeds.push((
        "header_reserved_not_zero",
        with_records(patched_header(|h| h[50] = 0xaa)),
    ));
    seeds.push(("header_truncated", valid[..40].to_vec()));

    for (name, bytes) in &seeds {
        check_segment_seed(name, bytes);
    }
    seeds
}

/// Makes sure each segment seed exercises what its name says.
fn check_segment_seed(name: &str, bytes: &[u8]) {
    let scan = scan_records(bytes, 4);
    if name.starts_with("header_") && name != "header_only" {
        assert!(scan.is_err(), "segment seed {name} has a valid header");
        return;
    }
    let scan = scan.unwrap_or_else(|e| panic!("segment seed {name}: {e}"));
    let last = scan
        .last_lsn
        .unwrap_or(scan.header.first_lsn.saturating_sub(1));
    let tail = classify_tail(bytes, scan.valid_end, scan.header.salt, last);
    let stopped = |want: fn(&str) -> bool| match &scan.end {
        ScanEnd::Stopped { reason, .. } => want(&reason.to_string()),
        ScanEnd::EndOfBytes => false,
    };
    let ok = match name {
        "header_only" => scan.end == ScanEnd::EndOfBytes && scan.record_count == 0,
        "valid_segment" => {
            scan.end == ScanEnd::EndOfBytes
                && scan.record_count == VALID_LAYOUT.len() as u64
                && !scan.has_incomplete_batch()
        }
        "valid_many_small_records" => {
            scan.end == ScanEnd::EndOfBytes
                && scan.record_count == 40
                && scan.sparse_index.len() == 10
        }
        "valid_large_record" | "first_lsn_near_max" | "epoch_bumped_mid_segment" => {
            scan.end == ScanEnd::EndOfBytes && !scan.has_incomplete_batch()
        }
        "torn_tail_partial_record"
        | "torn_tail_partial_header"
        | "torn_tail_garbage"
        | "zeroed_tail_after_torn_record"
        | "far_future_record_after_garbage"
        | "stale_salt_records" => matches!(tail, TailState::Torn { .. }),
        "flipped_bit_record" => {
            stopped(|r| r.contains("checksum mismatch"))
                && matches!(tail, TailState::ValidRecordFollows { lsn, .. } if lsn == FIRST_LSN + 3)
        }
        "zeroed_tail" => tail == TailState::Zeros,
        "incomplete_batch_at_end" => scan.end == ScanEnd::EndOfBytes && scan.has_incomplete_batch(),
        "incomplete_batch_then_torn" => {
            scan.has_incomplete_batch() && matches!(tail, TailState::Torn { .. })
        }
        "bad_record_then_valid" | "oversized_length_field" => {
            matches!(tail, TailState::ValidRecordFollows { lsn, .. } if lsn == next_lsn() + 1)
        }
        "lsn_gap" => stopped(|r| r.contains("LSN gap")),
        "epoch_regressed" => stopped(|r| r.contains("epoch went backwards")),
        "bad_kind_record" => stopped(|r| r.contains("invalid record kind")),
        other => panic!("no expectation for segment seed {other}"),
    };
    assert!(ok, "segment seed {name}: {scan:?}, tail {tail:?}");
}
