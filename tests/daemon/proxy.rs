//! A loopback TCP proxy for network faults between a replica and its primary: added delay,
//! stalls (bytes held, connections open), one-way partitions (bytes held in one direction
//! only), dropped connections, refused connection attempts and reordered ones.

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

/// The most bytes `captured` keeps: the first ones forwarded.
const CAPTURE_LIMIT: usize = 16 << 20;

#[derive(Default)]
struct Faults {
    /// Added to every forwarded read, in microseconds.
    delay_micros: AtomicU64,
    /// Nothing is forwarded while set (connections stay open: a stall, or half-open).
    stalled: AtomicBool,
    /// Bytes from the connecting side to the upstream (a replica's hello and acks) are held
    /// while set.
    hold_up: AtomicBool,
    /// Bytes from the upstream to the connecting side (the log a primary ships) are held
    /// while set.
    hold_down: AtomicBool,
    /// Each new connection waits a random time below this before it is connected upstream,
    /// on its own thread, so attempts made in a row can reach the upstream out of order.
    connect_delay_max_micros: AtomicU64,
    /// State of the generator behind `connect_delay_max_micros`.
    connect_rng: AtomicU64,
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
                    let delay = faults.next_connect_delay();
                    if delay.is_zero() {
                        connect(client, upstream, &faults, &connections);
                    } else {
                        let faults = Arc::clone(&faults);
                        let connections = Arc::clone(&connections);
                        std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            connect(client, upstream, &faults, &connections);
                        });
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

    /// Holds (or forwards again) the bytes from the connecting side to the upstream: for a
    /// replica's link, what the replica sends its primary (hello, acknowledgements).
    pub fn hold_up(&self, on: bool) {
        self.faults.hold_up.store(on, Ordering::Release);
    }

    /// Holds (or forwards again) the bytes from the upstream to the connecting side: for a
    /// replica's link, the log its primary ships.
    pub fn hold_down(&self, on: bool) {
        self.faults.hold_down.store(on, Ordering::Release);
    }

    /// Delays each new connection by a random time below `max` (zero: none), each on its own
    /// thread: attempts made in a row can reach the upstream in another order.
    pub fn reorder_connects(&self, max: Duration) {
        self.faults
            .connect_delay_max_micros
            .store(max.as_micros() as u64, Ordering::Release);
    }

    /// Forwards everything again: no stall, no hold, no refusal, no delay of any kind.
    pub fn heal(&self) {
        self.resume();
        self.hold_up(false);
        self.hold_down(false);
        self.refuse(false);
        self.reorder_connects(Duration::ZERO);
        self.delay(Duration::ZERO);
    }

    /// Closes every open connection at once (both directions).
    pub fn drop_connections(&self) {
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Every byte forwarded so far, in both directions (the first 16 MiB).
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

impl Faults {
    /// The delay of the next connection attempt (xorshift over `connect_rng`).
    fn next_connect_delay(&self) -> Duration {
        let max = self.connect_delay_max_micros.load(Ordering::Acquire);
        if max == 0 {
            return Duration::ZERO;
        }
        let mut x = self.connect_rng.load(Ordering::Acquire) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.connect_rng.store(x, Ordering::Release);
        Duration::from_micros(x % max)
    }

    /// Whether bytes going `up` (to the upstream) or down are held now.
    fn holding(&self, up: bool) -> bool {
        self.stalled.load(Ordering::Acquire)
            || if up {
                self.hold_up.load(Ordering::Acquire)
            } else {
                self.hold_down.load(Ordering::Acquire)
            }
    }
}

/// Connects an accepted `client` to `upstream` and forwards both ways.
fn connect(
    client: TcpStream,
    upstream: SocketAddr,
    faults: &Arc<Faults>,
    connections: &Mutex<Vec<TcpStream>>,
) {
    if faults.refusing.load(Ordering::Acquire) {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    {
        let mut list = connections.lock().unwrap();
        list.push(client.try_clone().unwrap());
        list.push(server.try_clone().unwrap());
    }
    for (from, to, up) in [
        (
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            true,
        ),
        (server, client, false),
    ] {
        let faults = Arc::clone(faults);
        std::thread::spawn(move || pump(from, to, &faults, up));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, faults: &Faults, up: bool) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while faults.holding(up) && !faults.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = faults.delay_micros.load(Ordering::Acquire);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        {
            // Bounded, so hour-long runs through a proxy do not grow without end.
            let mut captured = faults.captured.lock().unwrap();
            let room = CAPTURE_LIMIT.saturating_sub(captured.len());
            captured.extend_from_slice(&buffer[..n.min(room)]);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
