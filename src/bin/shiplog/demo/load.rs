//! The demo's write load: a few clients, each setting keys no other client writes, and keeping
//! every key whose write was acknowledged. A write that got no reply (the primary died under
//! it) or an error reply is indeterminate: it may or may not have happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::node::interrupted;
use super::probe::connect;
use shiplog::format::resp_reply::Reply;
use shiplog::resp_conn::Connection;

/// Client connections, one thread each.
pub const CLIENTS: usize = 4;
/// Most writes per second of one client: keeps the key count, and the final checks, small.
const CLIENT_RATE_MAX: u64 = 2000;

/// What one client saw.
#[derive(Default)]
pub struct Outcome {
    /// Keys and values whose `SET` was answered `+OK`.
    pub acked: Vec<(String, String)>,
    /// Writes sent without a reply, or answered with an error.
    pub indeterminate: u64,
    /// The first error reply, if any (say `-NOREPLICAS`).
    pub first_error: Option<String>,
}

/// The running clients.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    clients: Vec<JoinHandle<Outcome>>,
}

impl Load {
    /// Connects [`CLIENTS`] clients to `addr` and starts them writing.
    pub fn start(addr: &str) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::with_capacity(CLIENTS);
        for id in 0..CLIENTS {
            let client = connect(addr)?;
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            let handle = std::thread::Builder::new()
                .name(format!("demo-client-{id}"))
                .spawn(move || write_keys(client, id, &stop, &acked))
                .map_err(|e| format!("cannot start a client thread: {e}"))?;
            clients.push(handle);
        }
        Ok(Self {
            stop,
            acked,
            clients,
        })
    }

    /// Writes acknowledged so far, all clients together.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops the clients (those still writing) and gathers what they saw.
    pub fn finish(self) -> Result<Outcome, String> {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Outcome::default();
        for handle in self.clients {
            let outcome = handle
                .join()
                .map_err(|_| "a client thread panicked".to_owned())?;
            total.acked.extend(outcome.acked);
            total.indeterminate += outcome.indeterminate;
            total.first_error = total.first_error.or(outcome.first_error);
        }
        Ok(total)
    }
}

/// One client's loop: `SET demo:<client>:<n> v<n>-<client>` until stopped or disconnected.
fn write_keys(mut client: Connection, id: usize, stop: &AtomicBool, acked: &AtomicU64) -> Outcome {
    let mut outcome = Outcome::default();
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        let key = format!("demo:{id}:{sent:09}");
        let value = format!("v{sent}-{id}");
        sent += 1;
        match client.command(&[b"SET", key.as_bytes(), value.as_bytes()]) {
            Ok(Reply::Simple(_)) => {
                outcome.acked.push((key, value));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(reply) => {
                outcome.indeterminate += 1;
                if outcome.first_error.is_none() {
                    outcome.first_error = Some(reply.describe());
                }
            }
            Err(_) => {
                // No reply: the write may have been applied, or not. The connection is gone.
                outcome.indeterminate += 1;
                break;
            }
        }
        pace(started, sent);
    }
    outcome
}

/// Sleeps while this client is ahead of [`CLIENT_RATE_MAX`].
fn pace(started: Instant, sent: u64) {
    let due = Duration::from_micros(sent.saturating_mul(1_000_000) / CLIENT_RATE_MAX);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(ahead);
    }
}
