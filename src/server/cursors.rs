//! `SCAN` cursors. Keys live in an ordered index, so the natural cursor is "the last key
//! returned"; Redis clients expect an integer, so the server keeps a bounded table from random
//! cursor numbers to keys. A full scan then returns every key present from its start to its end
//! exactly once, whatever changes meanwhile (Redis' hash-table cursor promises "at least
//! once"). Cursors are not tied to a connection (a pooled client may continue a scan on another
//! one), but each connection may hold only [`CURSORS_PER_CLIENT`], so no client can push the
//! others' cursors out.

use crate::sync::MutexExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most cursors one connection keeps; its oldest is forgotten first.
const CURSORS_PER_CLIENT: usize = 256;
/// Most cursors kept in all; the oldest is forgotten first.
const CURSORS_MAX: usize = 1 << 20;
/// Most key bytes kept across all cursors.
const CURSOR_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<u64, Box<[u8]>>,
    order: VecDeque<u64>,
    by_client: HashMap<u64, VecDeque<u64>>,
    bytes: usize,
}

impl Table {
    fn forget(&mut self, id: u64) {
        if let Some(key) = self.keys.remove(&id) {
            self.bytes -= key.len();
        }
    }
}

/// The cursor table.
#[derive(Debug, Default)]
pub struct Cursors {
    table: Mutex<Table>,
}

impl Cursors {
    /// A new cursor, made by connection `client`, that resumes after `key`.
    pub fn save(&self, client: u64, key: &[u8]) -> u64 {
        let mut table = self.table.locked();
        let mut id = crate::wal::random_u64() >> 1;
        while id == 0 || table.keys.contains_key(&id) {
            id = crate::wal::random_u64() >> 1;
        }
        table.bytes += key.len();
        table.keys.insert(id, Box::from(key));
        table.order.push_back(id);
        let mine = table.by_client.entry(client).or_default();
        mine.push_back(id);
        let evict = (mine.len() > CURSORS_PER_CLIENT)
            .then(|| mine.pop_front())
            .flatten();
        if let Some(old) = evict {
            table.forget(old);
        }
        // The global order may name cursors already forgotten: skip those.
        while table.keys.len() > CURSORS_MAX || table.bytes > CURSOR_BYTES_MAX {
            let Some(old) = table.order.pop_front() else {
                break;
            };
            table.forget(old);
        }
        if table.order.len() > 2 * CURSORS_MAX {
            let Table { order, keys, .. } = &mut *table;
            order.retain(|id| keys.contains_key(id));
        }
        id
    }

    /// The key cursor `id` resumes after, if the cursor is known.
    pub fn resume(&self, id: u64) -> Option<Box<[u8]>> {
        let table = self.table.locked();
        table.keys.get(&id).cloned()
    }

    /// Forgets the per-connection bookkeeping of a closed connection (its cursors stay valid
    /// until pushed out).
    pub fn client_closed(&self, client: u64) {
        let mut table = self.table.locked();
        table.by_client.remove(&client);
    }
}
