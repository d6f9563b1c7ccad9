//! A loopback TCP proxy for network faults between a replica and its primary: added delay,
//! stalls (bytes held, connections open), dropped connections and half-open ones.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Faults {
    /// Added to every forwarded read, in microseconds.
    delay_micros: AtomicU64,
    /// Nothing is forwarded while set (connections stay open: a stall, or half-open).
    stalled: AtomicBool,
    /// New connections are refused (closed at once) while set.
    refusing: AtomicBool,
    stop: AtomicBool,
    /// Every byte forwarded, both directions, for checks of what travels in clear.
    captured: Mutex<Vec<u8>>,
}

/// A running proxy to one upstream address.
pub struct Proxy {
    /// Where to connect instead of the upstream.
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:random` to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let connections = Arc::new(Mutex::new(Vec::new()));
        {
            let faults = Arc::clone(&faults);
            let connections = Arc::clone(&connections);
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if faults.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    if faults.refusing.load(Ordering::Acquire) {
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    {
                        let mut list = connections.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                    }
                    for (from, to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server, client),
                    ] {
                        let faults = Arc::clone(&faults);
                        std::thread::spawn(move || pump(from, to, &faults));
                    }
                }
            });
        }
        Self {
            addr,
            faults,
            connections,
        }
    }

    /// Delays every forwarded read by `delay`.
    pub fn delay(&self, delay: Duration) {
        self.faults
            .delay_micros
            .store(delay.as_micros() as u64, Ordering::Release);
    }

    /// Holds all bytes (connections stay open) until `resume`.
    pub fn stall(&self) {
        self.faults.stalled.store(true, Ordering::Release);
    }

    /// Forwards again after `stall`.
    pub fn resume(&self) {
        self.faults.stalled.store(false, Ordering::Release);
    }

    /// Closes every open connection at once (both directions).
    pub fn drop_connections(&self) {
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Every byte forwarded so far, in both directions.
    pub fn captured(&self) -> Vec<u8> {
        self.faults.captured.lock().unwrap().clone()
    }

    /// Refuses (accepts and closes) new connections while `on`.
    pub fn refuse(&self, on: bool) {
        self.faults.refusing.store(on, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.faults.stop.store(true, Ordering::Release);
        self.drop_connections();
        let _ = TcpStream::connect(self.addr);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, faults: &Faults) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while faults.stalled.load(Ordering::Acquire) && !faults.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = faults.delay_micros.load(Ordering::Acquire);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        faults
            .captured
            .lock()
            .unwrap()
            .extend_from_slice(&buffer[..n]);
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
