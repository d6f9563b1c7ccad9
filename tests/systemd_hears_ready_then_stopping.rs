//! Under systemd (`Type=notify`), `shiplogd` sends `READY=1` to `$NOTIFY_SOCKET` once it
//! serves (store recovered, clients' port listening) and `STOPPING=1` when shutdown begins;
//! on a path socket and on an abstract one (`@name`).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod daemon;

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use daemon::{Daemon, Raw};

/// The next datagram, as text.
fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let len = socket.recv(&mut buf).unwrap();
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

/// Starts a node told to notify `notify_socket`, and checks what `socket` receives.
fn ready_then_stopping(socket: &UnixDatagram, notify_socket: &str) {
    socket
        .set_read_timeout(Some(Duration::from_mins(1)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node =
        Daemon::try_start_with_env(dir.path(), &[], &[("NOTIFY_SOCKET", notify_socket)]).unwrap();
    assert_eq!(receive(socket), "READY=1");
    // Ready means serving.
    assert_eq!(Raw::connect(node.addr).command(&["PING"]), "+PONG\r\n");
    node.stop();
    assert_eq!(receive(socket), "STOPPING=1");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "nothing after STOPPING=1");
}

#[test]
fn a_path_socket_hears_ready_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(&socket, path.to_str().unwrap());
}

#[test]
fn an_abstract_socket_hears_ready_then_stopping() {
    let name = format!("shiplog-notify-test-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    ready_then_stopping(&socket, &format!("@{name}"));
}
