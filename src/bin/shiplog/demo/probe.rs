//! Questions the demo asks a node over RESP: its replication fields, its position, its data.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::node::check_interrupted;
use shiplog::format::resp_reply::Reply;
use shiplog::resp_conn::Connection;

/// Bound on connecting and on each reply: a promotion asks every peer, so allow it seconds.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per `SCAN` step and per `MGET`.
const BATCH_KEYS: usize = 1000;
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A connection to `addr`.
pub fn connect(addr: &str) -> Result<Connection, String> {
    Connection::connect(addr, TIMEOUT).map_err(|e| e.to_string())
}

/// Sends a command of text arguments.
pub fn command<'c>(client: &'c mut Connection, args: &[&str]) -> Result<Reply<'c>, String> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client.command(&args).map_err(|e| e.to_string())
}

/// Sends a command whose reply must be a simple string; an error reply is an `Err`.
pub fn expect_simple(client: &mut Connection, args: &[&str]) -> Result<String, String> {
    match command(client, args)? {
        Reply::Simple(text) => Ok(String::from_utf8_lossy(text).into_owned()),
        Reply::Error(e) => Err(format!(
            "{} refused: {}",
            args.join(" "),
            String::from_utf8_lossy(e)
        )),
        other => Err(format!("{} answered {}", args.join(" "), other.describe())),
    }
}

/// The fields of `INFO replication`.
pub struct Info(HashMap<String, String>);

impl Info {
    /// A field's text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A numeric field, 0 when absent.
    pub fn number(&self, key: &str) -> u64 {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// A primary's view of its replica listening on `port` (a `slaveN` line): the LSNs it
    /// lags by and its replay lag in milliseconds (to the microsecond).
    pub fn replica_lag(&self, port: &str) -> Option<(String, String)> {
        let line = self.0.iter().find_map(|(key, value)| {
            let n = key.strip_prefix("slave")?;
            let numbered = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            let fields: HashMap<&str, &str> =
                value.split(',').filter_map(|f| f.split_once('=')).collect();
            (numbered && fields.get("port") == Some(&port)).then_some(fields)
        })?;
        Some((
            (*line.get("lag_lsns")?).to_owned(),
            (*line.get("replay_lag_ms")?).to_owned(),
        ))
    }

    /// The LSN this node holds: a primary's durable LSN, a replica's applied LSN.
    pub fn lsn(&self) -> u64 {
        if self.get("role") == Some("master") {
            self.number("master_repl_offset")
        } else {
            self.number("replica_applied_lsn")
        }
    }
}

/// `INFO replication`, parsed.
pub fn info(client: &mut Connection) -> Result<Info, String> {
    match command(client, &["INFO", "replication"])? {
        Reply::Bulk(Some(text)) => Ok(Info(
            String::from_utf8_lossy(text)
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
                .collect(),
        )),
        other => Err(format!("INFO answered {}", other.describe())),
    }
}

/// A node's answer to `SHIPLOG.POSITION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The epoch of its last durable record: compared first, as a promotion does (a longer
    /// log that ends in an older epoch is behind).
    pub last_epoch: u64,
    /// Its durable LSN.
    pub durable_lsn: u64,
}

/// `SHIPLOG.POSITION`: `*3 :durable_lsn :highest_epoch :last_epoch`.
pub fn position(client: &mut Connection) -> Result<Position, String> {
    let reply = command(client, &["SHIPLOG.POSITION"])?;
    if let Reply::Array(Some(items)) = &reply
        && let [
            Reply::Integer(lsn),
            Reply::Integer(_),
            Reply::Integer(epoch),
        ] = items.as_slice()
    {
        return Ok(Position {
            last_epoch: u64::try_from(*epoch).map_err(|_| format!("negative epoch {epoch}"))?,
            durable_lsn: u64::try_from(*lsn).map_err(|_| format!("negative LSN {lsn}"))?,
        });
    }
    Err(format!("SHIPLOG.POSITION answered {}", reply.describe()))
}

/// The values of `keys` (`None` for a missing key), by `MGET` in batches.
pub fn values(client: &mut Connection, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH_KEYS) {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(chunk.iter().map(|k| k.as_bytes()));
        match client.command(&args).map_err(|e| e.to_string())? {
            Reply::Array(Some(items)) if items.len() == chunk.len() => {
                for item in items {
                    match item {
                        Reply::Bulk(value) => out.push(value.map(<[u8]>::to_vec)),
                        other => {
                            return Err(format!("MGET answered an element {}", other.describe()));
                        }
                    }
                }
            }
            other => return Err(format!("MGET answered {}", other.describe())),
        }
    }
    Ok(out)
}

/// Every key of the node, sorted, by `SCAN`.
fn all_keys(client: &mut Connection) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    let count = BATCH_KEYS.to_string();
    loop {
        let reply = command(client, &["SCAN", &cursor, "COUNT", &count])?;
        let Reply::Array(Some(parts)) = reply else {
            return Err(format!("SCAN answered {}", reply.describe()));
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(batch))] = parts.as_slice() else {
            return Err(format!("SCAN answered {} elements", parts.len()));
        };
        for key in batch {
            match key {
                Reply::Bulk(Some(key)) => keys.push(key.to_vec()),
                other => return Err(format!("SCAN answered a key {}", other.describe())),
            }
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The number of keys and a digest of every key and value of the node.
pub fn digest(client: &mut Connection) -> Result<(usize, String), String> {
    let keys = all_keys(client)?;
    let text: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let text: Vec<&str> = text.iter().map(String::as_str).collect();
    let values = values(client, &text)?;
    let mut hash = Sha256::new();
    for (key, value) in keys.iter().zip(&values) {
        let value = value.as_deref().unwrap_or_default();
        // Lengths first, so no two different contents hash the same bytes.
        hash.update((key.len() as u64).to_le_bytes());
        hash.update(key);
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value);
    }
    let hex = hash.finalize()[..6]
        .iter()
        .fold(String::new(), |mut hex, b| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
            hex
        });
    Ok((keys.len(), hex))
}

/// Polls `check` until it holds (`Ok(true)`) or `timeout` passes (`Ok(false)`).
pub fn wait_until(
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, String>,
) -> Result<bool, String> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
