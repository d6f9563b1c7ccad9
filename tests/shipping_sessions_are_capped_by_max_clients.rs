//! Shipping sessions are capped by `--max-clients`: connections that each open a session with
//! `SHIPLOG.SHIP` never get more shipping threads than the cap, and the refusals are logged.
//! Real processes.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::time::Duration;

use daemon::{Daemon, Raw};

/// A connection that sends `SHIPLOG.SHIP` leaves the client count; shipping sessions (one
/// thread each) were once bounded by nothing.
#[test]
fn shipping_sessions_are_capped_by_max_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(&dir.path().join("n"), &["--max-clients", "4"]);
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut raw = Raw::connect(node.addr);
        let reply = raw.command(&["SHIPLOG.SHIP"]);
        assert!(reply.starts_with("+OK"), "{reply}");
        held.push(raw);
    }
    // Sample for a while: the number of sessions never exceeds the cap.
    let mut most = 0;
    for _ in 0..50 {
        let shippers = node
            .thread_names()
            .iter()
            .filter(|n| *n == "shipper")
            .count();
        most = most.max(shippers);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 4, "{most} shipping threads with --max-clients 4");
    assert!(node.wait_for_log("too many shipping sessions"));
    drop(held);
}
