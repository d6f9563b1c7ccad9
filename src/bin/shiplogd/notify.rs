//! systemd's readiness protocol (`sd_notify(3)`): under a unit of `Type=notify`, systemd names a
//! datagram socket in `$NOTIFY_SOCKET` and waits for `READY=1` before it counts the service as
//! started (and starts the units ordered after it); `STOPPING=1` tells it shutdown began. A
//! name starting with `@` is a Linux abstract socket. Without the variable nothing is sent.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (`READY=1`, `STOPPING=1`) to systemd, if it listens. A failure is logged, not
/// returned: the node serves either way, and systemd's own timeout reports a unit that never
/// became ready.
pub fn systemd(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::warn!(socket = %socket.to_string_lossy(), state, "cannot notify systemd: {e}");
    }
}

/// One datagram holding `state` to the socket named `socket`.
fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sent = UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}
