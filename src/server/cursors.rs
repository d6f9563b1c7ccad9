//! `SCAN` cursors. Keys live in an ordered index, so the natural cursor is "the last key
//! returned"; Redis clients expect an integer, so the server keeps a bounded table from random
//! cursor numbers to keys. A full scan then returns every key present from its start to its end
//! exactly once, whatever changes meanwhile (a guarantee Redis' hash-table cursor only gives
//! "at least once").

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Most cursors kept; the oldest is forgotten first.
const CURSORS_MAX: usize = 100_000;
/// Most key bytes kept across all cursors.
const CURSOR_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<u64, Box<[u8]>>,
    order: VecDeque<u64>,
    bytes: usize,
}

/// The cursor table.
#[derive(Debug, Default)]
pub struct Cursors {
    table: Mutex<Table>,
}

impl Cursors {
    /// A new cursor that resumes after `key`.
    pub fn save(&self, key: &[u8]) -> u64 {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut id = crate::wal::random_u64() >> 1;
        while id == 0 || table.keys.contains_key(&id) {
            id = crate::wal::random_u64() >> 1;
        }
        table.bytes += key.len();
        table.keys.insert(id, Box::from(key));
        table.order.push_back(id);
        while table.order.len() > CURSORS_MAX || table.bytes > CURSOR_BYTES_MAX {
            let Some(old) = table.order.pop_front() else {
                break;
            };
            if let Some(key) = table.keys.remove(&old) {
                table.bytes -= key.len();
            }
        }
        id
    }

    /// The key cursor `id` resumes after, if the cursor is known.
    pub fn resume(&self, id: u64) -> Option<Box<[u8]>> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.keys.get(&id).cloned()
    }
}
