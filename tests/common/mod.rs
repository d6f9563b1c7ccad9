//! Shared by the tests that run processes: the kill -9 tests run this test binary again as a
//! child process, collect the acknowledgements it prints, and SIGKILL it; the admin tool's
//! tests run `shiplog`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "test helpers: each test binary uses a part; a failed unwrap is a failed test"
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

/// The numbers of an `ack …` line returned by [`run_child_until_killed`], in order.
pub fn ack_fields(line: &str) -> Vec<u64> {
    line.split(' ')
        .skip(1)
        .map(|field| field.parse().unwrap())
        .collect()
}

/// Runs the real admin tool `shiplog` with `args`: its exit code (`None`: killed by a signal),
/// its stdout, its stderr.
pub fn shiplog_exit_code(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the real admin tool `shiplog` with `args`: whether it exited 0, its stdout, its stderr.
pub fn shiplog(args: &[&str]) -> (bool, String, String) {
    let (code, stdout, stderr) = shiplog_exit_code(args);
    (code == Some(0), stdout, stderr)
}

/// One step of xorshift64 (shifts 13, 7, 17) on a non-zero `state`; returns the new state. The
/// seeded schedules of the tests draw from it, so a seed always replays the same run.
pub fn xorshift64(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// xorshift64*: a step of [`xorshift64`] times a constant, which mixes the state's high bits
/// into the low ones that `%` takes (a plain xorshift's low bits are weak).
pub fn xorshift64_star(state: &mut u64) -> u64 {
    xorshift64(state).wrapping_mul(0x2545_f491_4f6c_dd1d)
}
