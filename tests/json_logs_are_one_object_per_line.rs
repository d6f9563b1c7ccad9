//! `shiplogd --log-format json` writes every log line as one JSON object, from the first line
//! to the last (startup, ready, shutdown), so a log collector needs no parser of its own.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn every_line_parses_and_carries_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shiplogd"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--dir"])
        .arg(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Until the ready line, or the end of stderr if shiplogd exits before it.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("ready to accept connections");
        seen.push(line);
        if ready {
            break;
        }
    }
    kill(pid, Signal::SIGTERM).unwrap();
    seen.extend(lines.map(Result::unwrap));
    assert!(child.wait().unwrap().success(), "{seen:?}");

    let events: Vec<serde_json::Value> = seen
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for event in &events {
        assert!(event["timestamp"].is_string(), "{event}");
        assert!(event["level"].is_string(), "{event}");
        assert!(event["fields"]["message"].is_string(), "{event}");
    }
    let message =
        |event: &serde_json::Value| event["fields"]["message"].as_str().unwrap().to_owned();
    let ready = events
        .iter()
        .find(|event| message(event) == "ready to accept connections")
        .unwrap();
    let listen = ready["fields"]["listen"].as_str().unwrap();
    assert!(listen.starts_with("127.0.0.1:"), "{ready}");
    assert_eq!(ready["level"], "INFO");
    assert!(
        events
            .iter()
            .any(|event| message(event).starts_with("shut down cleanly")),
        "{seen:?}"
    );
}
