//! Hostile and broken clients: each gets `-ERR Protocol error: ...` and is disconnected; the
//! server stays up, its memory stays bounded, other clients and stored data are unaffected.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::io::Write;

use daemon::{Daemon, Raw};

#[test]
fn malformed_requests_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &["--proto-max-bulk-len", "1048576", "--max-args", "1000"],
    );
    let mut bystander = Raw::connect(daemon.addr);
    assert_eq!(bystander.command(&["SET", "safe", "value"]), "+OK\r\n");
    let rss_before = daemon.rss_kib();

    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$1048577\r\n", "invalid bulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*-1x\r\n", "invalid multibulk length"),
        (b"*1001\r\n", "invalid multibulk length"),
        (b"*99999999999999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n*1\r\n*1\r\n*1\r\n", "expected '$', got '*'"),
        (b"*2\r\n$3\r\nGET\r\n:5\r\n", "expected '$', got ':'"),
        (
            b"*1\r\n$3\r\nGETXX\r\n",
            "bulk string is not terminated by CRLF",
        ),
        (b"SET k \"unterminated\r\n", "unbalanced quotes in request"),
    ];
    for (input, message) in cases {
        let mut raw = Raw::connect(daemon.addr);
        raw.send(input);
        assert_eq!(
            raw.reply(),
            format!("-ERR Protocol error: {message}\r\n"),
            "{input:?}"
        );
        assert!(raw.is_closed(), "{input:?} left the connection open");
    }

    // An inline request without a newline, longer than 64 KiB.
    let mut raw = Raw::connect(daemon.addr);
    raw.send(&vec![b'a'; 70 << 10]);
    assert_eq!(
        raw.reply(),
        "-ERR Protocol error: too big inline request\r\n"
    );

    // Binary garbage: whatever it parses as, the server answers or hangs up, and lives.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let garbage: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
        let _ = stream.write_all(&garbage);
    }

    // Declared sizes are not allocated up front: a client that announces the largest bulk
    // and 1000 arguments, then stalls, costs what it sent.
    let stalled: Vec<Raw> = (0..20)
        .map(|_| {
            let mut raw = Raw::connect(daemon.addr);
            raw.send(b"*1000\r\n$1048576\r\nabc");
            raw
        })
        .collect();
    // Truncated frames followed by a disconnect.
    for cut in [3usize, 10, 17] {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
        stream.write_all(&frame[..cut]).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let rss_after = daemon.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(stalled);

    assert_eq!(bystander.command(&["GET", "safe"]), "$5\r\nvalue\r\n");
    assert_eq!(
        bystander.command(&["DBSIZE"]),
        ":1\r\n",
        "nothing was written by garbage"
    );
    daemon.stop();
}

#[test]
fn a_client_that_never_reads_does_not_hold_up_others_or_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut writer = Raw::connect(daemon.addr);
    let value = vec![b'x'; 64 << 10];
    writer.send_command(&[b"SET", b"fat", &value]);
    assert_eq!(writer.reply(), "+OK\r\n");
    // 4000 GETs of 64 KiB is 256 MiB of replies this client will not read.
    let mut greedy = std::net::TcpStream::connect(daemon.addr).unwrap();
    greedy
        .set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nfat\r\n".repeat(4000);
    let _ = greedy.write_all(&request);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(daemon.rss_kib() < 200 * 1024, "replies piled up in memory");
    let mut other = Raw::connect(daemon.addr);
    assert_eq!(other.command(&["PING"]), "+PONG\r\n");
    drop(greedy);
    daemon.stop();
}

#[test]
fn a_huge_pipeline_is_served_a_few_mib_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut raw = Raw::connect(daemon.addr);
    let mut writer = raw.stream.try_clone().unwrap();
    // 2,000,000 PINGs (28 MB), sent while the replies are read, as `redis-cli --pipe` does.
    let sender = std::thread::spawn(move || {
        let chunk = b"*1\r\n$4\r\nPING\r\n".repeat(10_000);
        for _ in 0..200 {
            writer.write_all(&chunk).unwrap();
        }
    });
    let mut peak = 0;
    for i in 0..2_000_000 {
        assert_eq!(raw.reply(), "+PONG\r\n");
        if i % 250_000 == 0 {
            peak = peak.max(daemon.rss_kib());
        }
    }
    sender.join().unwrap();
    assert!(
        peak < 100 * 1024,
        "the server held {peak} KiB for one pipeline"
    );
    daemon.stop();
}
