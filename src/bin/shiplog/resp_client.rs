//! The admin tool's connection to a node: the crate's RESP connection
//! ([`shiplog::resp_conn::Connection`], every read bounded in time and size), authenticated
//! with the password in `--password-file` when one is given.

use std::path::Path;
use std::time::Duration;

use shiplog::format::resp_reply::Reply;
use shiplog::resp_conn::Connection;

/// Connects to `target` (`HOST:PORT`), `timeout` bounding the connection and every later read
/// and write, then sends `AUTH` with the password in `password_file`, when one is given.
///
/// # Errors
/// The file cannot be read, the connection fails, or the server refuses the password; the
/// text says which.
pub fn connect_with_auth(
    target: &str,
    timeout: Duration,
    password_file: Option<&Path>,
) -> Result<Connection, String> {
    let password = password_file
        .map(shiplog::server::config::read_password_file)
        .transpose()?;
    let mut client = Connection::connect(target, timeout).map_err(|e| e.to_string())?;
    if let Some(password) = &password {
        match client
            .command(&[b"AUTH", password])
            .map_err(|e| e.to_string())?
        {
            Reply::Simple(_) => {}
            Reply::Error(e) => {
                let e = String::from_utf8_lossy(e);
                return Err(format!("{target} refused AUTH: {e}"));
            }
            other => return Err(format!("{target} answered AUTH with {}", other.describe())),
        }
    }
    Ok(client)
}
