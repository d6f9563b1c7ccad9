//! One load client: a thread with a connection to the primary (and one to a replica when reads
//! go there), sending `SET`s and `GET`s of random keys on its schedule with up to `pipeline`
//! requests in flight per connection, and timing every reply.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use super::client::Connection;
use super::error::LoadError;
use super::latency::Latencies;
use super::pacing::{Schedule, latency_origin};
use crate::format::resp_reply::Reply;
use crate::resp_conn::ConnError;

/// Longest sleep between checks of the stop flag while nothing is due.
const IDLE_CHECK: Duration = Duration::from_millis(50);
/// Width of the key's decimal number: `key:000000001234`, as `redis-benchmark -r` names keys.
const KEY_DIGITS: usize = 12;
const KEY_PREFIX: &[u8] = b"key:";

/// What each client sends.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Bytes of every value written.
    pub value_bytes: usize,
    /// Keys are drawn uniformly from `key:0` to `key:(keys - 1)`.
    pub keys: u64,
    /// Share of operations that are `GET`s, 0 to 1.
    pub read_ratio: f64,
    /// Most requests in flight on one connection.
    pub pipeline: usize,
}

/// When clients stop sending: at `end`, when the shared operation budget runs out, or when
/// `stop` is raised (another client failed, or the run was cut short).
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// No operation is sent at or after this time.
    pub end: Option<Instant>,
    /// Operations left to send, shared by all clients.
    pub ops_left: Option<&'a AtomicU64>,
    /// Raised to stop every client.
    pub stop: &'a AtomicBool,
}

impl Limits<'_> {
    /// Whether sending has to stop.
    #[must_use]
    pub fn expired(&self, now: Instant) -> bool {
        self.end.is_some_and(|end| now >= end) || self.stop.load(Ordering::Relaxed)
    }

    /// Takes one operation from the budget; false when it is spent.
    fn take_op(&self) -> bool {
        self.ops_left.is_none_or(|left| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }
}

/// Counts and latencies of one operation type.
#[derive(Debug, Clone, Default)]
pub struct OpStats {
    /// Latencies of the successful replies.
    pub latencies: Latencies,
    /// Error replies (`-ERR`, `-READONLY`, ...), not in `latencies`.
    pub errors: u64,
    /// `GET`s of a key that did not exist (in `latencies`).
    pub misses: u64,
}

impl OpStats {
    /// Adds `other`'s counts and latencies.
    pub fn add(&mut self, other: &Self) {
        self.latencies.add(&other.latencies);
        self.errors += other.errors;
        self.misses += other.misses;
    }
}

/// What one client measured.
#[derive(Debug, Clone)]
pub struct ClientStats {
    /// `SET`s.
    pub set: OpStats,
    /// `GET`s.
    pub get: OpStats,
    /// When its last reply arrived.
    pub finished: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Get,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    op: Op,
    /// Where its latency counts from.
    origin: Instant,
}

/// A connection and its requests in flight, oldest first (replies come in request order).
struct Lane {
    conn: Connection,
    pending: VecDeque<Pending>,
}

/// How a reply ended an operation.
enum Outcome {
    Done,
    Miss,
    ErrorReply,
    Unexpected(String),
}

fn classify(op: Op, reply: &Reply<'_>) -> Outcome {
    match (op, reply) {
        (Op::Set, Reply::Simple(b"OK")) | (Op::Get, Reply::Bulk(Some(_))) => Outcome::Done,
        (Op::Get, Reply::Bulk(None)) => Outcome::Miss,
        (_, Reply::Error(_)) => Outcome::ErrorReply,
        (_, other) => Outcome::Unexpected(other.describe()),
    }
}

/// xorshift64*: fast and good enough to spread keys; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, 0 included).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds (client indexes) start far apart; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    #[expect(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
    pub fn next_unit(&mut self) -> f64 {
        // The top 53 bits over 2^53: every value exactly representable, 1.0 never reached.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes `key:<n, 12 digits>` into `out` (which is [`KEY_PREFIX`] plus 12 bytes long).
fn write_key(out: &mut [u8], n: u64) {
    debug_assert_eq!(out.len(), KEY_PREFIX.len() + KEY_DIGITS);
    let mut n = n;
    for slot in out[KEY_PREFIX.len()..].iter_mut().rev() {
        let digit = (n % 10) as u8;
        *slot = b'0' + digit;
        n /= 10;
    }
}

/// Largest key space: every key number fits [`KEY_DIGITS`] digits.
pub const KEYS_MAX: u64 = 1_000_000_000_000;
const _: () = assert!(KEYS_MAX.ilog10() as usize == KEY_DIGITS);

/// One client's sending and receiving loop.
pub struct Client<'a> {
    workload: &'a Workload,
    schedule: Schedule,
    limits: Limits<'a>,
    /// `lanes[0]` takes writes (and reads without `--read-from`), `lanes[1]` reads.
    lanes: Vec<Lane>,
    rng: Rng,
    key: Vec<u8>,
    value: Vec<u8>,
    set: OpStats,
    get: OpStats,
}

impl<'a> Client<'a> {
    /// A client writing on `writes` and reading on `reads` (or on `writes` too).
    ///
    /// # Panics
    /// When the workload is out of the bounds [`super::LoadOptions::validate`] checks.
    #[must_use]
    pub fn new(
        workload: &'a Workload,
        schedule: Schedule,
        limits: Limits<'a>,
        writes: Connection,
        reads: Option<Connection>,
        seed: u64,
    ) -> Self {
        assert!(workload.pipeline >= 1, "a window of 0 sends nothing");
        assert!(
            (1..=KEYS_MAX).contains(&workload.keys),
            "key space out of bounds"
        );
        let lanes = std::iter::once(writes)
            .chain(reads)
            .map(|conn| Lane {
                conn,
                pending: VecDeque::with_capacity(workload.pipeline),
            })
            .collect();
        let mut key = KEY_PREFIX.to_vec();
        key.resize(KEY_PREFIX.len() + KEY_DIGITS, b'0');
        Self {
            workload,
            schedule,
            limits,
            lanes,
            rng: Rng::new(seed),
            key,
            value: vec![b'x'; workload.value_bytes],
            set: OpStats::default(),
            get: OpStats::default(),
        }
    }

    fn lane_of(&self, op: Op) -> usize {
        match op {
            Op::Get if self.lanes.len() > 1 => 1,
            _ => 0,
        }
    }

    fn pick_op(&mut self) -> Op {
        if self.workload.read_ratio > 0.0 && self.rng.next_unit() < self.workload.read_ratio {
            Op::Get
        } else {
            Op::Set
        }
    }

    /// Runs until the limits stop it and every reply is in.
    ///
    /// # Errors
    /// On a failed connection, a reply timeout or a reply the command cannot have. The stop
    /// flag is raised first, so the other clients end too.
    pub fn run(mut self) -> Result<ClientStats, LoadError> {
        let result = self.run_loop();
        if result.is_err() {
            self.limits.stop.store(true, Ordering::Relaxed);
        }
        result
    }

    fn run_loop(&mut self) -> Result<ClientStats, LoadError> {
        let mut sent = 0u64;
        // The next operation and its due time, chosen once and kept until it is sent: it
        // waits (and its latency grows) while its connection's window is full.
        let mut next: Option<(Op, Option<Instant>)> = None;
        let mut stopping = false;
        let mut finished = Instant::now();
        loop {
            let now = Instant::now();
            stopping = stopping || self.limits.expired(now);
            while !stopping {
                let (op, due) = if let Some(next) = next {
                    next
                } else {
                    let chosen = (self.pick_op(), self.schedule.due(sent));
                    next = Some(chosen);
                    chosen
                };
                if due.is_some_and(|due| due > now) {
                    break;
                }
                let lane = self.lane_of(op);
                if self.lanes[lane].pending.len() >= self.workload.pipeline {
                    break;
                }
                if !self.limits.take_op() {
                    stopping = true;
                    break;
                }
                self.queue(lane, op, latency_origin(due, now));
                next = None;
                sent += 1;
            }
            for lane in &mut self.lanes {
                lane.conn.flush()?;
            }
            let in_flight: usize = self.lanes.iter().map(|l| l.pending.len()).sum();
            if in_flight == 0 {
                if stopping {
                    return Ok(self.stats(finished));
                }
                // Paced and idle: sleep until the next operation is due.
                let due = next.and_then(|(_, due)| due).unwrap_or(now);
                std::thread::sleep(due.saturating_duration_since(now).min(IDLE_CHECK));
                continue;
            }
            // Wait for replies, but only until the next operation is due when it can be sent
            // then: a blocking read here would delay that send behind a reply.
            let until_due = match next {
                Some((op, Some(due)))
                    if !stopping
                        && self.lanes[self.lane_of(op)].pending.len() < self.workload.pipeline =>
                {
                    Some(due.saturating_duration_since(now).min(IDLE_CHECK))
                }
                _ => None,
            };
            if let Some(at) = self.receive(until_due)? {
                finished = at;
            }
        }
    }

    fn queue(&mut self, lane: usize, op: Op, origin: Instant) {
        let n = self.rng.next_u64() % self.workload.keys;
        write_key(&mut self.key, n);
        let lane = &mut self.lanes[lane];
        match op {
            Op::Set => lane.conn.queue(&[b"SET", &self.key, &self.value]),
            Op::Get => lane.conn.queue(&[b"GET", &self.key]),
        }
        lane.pending.push_back(Pending { op, origin });
    }

    /// Waits up to `until_due` (`None`: until a reply comes, within the reply timeout) for
    /// replies on the lanes with requests in flight, and records those that arrived; the time
    /// they arrived, if any.
    fn receive(&mut self, until_due: Option<Duration>) -> Result<Option<Instant>, LoadError> {
        let waiting = self.lanes.iter().filter(|l| !l.pending.is_empty()).count();
        let ready = if until_due.is_none() && waiting == 1 {
            // One connection and nothing to send before its reply: a plain blocking read
            // (bounded by the socket's timeout) saves a poll call per reply.
            self.lanes.iter().map(|l| !l.pending.is_empty()).collect()
        } else {
            self.poll(until_due)?
        };
        if ready.iter().all(|r| !r) {
            // Nothing came: fail once the oldest request has waited the whole reply timeout.
            let oldest = self
                .lanes
                .iter()
                .filter_map(|l| l.pending.front().map(|p| (p.origin, l.conn.addr())))
                .min_by_key(|(origin, _)| *origin);
            if let Some((origin, addr)) = oldest
                && origin.elapsed() >= super::REPLY_TIMEOUT
            {
                return Err(ConnError::Timeout {
                    addr: addr.to_owned(),
                    timeout_ms: super::REPLY_TIMEOUT.as_millis(),
                }
                .into());
            }
            return Ok(None);
        }
        let mut arrived = None;
        for (index, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            let lane = &mut self.lanes[index];
            lane.conn.read_some()?;
            // Every reply in this read arrived together: one clock read for all of them.
            let now = Instant::now();
            arrived = Some(now);
            loop {
                let Some(pending) = lane.pending.front().copied() else {
                    // Bytes with no request waiting: a reply nobody asked for.
                    if lane.conn.take_reply()?.is_some() {
                        return Err(lane
                            .conn
                            .unexpected("nothing", "a reply with no request in flight".into())
                            .into());
                    }
                    break;
                };
                let Some(outcome) = lane
                    .conn
                    .take_reply()?
                    .map(|reply| classify(pending.op, &reply))
                else {
                    break;
                };
                lane.pending.pop_front();
                let stats = match pending.op {
                    Op::Set => &mut self.set,
                    Op::Get => &mut self.get,
                };
                match outcome {
                    Outcome::Done => stats.latencies.record(now - pending.origin),
                    Outcome::Miss => {
                        stats.latencies.record(now - pending.origin);
                        stats.misses += 1;
                    }
                    Outcome::ErrorReply => stats.errors += 1,
                    Outcome::Unexpected(reply) => {
                        let command = match pending.op {
                            Op::Set => "SET",
                            Op::Get => "GET",
                        };
                        return Err(lane.conn.unexpected(command, reply).into());
                    }
                }
            }
        }
        Ok(arrived)
    }

    /// Which lanes with requests in flight are readable within `wait`.
    fn poll(&self, wait: Option<Duration>) -> Result<Vec<bool>, LoadError> {
        let waiting: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| !self.lanes[i].pending.is_empty())
            .collect();
        let mut fds: Vec<PollFd<'_>> = waiting
            .iter()
            .map(|&i| PollFd::new(self.lanes[i].conn.as_fd(), PollFlags::POLLIN))
            .collect();
        // ppoll, not poll: its timeout has nanosecond resolution, poll's whole milliseconds
        // would make a paced send up to a millisecond late.
        let timeout = TimeSpec::from_duration(wait.unwrap_or(super::REPLY_TIMEOUT));
        loop {
            match ppoll(&mut fds, Some(timeout), None) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(ConnError::Io {
                        addr: self.lanes[waiting[0]].conn.addr().to_owned(),
                        source: e.into(),
                    }
                    .into());
                }
            }
        }
        let mut ready = vec![false; self.lanes.len()];
        for (fd, &lane) in fds.iter().zip(&waiting) {
            // Hang-up and errors count as readable: the read then reports them.
            ready[lane] = fd.revents().is_some_and(|r| !r.is_empty());
        }
        Ok(ready)
    }

    fn stats(&mut self, finished: Instant) -> ClientStats {
        ClientStats {
            set: std::mem::take(&mut self.set),
            get: std::mem::take(&mut self.get),
            finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_and_in_the_key_space() {
        let mut key = KEY_PREFIX.to_vec();
        key.resize(KEY_PREFIX.len() + KEY_DIGITS, b'0');
        write_key(&mut key, 1234);
        assert_eq!(key, b"key:000000001234");
        write_key(&mut key, KEYS_MAX - 1);
        assert_eq!(key, b"key:999999999999");
    }

    #[test]
    fn the_read_ratio_is_kept_and_the_generator_is_uniform_enough() {
        let mut rng = Rng::new(0);
        let n = 100_000;
        let below = (0..n).filter(|_| rng.next_unit() < 0.3).count();
        assert!((29_000..31_000).contains(&below), "{below}");
        let mut buckets = [0u32; 10];
        for _ in 0..n {
            let b = usize::try_from(rng.next_u64() % 10).unwrap_or(0);
            buckets[b] += 1;
        }
        assert!(
            buckets.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{buckets:?}"
        );
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn replies_are_classified_by_the_command_they_answer() {
        assert!(matches!(
            classify(Op::Set, &Reply::Simple(b"OK")),
            Outcome::Done
        ));
        assert!(matches!(
            classify(Op::Get, &Reply::Bulk(Some(b"v"))),
            Outcome::Done
        ));
        assert!(matches!(
            classify(Op::Get, &Reply::Bulk(None)),
            Outcome::Miss
        ));
        assert!(matches!(
            classify(Op::Set, &Reply::Error(b"READONLY")),
            Outcome::ErrorReply
        ));
        assert!(matches!(
            classify(Op::Set, &Reply::Bulk(None)),
            Outcome::Unexpected(_)
        ));
        assert!(matches!(
            classify(Op::Get, &Reply::Simple(b"OK")),
            Outcome::Unexpected(_)
        ));
    }

    /// A server that answers `+OK` to every `SET`, but holds its first reply for `stall`.
    fn stalling_server(stall: Duration) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let command = b"$3\r\nSET\r\n";
            let mut carry: Vec<u8> = Vec::new();
            let mut first = true;
            let mut buf = [0u8; 4096];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                carry.extend_from_slice(&buf[..n]);
                let count = carry
                    .windows(command.len())
                    .filter(|w| w == command)
                    .count();
                let keep = carry.len().saturating_sub(command.len() - 1);
                carry.drain(..keep);
                if count > 0 && first {
                    first = false;
                    std::thread::sleep(stall);
                }
                if stream.write_all(&b"+OK\r\n".repeat(count)).is_err() {
                    return;
                }
            }
        });
        addr
    }

    #[test]
    fn a_stall_is_charged_to_every_operation_due_during_it() {
        let addr = stalling_server(Duration::from_millis(200));
        let workload = Workload {
            value_bytes: 8,
            keys: 10,
            read_ratio: 0.0,
            pipeline: 1,
        };
        let stop = AtomicBool::new(false);
        let start = Instant::now() + Duration::from_millis(10);
        let limits = Limits {
            end: Some(start + Duration::from_millis(500)),
            ops_left: None,
            stop: &stop,
        };
        let conn = Connection::connect(&addr, Duration::from_secs(10)).unwrap();
        // 1,000 per second for 0.5 s: an operation every millisecond.
        let schedule = Schedule::shared(start, 0, 1, 1000);
        let stats = Client::new(&workload, schedule, limits, conn, None, 7)
            .run()
            .unwrap();
        let s = stats.set.latencies.summary();
        // Every operation due was sent and timed, the ones held back by the stall included.
        assert!((495..=500).contains(&s.count), "{s:?}");
        // Those due in the first 200 ms waited for the stall's end: 200 ms down to ~0, a
        // fifth of all above 100 ms. Timed from their (late) sends, they would all look fast.
        assert!(s.max_us >= 190_000, "{s:?}");
        assert!(s.p90_us >= 100_000, "{s:?}");
        assert!(s.p50_us < 50_000, "the rest ran on time: {s:?}");
    }

    #[test]
    fn the_operation_budget_is_shared_and_never_overspent() {
        let left = AtomicU64::new(3);
        let stop = AtomicBool::new(false);
        let limits = Limits {
            end: None,
            ops_left: Some(&left),
            stop: &stop,
        };
        let taken = (0..10).filter(|_| limits.take_op()).count();
        assert_eq!(taken, 3);
        assert!(!limits.expired(Instant::now()));
        stop.store(true, Ordering::Relaxed);
        assert!(limits.expired(Instant::now()));
        let past = Limits {
            end: Some(Instant::now()),
            ops_left: None,
            stop: &AtomicBool::new(false),
        };
        assert!(past.expired(Instant::now()));
        assert!(past.take_op(), "no budget: unlimited");
    }
}
