//! Commands on keys of any kind and on the whole key space: `DEL`, `EXISTS`, `TYPE`, `TTL`,
//! `SCAN`, `KEYS`, `DBSIZE`, `FLUSHALL`, and the expiry commands shiplog refuses.

use std::ops::Bound;
use std::sync::Arc;

use super::outcome::{
    Failure, Flow, NO_EXPIRY, NOT_INTEGER, Outcome, SYNTAX, check_reply_size, err, int,
};
use crate::format::resp::{ReplyWriter, parse_decimal};
use crate::server::glob::glob_match;
use crate::server::session::Session;
use crate::server::shared::Shared;

/// `DEL` and `UNLINK`.
pub(super) fn del(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let keys = &args[1..];
    let removed = shared
        .keyspace
        .write(keys, &mut session.uncommitted, |txn| {
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
    Ok(Flow::Continue)
}

pub(super) fn exists(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let mut found = 0;
    for key in &args[1..] {
        found += i64::from(shared.keyspace.db().contains(key));
    }
    reply.integer(found);
    Ok(Flow::Continue)
}

pub(super) fn key_type(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    if shared.keyspace.db().contains(args[1]) {
        reply.simple("string");
    } else {
        reply.simple("none");
    }
    Ok(Flow::Continue)
}

/// `TTL` and `PTTL`: keys never expire.
pub(super) fn ttl(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.integer(if shared.keyspace.db().contains(args[1]) {
        -1
    } else {
        -2
    });
    Ok(Flow::Continue)
}

pub(super) fn persist(
    _: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.integer(0);
    Ok(Flow::Continue)
}

/// `EXPIRE`, `SETEX` and the other commands that need key expiry, which shiplog does not have.
pub(super) fn no_expiry(
    _: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    _: &mut ReplyWriter<'_>,
) -> Outcome {
    Err(err(NO_EXPIRY))
}

pub(super) fn dbsize(
    shared: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.integer(int(shared.keyspace.db().len()));
    Ok(Flow::Continue)
}

/// `FLUSHALL` and `FLUSHDB` (database 0 is the only one).
pub(super) fn flush(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    match args.get(1) {
        None => {}
        Some(mode) if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {
        }
        Some(_) => return Err(err(SYNTAX)),
    }
    let ks = &shared.keyspace;
    // Everything this connection staged is older than the deletes: commit it first.
    ks.commit(&mut session.uncommitted)?;
    let (removed, lsn) = ks.flush_all()?;
    if let Some(lsn) = lsn {
        // The deletes are this connection's write: `WAIT` and the acknowledgement
        // gate count replicas from here.
        session.last_write_lsn = session.last_write_lsn.max(lsn);
        session.last_write_epoch = ks.db().wal().highest_epoch();
    }
    tracing::info!(removed, client = session.id, "FLUSHALL");
    reply.ok();
    Ok(Flow::Continue)
}

pub(super) fn keys(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let keys = matching_keys(shared, args[1], usize::MAX);
    check_reply_size(shared, keys.iter().map(|k| k.len() + 16).sum())?;
    reply.array(keys.len());
    for key in &keys {
        reply.bulk(key);
    }
    Ok(Flow::Continue)
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

pub(super) fn scan(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
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
        Some(last) if page.len() == count.min(100_000) => shared.cursors.save(session.id, last),
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
    Ok(Flow::Continue)
}
