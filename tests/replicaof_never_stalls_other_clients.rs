//! `REPLICAOF` never stalls the other clients of its event loop, even while the old replica
//! link hangs in `connect` to a primary that does not answer. Real processes.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::time::{Duration, Instant};

use daemon::{Daemon, Raw};

/// A listener whose accept queue is full, so a connect to it hangs (SYNs dropped).
fn blackhole() -> (std::net::TcpListener, u16, Vec<std::net::TcpStream>) {
    use nix::sys::socket::{Backlog, listen};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Linux takes a second listen() as a new backlog.
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    eprintln!("{} connections fill the backlog", held.len());
    (listener, addr.port(), held)
}

/// A link stuck in `connect` (10 s timeout) must not stall the clients of the loop that runs
/// `REPLICAOF`: it once joined the old link thread on the event-loop thread, holding the link
/// mutex, so every client of that loop and every `INFO`/`ROLE` waited that long.
#[test]
fn replicaof_does_not_stall_other_clients_while_the_old_link_connects() {
    let (_fd, port, _held) = blackhole();
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(&dir.path().join("n"), &["--io-threads", "1"]);
    let mut a = node.client();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .query(&mut a)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let addr = node.addr;
    let pinger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut b = Raw::connect(addr);
        let t = Instant::now();
        let reply = b.command(&["PING"]);
        (reply, t.elapsed())
    });
    let t = Instant::now();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut a)
        .unwrap();
    let replicaof = t.elapsed();
    let (reply, ping) = pinger.join().unwrap();
    eprintln!("REPLICAOF NO ONE took {replicaof:?}; a PING meanwhile took {ping:?} ({reply:?})");
    assert!(
        ping < Duration::from_secs(1),
        "a PING on the same loop waited {ping:?} behind REPLICAOF"
    );
}
