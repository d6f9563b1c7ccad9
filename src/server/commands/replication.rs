//! Replication and acknowledgement commands: `ROLE`, `REPLICAOF`, `WAIT`, and shiplog's own
//! `SHIPLOG.*` commands (shipping, snapshots, promotion, read-your-writes tokens).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outcome::{Failure, Flow, NOT_INTEGER, Outcome, TIMEOUT_NOT_INTEGER, err, int};
use crate::format::resp::{ReplyWriter, parse_decimal};
use crate::server::acks::{AckLevel, WaitAcks};
use crate::server::replication::Promotion;
use crate::server::session::Session;
use crate::server::shared::Shared;

pub(super) fn role(
    shared: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    shared.replication.role_reply(reply);
    Ok(Flow::Continue)
}

/// `REPLICAOF host port` / `REPLICAOF NO ONE` (and `SLAVEOF`), with Redis' replies.
pub(super) fn replicaof(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    if args[1].eq_ignore_ascii_case(b"no") && args[2].eq_ignore_ascii_case(b"one") {
        shared.replication.promote(false).map_err(|why| err(&why))?;
        reply.ok();
        return Ok(Flow::Continue);
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
    if shared.replication.replicate_from(target) {
        reply.ok();
    } else {
        reply.simple("OK Already connected to specified master");
    }
    Ok(Flow::Continue)
}

pub(super) fn promote(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let force = match args.get(1) {
        None => false,
        Some(a) if args.len() == 2 && a.eq_ignore_ascii_case(b"force") => true,
        Some(_) => return Err(err("ERR syntax error: SHIPLOG.PROMOTE [FORCE]")),
    };
    match shared.replication.promote(force).map_err(|why| err(&why))? {
        Promotion::AlreadyPrimary => reply.simple("OK already a primary"),
        Promotion::Promoted { epoch, start_lsn } => {
            reply.simple(&format!("OK promoted to epoch {epoch} at LSN {start_lsn}"));
        }
    }
    Ok(Flow::Continue)
}

pub(super) fn position(
    shared: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let position = shared.replication.position();
    reply.array(3);
    reply.integer(int(position.durable_lsn));
    reply.integer(i64::from(position.highest_epoch));
    reply.integer(i64::from(position.last_epoch));
    Ok(Flow::Continue)
}

pub(super) fn last_lsn(
    _: &Arc<Shared>,
    session: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.integer(int(session.last_write_lsn));
    Ok(Flow::Continue)
}

/// `SHIPLOG.ACKLEVEL [local | replicated K | applied K | default]`.
pub(super) fn ack_level(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    match &args[1..] {
        [] => {
            let level = session.ack_level.unwrap_or(shared.options.sync.level);
            reply.bulk(level.to_string().as_bytes());
        }
        [default] if default.eq_ignore_ascii_case(b"default") => {
            session.ack_level = None;
            reply.ok();
        }
        rest => {
            session.ack_level = Some(AckLevel::parse(rest).map_err(Failure::Reply)?);
            reply.ok();
        }
    }
    Ok(Flow::Continue)
}

/// `WAIT numreplicas timeout`: parks the connection (answered by the event loop, at once if
/// enough replicas hold its last write already).
pub(super) fn wait(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    _: &mut ReplyWriter<'_>,
) -> Outcome {
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
        return Err(err(TIMEOUT_NOT_INTEGER));
    };
    let Ok(timeout_ms) = u64::try_from(timeout_ms) else {
        return Err(err("ERR timeout is negative"));
    };
    session.waiting_acks = Some(WaitAcks {
        lsn: session.last_write_lsn,
        epoch: session.last_write_epoch,
        // A negative count is met at once, as in Redis.
        replicas: usize::try_from(replicas).unwrap_or(0),
        deadline: deadline_after(timeout_ms),
    });
    Ok(Flow::Continue)
}

/// `SHIPLOG.WAITLSN lsn timeout`: parks the connection until this node applied `lsn`.
pub(super) fn wait_lsn(
    _: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    _: &mut ReplyWriter<'_>,
) -> Outcome {
    let Some(lsn) = parse_decimal(args[1]).and_then(|n| u64::try_from(n).ok()) else {
        return Err(err(NOT_INTEGER));
    };
    let Some(timeout_ms) = parse_decimal(args[2]).and_then(|n| u64::try_from(n).ok()) else {
        return Err(err(TIMEOUT_NOT_INTEGER));
    };
    // Answered by the event loop (`Connection::resolve_wait`), at once if the LSN is
    // applied already.
    session.waiting = Some((lsn, deadline_after(timeout_ms)));
    Ok(Flow::Continue)
}

/// The deadline of a wait of `timeout_ms` starting now (0: none).
fn deadline_after(timeout_ms: u64) -> Option<Instant> {
    (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms))
}

pub(super) fn snapshot(
    shared: &Arc<Shared>,
    session: &mut Session,
    _: &[&[u8]],
    _: &mut ReplyWriter<'_>,
) -> Outcome {
    if shared.replication.is_read_only() {
        return Err(err(
            "ERR a replica does not build snapshots (its log mirrors its primary's): take it \
             from the primary",
        ));
    }
    // The reply, possibly gigabytes, is streamed by a thread of its own once the event loop
    // lets the connection go.
    session.wants_snapshot = true;
    Ok(Flow::Ship)
}

pub(super) fn ship(
    shared: &Arc<Shared>,
    session: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    // The connection now speaks shipping frames (`docs/format.md`); the event loop hands it
    // to a shipping thread once this reply is out. With a password, the replica proves it
    // knows it by answering this challenge (never by `AUTH`).
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
    Ok(Flow::Ship)
}
