//! Server commands: `INFO`, `CONFIG`, `LASTSAVE`, `SAVE`, `BGSAVE`, `TIME`, `DEBUG`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::outcome::{Failure, Flow, Outcome, err, int};
use crate::format::resp::ReplyWriter;
use crate::server::glob::glob_match;
use crate::server::info;
use crate::server::session::Session;
use crate::server::shared::Shared;

pub(super) fn info(
    shared: &Arc<Shared>,
    session: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let text = info::render(shared, session, &args[1..]);
    reply.verbatim(&text);
    Ok(Flow::Continue)
}

pub(super) fn config(
    shared: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
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
            Ok(Flow::Continue)
        }
        b"GET" => Err(err(
            "ERR wrong number of arguments for 'config|get' command",
        )),
        b"SET" => Err(err(
            "ERR CONFIG SET is not supported by shiplog: change the setting in the config file or flags and restart",
        )),
        b"RESETSTAT" => {
            reply.ok();
            Ok(Flow::Continue)
        }
        _ => Err(Failure::Reply(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args[1])
        ))),
    }
}

pub(super) fn lastsave(
    shared: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    reply.integer(int(shared.last_save.load(Ordering::Relaxed)));
    Ok(Flow::Continue)
}

pub(super) fn save(
    shared: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    shared.checkpoint()?;
    reply.ok();
    Ok(Flow::Continue)
}

pub(super) fn bgsave(
    shared: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    if !shared.start_background_checkpoint() {
        return Err(err("ERR Background save already in progress"));
    }
    reply.simple("Background saving started");
    Ok(Flow::Continue)
}

pub(super) fn time(
    _: &Arc<Shared>,
    _: &mut Session,
    _: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    reply.array(2);
    reply.bulk(now.as_secs().to_string().as_bytes());
    reply.bulk(now.subsec_micros().to_string().as_bytes());
    Ok(Flow::Continue)
}

pub(super) fn debug(
    _: &Arc<Shared>,
    _: &mut Session,
    args: &[&[u8]],
    reply: &mut ReplyWriter<'_>,
) -> Outcome {
    if !(args[1].eq_ignore_ascii_case(b"sleep") && args.len() == 3) {
        return Err(err(
            "ERR DEBUG subcommand not supported by shiplog: only DEBUG SLEEP <seconds>",
        ));
    }
    let seconds: f64 = std::str::from_utf8(args[2])
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| err("ERR value is not a valid float"))?;
    std::thread::sleep(Duration::from_secs_f64(seconds.min(3600.0)));
    reply.ok();
    Ok(Flow::Continue)
}
