//! Running `shiplogd` as an operator does: restart keeps the data, AUTH with a password file,
//! a TOML config with environment and flag overrides, the metrics endpoint, SIGTERM and SIGINT,
//! `--help`.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::io::{Read, Write};
use std::process::Command;

use daemon::{Daemon, Raw};
use nix::sys::signal::Signal;
use redis::Commands;

#[test]
fn data_survives_a_clean_restart_and_sigint_is_clean_too() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut con = daemon.client();
    for i in 0..500 {
        let _: () = con.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    let _: () = con.del("k7").unwrap();
    // A background checkpoint racing the shutdown does not make it unclean.
    let started: String = redis::cmd("BGSAVE").query(&mut con).unwrap();
    assert_eq!(started, "Background saving started");
    drop(con);
    daemon.stop();

    let daemon = Daemon::start(dir.path(), &[]);
    let log = daemon.log();
    assert!(log.contains("keys=499"), "{log}");
    let mut con = daemon.client();
    let v: String = con.get("k499").unwrap();
    assert_eq!(v, "v499");
    let gone: Option<String> = con.get("k7").unwrap();
    assert_eq!(gone, None);
    drop(con);
    let status = daemon.signal_and_wait(Signal::SIGINT);
    assert!(status.success(), "{status}");
}

#[test]
fn auth_is_required_when_a_password_file_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret pass\n").unwrap();
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data, &["--requirepass-file", secret.to_str().unwrap()]);
    let mut raw = Raw::connect(daemon.addr);
    assert_eq!(
        raw.command(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.command(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    // Before AUTH, only small requests are accepted (CVE-2021-32675): a large one closes the
    // connection without the server allocating for it.
    let mut guest = Raw::connect(daemon.addr);
    guest.send(b"*1\r\n$100000\r\n");
    assert_eq!(
        guest.reply(),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(guest.is_closed());
    let mut guest = Raw::connect(daemon.addr);
    guest.send(b"*20\r\n");
    assert_eq!(
        guest.reply(),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    // AUTH at the front of a pipeline runs before the rest is read under the guest limits.
    let mut pipelined = Raw::connect(daemon.addr);
    let mut request = b"*2\r\n$4\r\nAUTH\r\n$11\r\ns3cret pass\r\n".to_vec();
    request.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$300000\r\n");
    request.extend_from_slice(&vec![b'v'; 300_000]);
    request.extend_from_slice(b"\r\n*2\r\n$6\r\nSTRLEN\r\n$3\r\nbig\r\n");
    pipelined.send(&request);
    assert_eq!(pipelined.reply(), "+OK\r\n");
    assert_eq!(pipelined.reply(), "+OK\r\n");
    assert_eq!(pipelined.reply(), ":300000\r\n");
    assert_eq!(raw.command(&["AUTH", "s3cret pass"]), "+OK\r\n");
    assert_eq!(raw.command(&["SET", "k", "v"]), "+OK\r\n");
    // HELLO with AUTH, and the redis crate with a password in the URL.
    let mut other = Raw::connect(daemon.addr);
    let hello = other.command(&["HELLO", "3", "AUTH", "default", "s3cret pass"]);
    assert!(hello.starts_with("%7"), "{hello}");
    let url = format!("redis://:s3cret%20pass@{}/", daemon.addr);
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let v: String = con.get("k").unwrap();
    assert_eq!(v, "v");
    assert!(
        !raw.command(&["CONFIG", "GET", "requirepass"])
            .contains("s3cret"),
        "the password is never echoed"
    );
    daemon.stop();

    // An empty password file is refused at start.
    std::fs::write(&secret, "\n").unwrap();
    let err = Daemon::try_start(&data, &["--requirepass-file", secret.to_str().unwrap()])
        .err()
        .unwrap();
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn config_file_environment_and_flags_layer_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(
        &config,
        "durability = \"buffered\"\nmax-clients = 3\nlog-level = \"debug\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let daemon = Daemon::start(
        &data,
        &["--config", config.to_str().unwrap(), "--max-clients", "5"],
    );
    let mut raw = Raw::connect(daemon.addr);
    assert!(
        raw.command(&["INFO", "persistence"])
            .contains("durability:buffered")
    );
    assert!(
        raw.command(&["CONFIG", "GET", "maxclients"])
            .contains("$1\r\n5\r\n"),
        "the flag beats the file"
    );
    // Five connections are allowed; the sixth is refused with Redis' text.
    let others: Vec<Raw> = (0..4).map(|_| Raw::connect(daemon.addr)).collect();
    let mut refused = Raw::connect(daemon.addr);
    assert_eq!(refused.reply(), "-ERR max number of clients reached\r\n");
    drop(others);
    assert!(
        daemon.wait_for_log("DEBUG"),
        "log-level from the file applies"
    );
    daemon.stop();

    // The environment beats the file, and a flag beats the environment.
    let daemon = Daemon::try_start_with_env(
        &data,
        &["--config", config.to_str().unwrap()],
        &[("SHIPLOG_MAX_CLIENTS", "7"), ("SHIPLOG_DURABILITY", "sync")],
    )
    .unwrap();
    let mut raw = Raw::connect(daemon.addr);
    assert!(
        raw.command(&["CONFIG", "GET", "maxclients"])
            .contains("$1\r\n7\r\n")
    );
    assert!(
        raw.command(&["INFO", "persistence"])
            .contains("durability:sync")
    );
    daemon.stop();

    std::fs::write(&config, "maxclient = 3\n").unwrap();
    let err = Daemon::try_start(&data, &["--config", config.to_str().unwrap()])
        .err()
        .unwrap();
    assert!(
        err.contains("maxclient"),
        "an unknown setting is named: {err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_shiplogd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dir",
        "--listen",
        "--config",
        "--durability",
        "--requirepass-file",
        "--max-clients",
        "--proto-max-bulk-len",
        "--max-args",
        "--client-output-limit",
        "--metrics-listen",
        "--log-level",
        "--io-threads",
        "SHIPLOG_DIR",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut con = daemon.client();
    for i in 0..50 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let _: Option<String> = con.get("k1").unwrap();
    let mut http = std::net::TcpStream::connect(daemon.metrics.unwrap()).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for metric in [
        "shiplog_commands_total{cmd=\"set\"} 50",
        "shiplog_commands_total{cmd=\"get\"} 1",
        "shiplog_command_duration_seconds_bucket{cmd=\"set\",le=\"+Inf\"} 50",
        "shiplog_log_bytes_written_total",
        "shiplog_fsyncs_total",
        "shiplog_group_commit_records_bucket",
        "shiplog_keys 50",
        "shiplog_disk_bytes",
    ] {
        assert!(body.contains(metric), "metrics lack {metric}:\n{body}");
    }
    let mut http = std::net::TcpStream::connect(daemon.metrics.unwrap()).unwrap();
    http.write_all(b"\x00garbage\r\n\r\n").unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 400"), "{body}");
    daemon.stop();
}
