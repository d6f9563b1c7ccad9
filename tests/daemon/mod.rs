//! Runs `shiplogd` as a real process for the server tests: start on a free port, talk to it
//! with the `redis` crate, stop it with SIGTERM or kill it with SIGKILL.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test helpers: each test binary uses a part; a failed unwrap is a failed test"
)]

pub mod cluster;
pub mod history;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shiplog::format::resp_reply::{Limits, encode_command, parse_reply};

/// A running `shiplogd`.
pub struct Daemon {
    child: Option<Child>,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Metrics endpoint, when started with one.
    pub metrics: Option<SocketAddr>,
    /// Its data directory.
    pub dir: PathBuf,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `shiplogd --dir DIR --listen 127.0.0.1:0 EXTRA...` and waits until it is ready.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::try_start(dir, extra).unwrap_or_else(|log| panic!("shiplogd did not start:\n{log}"))
    }

    /// Like `start`, but returns the log if the daemon exits before it is ready.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Self, String> {
        Self::try_start_with_env(dir, extra, &[])
    }

    /// Like `try_start`, with extra environment variables.
    pub fn try_start_with_env(
        dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shiplogd"));
        command.envs(envs.iter().copied());
        command.arg("--dir").arg(dir);
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(extra)
            .env_remove("SHIPLOG_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("ready to accept connections")
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(line.clone());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let ready = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                return Err(log.lock().unwrap().clone());
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            let at = ready.find(&format!("{name}="))? + name.len() + 1;
            let rest = &ready[at..];
            let rest = rest.strip_prefix("Some(").unwrap_or(rest);
            let end = rest.find([' ', ')']).unwrap_or(rest.len());
            rest[..end].parse().ok()
        };
        Ok(Self {
            addr: field("listen").unwrap(),
            metrics: field("metrics"),
            child: Some(child),
            dir: dir.to_owned(),
            log,
        })
    }

    /// The `redis://` URL of the daemon.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A new client connection.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        client
            .get_connection_with_timeout(Duration::from_secs(10))
            .unwrap()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends `signal` (say SIGSTOP or SIGCONT) and goes on.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Sends `signal` and waits for the exit.
    pub fn signal_and_wait(mut self, signal: Signal) -> ExitStatus {
        kill(self.pid(), signal).unwrap();
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shiplogd did not exit after {signal:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, and the exit must be clean.
    pub fn stop(self) {
        let log = Arc::clone(&self.log);
        let status = self.signal_and_wait(Signal::SIGTERM);
        assert!(
            status.success(),
            "shiplogd exited with {status}:\n{}",
            log.lock().unwrap()
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(self) {
        let _ = self.signal_and_wait(Signal::SIGKILL);
    }

    /// Names of the daemon's threads.
    pub fn thread_names(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
            .map(|s| s.trim().to_owned())
            .collect()
    }

    /// Resident memory of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 30 s for a log line containing `needle`: the log is read by another thread,
    /// so a line the daemon has written may not be in `log()` yet.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw RESP connection, for exact reply bytes and hostile input; replies are framed by the
/// library's codec (`shiplog::format::resp_reply`).
pub struct Raw {
    pub stream: std::net::TcpStream,
    /// Bytes received and not yet returned as a reply.
    received: Vec<u8>,
}

/// What a raw connection accepts: any reply the server may send (a bulk string up to the
/// server's own bound), so a test sees what was sent rather than a client's refusal.
const RAW_LIMITS: Limits = Limits {
    bulk_max_bytes: 512 << 20,
    aggregate_max_len: 1 << 24,
    ..Limits::DEFAULT
};

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            stream,
            received: Vec::new(),
        }
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self.stream, bytes).unwrap();
    }

    /// Sends a command as a multibulk request.
    pub fn send_command(&mut self, args: &[&[u8]]) {
        let mut request = Vec::new();
        encode_command(&mut request, args);
        self.send(&request);
    }

    /// Sends a command and returns its whole reply, as the bytes on the wire.
    pub fn command(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send_command(&args);
        self.reply()
    }

    /// Reads one complete reply (any type the server sends) and returns its bytes.
    pub fn reply(&mut self) -> String {
        loop {
            match parse_reply(&self.received, &RAW_LIMITS) {
                Ok(Some((_, used))) => {
                    let reply: Vec<u8> = self.received.drain(..used).collect();
                    return String::from_utf8_lossy(&reply).into_owned();
                }
                Ok(None) => {
                    let mut chunk = [0u8; 64 << 10];
                    let n = std::io::Read::read(&mut self.stream, &mut chunk).unwrap();
                    assert!(n > 0, "connection closed while a reply was expected");
                    self.received.extend_from_slice(&chunk[..n]);
                }
                Err(e) => panic!(
                    "malformed reply ({e}): {:?}",
                    String::from_utf8_lossy(&self.received)
                ),
            }
        }
    }

    /// True once the server has closed the connection (reads end of stream).
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match std::io::Read::read_to_end(&mut self.stream, &mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A port that was free a moment ago (for a node that must restart on the same address).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Below Linux's ephemeral range (32768-60999 by default): a port the kernel hands to an
    // outgoing connection or to a `bind(0)` (the proxies) is never one of these, so a node
    // killed and restarted on its fixed port finds it free. A port chosen with `bind(0)` was
    // once taken in between by another test's connection ("Address already in use").
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut x = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        let port = 20_000 + (x % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A field of `INFO section`, parsed.
pub fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(con).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::to_owned)
}

/// Polls `check` every 10 ms for up to `secs` seconds; true once it holds.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Waits until the replica at `replica` has applied everything `primary` made durable.
pub fn wait_caught_up(primary: &Daemon, replica: &Daemon, secs: u64) -> bool {
    let mut p = primary.client();
    let mut r = replica.client();
    wait_until(secs, || {
        let target: Option<u64> =
            info_field(&mut p, "replication", "master_repl_offset").and_then(|v| v.parse().ok());
        let applied: Option<u64> =
            info_field(&mut r, "replication", "replica_applied_lsn").and_then(|v| v.parse().ok());
        matches!((target, applied), (Some(t), Some(a)) if a >= t)
    })
}

/// Every key and value of a node, sorted.
pub fn dump(con: &mut redis::Connection) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(chunk).query(con).unwrap();
        for (k, v) in chunk.iter().zip(values) {
            out.push((k.clone(), v.unwrap()));
        }
    }
    out
}

/// Overwrites four keys with 200-byte values, `rounds` writes in all: the log fills with dead
/// records that compaction wants gone.
pub fn overwrite_load(con: &mut redis::Connection, rounds: usize) {
    let value = [b'v'; 200];
    for i in 0..rounds {
        let _: () = redis::Commands::set(con, format!("k{}", i % 4), &value[..]).unwrap();
    }
}

/// Starts a replica of `primary` (an address, or anything that prints as one) in `dir`.
pub fn start_replica(dir: &Path, primary: impl std::fmt::Display) -> Daemon {
    Daemon::start(dir, &["--replica-of", &primary.to_string()])
}

/// A field of the node's `INFO replication`, on a new connection.
pub fn replication_field(node: &Daemon, field: &str) -> Option<String> {
    info_field(&mut node.client(), "replication", field)
}

/// `GET /metrics` from the metrics endpoint at `addr`: it must answer 200; returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut http, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut http, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap()
}
