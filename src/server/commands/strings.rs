//! String commands: `GET`, `SET` and its variants, `MGET`, `MSET`, counters, `APPEND`,
//! `STRLEN`, `GETRANGE`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::outcome::{
    Failure, Flow, NO_EXPIRY, NOT_INTEGER, OVERFLOW, Outcome, SYNTAX, bulk_or_null,
    check_reply_size, err, int,
};
use crate::format::resp::{ReplyWriter, parse_decimal};
use crate::server::keyspace::WriteTxn;
use crate::server::session::Session;
use crate::server::shared::Shared;

pub(super) fn get(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    if let Some(value) = shared.keyspace.get(args[1])? {
        shared.stats.hits.fetch_add(1, Ordering::Relaxed);
        reply.bulk(&value);
    } else {
        shared.stats.misses.fetch_add(1, Ordering::Relaxed);
        reply.null();
    }
    Ok(Flow::Continue)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    IfMissing,
    IfPresent,
}

pub(super) fn set(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
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
    Ok(Flow::Continue)
}

pub(super) fn setnx(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let done = shared
        .keyspace
        .write(&[args[1]], &mut session.uncommitted, |txn| {
            if txn.exists(args[1])? {
                return Ok::<_, Failure>(false);
            }
            txn.put(args[1], args[2]);
            Ok(true)
        })?;
    reply.integer(i64::from(done));
    Ok(Flow::Continue)
}

pub(super) fn getset(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    swap(shared, session, args[1], Some(args[2]), reply)
}

pub(super) fn getdel(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    swap(shared, session, args[1], None, reply)
}

/// Sets `key` to `value` (`GETSET`) or deletes it (`GETDEL`, `None`); replies with the value
/// it had.
fn swap(
    shared: &Shared,
    session: &mut Session,
    key: &[u8],
    value: Option<&[u8]>,
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let old = shared
        .keyspace
        .write(&[key], &mut session.uncommitted, |txn| {
            let old = txn.get(key)?;
            match value {
                Some(value) => txn.put(key, value),
                None if old.is_some() => txn.delete(key),
                None => {}
            }
            Ok::<_, Failure>(old)
        })?;
    bulk_or_null(reply, old.as_ref());
    Ok(Flow::Continue)
}

pub(super) fn mget(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let values = shared.keyspace.db().get_many(&args[1..])?;
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
    Ok(Flow::Continue)
}

pub(super) fn mset(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    set_many(shared, session, args, false)?;
    reply.ok();
    Ok(Flow::Continue)
}

pub(super) fn msetnx(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let done = set_many(shared, session, args, true)?;
    reply.integer(i64::from(done));
    Ok(Flow::Continue)
}

/// `MSET` (or, `only_new`, `MSETNX`): sets every pair atomically; false if `only_new` and a
/// key exists.
fn set_many(
    shared: &Shared,
    session: &mut Session,
    args: &[&[u8]],
    only_new: bool,
) -> Result<bool, Failure> {
    if args.len().is_multiple_of(2) {
        let name = if only_new { "msetnx" } else { "mset" };
        return Err(Failure::Reply(format!(
            "ERR wrong number of arguments for '{name}' command"
        )));
    }
    let keys: Vec<&[u8]> = args[1..].iter().step_by(2).copied().collect();
    shared
        .keyspace
        .write(&keys, &mut session.uncommitted, |txn| {
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
        })
}

pub(super) fn incr(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    add(shared, session, args[1], 1, reply)
}

pub(super) fn decr(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    add(shared, session, args[1], -1, reply)
}

pub(super) fn incrby(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let step = parse_decimal(args[2]).ok_or_else(|| err(NOT_INTEGER))?;
    add(shared, session, args[1], step, reply)
}

pub(super) fn decrby(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let step = parse_decimal(args[2]).ok_or_else(|| err(NOT_INTEGER))?;
    let step = step
        .checked_neg()
        .ok_or_else(|| err("ERR decrement would overflow"))?;
    add(shared, session, args[1], step, reply)
}

/// Adds `step` to the integer at `key` (0 when missing) and replies with the sum.
fn add(
    shared: &Shared,
    session: &mut Session,
    key: &[u8],
    step: i64,
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let value = shared
        .keyspace
        .write(&[key], &mut session.uncommitted, |txn| {
            let current = match txn.get(key)? {
                Some(bytes) => parse_decimal(bytes.as_bytes()).ok_or_else(|| err(NOT_INTEGER))?,
                None => 0,
            };
            let next = current.checked_add(step).ok_or_else(|| err(OVERFLOW))?;
            txn.put(key, next.to_string().as_bytes());
            Ok::<_, Failure>(next)
        })?;
    reply.integer(value);
    Ok(Flow::Continue)
}

pub(super) fn append(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let len = shared
        .keyspace
        .write(&[args[1]], &mut session.uncommitted, |txn| {
            let mut value = txn
                .get(args[1])?
                .map(|c| c.as_bytes().to_vec())
                .unwrap_or_default();
            value.extend_from_slice(args[2]);
            txn.put(args[1], &value);
            Ok::<_, Failure>(value.len())
        })?;
    reply.integer(int(len));
    Ok(Flow::Continue)
}

pub(super) fn strlen(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let len = shared.keyspace.get(args[1])?.map_or(0, |v| v.len());
    reply.integer(int(len));
    Ok(Flow::Continue)
}

pub(super) fn getrange(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let (Some(start), Some(end)) = (parse_decimal(args[2]), parse_decimal(args[3])) else {
        return Err(err(NOT_INTEGER));
    };
    let value = shared.keyspace.get(args[1])?;
    let bytes = value.as_deref().unwrap_or_default();
    reply.bulk(substring(bytes, start, end));
    Ok(Flow::Continue)
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

#[cfg(test)]
mod tests {
    use super::substring;
    use crate::format::resp::parse_decimal;

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
    }
}
