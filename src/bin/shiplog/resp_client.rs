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
    let password = read_password(password_file)?;
    let mut client = Connection::connect(target, timeout).map_err(|e| e.to_string())?;
    authenticate(&mut client, target, password.as_deref())?;
    Ok(client)
}

/// The password in `password_file`, when one is given.
///
/// # Errors
/// The file cannot be read; the text says why.
pub fn read_password(password_file: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    password_file
        .map(shiplog::server::config::read_password_file)
        .transpose()
}

/// Sends `AUTH password` on `client`, when there is a password.
///
/// # Errors
/// The connection fails, or the server refuses the password; the text says which.
pub fn authenticate(
    client: &mut Connection,
    target: &str,
    password: Option<&[u8]>,
) -> Result<(), String> {
    let Some(password) = password else {
        return Ok(());
    };
    match client
        .command(&[b"AUTH", password])
        .map_err(|e| e.to_string())?
    {
        Reply::Simple(_) => Ok(()),
        Reply::Error(e) => {
            let e = String::from_utf8_lossy(e);
            Err(format!("{target} refused AUTH: {e}"))
        }
        other => Err(format!("{target} answered AUTH with {}", other.describe())),
    }
}
