//! `shiplog snapshot create | verify | inspect | restore` as an operator runs them: real
//! processes, real files, a fake daemon for `create --from`. A good snapshot round-trips every
//! key; every damaged or lying file is refused with a clear message and leaves the restore
//! target exactly as it was; a failed download leaves no file behind.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use common::shiplog;
use shiplog::format::snapshot::{
    SNAPSHOT_HEADER_BYTES, SNAPSHOT_TRAILER_BYTES, SnapshotHeader, SnapshotTrailer,
};
use shiplog::snapshot::create_snapshot_file;
use shiplog::{Db, DbOptions, Durability};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn options() -> DbOptions {
    DbOptions {
        durability: Durability::Buffered,
        ..DbOptions::default()
    }
}

/// A store of JSON-like values, with overwrites and deletes, closed; returns its contents.
fn make_store(dir: &Path, keys: u32) -> Model {
    let db = Db::open(dir, options()).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut model = Model::new();
    for i in 0..keys * 3 / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("user:{:06}", (x >> 8) % u64::from(keys)).into_bytes();
        if i % 7 == 3 {
            db.delete(&key).unwrap();
            model.remove(&key);
            continue;
        }
        let mut value = String::new();
        while value.len() < (x % 2000) as usize {
            value.push_str(&format!(
                "{{\"id\":{i},\"score\":{},\"name\":\"n{}\"}}",
                x % 997,
                x >> 50
            ));
        }
        db.put(&key, value.as_bytes()).unwrap();
        model.insert(key, value.into_bytes());
    }
    db.close().unwrap();
    model
}

fn contents(db: &Db) -> Model {
    db.range::<&[u8], _>(..)
        .map(|entry| {
            let (k, v) = entry.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_snapshot_created_verified_inspected_and_restored_holds_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let model = make_store(&store, 2000);
    let snap = tmp.path().join("backup.snap");

    let (ok, out, err) = shiplog(&[
        "snapshot",
        "create",
        "--dir",
        s(&store),
        "--out",
        s(&snap),
        "--level",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("keys      ") && out.contains("compression ratio"),
        "{out}"
    );
    assert!(out.contains("MiB/s"), "{out}");
    // A backup never replaces a file.
    let (ok, _, err) = shiplog(&["snapshot", "create", "--dir", s(&store), "--out", s(&snap)]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    let (ok, out, err) = shiplog(&["snapshot", "verify", s(&snap)]);
    assert!(ok, "{err}");
    assert!(out.contains("verified") && out.contains("ok"), "{out}");

    let (ok, out, _) = shiplog(&["snapshot", "inspect", s(&snap)]);
    assert!(ok);
    assert!(out.contains("header only"), "{out}");
    let (ok, out, _) = shiplog(&["snapshot", "inspect", s(&snap), "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let source = Db::open(&store, options()).unwrap();
    assert_eq!(
        json["cluster_id"].as_str().unwrap(),
        format!("{:032x}", source.wal().cluster_id())
    );
    assert_eq!(json["key_count"].as_u64().unwrap(), model.len() as u64);
    assert_eq!(
        json["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&snap).unwrap().len()
    );
    assert_eq!(json["verified"], serde_json::Value::Bool(false));
    let lsn = json["lsn"].as_u64().unwrap();
    assert!(lsn >= model.len() as u64);
    let expected_bytes: u64 = model
        .iter()
        .map(|(k, v)| 8 + (k.len() + v.len()) as u64)
        .sum();
    assert_eq!(json["uncompressed_bytes"].as_u64().unwrap(), expected_bytes);

    let restored = tmp.path().join("restored");
    let (ok, out, err) = shiplog(&["snapshot", "restore", s(&snap), "--dir", s(&restored)]);
    assert!(ok, "{err}");
    assert!(out.contains("shiplogd --dir"), "{out}");
    let db = Db::open(&restored, options()).unwrap();
    let source_contents = contents(&source);
    assert_eq!(source_contents, model);
    assert_eq!(contents(&db), source_contents);
    assert_eq!(db.wal().cluster_id(), source.wal().cluster_id());
    assert_eq!(db.put(b"next", b"write").unwrap(), lsn + 1);
    drop((db, source));

    // A directory that holds anything is refused, and keeps exactly what it held.
    let occupied = tmp.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), b"mine").unwrap();
    let (ok, _, err) = shiplog(&["snapshot", "restore", s(&snap), "--dir", s(&occupied)]);
    assert!(!ok);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(names_in(&occupied), ["notes.txt"]);
    assert!(!names_in(tmp.path()).iter().any(|n| n.contains(".restore-")));
}

#[test]
fn create_from_a_directory_refuses_a_store_in_use_and_a_directory_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    make_store(&store, 50);
    let snap = tmp.path().join("s.snap");
    let db = Db::open(&store, options()).unwrap();
    let (ok, _, err) = shiplog(&["snapshot", "create", "--dir", s(&store), "--out", s(&snap)]);
    assert!(!ok);
    assert!(err.contains("--from HOST:PORT"), "{err}");
    assert!(!snap.exists());
    drop(db);

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, err) = shiplog(&["snapshot", "create", "--dir", s(&empty), "--out", s(&snap)]);
    assert!(!ok);
    assert!(err.contains("not a shiplog store"), "{err}");
    assert!(names_in(&empty).is_empty(), "no store was created");
    let (ok, _, err) = shiplog(&[
        "snapshot",
        "create",
        "--dir",
        s(&store),
        "--out",
        s(&snap),
        "--level",
        "22",
    ]);
    assert!(!ok, "{err}");
    assert!(!snap.exists());
}

/// A good snapshot's bytes, from a small store.
fn good_snapshot(tmp: &Path) -> Vec<u8> {
    let store = tmp.join("source");
    make_store(&store, 300);
    let db = Db::open(&store, options()).unwrap();
    let path = tmp.join("good.snap");
    create_snapshot_file(&db.freeze().unwrap(), &path, 1, &mut |_| {}).unwrap();
    std::fs::read(&path).unwrap()
}

fn with_header(good: &[u8], edit: impl Fn(&mut SnapshotHeader)) -> Vec<u8> {
    let mut header = SnapshotHeader::decode(good).unwrap();
    edit(&mut header);
    let mut bytes = good.to_vec();
    bytes[..SNAPSHOT_HEADER_BYTES].copy_from_slice(&header.encode());
    reseal(bytes)
}

/// Recomputes the trailer's checksum, so only the lie under test is there to be caught.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let body_end = bytes.len() - SNAPSHOT_TRAILER_BYTES;
    let trailer = SnapshotTrailer {
        body_bytes: (body_end - SNAPSHOT_HEADER_BYTES) as u64,
        crc: crc32fast::hash(&bytes[..body_end]),
    };
    bytes[body_end..].copy_from_slice(&trailer.encode());
    bytes
}

/// A header declaring 100 bytes over a zstd frame of 64 MiB of zeros, with a valid trailer.
fn bomb(good: &[u8]) -> Vec<u8> {
    let mut header = SnapshotHeader::decode(good).unwrap();
    header.key_count = 1;
    header.uncompressed_bytes = 100;
    let mut bytes = header.encode().to_vec();
    bytes.extend(zstd::bulk::compress(&vec![0u8; 64 << 20], 1).unwrap());
    bytes.extend_from_slice(&[0; SNAPSHOT_TRAILER_BYTES]);
    reseal(bytes)
}

fn hostile_files(good: &[u8]) -> Vec<(String, Vec<u8>, &'static [&'static str])> {
    let len = good.len();
    let body_mid =
        SNAPSHOT_HEADER_BYTES + (len - SNAPSHOT_HEADER_BYTES - SNAPSHOT_TRAILER_BYTES) / 2;
    let mut files: Vec<(String, Vec<u8>, &'static [&'static str])> = Vec::new();
    for (at, part) in [
        (10, "header"),
        (SNAPSHOT_HEADER_BYTES - 1, "header"),
        (SNAPSHOT_HEADER_BYTES, "body"),
        (body_mid, "body"),
        (len - SNAPSHOT_TRAILER_BYTES, "trailer"),
        (len - 10, "trailer"),
        (len - 1, "trailer"),
    ] {
        let msg: &'static [&'static str] = match part {
            "header" => &["inside its header: it is truncated"],
            "body" => &["inside its body: it is truncated"],
            _ => &["inside its trailer: it is truncated"],
        };
        files.push((format!("truncated at {at}"), good[..at].to_vec(), msg));
    }
    let mut flipped = good.to_vec();
    flipped[body_mid] ^= 0x10;
    files.push((
        "a flipped byte in the body".into(),
        flipped,
        &["damaged", "malformed", "checksum"],
    ));
    let mut magic = good.to_vec();
    magic[0] = b'X';
    files.push(("wrong magic".into(), magic, &["malformed"]));
    files.push((
        "declared size larger than the body".into(),
        with_header(good, |h| h.uncompressed_bytes += 100),
        &["malformed"],
    ));
    files.push((
        "declared size smaller than the body".into(),
        with_header(good, |h| h.uncompressed_bytes -= 100),
        &["decompresses past"],
    ));
    files.push((
        "more keys than LSNs".into(),
        with_header(good, |h| h.lsn = h.key_count - 1),
        &["malformed"],
    ));
    files.push((
        "a decompression bomb".into(),
        bomb(good),
        &["decompresses past the 100 bytes"],
    ));
    let mut trailing = good.to_vec();
    trailing.push(0);
    files.push((
        "a byte after the trailer".into(),
        trailing,
        &["after its trailer"],
    ));
    let mut trailing = good.to_vec();
    trailing.extend_from_slice(&[7; 4096]);
    files.push((
        "4 KiB after the trailer".into(),
        trailing,
        &["after its trailer"],
    ));
    let mut crc = good.to_vec();
    crc[len - 8] ^= 1;
    files.push((
        "a bad trailer checksum".into(),
        crc,
        &["checksum does not match"],
    ));
    files
}

#[test]
fn damaged_and_lying_snapshots_are_refused_and_leave_the_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let good = good_snapshot(tmp.path());
    let targets = tmp.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    for (i, (what, bytes, expected)) in hostile_files(&good).into_iter().enumerate() {
        let file = tmp.path().join(format!("hostile-{i}.snap"));
        std::fs::write(&file, &bytes).unwrap();
        let matches = |err: &str| expected.iter().any(|m| err.contains(m));

        let (ok, _, err) = shiplog(&["snapshot", "verify", s(&file)]);
        assert!(!ok, "{what}: verify accepted it");
        assert!(matches(&err), "{what}: verify said {err}");

        let absent = targets.join(format!("absent-{i}"));
        let (ok, _, err) = shiplog(&["snapshot", "restore", s(&file), "--dir", s(&absent)]);
        assert!(!ok, "{what}: restore accepted it");
        assert!(matches(&err), "{what}: restore said {err}");
        assert!(err.contains("was left as it was"), "{what}: {err}");
        assert!(!absent.exists(), "{what}: the target was created");

        let empty = targets.join(format!("empty-{i}"));
        std::fs::create_dir(&empty).unwrap();
        let (ok, _, err) = shiplog(&["snapshot", "restore", s(&file), "--dir", s(&empty)]);
        assert!(!ok, "{what}: restore accepted it");
        assert!(matches(&err), "{what}: restore said {err}");
        assert!(
            names_in(&empty).is_empty(),
            "{what}: the empty target was written"
        );

        let left: Vec<String> = names_in(&targets)
            .into_iter()
            .filter(|n| !n.starts_with("empty-"))
            .collect();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
    }
    // Inspect reads the header only: it refuses what is wrong there.
    let (ok, _, err) = shiplog(&["snapshot", "inspect", s(&tmp.path().join("hostile-0.snap"))]);
    assert!(!ok);
    assert!(err.contains("truncated"), "{err}");
}

/// A fake daemon: accepts one connection, answers AUTH with +OK, and answers
/// SHIPLOG.SNAPSHOT with `reply`, then closes. Returns its address and what it was sent.
fn fake_daemon(reply: Vec<u8>) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let mut authed = false;
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                return seen;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if !authed && text.contains("AUTH\r\n") && text.contains("sesame\r\n") {
                authed = true;
                conn.write_all(b"+OK\r\n").unwrap();
            }
            if text.contains("SHIPLOG.SNAPSHOT\r\n") {
                // The client may hang up early (a refused reply): ignore write errors.
                let _ = conn.write_all(&reply);
                return seen;
            }
        }
    });
    (addr, handle)
}

fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut reply = format!("${}\r\n", bytes.len()).into_bytes();
    reply.extend_from_slice(bytes);
    reply.extend_from_slice(b"\r\n");
    reply
}

#[test]
fn create_from_a_daemon_keeps_only_a_whole_verified_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let good = good_snapshot(tmp.path());
    let out_dir = tmp.path().join("backups");
    std::fs::create_dir(&out_dir).unwrap();
    let password = tmp.path().join("password");
    std::fs::write(&password, b"sesame\n").unwrap();

    // A good reply, with AUTH.
    let (addr, daemon) = fake_daemon(bulk(&good));
    let out = out_dir.join("ok.snap");
    let (ok, stdout, err) = shiplog(&[
        "snapshot",
        "create",
        "--from",
        &addr,
        "--out",
        s(&out),
        "--password-file",
        s(&password),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("created"), "{stdout}");
    let seen = String::from_utf8(daemon.join().unwrap()).unwrap();
    assert!(
        seen.starts_with("*2\r\n$4\r\nAUTH\r\n$6\r\nsesame\r\n"),
        "{seen:?}"
    );
    assert!(
        seen.ends_with("*1\r\n$16\r\nSHIPLOG.SNAPSHOT\r\n"),
        "{seen:?}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), good);
    assert_eq!(names_in(&out_dir), ["ok.snap"]);

    let mut corrupt = good.clone();
    let mid = good.len() / 2;
    corrupt[mid] ^= 0x40;
    let mut no_crlf = bulk(&good);
    no_crlf.truncate(no_crlf.len() - 2);
    no_crlf.extend_from_slice(b"xx");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an error reply",
            b"-ERR snapshots are busy\r\n".to_vec(),
            "refused the snapshot: ERR snapshots are busy",
        ),
        (
            "NOAUTH",
            b"-NOAUTH Authentication required.\r\n".to_vec(),
            "pass --password-file",
        ),
        (
            "a cut mid-bulk",
            bulk(&good)[..mid].to_vec(),
            "closed the connection after",
        ),
        ("a corrupted body", bulk(&corrupt), "is damaged"),
        ("a missing CRLF", no_crlf, "not a RESP bulk string"),
        ("a non-bulk reply", b":42\r\n".to_vec(), "not a snapshot"),
    ];
    for (what, reply, expected) in cases {
        let (addr, daemon) = fake_daemon(reply);
        let out = out_dir.join("bad.snap");
        let (ok, _, err) = shiplog(&["snapshot", "create", "--from", &addr, "--out", s(&out)]);
        assert!(!ok, "{what}: accepted");
        assert!(err.contains(expected), "{what}: said {err}");
        assert!(!out.exists(), "{what}: the file was kept");
        assert_eq!(
            names_in(&out_dir),
            ["ok.snap"],
            "{what}: left a temporary file"
        );
        daemon.join().unwrap();
    }
    // Nobody listening.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (ok, _, err) = shiplog(&[
        "snapshot",
        "create",
        "--from",
        &addr,
        "--out",
        s(&out_dir.join("x")),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}
