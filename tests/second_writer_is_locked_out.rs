//! Two processes cannot open one log for writing; the refusal names the holder's pid.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;

use shiplog::wal::Options;
use shiplog::{Wal, WalError};

#[test]
fn a_second_process_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shiplogd"))
        .arg("--dir")
        .arg(dir.path())
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

    // Once the holder closes, the daemon opens it.
    wal.close().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shiplogd"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
