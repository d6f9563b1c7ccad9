//! The demo's `shiplogd` processes: started on a port chosen beforehand (so a node can come
//! back on the same address), watched for readiness, and never left behind: dropping a
//! [`Node`] kills its process, and SIGINT/SIGTERM make every wait give up so the drops run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// How long a node may take to recover its directory and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node's log kept to explain a failure.
const LOG_TAIL_LINES: usize = 20;
/// The line `shiplogd` prints once it serves clients.
const READY_LINE: &str = "ready to accept connections";

/// Set once SIGINT or SIGTERM arrives: every wait of the demo checks it and gives up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT, SIGTERM and SIGPIPE in this thread (and so in every thread it starts) and
/// turns SIGINT/SIGTERM into [`interrupted`]. Call before starting any other thread.
///
/// IMPORTANT: SIGPIPE must stay blocked: `shiplog` restores its default disposition (to die
/// quietly in a closed pipe), and the load writes into the sockets of a primary the demo kills;
/// blocked, a write there fails with EPIPE instead of killing the demo with its children left.
pub fn watch_interrupts() -> Result<(), String> {
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    let mut blocked = stop;
    blocked.add(Signal::SIGPIPE);
    blocked
        .thread_block()
        .map_err(|e| format!("cannot block SIGINT/SIGTERM/SIGPIPE: {e}"))?;
    std::thread::Builder::new()
        .name("demo-signals".to_owned())
        .spawn(move || {
            if stop.wait().is_ok() {
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// True once the user asked the demo to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err` once the user asked the demo to stop.
pub fn check_interrupted() -> Result<(), String> {
    if interrupted() {
        Err("interrupted: stopping the nodes".to_owned())
    } else {
        Ok(())
    }
}

/// The lowest port tried, well above the well-known and commonly configured ones.
const LOWEST_PORT: u16 = 10_000;
/// Ports tried before giving up.
const PORT_ATTEMPTS: u64 = 200;

/// A port that was free a moment ago, below the kernel's ephemeral range when there is room.
///
/// IMPORTANT: not `bind(0)`. A node keeps its port across a kill and a restart, and a port in
/// the ephemeral range can be handed out in between, to an outgoing connection or to another
/// `bind(0)` (the relays); that once failed a restart with "Address already in use".
pub fn free_port() -> Result<u16, String> {
    let Some(ephemeral_low) = ephemeral_low().filter(|&low| low > LOWEST_PORT + 1_000) else {
        return any_free_port();
    };
    let span = u64::from(ephemeral_low - LOWEST_PORT);
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            d.as_secs().rotate_left(30) ^ u64::from(d.subsec_nanos())
        })
        ^ u64::from(std::process::id()).rotate_left(32);
    for _ in 0..PORT_ATTEMPTS {
        // SplitMix64: spreads concurrent demos (different clocks and pids) over the span.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let port = LOWEST_PORT + u16::try_from(z % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    any_free_port()
}

/// The low end of the kernel's ephemeral port range, when it can be read.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Whatever port the kernel offers: the fallback when there is no room below its range.
fn any_free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// True when a node failed to start because its port was taken.
pub fn port_was_taken(error: &str) -> bool {
    error.contains("Address already in use")
}

/// `shiplogd`, next to the running `shiplog`.
pub fn daemon_path() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the running executable: {e}"))?
        .with_file_name("shiplogd");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "{} is missing: build both binaries first with `cargo build --release`",
            exe.display()
        ))
    }
}

/// One running `shiplogd`.
pub struct Node {
    /// Its name in the narrative.
    pub name: &'static str,
    /// Where clients connect, `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data directory.
    pub dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Node {
    /// Starts `shiplogd --dir DIR --listen ADDR EXTRA...` and waits until it is ready.
    pub fn start(
        daemon: &Path,
        name: &'static str,
        dir: &Path,
        addr: &str,
        extra: &[String],
    ) -> Result<Self, String> {
        let mut child = Command::new(daemon)
            .arg("--dir")
            .arg(dir)
            .args(["--listen", addr])
            .args(extra)
            .env_remove("SHIPLOG_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", daemon.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            // Drains the log for the node's whole life: a full pipe would stall the node.
            std::thread::spawn(move || keep_log(stderr, &log, &ready_tx));
        }
        let mut node = Self {
            name,
            addr: addr.to_owned(),
            dir: dir.to_owned(),
            child: Some(child),
            log,
        };
        node.wait_ready(&ready_rx)?;
        Ok(node)
    }

    fn wait_ready(&mut self, ready: &mpsc::Receiver<()>) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            check_interrupted()?;
            match ready.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    self.kill();
                    return Err(format!(
                        "{} did not become ready:\n{}",
                        self.name,
                        self.log_tail()
                    ));
                }
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (no chance to clean up), and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Std's kill is SIGKILL; an error means it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines the node logged.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the last lines of a node's log and says when the ready line passes.
fn keep_log(
    stderr: std::process::ChildStderr,
    log: &Mutex<VecDeque<String>>,
    ready: &mpsc::Sender<()>,
) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains(READY_LINE) {
            let _ = ready.send(());
        }
        if let Ok(mut log) = log.lock() {
            if log.len() == LOG_TAIL_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    }
}
