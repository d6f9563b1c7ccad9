//! Connection commands: `PING`, `ECHO`, `QUIT`, `HELLO`, `AUTH`, `SELECT`, `CLIENT`.

use std::sync::Arc;

use super::outcome::{Failure, Flow, NOT_INTEGER, Outcome, SYNTAX, err, int};
use crate::format::resp::{Protocol, ReplyWriter, parse_decimal};
use crate::server::info;
use crate::server::session::Session;
use crate::server::shared::Shared;

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

pub(super) fn ping(
    _: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    match args.len() {
        1 => reply.simple("PONG"),
        2 => reply.bulk(args[1]),
        _ => return Err(err("ERR wrong number of arguments for 'ping' command")),
    }
    Ok(Flow::Continue)
}

pub(super) fn echo(
    _: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.bulk(args[1]);
    Ok(Flow::Continue)
}

pub(super) fn quit(
    _: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.ok();
    Ok(Flow::Close)
}

pub(super) fn auth(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let password = match args.len() {
        2 => args[1],
        3 if args[1] == b"default" => args[2],
        3 => return Err(err(WRONGPASS)),
        _ => return Err(err(SYNTAX)),
    };
    authenticate(shared, session, password)?;
    reply.ok();
    Ok(Flow::Continue)
}

pub(super) fn select(
    _: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    match parse_decimal(args[1]) {
        Some(0) => reply.ok(),
        Some(_) => return Err(err("ERR DB index is out of range")),
        None => return Err(err(NOT_INTEGER)),
    }
    Ok(Flow::Continue)
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
        Err(err(WRONGPASS))
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

pub(super) fn hello(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
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
                return Err(err(WRONGPASS));
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
    reply.integer(int(session.id));
    reply.bulk(b"mode");
    reply.bulk(b"standalone");
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
    Ok(Flow::Continue)
}

pub(super) fn client(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"ID", 2) => reply.integer(int(session.id)),
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
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn passwords_compare_in_constant_time() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"\xff"));
    }
}
