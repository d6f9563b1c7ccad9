//! The command table: what each command is (arity, flags, keys, kind, `COMMAND DOCS`) and
//! the handler that runs it, one line per command. The handlers live in files by family; the
//! connection looks a command up here, checks its arity and flags, and calls [`execute`].

// Handlers share one signature (the table holds them as `fn` pointers), so one that cannot
// fail still returns a `Result`.
#[allow(clippy::unnecessary_wraps, reason = "one signature for every handler")]
mod connection;
#[allow(clippy::unnecessary_wraps, reason = "one signature for every handler")]
mod keys;
mod outcome;
#[allow(clippy::unnecessary_wraps, reason = "one signature for every handler")]
mod replication;
#[allow(clippy::unnecessary_wraps, reason = "one signature for every handler")]
mod server;
mod strings;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use crate::format::resp::ReplyWriter;
use crate::server::session::Session;
use crate::server::shared::Shared;
use Kind::{Other, Read, Write};
use connection as conn;
use keys::no_expiry;
use replication as repl;

pub use outcome::{Failure, Flow, Outcome};

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

/// Runs one command: its reply (or error) goes to the writer; the `Flow` says what the
/// connection does next. Every entry of [`COMMANDS`] has one, so a command cannot be listed
/// without code to run it.
pub type Handler = fn(&Arc<Shared>, &mut Session, &[&[u8]], &mut ReplyWriter<'_>) -> Outcome;

/// One entry of the command table (what `COMMAND` reports, and what runs the command).
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
    /// When the work is done, see [`Kind`].
    pub kind: Kind,
    /// What runs it.
    pub handler: Handler,
    /// One-line summary for `COMMAND DOCS`.
    pub summary: &'static str,
}

#[expect(
    clippy::too_many_arguments,
    reason = "positional, so each table entry fits on one line"
)]
const fn cmd(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    kind: Kind,
    handler: Handler,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        group,
        kind,
        handler,
        summary,
    }
}

/// A command that needs key expiry, which shiplog does not have: listed so clients see it, and
/// refused when called.
const fn unsupported(name: &'static str, arity: i32, group: &'static str) -> CommandSpec {
    cmd(
        name,
        arity,
        W,
        ONE,
        group,
        Other,
        no_expiry,
        "Not supported: keys never expire.",
    )
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom", "fast"];
const RO: &[&str] = &["readonly"];
const FAST: &[&str] = &["fast"];
const NOAUTH: &[&str] = &["noauth", "fast"];
const ADMIN: &[&str] = &["admin", "noscript", "stale"];
const NOSCRIPT: &[&str] = &["noscript"];
const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);
const CONN: &str = "connection";
const STR: &str = "string";
const KEYS: &str = "keyspace";
const GEN: &str = "generic";
const SRV: &str = "server";

/// Every command shiplog knows, in the order metrics report them.
#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    cmd("ping", -1, FAST, NONE, CONN, Other, conn::ping, "Returns the server's liveliness response."),
    cmd("echo", 2, FAST, NONE, CONN, Other, conn::echo, "Returns the given string."),
    cmd("quit", -1, NOAUTH, NONE, CONN, Other, conn::quit, "Closes the connection."),
    cmd("hello", -1, NOAUTH, NONE, CONN, Other, conn::hello, "Handshakes with the server (RESP2 or RESP3, AUTH, SETNAME)."),
    cmd("auth", -2, NOAUTH, NONE, CONN, Other, conn::auth, "Authenticates the connection."),
    cmd("select", 2, FAST, NONE, CONN, Other, conn::select, "Selects database 0, the only one."),
    cmd("client", -2, &[], NONE, CONN, Other, conn::client, "Connection commands: ID, SETNAME, GETNAME, SETINFO, LIST, INFO."),
    cmd("get", 2, R, ONE, STR, Read, strings::get, "Returns the value of a key."),
    cmd("set", -3, W, ONE, STR, Write, strings::set, "Sets a key (NX, XX, GET; no expiry)."),
    cmd("setnx", 3, W, ONE, STR, Write, strings::setnx, "Sets a key only if it does not exist."),
    cmd("getset", 3, W, ONE, STR, Write, strings::getset, "Sets a key and returns its old value."),
    cmd("getdel", 2, W, ONE, STR, Write, strings::getdel, "Returns the value of a key and deletes it."),
    cmd("del", -2, &["write"], ALL, KEYS, Write, keys::del, "Deletes keys."),
    cmd("unlink", -2, &["write", "fast"], ALL, KEYS, Write, keys::del, "Deletes keys."),
    cmd("exists", -2, R, ALL, KEYS, Read, keys::exists, "Counts how many of the keys exist."),
    cmd("mget", -2, R, ALL, STR, Read, strings::mget, "Returns the values of keys, all as of one instant."),
    cmd("mset", -3, &["write", "denyoom"], PAIRS, STR, Write, strings::mset, "Sets keys atomically."),
    cmd("msetnx", -3, &["write", "denyoom"], PAIRS, STR, Write, strings::msetnx, "Sets keys atomically only if none exists."),
    cmd("incr", 2, W, ONE, STR, Write, strings::incr, "Increments an integer value by one."),
    cmd("incrby", 3, W, ONE, STR, Write, strings::incrby, "Increments an integer value."),
    cmd("decr", 2, W, ONE, STR, Write, strings::decr, "Decrements an integer value by one."),
    cmd("decrby", 3, W, ONE, STR, Write, strings::decrby, "Decrements an integer value."),
    cmd("append", 3, W, ONE, STR, Write, strings::append, "Appends to a value."),
    cmd("strlen", 2, R, ONE, STR, Read, strings::strlen, "Returns the length of a value."),
    cmd("getrange", 4, RO, ONE, STR, Read, strings::getrange, "Returns a substring of a value."),
    cmd("scan", -2, RO, NONE, GEN, Read, keys::scan, "Iterates over keys with a cursor."),
    cmd("keys", 2, RO, NONE, GEN, Read, keys::keys, "Returns keys matching a pattern."),
    cmd("dbsize", 1, R, NONE, SRV, Read, keys::dbsize, "Returns the number of keys."),
    cmd("type", 2, R, ONE, GEN, Read, keys::key_type, "Returns the type of a key."),
    cmd("ttl", 2, R, ONE, GEN, Read, keys::ttl, "Returns -1 for a key (keys never expire) or -2."),
    cmd("pttl", 2, R, ONE, GEN, Read, keys::ttl, "Returns -1 for a key (keys never expire) or -2."),
    cmd("flushall", -1, &["write"], NONE, SRV, Write, keys::flush, "Deletes every key."),
    cmd("flushdb", -1, &["write"], NONE, SRV, Write, keys::flush, "Deletes every key (database 0 is the only one)."),
    cmd("info", -1, &[], NONE, SRV, Other, server::info, "Returns information and statistics."),
    cmd("role", 1, FAST, NONE, SRV, Other, repl::role, "Returns the replication role."),
    cmd("replicaof", 3, ADMIN, NONE, SRV, Other, repl::replicaof, "Configures a server as replica of another, or promotes it to a primary."),
    cmd("slaveof", 3, ADMIN, NONE, SRV, Other, repl::replicaof, "Sets a Redis server as a replica of another, or promotes it to being a primary."),
    cmd("shiplog.ship", 1, &["admin", "noscript", "noauth"], NONE, SRV, Other, repl::ship, "Switches the connection to the log-shipping protocol (used by replicas)."),
    cmd("shiplog.lastlsn", 1, FAST, NONE, SRV, Other, repl::last_lsn, "The LSN of this connection's last write: the token for SHIPLOG.WAITLSN on a replica."),
    cmd("shiplog.acklevel", -1, FAST, NONE, SRV, Other, repl::ack_level, "Sets this connection's acknowledgement level (local, replicated K, applied K, default) or, without arguments, returns it."),
    cmd("wait", 3, NOSCRIPT, NONE, GEN, Other, repl::wait, "Blocks until this connection's last write is durable on a number of replicas, or the timeout in ms passes (0: none); returns how many replicas hold it."),
    cmd("shiplog.waitlsn", 3, NOSCRIPT, NONE, SRV, Other, repl::wait_lsn, "Blocks until this node has applied an LSN (or the timeout in ms passes; 0: no timeout)."),
    cmd("shiplog.snapshot", 1, &["admin", "noscript"], NONE, SRV, Other, repl::snapshot, "Replies with a snapshot of the whole store as one bulk string (`shiplog snapshot create --from`)."),
    cmd("shiplog.promote", -1, ADMIN, NONE, SRV, Other, repl::promote, "Promotes this replica to the primary of a new epoch (FORCE: even if a peer holds more of the log)."),
    cmd("shiplog.position", 1, &["fast", "stale"], NONE, SRV, Other, repl::position, "This node's durable LSN, highest known epoch and the epoch of its last record (asked before a promotion)."),
    cmd("config", -2, &[], NONE, SRV, Other, server::config, "CONFIG GET reads settings."),
    cmd("command", -1, &[], NONE, SRV, Other, command, "Returns the command table (COUNT, DOCS, INFO, LIST)."),
    cmd("lastsave", 1, FAST, NONE, SRV, Other, server::lastsave, "Returns the time of the last index checkpoint."),
    cmd("save", 1, &[], NONE, SRV, Read, server::save, "Writes an index checkpoint."),
    cmd("bgsave", -1, &[], NONE, SRV, Read, server::bgsave, "Writes an index checkpoint in the background."),
    cmd("time", 1, FAST, NONE, SRV, Other, server::time, "Returns the server time."),
    cmd("debug", -2, &[], NONE, SRV, Other, server::debug, "DEBUG SLEEP seconds."),
    unsupported("expire", -3, GEN),
    unsupported("pexpire", -3, GEN),
    unsupported("expireat", -3, GEN),
    unsupported("pexpireat", -3, GEN),
    unsupported("setex", 4, STR),
    unsupported("psetex", 4, STR),
    unsupported("getex", -2, STR),
    cmd("persist", 2, W, ONE, GEN, Read, keys::persist, "Returns 0: keys never expire."),
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

/// Runs command `index` of the table; writes its reply (or error reply) to `reply`.
pub fn execute(
    shared: &Arc<Shared>,
    session: &mut Session,
    index: usize,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Flow {
    let spec = &COMMANDS[index];
    match (spec.handler)(shared, session, args, reply) {
        Ok(flow) => flow,
        Err(Failure::Reply(text)) => {
            reply.error(&text);
            Flow::Continue
        }
        Err(Failure::Db(e)) => {
            tracing::warn!(error = %e, command = spec.name, "command failed in the store");
            reply.error(&format!("ERR {e}"));
            Flow::Continue
        }
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

fn every_command_info(reply: &mut ReplyWriter<'_>) {
    reply.array(COMMANDS.len());
    for spec in COMMANDS {
        command_info(spec, reply);
    }
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

/// `COMMAND [COUNT | LIST | INFO name... | DOCS name...]`: the table itself.
fn command(
    _: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let Some(sub) = args.get(1) else {
        every_command_info(reply);
        return Ok(Flow::Continue);
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
                every_command_info(reply);
                return Ok(Flow::Continue);
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
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_command_has_a_table_entry_found_by_any_case() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(lookup(spec.name.to_uppercase().as_bytes()), Some(i));
        }
        assert_eq!(lookup(b"nosuchcommand"), None);
    }
}
