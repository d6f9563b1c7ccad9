//! Keys as the index stores them: up to 22 bytes inline in the tree node, longer ones on the
//! heap. Inline keys spare every comparison of a lookup a pointer chase into a cold cache line;
//! at 1 M keys that was most of a `get` (1.37 µs per lookup with boxed keys).

use std::borrow::Borrow;
use std::cmp::Ordering;

const INLINE_BYTES: usize = 22;

/// A key in the index: 24 bytes, ordered and compared as its bytes.
#[derive(Clone)]
pub(crate) enum IndexKey {
    /// Short keys: length and bytes, in place.
    Inline(u8, [u8; INLINE_BYTES]),
    /// Longer keys.
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<IndexKey>() == 24);

impl IndexKey {
    pub fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            #[expect(clippy::cast_possible_truncation, reason = "at most INLINE_BYTES")]
            Self::Inline(key.len() as u8, bytes)
        } else {
            Self::Heap(key.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keys_order_like_their_bytes(a in proptest::collection::vec(any::<u8>(), 0..40), b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (ka, kb) = (IndexKey::new(&a), IndexKey::new(&b));
            prop_assert_eq!(ka.as_bytes(), a.as_slice());
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
        }
    }
}
