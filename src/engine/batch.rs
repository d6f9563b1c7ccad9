//! Atomic write batches.

use crate::format::RecordKind;
use crate::format::kv::{KIND_DELETE, KIND_PUT, encode_delete, encode_put};

/// Puts and deletes applied atomically: after any crash, and to every reader, all of them or
/// none.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<(RecordKind, Vec<u8>)>,
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.note_sizes(key.len(), value.len());
        if u32::try_from(key.len()).is_err() {
            // Not encodable; `Db::write_batch` rejects the batch by its noted key size.
            return self;
        }
        let mut payload = Vec::with_capacity(4 + key.len() + value.len());
        encode_put(&mut payload, key, value);
        self.ops.push((KIND_PUT, payload));
        self
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.note_sizes(key.len(), 0);
        if u32::try_from(key.len()).is_err() {
            return self;
        }
        let mut payload = Vec::with_capacity(4 + key.len());
        encode_delete(&mut payload, key);
        self.ops.push((KIND_DELETE, payload));
        self
    }

    fn note_sizes(&mut self, key_bytes: usize, value_bytes: usize) {
        self.key_bytes_max = self.key_bytes_max.max(key_bytes);
        self.value_bytes_max = self.value_bytes_max.max(value_bytes);
    }

    /// Number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
