//! Shared by the kill -9 tests: run this test binary again as a child process, collect the
//! acknowledgements it prints, and SIGKILL it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Re-runs the test `test_name` of the current binary with `envs`, lets it work for `run_for`,
/// kills it with SIGKILL, and returns every `ack …` line it printed, in order.
pub fn run_child_until_killed(
    test_name: &str,
    envs: &[(&str, String)],
    run_for: Duration,
) -> Vec<String> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        test_name,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ]);
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // An ack can share a line with the test harness's own output: find it anywhere.
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.find("ack ").map(|at| line[at..].to_owned()))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(run_for);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}
