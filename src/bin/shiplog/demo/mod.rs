//! `shiplog demo`: a failover told as a short story, with real processes on loopback. A
//! primary and two replicas take a write load, the primary is killed with SIGKILL, the most
//! advanced replica is promoted, every acknowledged write is read back, and the old primary
//! comes back, rewinds what no one else has and rejoins. Exit status 0 only if no
//! acknowledged write was lost and all three nodes hold the same data.

/// `println!` that ignores a closed stdout (`shiplog demo | head`): SIGPIPE is blocked here (see
/// [`node::watch_interrupts`]), and the story goes on to its end, where the nodes are stopped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod load;
mod node;
mod probe;
mod relay;
mod rollback;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use load::{CLIENTS, Load, Outcome};
use node::{Node, check_interrupted, free_port, port_was_taken};
use probe::{command, connect, expect_simple, info, position, wait_until};
use relay::Relay;

use shiplog::format::resp_reply::Reply;
use shiplog::resp_conn::Connection;

/// Between two lag readings.
const READING_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for replicas to connect, catch up or rejoin.
const CATCH_UP_TIMEOUT: Duration = Duration::from_mins(1);
/// How long a write on a synchronous primary waits for a replica before `-NOREPLICAS`.
const SYNC_TIMEOUT_MS: &str = "2000";
/// Longest load: 4 clients at 2,000 writes/s each make 4.8 million keys in 600 s, all read back.
const SECONDS_MAX: f64 = 600.0;
/// How long the write sent during the partition may wait for its reply.
const PARTITION_WAIT: Duration = Duration::from_millis(500);
/// Names of the nodes; the first starts as the primary.
const NAMES: [&str; 3] = ["n1", "n2", "n3"];
/// How many more ports a new node tries when the one chosen was taken before it listened.
const PORT_RETRIES: u32 = 5;

/// `shiplog demo`'s settings.
#[derive(Debug, clap::Args)]
pub struct DemoOptions {
    /// Directory to create the demo's temporary directory in [default: the system's].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the nodes' data directories at the end.
    #[arg(long)]
    pub keep: bool,
    /// Seconds of load before the primary is killed.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Replicate asynchronously (no --sync-replicas), to see the acknowledged writes a
    /// failover loses then; the demo exits 1 when it loses any.
    #[arg(long = "async")]
    pub asynchronous: bool,
}

/// The three nodes and how to start them again.
struct Cluster {
    daemon: PathBuf,
    root: PathBuf,
    sync: bool,
    nodes: Vec<Node>,
    /// The replicas' links to the first primary, to cut before it is killed.
    relays: Vec<Relay>,
}

impl Cluster {
    fn client(&self, i: usize) -> Result<Connection, String> {
        connect(&self.nodes[i].addr)
    }

    /// The flags every node starts with: `--sync-replicas 1` unless `--async`.
    fn flags(&self) -> Vec<String> {
        if self.sync {
            ["--sync-replicas", "1", "--sync-timeout-ms", SYNC_TIMEOUT_MS]
                .map(str::to_owned)
                .to_vec()
        } else {
            Vec::new()
        }
    }

    fn start(&self, name: &'static str, addr: &str, primary: Option<&str>) -> Result<Node, String> {
        let mut flags = self.flags();
        if let Some(primary) = primary {
            flags.extend(["--replica-of".to_owned(), primary.to_owned()]);
        }
        Node::start(&self.daemon, name, &self.root.join(name), addr, &flags)
    }

    /// Starts a new node on a free port, trying another if something took it meanwhile (a
    /// second demo on this machine can pick the same one).
    fn start_on_free_port(
        &self,
        name: &'static str,
        primary: Option<&str>,
    ) -> Result<Node, String> {
        let mut attempts = 0;
        loop {
            let addr = format!("127.0.0.1:{}", free_port()?);
            match self.start(name, &addr, primary) {
                Err(e) if port_was_taken(&e) && attempts < PORT_RETRIES => attempts += 1,
                result => return result,
            }
        }
    }
}

/// What the failover did.
struct Failover {
    primary: usize,
    other: usize,
    epoch: u64,
    first_write_ms: f64,
}

/// Runs the demo.
pub fn run(options: &DemoOptions) -> Result<ExitCode, String> {
    let daemon = node::daemon_path()?;
    if !(options.seconds.is_finite() && options.seconds > 0.0 && options.seconds <= SECONDS_MAX) {
        return Err(format!(
            "--seconds must be more than 0 and at most {SECONDS_MAX}"
        ));
    }
    node::watch_interrupts()?;
    let sync = !options.asynchronous;
    let mut builder = tempfile::Builder::new();
    builder.prefix("shiplog-demo-");
    let root = match &options.dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| format!("cannot create the demo's directory: {e}"))?;
    say!(
        "shiplog demo: a primary and two replicas, real processes on 127.0.0.1, data in {}",
        root.path().display()
    );
    let result = story(&daemon, root.path(), sync, options.seconds);
    if options.keep {
        say!("kept {}", root.keep().display());
    }
    result
}

/// The steps, in order; the nodes are killed when this returns, before their directory goes.
fn story(daemon: &Path, root: &Path, sync: bool, seconds: f64) -> Result<ExitCode, String> {
    if sync {
        say!(
            "mode: synchronous (--sync-replicas 1): a write is acknowledged once a replica \
             holds it durably, so no failover may lose it"
        );
    } else {
        say!(
            "mode: asynchronous (--async): a write is acknowledged once durable on the primary \
             alone; what it had not shipped when it died is lost"
        );
    }
    let mut cluster = start_cluster(daemon, root, sync)?;
    let outcome = run_load_and_kill(&mut cluster, seconds)?;
    let failover = fail_over(&cluster)?;
    let lost = check_acknowledged(&cluster, &failover, &outcome)?;
    let rejoin_ms = rejoin(&mut cluster, &failover, &lost)?;
    let converged = converged(&cluster)?;
    say!(
        "summary: {} writes acknowledged, {} indeterminate, {} lost | promotion to first write \
         {:.1} ms | rejoin {rejoin_ms:.0} ms",
        outcome.acked.len(),
        outcome.indeterminate,
        lost.len(),
        failover.first_write_ms,
    );
    Ok(verdict(sync, lost.len(), converged))
}

fn verdict(sync: bool, lost: usize, converged: bool) -> ExitCode {
    if lost == 0 && converged {
        say!("PASS: no acknowledged write was lost, and all three nodes hold the same data");
        return ExitCode::SUCCESS;
    }
    if lost > 0 {
        let why = if sync {
            "a bug: synchronous replication promises none"
        } else {
            "acknowledged by the primary alone and never shipped, as asynchronous replication \
             allows: run without --async for --sync-replicas 1"
        };
        say!("FAIL: {lost} acknowledged writes lost ({why})");
    }
    if !converged {
        say!("FAIL: the nodes do not hold the same data");
    }
    ExitCode::FAILURE
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(_, port)| port)
}

/// Step 1: the primary, then two replicas following it, all connected.
fn start_cluster(daemon: &Path, root: &Path, sync: bool) -> Result<Cluster, String> {
    let mut cluster = Cluster {
        daemon: daemon.to_owned(),
        root: root.to_owned(),
        sync,
        nodes: Vec::with_capacity(NAMES.len()),
        relays: Vec::new(),
    };
    for name in NAMES {
        let (primary, role) = match cluster.nodes.first() {
            None => (None, "primary".to_owned()),
            Some(first) => {
                let relay = Relay::start(&first.addr)?;
                let link = relay.addr.clone();
                cluster.relays.push(relay);
                (
                    Some(link),
                    format!("replica of {} (through a relay the demo can cut)", NAMES[0]),
                )
            }
        };
        let node = cluster.start_on_free_port(name, primary.as_deref())?;
        let addr = &node.addr;
        say!(
            "  started {name} on {addr} (pid {}) as {role}",
            node.pid().unwrap_or(0)
        );
        cluster.nodes.push(node);
    }
    let mut primary = cluster.client(0)?;
    let linked = wait_until(CATCH_UP_TIMEOUT, || {
        Ok(info(&mut primary)?.number("connected_slaves") == 2)
    })?;
    if !linked {
        return Err(format!(
            "the replicas did not connect to {}:\n{}",
            NAMES[0],
            cluster.nodes[0].log_tail()
        ));
    }
    Ok(cluster)
}

/// One lag reading: every node's LSN, and each replica's lag in LSNs and milliseconds as the
/// primary sees it (from durable there to applied on the replica).
fn reading(
    elapsed: Duration,
    acked: u64,
    nodes: &[Node],
    monitors: &mut [Connection],
) -> Result<String, String> {
    let mut line = format!("  {:>4.1}s  {acked:>6} acked", elapsed.as_secs_f64());
    let mut primary = None;
    for (node, monitor) in nodes.iter().zip(monitors.iter_mut()) {
        let fields = info(monitor)?;
        let name = node.name;
        // Writing to a String cannot fail.
        if fields.get("role") == Some("master") {
            let _ = write!(line, " | {name} LSN {}", fields.lsn());
            primary = Some(fields);
            continue;
        }
        let (lag_lsns, lag_ms) = primary
            .as_ref()
            .and_then(|p| p.replica_lag(port(&node.addr)))
            .unwrap_or_else(|| {
                let lag_lsns = fields.number("replica_lag_lsns").to_string();
                (lag_lsns, fields.number("replica_lag_ms").to_string())
            });
        let _ = write!(
            line,
            " | {name} LSN {} lag {lag_lsns} ({lag_ms} ms)",
            fields.lsn()
        );
    }
    Ok(line)
}

/// Steps 2 and 3: the load with lag readings, then a partition and SIGKILL of the primary
/// under it.
fn run_load_and_kill(cluster: &mut Cluster, seconds: f64) -> Result<Outcome, String> {
    let mut monitors = (0..NAMES.len())
        .map(|i| cluster.client(i))
        .collect::<Result<Vec<_>, _>>()?;
    let load = Load::start(&cluster.nodes[0].addr)?;
    say!(
        "load: {CLIENTS} clients SET distinct keys on {} for {seconds} s (LSNs and replica lag \
         twice a second)",
        NAMES[0]
    );
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(seconds);
    let mut due = READING_INTERVAL;
    while due <= run_for {
        std::thread::sleep(due.saturating_sub(started.elapsed()));
        check_interrupted()?;
        say!(
            "{}",
            reading(
                started.elapsed(),
                load.acked(),
                &cluster.nodes,
                &mut monitors
            )?
        );
        due += READING_INTERVAL;
    }
    std::thread::sleep(run_for.saturating_sub(started.elapsed()));
    let partition_write = partition(cluster)?;
    let pid = cluster.nodes[0].pid().unwrap_or(0);
    cluster.nodes[0].kill();
    let mut outcome = load.finish()?;
    match partition_write {
        Some(write) => outcome.acked.push(write),
        None => outcome.indeterminate += 1,
    }
    say!(
        "kill -9 {} (pid {pid}) under load: {} writes acknowledged in all, {} indeterminate \
         (no reply)",
        NAMES[0],
        outcome.acked.len(),
        outcome.indeterminate,
    );
    if let Some(error) = &outcome.first_error {
        say!("  (some writes were answered with an error before the kill: {error})");
    }
    Ok(outcome)
}

/// Step 3, first half: a network partition cuts the primary off from its replicas while the
/// load goes on, and one more write is sent to it; returns that write if it was acknowledged.
fn partition(cluster: &Cluster) -> Result<Option<(String, String)>, String> {
    for relay in &cluster.relays {
        relay.cut();
    }
    let (key, value) = ("demo:during-partition", "only the old primary had this");
    let primary = &cluster.nodes[0].addr;
    let mut client = Connection::connect(primary, PARTITION_WAIT).map_err(|e| e.to_string())?;
    let cut = format!("partition: {} cut off from its replicas", NAMES[0]);
    match client.command(&[b"SET", key.as_bytes(), value.as_bytes()]) {
        Ok(Reply::Simple(_)) => {
            say!("{cut}; a write sent to it is acknowledged all the same, by it alone");
            Ok(Some((key.to_owned(), value.to_owned())))
        }
        Ok(other) => {
            let other = other.describe();
            say!("{cut}; a write sent to it is answered {other} (indeterminate)");
            Ok(None)
        }
        Err(_) => {
            let ms = PARTITION_WAIT.as_millis();
            say!("{cut}; a write sent to it gets no reply in {ms} ms: it waits for a replica");
            Ok(None)
        }
    }
}

/// Step 4: the replicas' positions; the most advanced is promoted (the other next, if it
/// refuses); the other is re-pointed at it; then the first write.
fn fail_over(cluster: &Cluster) -> Result<Failover, String> {
    let mut positions = Vec::new();
    for i in 1..NAMES.len() {
        positions.push((position(&mut cluster.client(i)?)?, i));
    }
    // The most advanced first (the first named on a tie): promoting another would lose what
    // only it holds.
    positions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    say!(
        "positions: {}",
        positions
            .iter()
            .map(|(p, i)| format!(
                "{} durable LSN {} (epoch {})",
                NAMES[*i], p.durable_lsn, p.last_epoch
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let mut refusals = Vec::new();
    let mut promoted = None;
    for &(_, i) in &positions {
        match expect_simple(&mut cluster.client(i)?, &["REPLICAOF", "NO", "ONE"]) {
            Ok(_) => {
                promoted = Some(i);
                break;
            }
            Err(e) => refusals.push(format!("{}: {e}", NAMES[i])),
        }
    }
    let Some(primary) = promoted else {
        return Err(format!("no replica accepted the promotion: {refusals:?}"));
    };
    let promote_ms = millis(started.elapsed());
    let other = if primary == 1 { 2 } else { 1 };
    let addr = &cluster.nodes[primary].addr;
    expect_simple(
        &mut cluster.client(other)?,
        &["REPLICAOF", "127.0.0.1", port(addr)],
    )?;
    let mut client = cluster.client(primary)?;
    first_write(&mut client)?;
    let first_write_ms = millis(started.elapsed());
    let fields = info(&mut client)?;
    let epoch = fields.number("epoch");
    for refusal in &refusals {
        say!("  refused: {refusal}");
    }
    say!(
        "promote {} (REPLICAOF NO ONE): primary of epoch {epoch} from LSN {} in {promote_ms:.1} \
         ms; {} re-pointed to it",
        NAMES[primary],
        fields.number("epoch_start_lsn"),
        NAMES[other],
    );
    let note = if cluster.sync {
        " (re-pointing included: the write waits for that replica's acknowledgement)"
    } else {
        ""
    };
    say!(
        "first acknowledged write on {} {first_write_ms:.1} ms after the promotion command{note}",
        NAMES[primary]
    );
    Ok(Failover {
        primary,
        other,
        epoch,
        first_write_ms,
    })
}

/// Writes one key on the new primary, retrying error replies (a synchronous primary answers
/// `-NOREPLICAS` until its replica is back) for up to [`CATCH_UP_TIMEOUT`].
fn first_write(client: &mut Connection) -> Result<(), String> {
    let mut last = None;
    let written = wait_until(CATCH_UP_TIMEOUT, || {
        match command(
            client,
            &["SET", "demo:after-failover", "written by the new primary"],
        )? {
            Reply::Simple(_) => Ok(true),
            other => {
                last = Some(other.describe());
                Ok(false)
            }
        }
    })?;
    if written {
        Ok(())
    } else {
        let last = last.as_deref().unwrap_or("no reply");
        Err(format!("the new primary refused writes: {last}"))
    }
}

/// Keys of `acked` that `addr` does not hold with their acknowledged value.
fn missing(client: &mut Connection, acked: &[(String, String)]) -> Result<Vec<String>, String> {
    let keys: Vec<&str> = acked.iter().map(|(k, _)| k.as_str()).collect();
    let values = probe::values(client, &keys)?;
    Ok(acked
        .iter()
        .zip(values)
        .filter(|((_, value), found)| found.as_deref() != Some(value.as_bytes()))
        .map(|((key, _), _)| key.clone())
        .collect())
}

/// Waits until node `replica` has applied everything node `primary` made durable.
fn wait_caught_up(cluster: &Cluster, primary: usize, replica: usize) -> Result<bool, String> {
    let mut p = cluster.client(primary)?;
    let mut r = cluster.client(replica)?;
    wait_until(CATCH_UP_TIMEOUT, || {
        let target = info(&mut p)?.number("master_repl_offset");
        let fields = info(&mut r)?;
        Ok(fields.get("master_link_status") == Some("up")
            && fields.number("replica_applied_lsn") >= target)
    })
}

/// Step 5: every acknowledged write, read back from the new primary and from the other
/// replica once it caught up; returns the keys lost on either.
fn check_acknowledged(
    cluster: &Cluster,
    failover: &Failover,
    outcome: &Outcome,
) -> Result<Vec<String>, String> {
    let total = outcome.acked.len();
    let mut lost = missing(&mut cluster.client(failover.primary)?, &outcome.acked)?;
    say!(
        "check: {}/{total} acknowledged writes read back from {} with their values ({} lost)",
        total - lost.len(),
        NAMES[failover.primary],
        lost.len(),
    );
    let started = Instant::now();
    if !wait_caught_up(cluster, failover.primary, failover.other)? {
        return Err(format!("{} did not catch up", NAMES[failover.other]));
    }
    let caught_up_ms = millis(started.elapsed());
    let on_other = missing(&mut cluster.client(failover.other)?, &outcome.acked)?;
    say!(
        "check: {} caught up with {} in {caught_up_ms:.0} ms and holds {}/{total} of them",
        NAMES[failover.other],
        NAMES[failover.primary],
        total - on_other.len(),
    );
    lost.extend(on_other);
    lost.sort();
    lost.dedup();
    Ok(lost)
}

/// Step 6: the old primary restarts on its address as a replica of the new one, rewinds what
/// the new primary never had, and catches up; returns the milliseconds from restart to caught
/// up.
fn rejoin(cluster: &mut Cluster, failover: &Failover, lost: &[String]) -> Result<f64, String> {
    let new_primary = cluster.nodes[failover.primary].addr.clone();
    let addr = cluster.nodes[0].addr.clone();
    let started = Instant::now();
    cluster.nodes[0] = cluster.start(NAMES[0], &addr, Some(&new_primary))?;
    let mut old = cluster.client(0)?;
    let mut primary = cluster.client(failover.primary)?;
    // Its own log may reach the new primary's LSN already: caught up means on the new epoch.
    let rejoined = wait_until(CATCH_UP_TIMEOUT, || {
        let target = info(&mut primary)?.number("master_repl_offset");
        let fields = info(&mut old)?;
        Ok(fields.get("master_link_status") == Some("up")
            && fields.number("epoch") >= failover.epoch
            && fields.number("replica_applied_lsn") >= target)
    })?;
    if !rejoined {
        return Err(format!(
            "{} did not rejoin:\n{}",
            NAMES[0],
            cluster.nodes[0].log_tail()
        ));
    }
    let rejoin_ms = millis(started.elapsed());
    let fields = info(&mut old)?;
    report_rewind(cluster, &fields, lost)?;
    say!(
        "{} rejoined: caught up with {} {rejoin_ms:.0} ms after its restart",
        NAMES[0],
        NAMES[failover.primary],
    );
    Ok(rejoin_ms)
}

/// The rewind of the old primary: how many records it cut, into which file.
fn report_rewind(cluster: &Cluster, fields: &probe::Info, lost: &[String]) -> Result<(), String> {
    let rewinds = fields.number("replica_rewinds");
    let Some(file) = fields.get("replica_last_rollback").filter(|_| rewinds > 0) else {
        say!(
            "restart {} as a replica of the new primary: nothing to rewind (it held nothing the \
             new primary lacks)",
            NAMES[0]
        );
        return Ok(());
    };
    let path = cluster.nodes[0].dir.join(file);
    let keys: Vec<&str> = lost.iter().map(String::as_str).collect();
    let (records, lost_inside) = rollback::count(&path, &keys)?;
    let shown = path.strip_prefix(&cluster.root).unwrap_or(&path);
    say!(
        "restart {} as a replica of the new primary: rewound ({rewinds}x), {records} record{} \
         only it held cut to {}",
        NAMES[0],
        if records == 1 { "" } else { "s" },
        shown.display()
    );
    if lost.is_empty() {
        say!("  none of them was acknowledged: a rewind cuts only writes that were never answered");
    } else {
        say!(
            "  {lost_inside} of the {} lost acknowledged writes are in that file",
            lost.len()
        );
    }
    Ok(())
}

/// Step 6, end: every node holds the same keys and values.
fn converged(cluster: &Cluster) -> Result<bool, String> {
    let mut digests = Vec::new();
    for i in 0..NAMES.len() {
        digests.push(probe::digest(&mut cluster.client(i)?)?);
    }
    let same = digests.windows(2).all(|w| w[0] == w[1]);
    if same {
        say!(
            "converged: {} hold the same {} keys (digest {})",
            NAMES.join(", "),
            digests[0].0,
            digests[0].1
        );
    } else {
        let each: Vec<String> = NAMES
            .iter()
            .zip(&digests)
            .map(|(name, (keys, digest))| format!("{name} {keys} keys {digest}"))
            .collect();
        say!("DIVERGED: {}", each.join(", "));
    }
    Ok(same)
}
