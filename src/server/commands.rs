//! The command table and the commands: Redis semantics, replies and error texts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::acks::{AckLevel, WaitAcks};
use super::failover::Promotion;
use super::glob::glob_match;
use super::keyspace::{Current, WriteTxn};
use super::session::Session;
use super::{Shared, info};
use crate::engine::DbError;
use crate::format::resp::{Protocol, ReplyWriter, parse_decimal};

/// What kind of work a command does, which decides when its reply may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Changes keys: staged in the log, answered once committed.
    Write,
    /// Reads keys: the connection's own staged writes are committed first, so it reads them.
    Read,
    /// Touches no key.
    Other,
}

/// One entry of the command table (what `COMMAND` reports).
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: exact argument count including the name, or `-n` for "at least n".
    pub arity: i32,
    /// Redis command flags.
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: none), last key (-1: the last argument), step.
    pub keys: (i32, i32, i32),
    /// Documentation group.
    pub group: &'static str,
    /// One-line summary for `COMMAND DOCS`.
    pub summary: &'static str,
    /// When the work is done, see [`Kind`].
    pub kind: Kind,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    summary: &'static str,
    kind: Kind,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
        kind,
    }
}

/// A command that needs key expiry, which shiplog does not have: listed so clients see it, and
/// refused when called.
const fn unsupported(name: &'static str, arity: i32, group: &'static str) -> CommandSpec {
    spec(
        name,
        arity,
        W,
        ONE,
        group,
        "Not supported: keys never expire.",
        Kind::Other,
    )
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom", "fast"];
const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);

/// Every command shiplog knows, in the order metrics report them.
pub static COMMANDS: &[CommandSpec] = &[
    spec(
        "ping",
        -1,
        &["fast"],
        NONE,
        "connection",
        "Returns the server's liveliness response.",
        Kind::Other,
    ),
    spec(
        "echo",
        2,
        &["fast"],
        NONE,
        "connection",
        "Returns the given string.",
        Kind::Other,
    ),
    spec(
        "quit",
        -1,
        &["noauth", "fast"],
        NONE,
        "connection",
        "Closes the connection.",
        Kind::Other,
    ),
    spec(
        "hello",
        -1,
        &["noauth", "fast"],
        NONE,
        "connection",
        "Handshakes with the server (RESP2 or RESP3, AUTH, SETNAME).",
        Kind::Other,
    ),
    spec(
        "auth",
        -2,
        &["noauth", "fast"],
        NONE,
        "connection",
        "Authenticates the connection.",
        Kind::Other,
    ),
    spec(
        "select",
        2,
        &["fast"],
        NONE,
        "connection",
        "Selects database 0, the only one.",
        Kind::Other,
    ),
    spec(
        "client",
        -2,
        &[],
        NONE,
        "connection",
        "Connection commands: ID, SETNAME, GETNAME, SETINFO, LIST, INFO.",
        Kind::Other,
    ),
    spec(
        "get",
        2,
        R,
        ONE,
        "string",
        "Returns the value of a key.",
        Kind::Read,
    ),
    spec(
        "set",
        -3,
        W,
        ONE,
        "string",
        "Sets a key (NX, XX, GET; no expiry).",
        Kind::Write,
    ),
    spec(
        "setnx",
        3,
        W,
        ONE,
        "string",
        "Sets a key only if it does not exist.",
        Kind::Write,
    ),
    spec(
        "getset",
        3,
        W,
        ONE,
        "string",
        "Sets a key and returns its old value.",
        Kind::Write,
    ),
    spec(
        "getdel",
        2,
        W,
        ONE,
        "string",
        "Returns the value of a key and deletes it.",
        Kind::Write,
    ),
    spec(
        "del",
        -2,
        &["write"],
        ALL,
        "keyspace",
        "Deletes keys.",
        Kind::Write,
    ),
    spec(
        "unlink",
        -2,
        &["write", "fast"],
        ALL,
        "keyspace",
        "Deletes keys.",
        Kind::Write,
    ),
    spec(
        "exists",
        -2,
        R,
        ALL,
        "keyspace",
        "Counts how many of the keys exist.",
        Kind::Read,
    ),
    spec(
        "mget",
        -2,
        R,
        ALL,
        "string",
        "Returns the values of keys, all as of one instant.",
        Kind::Read,
    ),
    spec(
        "mset",
        -3,
        &["write", "denyoom"],
        (1, -1, 2),
        "string",
        "Sets keys atomically.",
        Kind::Write,
    ),
    spec(
        "msetnx",
        -3,
        &["write", "denyoom"],
        (1, -1, 2),
        "string",
        "Sets keys atomically only if none exists.",
        Kind::Write,
    ),
    spec(
        "incr",
        2,
        W,
        ONE,
        "string",
        "Increments an integer value by one.",
        Kind::Write,
    ),
    spec(
        "incrby",
        3,
        W,
        ONE,
        "string",
        "Increments an integer value.",
        Kind::Write,
    ),
    spec(
        "decr",
        2,
        W,
        ONE,
        "string",
        "Decrements an integer value by one.",
        Kind::Write,
    ),
    spec(
        "decrby",
        3,
        W,
        ONE,
        "string",
        "Decrements an integer value.",
        Kind::Write,
    ),
    spec(
        "append",
        3,
        W,
        ONE,
        "string",
        "Appends to a value.",
        Kind::Write,
    ),
    spec(
        "strlen",
        2,
        R,
        ONE,
        "string",
        "Returns the length of a value.",
        Kind::Read,
    ),
    spec(
        "getrange",
        4,
        &["readonly"],
        ONE,
        "string",
        "Returns a substring of a value.",
        Kind::Read,
    ),
    spec(
        "scan",
        -2,
        &["readonly"],
        NONE,
        "generic",
        "Iterates over keys with a cursor.",
        Kind::Read,
    ),
    spec(
        "keys",
        2,
        &["readonly"],
        NONE,
        "generic",
        "Returns keys matching a pattern.",
        Kind::Read,
    ),
    spec(
        "dbsize",
        1,
        R,
        NONE,
        "server",
        "Returns the number of keys.",
        Kind::Read,
    ),
    spec(
        "type",
        2,
        R,
        ONE,
        "generic",
        "Returns the type of a key.",
        Kind::Read,
    ),
    spec(
        "ttl",
        2,
        R,
        ONE,
        "generic",
        "Returns -1 for a key (keys never expire) or -2.",
        Kind::Read,
    ),
    spec(
        "pttl",
        2,
        R,
        ONE,
        "generic",
        "Returns -1 for a key (keys never expire) or -2.",
        Kind::Read,
    ),
    spec(
        "flushall",
        -1,
        &["write"],
        NONE,
        "server",
        "Deletes every key.",
        Kind::Write,
    ),
    spec(
        "flushdb",
        -1,
        &["write"],
        NONE,
        "server",
        "Deletes every key (database 0 is the only one).",
        Kind::Write,
    ),
    spec(
        "info",
        -1,
        &[],
        NONE,
        "server",
        "Returns information and statistics.",
        Kind::Other,
    ),
    spec(
        "role",
        1,
        &["fast"],
        NONE,
        "server",
        "Returns the replication role.",
        Kind::Other,
    ),
    spec(
        "replicaof",
        3,
        &["admin", "noscript", "stale"],
        NONE,
        "server",
        "Configures a server as replica of another, or promotes it to a primary.",
        Kind::Other,
    ),
    spec(
        "slaveof",
        3,
        &["admin", "noscript", "stale"],
        NONE,
        "server",
        "Sets a Redis server as a replica of another, or promotes it to being a primary.",
        Kind::Other,
    ),
    spec(
        "shiplog.ship",
        1,
        &["admin", "noscript", "noauth"],
        NONE,
        "server",
        "Switches the connection to the log-shipping protocol (used by replicas).",
        Kind::Other,
    ),
    spec(
        "shiplog.lastlsn",
        1,
        &["fast"],
        NONE,
        "server",
        "The LSN of this connection's last write: the token for SHIPLOG.WAITLSN on a replica.",
        Kind::Other,
    ),
    spec(
        "shiplog.acklevel",
        -1,
        &["fast"],
        NONE,
        "server",
        "Sets this connection's acknowledgement level (local, replicated K, applied K, default) or, without arguments, returns it.",
        Kind::Other,
    ),
    spec(
        "wait",
        3,
        &["noscript"],
        NONE,
        "generic",
        "Blocks until this connection's last write is durable on a number of replicas, or the timeout in ms passes (0: none); returns how many replicas hold it.",
        Kind::Other,
    ),
    spec(
        "shiplog.waitlsn",
        3,
        &["noscript"],
        NONE,
        "server",
        "Blocks until this node has applied an LSN (or the timeout in ms passes; 0: no timeout).",
        Kind::Other,
    ),
    spec(
        "shiplog.snapshot",
        1,
        &["admin", "noscript"],
        NONE,
        "server",
        "Replies with a snapshot of the whole store as one bulk string (`shiplog snapshot create --from`).",
        Kind::Other,
    ),
    spec(
        "shiplog.promote",
        -1,
        &["admin", "noscript", "stale"],
        NONE,
        "server",
        "Promotes this replica to the primary of a new epoch (FORCE: even if a peer holds more of the log).",
        Kind::Other,
    ),
    spec(
        "shiplog.position",
        1,
        &["fast", "stale"],
        NONE,
        "server",
        "This node's durable LSN, highest known epoch and the epoch of its last record (asked before a promotion).",
        Kind::Other,
    ),
    spec(
        "config",
        -2,
        &[],
        NONE,
        "server",
        "CONFIG GET reads settings.",
        Kind::Other,
    ),
    spec(
        "command",
        -1,
        &[],
        NONE,
        "server",
        "Returns the command table (COUNT, DOCS, INFO, LIST).",
        Kind::Other,
    ),
    spec(
        "lastsave",
        1,
        &["fast"],
        NONE,
        "server",
        "Returns the time of the last index checkpoint.",
        Kind::Other,
    ),
    spec(
        "save",
        1,
        &[],
        NONE,
        "server",
        "Writes an index checkpoint.",
        Kind::Read,
    ),
    spec(
        "bgsave",
        -1,
        &[],
        NONE,
        "server",
        "Writes an index checkpoint in the background.",
        Kind::Read,
    ),
    spec(
        "time",
        1,
        &["fast"],
        NONE,
        "server",
        "Returns the server time.",
        Kind::Other,
    ),
    spec(
        "debug",
        -2,
        &[],
        NONE,
        "server",
        "DEBUG SLEEP seconds.",
        Kind::Other,
    ),
    unsupported("expire", -3, "generic"),
    unsupported("pexpire", -3, "generic"),
    unsupported("expireat", -3, "generic"),
    unsupported("pexpireat", -3, "generic"),
    unsupported("setex", 4, "string"),
    unsupported("psetex", 4, "string"),
    unsupported("getex", -2, "string"),
    spec(
        "persist",
        2,
        W,
        ONE,
        "generic",
        "Returns 0: keys never expire.",
        Kind::Read,
    ),
];

static BY_NAME: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    COMMANDS
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name, i))
        .collect()
});

/// The table index of the command named `name` (any case).
#[must_use]
pub fn lookup(name: &[u8]) -> Option<usize> {
    if name.len() > 16 {
        return None;
    }
    let mut lower = [0u8; 16];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    BY_NAME.get(std::str::from_utf8(lower).ok()?).copied()
}

/// Whether `args` fits the arity of `spec`.
#[must_use]
pub fn arity_ok(spec: &CommandSpec, args: usize) -> bool {
    let n = i64::try_from(args).unwrap_or(i64::MAX);
    let arity = i64::from(spec.arity);
    if arity >= 0 { n == arity } else { n >= -arity }
}

/// Redis' reply to a command it does not know.
#[must_use]
pub fn unknown_command(args: &[&[u8]]) -> String {
    let mut rest = String::new();
    for arg in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        let text = String::from_utf8_lossy(arg);
        let cut: String = text.chars().take(room).collect();
        let _ = write!(rest, "'{cut}' ");
    }
    let name: String = String::from_utf8_lossy(args[0]).chars().take(128).collect();
    format!("ERR unknown command '{name}', with args beginning with: {rest}")
}

/// Why a command failed, as the client reads it.
#[derive(Debug)]
pub enum Failure {
    /// A complete error reply text (starting with its code).
    Reply(String),
    /// The store failed.
    Db(DbError),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

fn err(text: &str) -> Failure {
    Failure::Reply(text.to_owned())
}

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const OVERFLOW: &str = "ERR increment or decrement would overflow";
const NO_EXPIRY: &str = "ERR key expiry is not supported by shiplog: keys never expire (EX/PX/EXAT/PXAT, EXPIRE, SETEX)";

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Send what is buffered, then close (`QUIT`).
    Close,
    /// Send what is buffered, then hand the connection to a shipping session.
    Ship,
}

/// Runs command `index` of the table; writes its reply (or error reply) to `reply`.
pub fn execute(
    shared: &Arc<Shared>,
    session: &mut Session,
    index: usize,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Flow {
    let mut flow = Flow::Continue;
    let outcome = run(shared, session, index, args, reply, &mut flow);
    match outcome {
        Ok(()) => {}
        Err(Failure::Reply(text)) => reply.error(&text),
        Err(Failure::Db(e)) => {
            tracing::warn!(error = %e, command = COMMANDS[index].name, "command failed in the store");
            reply.error(&format!("ERR {e}"));
        }
    }
    flow
}

#[allow(
    clippy::too_many_lines,
    reason = "one arm per command reads best as one table"
)]
fn run(
    shared: &Arc<Shared>,
    session: &mut Session,
    index: usize,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
    flow: &mut Flow,
) -> Result<(), Failure> {
    let ks = &shared.keyspace;
    let name = COMMANDS[index].name;
    match name {
        "ping" => match args.len() {
            1 => reply.simple("PONG"),
            2 => reply.bulk(args[1]),
            _ => return Err(err("ERR wrong number of arguments for 'ping' command")),
        },
        "echo" => reply.bulk(args[1]),
        "quit" => {
            reply.ok();
            *flow = Flow::Close;
        }
        "hello" => hello(shared, session, args, reply)?,
        "auth" => {
            let password = match args.len() {
                2 => args[1],
                3 if args[1] == b"default" => args[2],
                3 => {
                    return Err(err(
                        "WRONGPASS invalid username-password pair or user is disabled.",
                    ));
                }
                _ => return Err(err(SYNTAX)),
            };
            authenticate(shared, session, password)?;
            reply.ok();
        }
        "select" => match parse_decimal(args[1]) {
            Some(0) => reply.ok(),
            Some(_) => return Err(err("ERR DB index is out of range")),
            None => return Err(err(NOT_INTEGER)),
        },
        "client" => client(shared, session, args, reply)?,
        "get" => {
            if let Some(value) = ks.get(args[1])? {
                shared.stats.hits.fetch_add(1, Ordering::Relaxed);
                reply.bulk(&value);
            } else {
                shared.stats.misses.fetch_add(1, Ordering::Relaxed);
                reply.null();
            }
        }
        "set" => set(shared, session, args, reply)?,
        "setnx" => {
            let done = ks.write(&[args[1]], &mut session.uncommitted, |txn| {
                if txn.exists(args[1])? {
                    return Ok::<_, Failure>(false);
                }
                txn.put(args[1], args[2]);
                Ok(true)
            })?;
            reply.integer(i64::from(done));
        }
        "getset" => {
            let old = ks.write(&[args[1]], &mut session.uncommitted, |txn| {
                let old = txn.get(args[1])?;
                txn.put(args[1], args[2]);
                Ok::<_, Failure>(old)
            })?;
            bulk_or_null(reply, old.as_ref());
        }
        "getdel" => {
            let old = ks.write(&[args[1]], &mut session.uncommitted, |txn| {
                let old = txn.get(args[1])?;
                if old.is_some() {
                    txn.delete(args[1]);
                }
                Ok::<_, Failure>(old)
            })?;
            bulk_or_null(reply, old.as_ref());
        }
        "del" | "unlink" => {
            let keys = &args[1..];
            let removed = ks.write(keys, &mut session.uncommitted, |txn| {
                let mut removed = 0;
                for key in keys {
                    if txn.exists(key)? {
                        txn.delete(key);
                        removed += 1;
                    }
                }
                Ok::<_, Failure>(removed)
            })?;
            reply.integer(removed);
        }
        "exists" => {
            let mut found = 0;
            for key in &args[1..] {
                found += i64::from(ks.db().contains(key));
            }
            reply.integer(found);
        }
        "mget" => {
            let values = ks.db().get_many(&args[1..])?;
            // Values are views into the log: their sizes are known before any is copied.
            let bytes: usize = values.iter().flatten().map(|v| v.len() + 16).sum();
            check_reply_size(shared, bytes)?;
            reply.array(values.len());
            for value in &values {
                match value {
                    Some(v) => reply.bulk(v),
                    None => reply.null(),
                }
            }
        }
        "mset" | "msetnx" => {
            if args.len().is_multiple_of(2) {
                return Err(Failure::Reply(format!(
                    "ERR wrong number of arguments for '{name}' command"
                )));
            }
            let keys: Vec<&[u8]> = args[1..].iter().step_by(2).copied().collect();
            let only_new = name == "msetnx";
            let done = ks.write(&keys, &mut session.uncommitted, |txn| {
                if only_new {
                    for key in &keys {
                        if txn.exists(key)? {
                            return Ok::<_, Failure>(false);
                        }
                    }
                }
                for pair in args[1..].chunks_exact(2) {
                    txn.put(pair[0], pair[1]);
                }
                Ok(true)
            })?;
            if only_new {
                reply.integer(i64::from(done));
            } else {
                reply.ok();
            }
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let step = match name {
                "incr" => 1,
                "decr" => -1,
                _ => {
                    let n = parse_decimal(args[2]).ok_or_else(|| err(NOT_INTEGER))?;
                    if name == "decrby" {
                        n.checked_neg()
                            .ok_or_else(|| err("ERR decrement would overflow"))?
                    } else {
                        n
                    }
                }
            };
            let value = ks.write(&[args[1]], &mut session.uncommitted, |txn| {
                let current = match txn.get(args[1])? {
                    Some(bytes) => {
                        parse_decimal(bytes.as_bytes()).ok_or_else(|| err(NOT_INTEGER))?
                    }
                    None => 0,
                };
                let next = current.checked_add(step).ok_or_else(|| err(OVERFLOW))?;
                txn.put(args[1], next.to_string().as_bytes());
                Ok::<_, Failure>(next)
            })?;
            reply.integer(value);
        }
        "append" => {
            let len = ks.write(&[args[1]], &mut session.uncommitted, |txn| {
                let mut value = txn
                    .get(args[1])?
                    .map(|c| c.as_bytes().to_vec())
                    .unwrap_or_default();
                value.extend_from_slice(args[2]);
                txn.put(args[1], &value);
                Ok::<_, Failure>(value.len())
            })?;
            reply.integer(i64::try_from(len).unwrap_or(i64::MAX));
        }
        "strlen" => {
            let len = ks.get(args[1])?.map_or(0, |v| v.len());
            reply.integer(i64::try_from(len).unwrap_or(i64::MAX));
        }
        "getrange" => {
            let (Some(start), Some(end)) = (parse_decimal(args[2]), parse_decimal(args[3])) else {
                return Err(err(NOT_INTEGER));
            };
            let value = ks.get(args[1])?;
            let bytes = value.as_deref().unwrap_or_default();
            reply.bulk(substring(bytes, start, end));
        }
        "scan" => scan(shared, session.id, args, reply)?,
        "keys" => {
            let keys = matching_keys(shared, args[1], usize::MAX);
            check_reply_size(shared, keys.iter().map(|k| k.len() + 16).sum())?;
            reply.array(keys.len());
            for key in &keys {
                reply.bulk(key);
            }
        }
        "dbsize" => reply.integer(i64::try_from(ks.db().len()).unwrap_or(i64::MAX)),
        "type" => {
            if ks.db().contains(args[1]) {
                reply.simple("string");
            } else {
                reply.simple("none");
            }
        }
        "ttl" | "pttl" => reply.integer(if ks.db().contains(args[1]) { -1 } else { -2 }),
        "persist" => reply.integer(0),
        "flushall" | "flushdb" => {
            match args.get(1) {
                None => {}
                Some(mode)
                    if mode.eq_ignore_ascii_case(b"sync")
                        || mode.eq_ignore_ascii_case(b"async") => {}
                Some(_) => return Err(err(SYNTAX)),
            }
            // Everything this connection staged is older than the deletes: commit it first.
            ks.commit(&mut session.uncommitted)?;
            let (removed, lsn) = ks.flush_all()?;
            if let Some(lsn) = lsn {
                // The deletes are this connection's write: `WAIT` and the acknowledgement
                // gate count replicas from here.
                session.last_write_lsn = session.last_write_lsn.max(lsn);
                session.last_write_epoch = shared.keyspace.db().wal().highest_epoch();
            }
            tracing::info!(removed, client = session.id, "FLUSHALL");
            reply.ok();
        }
        "info" => {
            let text = info::render(shared, session, &args[1..]);
            reply.verbatim(&text);
        }
        "role" => shared.role_reply(reply),
        "replicaof" | "slaveof" => replicaof(shared, args, reply)?,
        "shiplog.promote" => {
            let force = match args.get(1) {
                None => false,
                Some(a) if args.len() == 2 && a.eq_ignore_ascii_case(b"force") => true,
                Some(_) => return Err(err("ERR syntax error: SHIPLOG.PROMOTE [FORCE]")),
            };
            match shared.promote(force) {
                Ok(Promotion::AlreadyPrimary) => reply.simple("OK already a primary"),
                Ok(Promotion::Promoted { epoch, start_lsn }) => {
                    reply.simple(&format!("OK promoted to epoch {epoch} at LSN {start_lsn}"));
                }
                Err(why) => return Err(err(&why)),
            }
        }
        "shiplog.position" => {
            let position = shared.position();
            reply.array(3);
            reply.integer(i64::try_from(position.durable_lsn).unwrap_or(i64::MAX));
            reply.integer(i64::from(position.highest_epoch));
            reply.integer(i64::from(position.last_epoch));
        }
        "shiplog.lastlsn" => {
            reply.integer(i64::try_from(session.last_write_lsn).unwrap_or(i64::MAX));
        }
        "shiplog.acklevel" => ack_level(shared, session, &args[1..], reply)?,
        "wait" => wait(shared, session, args)?,
        "shiplog.waitlsn" => {
            let Some(lsn) = parse_decimal(args[1]).and_then(|n| u64::try_from(n).ok()) else {
                return Err(err(NOT_INTEGER));
            };
            let Some(timeout_ms) = parse_decimal(args[2]).and_then(|n| u64::try_from(n).ok())
            else {
                return Err(err("ERR timeout is not an integer or out of range"));
            };
            let deadline = (timeout_ms > 0)
                .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms));
            // Answered by the event loop (`Connection::resolve_wait`), at once if the LSN is
            // applied already.
            session.waiting = Some((lsn, deadline));
        }
        "shiplog.snapshot" => {
            if shared.replication.is_read_only() {
                return Err(err(
                    "ERR a replica does not build snapshots (its log mirrors its primary's): take \
                     it from the primary",
                ));
            }
            // The reply, possibly gigabytes, is streamed by a thread of its own once the
            // event loop lets the connection go.
            session.wants_snapshot = true;
            *flow = Flow::Ship;
        }
        "shiplog.ship" => {
            // The connection now speaks shipping frames (`docs/format.md`); the event loop
            // hands it to a shipping thread once this reply is out. With a password, the
            // replica proves it knows it by answering this challenge (never by `AUTH`).
            if shared.options.password.is_some() {
                let challenge = crate::repl::auth::nonce();
                reply.simple(&format!(
                    "OK AUTH {}",
                    crate::repl::auth::challenge_hex(&challenge)
                ));
                session.ship_challenge = Some(challenge);
            } else {
                reply.ok();
            }
            *flow = Flow::Ship;
        }
        "config" => config(shared, args, reply)?,
        "command" => command(args, reply)?,
        "lastsave" => reply
            .integer(i64::try_from(shared.last_save.load(Ordering::Relaxed)).unwrap_or(i64::MAX)),
        "save" => {
            shared.checkpoint()?;
            reply.ok();
        }
        "bgsave" => {
            if shared.start_background_checkpoint() {
                reply.simple("Background saving started");
            } else {
                return Err(err("ERR Background save already in progress"));
            }
        }
        "time" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            reply.array(2);
            reply.bulk(now.as_secs().to_string().as_bytes());
            reply.bulk(now.subsec_micros().to_string().as_bytes());
        }
        "debug" => {
            if args[1].eq_ignore_ascii_case(b"sleep") && args.len() == 3 {
                let seconds: f64 = std::str::from_utf8(args[2])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| err("ERR value is not a valid float"))?;
                std::thread::sleep(Duration::from_secs_f64(seconds.min(3600.0)));
                reply.ok();
            } else {
                return Err(err(
                    "ERR DEBUG subcommand not supported by shiplog: only DEBUG SLEEP <seconds>",
                ));
            }
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" | "setex" | "psetex" | "getex" => {
            return Err(err(NO_EXPIRY));
        }
        other => unreachable!("command {other} is in the table but has no arm"),
    }
    Ok(())
}

/// Refuses to build a reply larger than the client output limit.
fn check_reply_size(shared: &Shared, bytes: usize) -> Result<(), Failure> {
    let max = shared.options.output_max_bytes;
    if bytes > max {
        return Err(Failure::Reply(format!(
            "ERR reply of about {bytes} bytes exceeds the client output limit of {max} bytes (--client-output-limit)"
        )));
    }
    Ok(())
}

fn bulk_or_null(reply: &mut ReplyWriter<'_>, value: Option<&Current>) {
    match value {
        Some(v) => reply.bulk(v.as_bytes()),
        None => reply.null(),
    }
}

/// `GETRANGE`'s index arithmetic, exactly as Redis does it.
fn substring(bytes: &[u8], start: i64, end: i64) -> &[u8] {
    let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return &[];
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end || start >= len {
        return &[];
    }
    // Both are within 0..len here.
    let (start, end) = (
        usize::try_from(start).unwrap_or(0),
        usize::try_from(end).unwrap_or(0),
    );
    &bytes[start..=end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    IfMissing,
    IfPresent,
}

fn set(
    shared: &Shared,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Result<(), Failure> {
    let mut condition = Condition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    let mut expiry = false;
    let mut options = args[3..].iter();
    while let Some(option) = options.next() {
        let upper = option.to_ascii_uppercase();
        match upper.as_slice() {
            b"NX" if condition != Condition::IfPresent => condition = Condition::IfMissing,
            b"XX" if condition != Condition::IfMissing => condition = Condition::IfPresent,
            b"GET" => get = true,
            // No key ever has a time to live, so keeping it is what already happens.
            b"KEEPTTL" if !expiry => keep_ttl = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !keep_ttl && !expiry => {
                expiry = true;
                options.next().ok_or_else(|| err(SYNTAX))?;
            }
            _ => return Err(err(SYNTAX)),
        }
    }
    if expiry {
        return Err(err(NO_EXPIRY));
    }
    let (key, value) = (args[1], args[2]);
    let (old, written) = shared.keyspace.write(
        &[key],
        &mut session.uncommitted,
        |txn: &mut WriteTxn<'_>| {
            let old = if get || condition != Condition::Always {
                txn.get(key)?
            } else {
                None
            };
            let write = match condition {
                Condition::Always => true,
                Condition::IfMissing => old.is_none(),
                Condition::IfPresent => old.is_some(),
            };
            if write {
                txn.put(key, value);
            }
            Ok::<_, Failure>((old, write))
        },
    )?;
    if get {
        bulk_or_null(reply, old.as_ref());
    } else if written {
        reply.ok();
    } else {
        reply.null();
    }
    Ok(())
}

fn authenticate(shared: &Shared, session: &mut Session, password: &[u8]) -> Result<(), Failure> {
    let Some(expected) = &shared.options.password else {
        return Err(err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    };
    if constant_time_eq(expected, password) {
        session.authenticated = true;
        Ok(())
    } else {
        tracing::warn!(client = session.id, addr = %session.addr, "failed AUTH");
        Err(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

/// Compares in time that depends only on the lengths, so a client cannot learn the password
/// a byte at a time from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn hello(
    shared: &Shared,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Result<(), Failure> {
    let mut protocol = reply.protocol;
    let mut rest = &args[1..];
    if let Some(version) = rest.first() {
        protocol = match parse_decimal(version) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Err(err("NOPROTO unsupported protocol version")),
            None => {
                return Err(err(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
        };
        rest = &rest[1..];
    }
    let mut name = None;
    while let Some(option) = rest.first() {
        if option.eq_ignore_ascii_case(b"AUTH") && rest.len() >= 3 {
            if rest[1] != b"default" {
                return Err(err(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                ));
            }
            authenticate(shared, session, rest[2])?;
            rest = &rest[3..];
        } else if option.eq_ignore_ascii_case(b"SETNAME") && rest.len() >= 2 {
            name = Some(rest[1]);
            rest = &rest[2..];
        } else {
            return Err(Failure::Reply(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            )));
        }
    }
    if !session.authenticated {
        return Err(err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        session.set_name(name).map_err(Failure::Reply)?;
        shared.rename_client(session.id, session.name.clone());
    }
    session.protocol = protocol;
    reply.protocol = protocol;
    reply.map(7);
    reply.bulk(b"server");
    reply.bulk(b"redis");
    reply.bulk(b"version");
    reply.bulk(info::REDIS_COMPAT_VERSION.as_bytes());
    reply.bulk(b"proto");
    reply.integer(if protocol == Protocol::Resp3 { 3 } else { 2 });
    reply.bulk(b"id");
    reply.integer(i64::try_from(session.id).unwrap_or(i64::MAX));
    reply.bulk(b"mode");
    reply.bulk(b"standalone");
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
    Ok(())
}

/// `REPLICAOF host port` / `REPLICAOF NO ONE`, with Redis' replies.
fn replicaof(
    shared: &Arc<Shared>,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Result<(), Failure> {
    if args[1].eq_ignore_ascii_case(b"no") && args[2].eq_ignore_ascii_case(b"one") {
        shared.promote(false).map_err(|why| err(&why))?;
        reply.ok();
        return Ok(());
    }
    let port = parse_decimal(args[2])
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| err("ERR Invalid master port"))?;
    let host = std::str::from_utf8(args[1]).map_err(|_| err("ERR Invalid master host"))?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if shared.replicate_from(target) {
        reply.ok();
    } else {
        reply.simple("OK Already connected to specified master");
    }
    Ok(())
}

/// `SHIPLOG.ACKLEVEL [local | replicated K | applied K | default]`.
fn ack_level(
    shared: &Shared,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Result<(), Failure> {
    match args {
        [] => {
            let level = session.ack_level.unwrap_or(shared.options.sync.level);
            reply.bulk(level.to_string().as_bytes());
        }
        [default] if default.eq_ignore_ascii_case(b"default") => {
            session.ack_level = None;
            reply.ok();
        }
        _ => {
            session.ack_level = Some(AckLevel::parse(args).map_err(Failure::Reply)?);
            reply.ok();
        }
    }
    Ok(())
}

/// `WAIT numreplicas timeout`: parks the connection (answered by the event loop, at once if
/// enough replicas hold its last write already).
fn wait(shared: &Shared, session: &mut Session, args: &[&[u8]]) -> Result<(), Failure> {
    if shared.replication.is_read_only() {
        // Redis' reply on a replica.
        return Err(err(
            "ERR WAIT cannot be used with replica instances. Please also note that writes to \
             replicas are refused: write on the primary and WAIT there.",
        ));
    }
    let Some(replicas) = parse_decimal(args[1]) else {
        return Err(err(NOT_INTEGER));
    };
    let Some(timeout_ms) = parse_decimal(args[2]) else {
        return Err(err("ERR timeout is not an integer or out of range"));
    };
    let Ok(timeout_ms) = u64::try_from(timeout_ms) else {
        return Err(err("ERR timeout is negative"));
    };
    session.waiting_acks = Some(WaitAcks {
        lsn: session.last_write_lsn,
        epoch: session.last_write_epoch,
        // A negative count is met at once, as in Redis.
        replicas: usize::try_from(replicas).unwrap_or(0),
        deadline: (timeout_ms > 0)
            .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms)),
    });
    Ok(())
}

fn client(
    shared: &Shared,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Result<(), Failure> {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"ID", 2) => reply.integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        (b"SETNAME", 3) => {
            session.set_name(args[2]).map_err(Failure::Reply)?;
            shared.rename_client(session.id, session.name.clone());
            reply.ok();
        }
        (b"GETNAME", 2) => match &session.name {
            Some(name) => reply.bulk(name),
            None => reply.null(),
        },
        (b"SETINFO", 4) => reply.ok(),
        (b"INFO", 2) => {
            let line = shared.describe_clients(Some(session.id));
            let level = session.ack_level.unwrap_or(shared.options.sync.level);
            let line = format!(
                "{} acklevel={} lsn={}\n",
                line.trim_end(),
                level.token(),
                session.last_write_lsn
            );
            reply.verbatim(&line);
        }
        (b"LIST", 2) => {
            let text = shared.describe_clients(None);
            reply.verbatim(&text);
        }
        (b"HELP", 2) => {
            let lines = [
                "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
                "ID",
                "SETNAME <name>",
                "GETNAME",
                "SETINFO <option> <value>",
                "INFO",
                "LIST",
                "HELP",
            ];
            reply.array(lines.len());
            for line in lines {
                reply.simple(line);
            }
        }
        (b"ID" | b"SETNAME" | b"GETNAME" | b"SETINFO" | b"INFO" | b"LIST" | b"HELP", _) => {
            return Err(Failure::Reply(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(args[1]).to_lowercase()
            )));
        }
        _ => {
            return Err(Failure::Reply(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(args[1])
            )));
        }
    }
    Ok(())
}

fn config(shared: &Shared, args: &[&[u8]], reply: &mut ReplyWriter<'_>) -> Result<(), Failure> {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"GET" if args.len() >= 3 => {
            let settings = shared.config_settings();
            let mut matched: Vec<&(String, String)> = settings
                .iter()
                .filter(|(name, _)| {
                    args[2..]
                        .iter()
                        .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
                })
                .collect();
            matched.dedup_by(|a, b| a.0 == b.0);
            reply.map(matched.len());
            for (name, value) in matched {
                reply.bulk(name.as_bytes());
                reply.bulk(value.as_bytes());
            }
            Ok(())
        }
        b"GET" => Err(err(
            "ERR wrong number of arguments for 'config|get' command",
        )),
        b"SET" => Err(err(
            "ERR CONFIG SET is not supported by shiplog: change the setting in the config file or flags and restart",
        )),
        b"RESETSTAT" => {
            reply.ok();
            Ok(())
        }
        _ => Err(Failure::Reply(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args[1])
        ))),
    }
}

fn command_info(spec: &CommandSpec, reply: &mut ReplyWriter<'_>) {
    reply.array(10);
    reply.bulk(spec.name.as_bytes());
    reply.integer(i64::from(spec.arity));
    reply.set(spec.flags.len());
    for flag in spec.flags {
        reply.simple(flag);
    }
    reply.integer(i64::from(spec.keys.0));
    reply.integer(i64::from(spec.keys.1));
    reply.integer(i64::from(spec.keys.2));
    reply.set(0);
    reply.set(0);
    reply.array(0);
    reply.array(0);
}

fn command_doc(spec: &CommandSpec, reply: &mut ReplyWriter<'_>) {
    reply.map(3);
    reply.bulk(b"summary");
    reply.bulk(spec.summary.as_bytes());
    reply.bulk(b"since");
    reply.bulk(b"1.0.0");
    reply.bulk(b"group");
    reply.bulk(spec.group.as_bytes());
}

fn command(args: &[&[u8]], reply: &mut ReplyWriter<'_>) -> Result<(), Failure> {
    let Some(sub) = args.get(1) else {
        reply.array(COMMANDS.len());
        for spec in COMMANDS {
            command_info(spec, reply);
        }
        return Ok(());
    };
    let named = || {
        args[2..]
            .iter()
            .map(|name| lookup(name).map(|i| &COMMANDS[i]))
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" if args.len() == 2 => reply.integer(i64::try_from(COMMANDS.len()).unwrap_or(0)),
        b"LIST" if args.len() == 2 => {
            reply.array(COMMANDS.len());
            for spec in COMMANDS {
                reply.bulk(spec.name.as_bytes());
            }
        }
        b"INFO" => {
            if args.len() == 2 {
                return command(&args[..1], reply);
            }
            reply.array(args.len() - 2);
            for spec in named() {
                match spec {
                    Some(spec) => command_info(spec, reply),
                    None => reply.null(),
                }
            }
        }
        b"DOCS" => {
            let specs: Vec<&CommandSpec> = if args.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                named().flatten().collect()
            };
            reply.map(specs.len());
            for spec in specs {
                reply.bulk(spec.name.as_bytes());
                command_doc(spec, reply);
            }
        }
        _ => {
            return Err(Failure::Reply(format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                String::from_utf8_lossy(sub)
            )));
        }
    }
    Ok(())
}

/// Keys matching `pattern`, at most `limit`; a literal prefix of the pattern narrows the walk to
/// the keys that start with it (the index is ordered).
fn matching_keys(shared: &Shared, pattern: &[u8], limit: usize) -> Vec<Box<[u8]>> {
    let prefix_len = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    let prefix = &pattern[..prefix_len];
    let db = shared.keyspace.db();
    let mut found = Vec::new();
    let mut start = Bound::Included(prefix.to_vec());
    'pages: loop {
        let page = db.keys_from(
            match &start {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            },
            4096,
        );
        let Some(last) = page.last() else { break };
        start = Bound::Excluded(last.to_vec());
        for key in page {
            if !key.starts_with(prefix) {
                break 'pages;
            }
            if glob_match(pattern, &key) {
                found.push(key);
                if found.len() >= limit {
                    break 'pages;
                }
            }
        }
    }
    found
}

fn scan(
    shared: &Shared,
    client: u64,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Result<(), Failure> {
    let cursor = std::str::from_utf8(args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err("ERR invalid cursor"))?;
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut strings_only = true;
    let mut rest = &args[2..];
    while !rest.is_empty() {
        let option = rest[0].to_ascii_uppercase();
        let value = *rest.get(1).ok_or_else(|| err(SYNTAX))?;
        match option.as_slice() {
            b"MATCH" => pattern = Some(value),
            b"COUNT" => {
                let n = parse_decimal(value).ok_or_else(|| err(NOT_INTEGER))?;
                count = usize::try_from(n)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| err(SYNTAX))?;
            }
            b"TYPE" => strings_only = value.eq_ignore_ascii_case(b"string"),
            _ => return Err(err(SYNTAX)),
        }
        rest = &rest[2..];
    }
    let after = if cursor == 0 {
        None
    } else {
        Some(
            shared
                .cursors
                .resume(cursor)
                .ok_or_else(|| err("ERR invalid cursor"))?,
        )
    };
    let page = shared.keyspace.db().keys_from(
        after.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        count.min(100_000),
    );
    let next = match page.last() {
        Some(last) if page.len() == count.min(100_000) => shared.cursors.save(client, last),
        _ => 0,
    };
    let keys: Vec<&Box<[u8]>> = page
        .iter()
        .filter(|k| strings_only && pattern.is_none_or(|p| glob_match(p, k)))
        .collect();
    reply.array(2);
    reply.bulk(next.to_string().as_bytes());
    reply.array(keys.len());
    for key in keys {
        reply.bulk(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_matches_redis() {
        let v = b"This is a string";
        assert_eq!(substring(v, 0, 3), b"This");
        assert_eq!(substring(v, -3, -1), b"ing");
        assert_eq!(substring(v, 0, -1), v);
        assert_eq!(substring(v, 10, 100), b"string");
        assert_eq!(substring(v, 5, 3), b"");
        assert_eq!(substring(v, -1, -5), b"");
        assert_eq!(substring(b"", 0, -1), b"");
    }

    #[test]
    fn unknown_command_text() {
        assert_eq!(
            unknown_command(&[b"foo", b"a", b"b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&[b"foo"]),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_decimal(b"-12"), Some(-12));
        for bad in [
            &b"+1"[..],
            b"01",
            b" 1",
            b"",
            b"1.0",
            b"-0",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"\xff"));
    }

    #[test]
    fn every_command_has_a_table_entry_found_by_any_case() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(lookup(spec.name.to_uppercase().as_bytes()), Some(i));
        }
        assert_eq!(lookup(b"nosuchcommand"), None);
    }
}
