//! Many clients at once: read-modify-write commands stay atomic, MSET is seen whole by MGET,
//! and every client gets its own answers.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use daemon::Daemon;
use redis::Commands;

#[test]
fn concurrent_incr_setnx_and_append_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--io-threads", "2"]);
    let clients = 16;
    let per_client = 300;
    std::thread::scope(|scope| {
        for c in 0..clients {
            let daemon = &daemon;
            scope.spawn(move || {
                let mut con = daemon.client();
                for i in 0..per_client {
                    let _: i64 = con.incr("counter", 1).unwrap();
                    let won: bool = con.set_nx(format!("lock:{i}"), c).unwrap();
                    if won {
                        let _: usize = con.append("winners", "x").unwrap();
                    }
                    // A pipeline mixing blind writes and reads of this client's own key.
                    let (value,): (i64,) = redis::pipe()
                        .cmd("SET")
                        .arg(format!("own:{c}"))
                        .arg(i)
                        .ignore()
                        .cmd("GET")
                        .arg(format!("own:{c}"))
                        .query(&mut con)
                        .unwrap();
                    assert_eq!(value, i);
                }
            });
        }
    });
    let mut con = daemon.client();
    let counter: i64 = con.get("counter").unwrap();
    assert_eq!(counter, clients * per_client);
    let winners: String = con.get("winners").unwrap();
    assert_eq!(
        winners.len(),
        per_client as usize,
        "exactly one SETNX wins per key"
    );
    daemon.stop();
}

#[test]
fn mset_is_atomic_for_mget_readers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--io-threads", "2"]);
    let keys: Vec<String> = (0..20).map(|i| format!("acct:{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let writer = {
            let (daemon, keys, stop) = (&daemon, &keys, Arc::clone(&stop));
            scope.spawn(move || {
                let mut con = daemon.client();
                for round in 0..400 {
                    let pairs: Vec<(&String, i64)> = keys.iter().map(|k| (k, round)).collect();
                    let _: () = con.mset(&pairs).unwrap();
                }
                stop.store(true, Ordering::Release);
            })
        };
        for _ in 0..3 {
            let (daemon, keys, stop) = (&daemon, &keys, Arc::clone(&stop));
            scope.spawn(move || {
                let mut con = daemon.client();
                let mut reads = 0;
                while !stop.load(Ordering::Acquire) || reads == 0 {
                    let values: Vec<Option<i64>> = con.mget(keys).unwrap();
                    let first = values[0];
                    assert!(
                        values.iter().all(|v| *v == first),
                        "MGET saw half an MSET: {values:?}"
                    );
                    reads += 1;
                }
            });
        }
        writer.join().unwrap();
    });
    daemon.stop();
}

#[test]
fn two_hundred_clients_each_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    std::thread::scope(|scope| {
        for c in 0..200 {
            let daemon = &daemon;
            scope.spawn(move || {
                let mut con = daemon.client();
                for i in 0..20 {
                    let key = format!("c{c}:{i}");
                    let _: () = con.set(&key, format!("{c}-{i}")).unwrap();
                    let got: String = con.get(&key).unwrap();
                    assert_eq!(got, format!("{c}-{i}"));
                }
            });
        }
    });
    let mut con = daemon.client();
    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 4000);
    daemon.stop();
}
