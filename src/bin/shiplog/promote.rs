//! `shiplog promote HOST:PORT [--force]`: makes a replica the primary of a new epoch
//! (`SHIPLOG.PROMOTE`), and says what happened.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use shiplog::format::resp_reply::Reply;

use crate::resp_client::connect_with_auth;

/// A promotion stops the link, syncs and asks every known peer (300 ms each).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Promotes the node at `target`; exit status 1 when it refuses.
pub fn promote(
    target: &str,
    force: bool,
    password_file: Option<&Path>,
) -> Result<ExitCode, String> {
    let mut client = connect_with_auth(target, TIMEOUT, password_file)?;
    let mut args: Vec<&[u8]> = vec![b"SHIPLOG.PROMOTE"];
    if force {
        args.push(b"FORCE");
    }
    match client.command(&args).map_err(|e| e.to_string())? {
        Reply::Simple(text) => {
            println!("{target}: {}", String::from_utf8_lossy(text));
            Ok(ExitCode::SUCCESS)
        }
        Reply::Error(e) => {
            let e = String::from_utf8_lossy(e);
            eprintln!("{target} refused the promotion: {e}");
            Ok(ExitCode::FAILURE)
        }
        other => Err(format!(
            "{target} answered SHIPLOG.PROMOTE with {}",
            other.describe()
        )),
    }
}
