//! Bodies of the cargo-fuzz targets, shared with the test that replays the checked-in corpus so
//! `cargo test` exercises every finding on every run.

use crate::format::{
    RECORD_HEADER_BYTES, SegmentHeader, classify_tail, decode_record, scan_records,
};

/// Decodes arbitrary bytes as a record (salt from the first four bytes): must never panic, and a
/// decoded record must re-encode to the same bytes.
///
/// # Panics
/// When decoding breaks one of those properties: that is a bug for the fuzzer to find.
pub fn record_decode(data: &[u8]) {
    let Some((salt, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let salt = u32::from_le_bytes(*salt);
    let _ = SegmentHeader::decode(rest);
    if let Ok(record) = decode_record(rest, salt) {
        assert!(record.encoded_bytes() <= rest.len());
        assert!(record.encoded_bytes() >= RECORD_HEADER_BYTES);
        let mut again = Vec::new();
        crate::format::encode_record(&mut again, salt, &record.meta(), record.payload);
        assert_eq!(again, rest[..record.encoded_bytes()]);
    }
}

/// Runs segment recovery's pure analysis over arbitrary bytes: must never panic, and what it
/// reports must be consistent with the bytes.
///
/// # Panics
/// When the analysis contradicts the bytes: that is a bug for the fuzzer to find.
pub fn segment_recovery(data: &[u8]) {
    let Ok(scan) = scan_records(data, 4) else {
        return;
    };
    assert!(scan.batch_end <= scan.valid_end);
    assert!(scan.valid_end <= data.len() as u64);
    let last = scan
        .last_lsn
        .unwrap_or(scan.header.first_lsn.saturating_sub(1));
    let _ = classify_tail(data, scan.valid_end, scan.header.salt, last);
}

/// Decodes arbitrary bytes as a key-value payload (kind from the first byte): must never panic,
/// and a decoded put or delete must re-encode to the same bytes.
///
/// # Panics
/// When decoding breaks one of those properties: that is a bug for the fuzzer to find.
pub fn kv_payload(data: &[u8]) {
    use crate::format::RecordKind;
    use crate::format::kv::{KvOp, decode_kv, encode_delete, encode_put};
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let Some(kind) = RecordKind::new(kind & 0x7f) else {
        return;
    };
    let mut again = Vec::new();
    match decode_kv(kind, payload, 1 << 16) {
        Ok(KvOp::Put {
            key,
            value,
            value_offset,
        }) => {
            assert_eq!(&payload[value_offset..], value);
            encode_put(&mut again, key, value);
        }
        Ok(KvOp::Delete { key }) => encode_delete(&mut again, key),
        Err(_) => return,
    }
    assert_eq!(again, payload);
}

/// Parses arbitrary bytes as an index checkpoint: must never panic, and a parsed image must
/// yield exactly its declared entries in strictly increasing key order.
///
/// # Panics
/// When parsing breaks one of those properties: that is a bug for the fuzzer to find.
pub fn checkpoint(data: &[u8]) {
    use crate::format::checkpoint::CheckpointImage;
    let Ok(image) = CheckpointImage::parse(data, 1 << 20) else {
        return;
    };
    let mut count = 0u64;
    let mut previous: Option<&[u8]> = None;
    for entry in image.entries() {
        assert!(previous.is_none_or(|p| p < entry.key));
        assert!(entry.lsn >= 1 && entry.lsn <= image.header.applied_lsn);
        previous = Some(entry.key);
        count += 1;
    }
    assert_eq!(count, image.header.entry_count);
}

/// Parses arbitrary bytes as a pipeline of client requests (limits from the first byte), and
/// splits them as an inline request's arguments: must never panic, every request must lie within
/// the bytes it consumed and within the limits, and the outcome must not depend on how the bytes
/// were split into reads.
///
/// The low bits of the first byte pick the limits, so a hand-written seed starts with a digit:
/// bit 0 set is an unauthenticated connection, bit 1 a 64-byte `bulk_max` (else Redis' 512 MiB),
/// bit 2 an `args_max` of 8 (else 2^20). `0` is an authenticated connection with large limits.
///
/// # Panics
/// When parsing breaks one of those properties: that is a bug for the fuzzer to find.
pub fn resp_request(data: &[u8]) {
    use crate::format::resp::{RequestLimits, split_args};
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let limits = RequestLimits {
        bulk_max: if selector & 2 == 0 { 512 << 20 } else { 64 },
        args_max: if selector & 4 == 0 { 1 << 20 } else { 8 },
        authenticated: selector & 1 == 0,
    };
    if let Some(args) = split_args(rest) {
        check_inline_args(&args, rest.len());
    }
    // A pipeline: requests are consumed one after the other until one is incomplete or refused.
    while let Ok(Some(request)) = check_request(rest, &limits) {
        rest = &rest[request.consumed..];
    }
}

/// Parses the first request of `buffer` and checks it, and the parse of some of its prefixes.
fn check_request(
    buffer: &[u8],
    limits: &crate::format::resp::RequestLimits,
) -> Result<Option<crate::format::resp::Request>, crate::format::resp::ProtocolError> {
    use crate::format::resp::{
        Arguments, INLINE_MAX_BYTES, UNAUTHENTICATED_ARGS_MAX, UNAUTHENTICATED_BULK_MAX,
        parse_request,
    };
    let result = parse_request(buffer, limits);
    // Parsing in two reads (resuming from what the first left) gives what one parse gives.
    let split = buffer.len() / 2;
    let mut partial = None;
    let first = crate::format::resp::parse_request_resuming(&buffer[..split], limits, &mut partial);
    if first == Ok(None) {
        assert_eq!(
            crate::format::resp::parse_request_resuming(buffer, limits, &mut partial),
            result
        );
    }
    let mut cuts = Vec::new();
    let whole = match &result {
        Ok(Some(request)) => {
            let consumed = request.consumed;
            assert!(consumed > 0 && consumed <= buffer.len());
            // The request does not depend on the bytes after it.
            assert_eq!(parse_request(&buffer[..consumed], limits), result);
            match &request.args {
                Arguments::Ranges(ranges) => {
                    assert_eq!(buffer[0], b'*');
                    assert!(ranges.len() <= limits.args_max);
                    assert!(limits.authenticated || ranges.len() <= UNAUTHENTICATED_ARGS_MAX);
                    let mut previous_end = 0;
                    for range in ranges {
                        assert!(previous_end < range.start && range.start <= range.end);
                        assert!(range.end + 2 <= consumed);
                        assert_eq!(&buffer[range.end..range.end + 2], b"\r\n");
                        assert!(range.len() <= limits.bulk_max);
                        assert!(limits.authenticated || range.len() <= UNAUTHENTICATED_BULK_MAX);
                        previous_end = range.end;
                    }
                    // Lengths are read as Redis' `string2ll` reads them: only the canonical
                    // decimal is a number, so the request is exactly its own re-encoding.
                    let mut again = Vec::new();
                    if ranges.is_empty() {
                        let count = std::str::from_utf8(&buffer[1..consumed - 2])
                            .ok()
                            .and_then(|text| text.parse::<i64>().ok());
                        assert!(
                            count.is_some_and(|n| n <= 0),
                            "ignored request is not *<n <= 0>"
                        );
                        again.push(b'*');
                        again.extend(count.unwrap_or_default().to_string().bytes());
                        again.extend_from_slice(b"\r\n");
                    } else {
                        again.extend(format!("*{}\r\n", ranges.len()).bytes());
                        for range in ranges {
                            again.extend(format!("${}\r\n", range.len()).bytes());
                            again.extend_from_slice(&buffer[range.clone()]);
                            again.extend_from_slice(b"\r\n");
                        }
                    }
                    assert!(again == buffer[..consumed], "not the canonical encoding");
                    // Cut points inside the framing of the first arguments.
                    for range in ranges.iter().take(3) {
                        cuts.extend([range.start - 1, range.start, range.end + 1]);
                    }
                }
                Arguments::Owned(args) => {
                    assert_ne!(buffer[0], b'*');
                    assert!(consumed <= INLINE_MAX_BYTES + 1);
                    assert_eq!(buffer[consumed - 1], b'\n');
                    check_inline_args(args, consumed);
                }
            }
            consumed
        }
        Ok(None) | Err(_) => buffer.len(),
    };
    // Incremental reads: a prefix is incomplete, or refused for the same reason.
    cuts.extend([
        whole.saturating_sub(1),
        whole.saturating_sub(2),
        whole / 2,
        whole / 3,
        1,
    ]);
    for cut in cuts.into_iter().filter(|&cut| cut < whole) {
        let partial = parse_request(&buffer[..cut], limits);
        assert!(
            partial == Ok(None) || (partial.is_err() && partial == result),
            "prefix of {cut} bytes parses as {partial:?}, the whole as {result:?}"
        );
    }
    result
}

/// Checks the arguments `split_args` found in `len` bytes: unquoting only shrinks, and quoting
/// every byte as `\xHH` splits back into the same arguments.
fn check_inline_args(args: &[Vec<u8>], len: usize) {
    use crate::format::resp::split_args;
    assert!(args.iter().map(Vec::len).sum::<usize>() <= len);
    let mut quoted = Vec::new();
    for arg in args {
        quoted.extend_from_slice(b" \"");
        for byte in arg {
            quoted.extend(format!("\\x{byte:02x}").bytes());
        }
        quoted.push(b'"');
    }
    assert_eq!(split_args(&quoted).as_deref(), Some(args));
}

/// Decodes arbitrary bytes as a pipeline of server replies (limits from the first byte), as a
/// client does: must never panic, a reply must stay within the limits and re-encode to exactly
/// the bytes it took (every length is canonical), must not depend on the bytes after it, and
/// none of its strict prefixes may be complete; the streamed head of a reply must agree with
/// the reply.
///
/// Bit 0 of the first byte picks small limits (16-byte lines, 8-byte bulk strings, 4 elements,
/// 2 levels of nesting) instead of [`Limits::DEFAULT`](crate::format::resp_reply::Limits), so a
/// hand-written seed starts with a digit: `0` for the defaults, `1` for the small limits.
///
/// # Panics
/// When decoding breaks one of those properties: that is a bug for the fuzzer to find.
pub fn resp_reply(data: &[u8]) {
    use crate::format::resp_reply::{Limits, parse_reply};
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let limits = if selector & 1 == 0 {
        Limits::DEFAULT
    } else {
        Limits {
            line_max_bytes: 16,
            bulk_max_bytes: 8,
            aggregate_max_len: 4,
            depth_max: 2,
        }
    };
    loop {
        let result = parse_reply(rest, &limits);
        check_head(rest, &limits, &result);
        let Ok(Some((reply, used))) = result else {
            if result == Ok(None) && !rest.is_empty() {
                // A prefix of an incomplete reply is incomplete too.
                assert_eq!(parse_reply(&rest[..rest.len() / 2], &limits), Ok(None));
            }
            return;
        };
        assert!(used > 0 && used <= rest.len());
        let mut again = Vec::new();
        encode_reply(&reply, &mut again, &limits, 0);
        assert_eq!(again, rest[..used]);
        assert_eq!(parse_reply(&rest[..used], &limits), Ok(Some((reply, used))));
        for cut in [used - 1, used / 2] {
            assert_eq!(parse_reply(&rest[..cut], &limits), Ok(None));
        }
        rest = &rest[used..];
    }
}

/// A decoded reply's head, decoded with [`crate::format::resp_reply::parse_head`], must agree
/// with the whole reply.
fn check_head(
    buffer: &[u8],
    limits: &crate::format::resp_reply::Limits,
    whole: &Result<
        Option<(crate::format::resp_reply::Reply<'_>, usize)>,
        crate::format::resp_reply::ReplyError,
    >,
) {
    use crate::format::resp_reply::{Head, Reply, parse_head};
    let bulk_max = limits.bulk_max_bytes as u64;
    let head = parse_head(buffer, limits, bulk_max);
    match (whole, head) {
        (Ok(Some((Reply::Bulk(Some(bytes)), used))), Ok(Some((Head::Bulk(len), head_used)))) => {
            assert_eq!(len, bytes.len() as u64);
            assert_eq!(head_used + bytes.len() + 2, *used);
        }
        (_, Ok(Some((Head::Bulk(_), _)))) => {
            // The body of a streamed bulk string may not have arrived, or be malformed.
            assert_eq!(buffer.first(), Some(&b'$'));
        }
        (Ok(Some((reply, used))), Ok(Some((Head::Other(other), head_used)))) => {
            assert_eq!(&other, reply);
            assert_eq!(head_used, *used);
        }
        (_, Ok(Some((Head::Other(_), _)))) => panic!("a head decoded where the reply is not"),
        (_, Ok(None) | Err(_)) => {}
    }
}

/// Encodes `reply` as the canonical bytes that decode to it, checking the limits on the way.
fn encode_reply(
    reply: &crate::format::resp_reply::Reply<'_>,
    out: &mut Vec<u8>,
    limits: &crate::format::resp_reply::Limits,
    depth: usize,
) {
    use crate::format::resp_reply::Reply;
    let line_max = limits.line_max_bytes;
    let number = |n: usize| n.to_string().into_bytes();
    match reply {
        Reply::Simple(text) => push_line(out, b'+', text, line_max),
        Reply::Error(text) => push_line(out, b'-', text, line_max),
        Reply::Integer(n) => push_line(out, b':', n.to_string().as_bytes(), line_max),
        Reply::Null => push_line(out, b'_', b"", line_max),
        Reply::Bulk(None) => push_line(out, b'$', b"-1", line_max),
        Reply::Array(None) => push_line(out, b'*', b"-1", line_max),
        Reply::Bulk(Some(bytes)) => {
            assert!(bytes.len() <= limits.bulk_max_bytes);
            push_line(out, b'$', &number(bytes.len()), line_max);
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Verbatim { format, text } => {
            assert_eq!(format.len(), 3);
            let len = format.len() + 1 + text.len();
            assert!(len <= limits.bulk_max_bytes);
            push_line(out, b'=', &number(len), line_max);
            out.extend_from_slice(format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(Some(items)) | Reply::Set(items) => {
            assert!(depth < limits.depth_max);
            assert!(items.len() <= limits.aggregate_max_len);
            let tag = if matches!(reply, Reply::Set(_)) {
                b'~'
            } else {
                b'*'
            };
            push_line(out, tag, &number(items.len()), line_max);
            for item in items {
                encode_reply(item, out, limits, depth + 1);
            }
        }
        Reply::Map(pairs) => {
            assert!(depth < limits.depth_max);
            assert!(pairs.len() * 2 <= limits.aggregate_max_len);
            push_line(out, b'%', &number(pairs.len()), line_max);
            for (key, value) in pairs {
                encode_reply(key, out, limits, depth + 1);
                encode_reply(value, out, limits, depth + 1);
            }
        }
    }
}

/// `<tag><text>\r\n`, the text within the line bound and free of line ends.
fn push_line(out: &mut Vec<u8>, tag: u8, text: &[u8], line_max: usize) {
    assert!(text.len() <= line_max);
    assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
    out.push(tag);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// Parses arbitrary bytes as a `shiplogd` config file: must never panic, and a refusal must give
/// the right reason.
///
/// # Panics
/// When parsing panics or gives the wrong reason: that is a bug for the fuzzer to find.
pub fn config(data: &[u8]) {
    use crate::server::config::{CONFIG_MAX_BYTES, ConfigError, parse_config};
    match parse_config(data) {
        Err(ConfigError::TooLarge(len)) => {
            assert!(len == data.len() && len > CONFIG_MAX_BYTES);
        }
        Err(ConfigError::NotText) => assert!(std::str::from_utf8(data).is_err()),
        Ok(_) | Err(_) => assert!(data.len() <= CONFIG_MAX_BYTES),
    }
}

/// Reads arbitrary bytes as an HTTP request head: must never panic, and a request line found
/// must be the head's first line, with an uppercase method and a target starting with `/`.
///
/// # Panics
/// When the request line breaks one of those properties: that is a bug for the fuzzer to find.
pub fn http_request(data: &[u8]) {
    use crate::format::http::request_target;
    let Some((method, target)) = request_target(data) else {
        return;
    };
    assert!(!method.is_empty() && method.iter().all(u8::is_ascii_uppercase));
    assert_eq!(target.first(), Some(&b'/'));
    assert!(!target.contains(&b' '));
    let line_end = data.windows(2).position(|w| w == b"\r\n");
    let line = &data[..line_end.unwrap_or_default()];
    assert!(line_end.is_some() && line.starts_with(method));
    assert_eq!(line.get(method.len()), Some(&b' '));
    assert!(line[method.len() + 1..].starts_with(target));
}

/// Decodes arbitrary bytes as a stream of log-shipping frames: must never panic, a decoded
/// frame must re-encode to exactly the bytes it came from, and a frame is never taken from
/// fewer bytes than it declares.
///
/// # Panics
/// When decoding breaks one of those properties: that is a bug for the fuzzer to find.
pub fn repl_frame(data: &[u8]) {
    use crate::format::repl::{FRAME_HEADER_BYTES, decode_frame, encode_frame};
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode_frame(rest) {
        assert!(used >= FRAME_HEADER_BYTES && used <= rest.len());
        let mut again = Vec::new();
        encode_frame(&mut again, &frame);
        assert_eq!(again, rest[..used], "frame does not re-encode to its bytes");
        assert_eq!(
            decode_frame(&rest[..used - 1]),
            Ok(None),
            "a shorter frame decoded"
        );
        rest = &rest[used..];
    }
}

/// Parses arbitrary bytes as a retention slots file and as a replica identity file: must never
/// panic, and whatever parses must encode back to an equivalent file.
///
/// # Panics
/// When parsing panics or a parsed file does not round-trip: a bug for the fuzzer to find.
pub fn replica_files(data: &[u8]) {
    use crate::format::slots::{encode_replica_id, encode_slots, parse_replica_id, parse_slots};
    if let Ok(slots) = parse_slots(data) {
        assert_eq!(parse_slots(encode_slots(&slots).as_bytes()), Ok(slots));
    }
    if let Ok(id) = parse_replica_id(data) {
        assert_eq!(parse_replica_id(encode_replica_id(id).as_bytes()), Ok(id));
    }
}

/// Reads arbitrary bytes as an epoch history file, as the wire form of one, and (split in
/// two) as two histories to find the fork point of: must never panic; what parses must
/// round-trip; the fork point never exceeds the node's last LSN, and up to it both histories
/// give every LSN the same epoch.
///
/// # Panics
/// When parsing panics or breaks one of those properties: a bug for the fuzzer to find.
pub fn epoch_history(data: &[u8]) {
    use crate::format::epochs::EpochHistory;
    if let Ok(history) = EpochHistory::parse(data) {
        assert_eq!(
            EpochHistory::parse(history.encode().as_bytes()).as_ref(),
            Ok(&history)
        );
    }
    if let Ok(history) = EpochHistory::from_wire(data) {
        let mut wire = Vec::new();
        history.to_wire(&mut wire);
        assert_eq!(wire, data);
    }
    let Some((&last, rest)) = data.split_first() else {
        return;
    };
    let cut = rest.len() / 2 / crate::format::epochs::EPOCH_WIRE_BYTES
        * crate::format::epochs::EPOCH_WIRE_BYTES;
    let (Ok(mine), Ok(theirs)) = (
        EpochHistory::from_wire(&rest[..cut]),
        EpochHistory::from_wire(&rest[cut..]),
    ) else {
        return;
    };
    let last_lsn = u64::from(last) * 1000;
    let fork = mine.fork_point(&theirs, last_lsn);
    assert!(fork <= last_lsn);
    for e in mine.entries().iter().chain(theirs.entries()) {
        for lsn in [e.start_lsn.saturating_sub(1), e.start_lsn] {
            if (1..=fork).contains(&lsn) {
                assert_eq!(
                    mine.epoch_at(lsn),
                    theirs.epoch_at(lsn),
                    "LSN {lsn} below the fork {fork}"
                );
            }
        }
    }
}

/// Reads arbitrary bytes as an uncompressed snapshot image (header, entries, trailer): must
/// never panic; what decodes must re-encode to the same bytes; entries are checked against the
/// header's declarations.
///
/// # Panics
/// When decoding panics or breaks one of those properties: a bug for the fuzzer to find.
pub fn snapshot(data: &[u8]) {
    use crate::format::snapshot::{
        EntryCheck, SNAPSHOT_HEADER_BYTES, SNAPSHOT_TRAILER_BYTES, SnapshotHeader, SnapshotTrailer,
        decode_entry, encode_entry,
    };
    if let Ok(trailer) =
        SnapshotTrailer::decode(&data[data.len().saturating_sub(SNAPSHOT_TRAILER_BYTES)..])
    {
        assert_eq!(
            trailer.encode()[..],
            data[data.len() - SNAPSHOT_TRAILER_BYTES..]
        );
    }
    let Ok(header) = SnapshotHeader::decode(data) else {
        return;
    };
    assert_eq!(header.encode()[..], data[..SNAPSHOT_HEADER_BYTES]);
    let mut check = EntryCheck::new(&header);
    let mut rest = &data[SNAPSHOT_HEADER_BYTES..];
    while let Ok(Some((entry, used))) = decode_entry(rest) {
        let mut again = Vec::new();
        encode_entry(&mut again, entry.key, entry.value);
        assert_eq!(
            again,
            rest[..used],
            "an entry does not re-encode to its bytes"
        );
        if check.next(&entry, used).is_err() {
            return;
        }
        rest = &rest[used..];
    }
    let _ = check.finish();
}

/// Reads arbitrary bytes as a whole snapshot file, zstd body included, through the streaming
/// reader a restore uses: must never panic; what it accepts must hold exactly the entries and
/// bytes its header declares, in key order.
///
/// # Panics
/// When reading panics or accepts a file that breaks its own declarations.
pub fn snapshot_file(data: &[u8]) {
    let mut entries = 0u64;
    let mut bytes = 0u64;
    let mut previous: Option<Vec<u8>> = None;
    let result = crate::snapshot::read_snapshot(
        &mut &data[..],
        &mut |_, entry| {
            assert!(previous.as_deref().is_none_or(|p| p < entry.key));
            previous = Some(entry.key.to_vec());
            entries += 1;
            bytes += (8 + entry.key.len() + entry.value.len()) as u64;
            Ok(())
        },
        &mut |_| {},
    );
    if let Ok(info) = result {
        assert_eq!(info.header.key_count, entries);
        assert_eq!(info.header.uncompressed_bytes, bytes);
        assert_eq!(info.file_bytes, data.len() as u64);
    }
}
