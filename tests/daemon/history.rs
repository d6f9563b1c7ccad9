//! A history checker, after Jepsen's: concurrent clients record every operation with its
//! outcome (ok, fail, indeterminate) across crashes and failovers, and the history is checked
//! against the final state.
//!
//! Each key belongs to one client, which writes it with strictly increasing sequence numbers
//! (`<key>=<seq>`), one operation at a time: the writes to a key are totally ordered, so the
//! checks need no search over interleavings.
//!
//! - **No acknowledged write is lost**: a key's final value has a sequence number at least that
//!   of its last acknowledged write (a later write, acknowledged or indeterminate, may have
//!   replaced it).
//! - **Nothing unwritten is read**: every value read, and every final value, was written by an
//!   operation that was acknowledged or indeterminate, never by one that definitely failed,
//!   never one no client wrote.
//! - **No acknowledged write is read as undone**: a read that starts after a write to its key
//!   was acknowledged returns that write or a later one.

use std::collections::HashMap;
use std::sync::Mutex;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely not applied (refused before anything was written).
    Fail,
    /// Unknown: the connection broke, or the server said it could not confirm.
    Indeterminate,
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `SET key <seq>`.
    Write { key: String, seq: u64 },
    /// `GET key`, with what it returned (`None`: no value), when it completed.
    Read { key: String, value: Option<u64> },
}

#[derive(Debug, Clone)]
struct Entry {
    op: Op,
    outcome: Outcome,
    /// Order of invocation and of completion in the whole history.
    invoked: u64,
    completed: u64,
}

/// The operations of a run, in the order they completed.
#[derive(Debug, Default)]
pub struct History {
    entries: Mutex<Vec<Entry>>,
    clock: std::sync::atomic::AtomicU64,
}

impl History {
    /// A tick to stamp an operation's invocation with.
    pub fn invoke(&self) -> u64 {
        self.clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// Records an operation invoked at `invoked`, which completed now.
    pub fn complete(&self, invoked: u64, op: Op, outcome: Outcome) {
        let completed = self.invoke();
        self.entries.lock().unwrap().push(Entry {
            op,
            outcome,
            invoked,
            completed,
        });
    }

    /// (acknowledged, failed, indeterminate) writes.
    pub fn write_counts(&self) -> (usize, usize, usize) {
        let entries = self.entries.lock().unwrap();
        let count = |o| {
            entries
                .iter()
                .filter(|e| e.outcome == o && matches!(e.op, Op::Write { .. }))
                .count()
        };
        (
            count(Outcome::Ok),
            count(Outcome::Fail),
            count(Outcome::Indeterminate),
        )
    }

    /// Reads that returned a value.
    pub fn reads(&self) -> usize {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e.op, Op::Read { .. }) && e.outcome == Outcome::Ok)
            .count()
    }

    /// Every anomaly of the history against `final_state` (key → sequence number); empty when
    /// the history is valid.
    pub fn anomalies(&self, final_state: &HashMap<String, u64>) -> Vec<String> {
        let entries = self.entries.lock().unwrap();
        // Per key: seq → outcome of its write, and the acknowledged writes by completion.
        let mut writes: HashMap<&str, HashMap<u64, Outcome>> = HashMap::new();
        let mut acked: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for e in entries.iter() {
            if let Op::Write { key, seq } = &e.op {
                writes.entry(key).or_default().insert(*seq, e.outcome);
                if e.outcome == Outcome::Ok {
                    acked.entry(key).or_default().push((e.completed, *seq));
                }
            }
        }
        let mut anomalies = Vec::new();
        let written = |key: &str, seq: u64| -> Option<Outcome> {
            writes.get(key).and_then(|w| w.get(&seq)).copied()
        };
        for (key, acks) in &acked {
            let last = acks.iter().map(|&(_, seq)| seq).max().unwrap_or(0);
            match final_state.get(*key) {
                Some(&seq) if seq >= last => {}
                Some(&seq) => anomalies.push(format!(
                    "{key}: acknowledged write {last} lost, the final value is write {seq}"
                )),
                None => anomalies.push(format!(
                    "{key}: acknowledged write {last} lost, the key is gone"
                )),
            }
        }
        for (key, &seq) in final_state {
            match written(key, seq) {
                Some(Outcome::Ok | Outcome::Indeterminate) => {}
                Some(Outcome::Fail) => anomalies.push(format!(
                    "{key}: the final value is write {seq}, which failed"
                )),
                None => anomalies.push(format!("{key}: the final value {seq} was never written")),
            }
        }
        for e in entries.iter() {
            let Op::Read { key, value } = &e.op else {
                continue;
            };
            if e.outcome != Outcome::Ok {
                continue;
            }
            let floor = acked.get(key.as_str()).and_then(|acks| {
                acks.iter()
                    .filter(|&&(completed, _)| completed < e.invoked)
                    .map(|&(_, seq)| seq)
                    .max()
            });
            match (value, floor) {
                (Some(seq), _)
                    if !matches!(
                        written(key, *seq),
                        Some(Outcome::Ok | Outcome::Indeterminate)
                    ) =>
                {
                    anomalies.push(format!(
                        "{key}: a read returned {seq}, which no write that may have happened wrote"
                    ));
                }
                (Some(seq), Some(floor)) if *seq < floor => anomalies.push(format!(
                    "{key}: a read returned {seq} after write {floor} was acknowledged"
                )),
                (None, Some(floor)) => anomalies.push(format!(
                    "{key}: a read found no value after write {floor} was acknowledged"
                )),
                _ => {}
            }
        }
        anomalies
    }
}
