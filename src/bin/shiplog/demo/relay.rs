//! A TCP relay between a replica and its primary that the demo can cut: a network partition
//! on loopback. Once cut, it closes every relayed connection and every new one at once.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bound on connecting to the primary.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running relay to one address.
pub struct Relay {
    /// Where the replica connects, `127.0.0.1:PORT`.
    pub addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `target`.
    pub fn start(target: &str) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot start a relay on 127.0.0.1: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("relay address: {e}"))?
            .to_string();
        let target = target
            .parse()
            .map_err(|e| format!("relay target {target}: {e}"))?;
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (flag, streams) = (Arc::clone(&cut), Arc::clone(&open));
        // The accept loop lives as long as the demo; a cut relay accepts and closes.
        std::thread::Builder::new()
            .name("demo-relay".to_owned())
            .spawn(move || {
                for client in listener.incoming().map_while(Result::ok) {
                    if flag.load(Ordering::SeqCst) {
                        continue;
                    }
                    if let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                        relay(client, server, &streams, &flag);
                    }
                }
            })
            .map_err(|e| format!("cannot start a relay thread: {e}"))?;
        Ok(Self { addr, cut, open })
    }

    /// Cuts the link: every relayed connection is closed, and so is every later one.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(open) = self.open.lock() {
            for stream in open.iter() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies both ways between `client` and `server` on two threads, keeping handles to close.
fn relay(client: TcpStream, server: TcpStream, open: &Mutex<Vec<TcpStream>>, cut: &AtomicBool) {
    let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    if let (Ok(mut open), Ok(a), Ok(b)) = (open.lock(), client.try_clone(), server.try_clone()) {
        open.push(a);
        open.push(b);
        // IMPORTANT: checked under the lock, after `cut` set the flag and before or after it
        // closed the list: a connection accepted during a cut is closed by one or the other.
        if cut.load(Ordering::SeqCst) {
            for stream in open.iter() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
    for (mut from, mut to) in [(client, server_out), (server, client_out)] {
        let _ = std::thread::Builder::new()
            .name("demo-relay-copy".to_owned())
            .spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            });
    }
}
