//! Two processes cannot open one log for writing; the refusal names the holder's pid.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;

mod daemon;

use shiplog::wal::Options;
use shiplog::{Wal, WalError};

#[test]
fn a_second_process_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shiplogd"))
        .arg("--dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("locked by process {}", std::process::id())),
        "{stderr}"
    );

    // A second open in this process is refused too.
    assert!(matches!(
        Wal::open(dir.path(), Options::default()),
        Err(WalError::Locked(_))
    ));

    // Once the holder closes, the daemon opens it and serves.
    wal.close().unwrap();
    let daemon = daemon::Daemon::start(dir.path(), &[]);
    daemon.stop();
}
