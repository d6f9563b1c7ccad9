//! The server-level crash loop: clients record every `SET` and `MSET` the server answered OK,
//! the server is killed with SIGKILL at a random moment and restarted, and every acknowledged
//! write must be there with its value. `cargo test` runs a short loop; the long one is
//! `SHIPLOG_KILL_CYCLES=1000 cargo test --release --test server_acknowledged_writes_survive_kill_9
//! -- --ignored`.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon::Daemon;
use redis::Commands;

fn value_of(key: &str) -> String {
    format!("value-of-{key}-{}", "x".repeat(key.len() % 50))
}

/// Runs `cycles` kill/restart cycles; returns the checks made and the acknowledged writes.
fn crash_loop(cycles: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut verified = 0;
    let mut checked_before = 0;
    for cycle in 0..cycles {
        let daemon = Daemon::start(dir.path(), &["--io-threads", "2"]);
        // Everything acknowledged before this start must be here: the writes of the last
        // cycle all, older ones by sample (all of them once more at the end).
        {
            let mut con = daemon.client();
            let all = acked.lock().unwrap().clone();
            let fresh = all.len() - checked_before;
            let mut keys: Vec<String> = all[checked_before..].to_vec();
            for _ in 0..fresh.min(checked_before) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                keys.push(all[(seed % checked_before as u64) as usize].clone());
            }
            checked_before = all.len();
            verify(&mut con, &keys, cycle);
            verified += keys.len();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (url, acked, stop) = (daemon.url(), Arc::clone(&acked), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let Ok(mut con) = redis::Client::open(url).unwrap().get_connection() else {
                        return;
                    };
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("c{cycle}-w{w}-{i}");
                        let result: redis::RedisResult<()> = if i % 5 == 0 {
                            let other = format!("{key}-m");
                            con.mset(&[(&key, value_of(&key)), (&other, value_of(&other))])
                                .map(|()| {
                                    acked.lock().unwrap().push(other);
                                })
                        } else {
                            con.set(&key, value_of(&key))
                        };
                        match result {
                            Ok(()) => acked.lock().unwrap().push(key),
                            Err(_) => return,
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 200));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
    }
    let daemon = Daemon::start(dir.path(), &[]);
    let all = acked.lock().unwrap().clone();
    verify(&mut daemon.client(), &all, cycles);
    daemon.stop();
    (verified + all.len(), all.len())
}

fn verify(con: &mut redis::Connection, keys: &[String], cycle: usize) {
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = con.mget(chunk).unwrap();
        for (key, value) in chunk.iter().zip(values) {
            assert_eq!(
                value.as_deref(),
                Some(value_of(key).as_str()),
                "cycle {cycle}: acknowledged write of {key} lost"
            );
        }
    }
}

#[test]
fn acknowledged_sets_survive_20_kills() {
    let (_, acknowledged) = crash_loop(20);
    assert!(
        acknowledged > 1000,
        "only {acknowledged} writes were acknowledged"
    );
}

#[test]
#[ignore = "long: thousands of kill cycles (set SHIPLOG_KILL_CYCLES)"]
fn acknowledged_sets_survive_many_kills() {
    let cycles = std::env::var("SHIPLOG_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let (checks, acknowledged) = crash_loop(cycles);
    println!("{cycles} kill cycles, {acknowledged} acknowledged writes, {checks} checks, 0 lost");
}
