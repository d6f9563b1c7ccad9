//! Values handed to readers: views into the mapped log, not copies.

use std::fmt;
use std::ops::Deref;

use crate::wal::Payload;

/// A value read from the store: derefs to `&[u8]` borrowed from the memory-mapped segment, keeps
/// that mapping alive while held, and clones by bumping a reference count.
#[derive(Clone)]
pub struct Value(pub(crate) Payload);

impl Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("len", &self.len()).finish()
    }
}
