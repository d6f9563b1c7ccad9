//! Payloads of the key-value engine's records.
//!
//! ```text
//! put:    [key_len: 4][key: key_len][value: rest]      (record kind 1)
//! delete: [key_len: 4][key: key_len]                   (record kind 2)
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{FormatError, RecordKind};

/// Record kind of a put.
pub const KIND_PUT: RecordKind = match RecordKind::new(1) {
    Some(kind) => kind,
    None => unreachable!(),
};
/// Record kind of a delete.
pub const KIND_DELETE: RecordKind = match RecordKind::new(2) {
    Some(kind) => kind,
    None => unreachable!(),
};

/// Bytes before the key in a key-value payload.
pub const KV_HEADER_BYTES: usize = 4;

/// One decoded key-value operation; slices borrow the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp<'a> {
    /// Set `key` to the value at `value_offset..` of the payload.
    Put {
        key: &'a [u8],
        value: &'a [u8],
        value_offset: usize,
    },
    /// Remove `key`.
    Delete { key: &'a [u8] },
}

/// Appends a put payload to `out`.
///
/// # Panics
/// When the key is longer than `u32::MAX` bytes; callers enforce far smaller limits.
pub fn encode_put(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let key_len = u32::try_from(key.len()).expect("key length checked by the caller");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends a delete payload to `out`.
///
/// # Panics
/// When the key is longer than `u32::MAX` bytes; callers enforce far smaller limits.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8]) {
    let key_len = u32::try_from(key.len()).expect("key length checked by the caller");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
}

/// Decodes a key-value payload of the given record kind.
///
/// # Errors
/// An unknown kind, a key length beyond `key_max_bytes` or the payload, or trailing bytes
/// after a delete's key.
pub fn decode_kv(
    kind: RecordKind,
    payload: &[u8],
    key_max_bytes: u32,
) -> Result<KvOp<'_>, FormatError> {
    let (header, after_header) =
        payload
            .split_first_chunk::<KV_HEADER_BYTES>()
            .ok_or(FormatError::Truncated {
                needed: KV_HEADER_BYTES as u64,
                available: payload.len() as u64,
            })?;
    let key_len = LE::read_u32(header);
    if key_len > key_max_bytes {
        return Err(FormatError::LengthTooLarge {
            len: u64::from(key_len),
            max: u64::from(key_max_bytes),
        });
    }
    let key_end = KV_HEADER_BYTES + key_len as usize;
    let (key, value) =
        after_header
            .split_at_checked(key_len as usize)
            .ok_or(FormatError::Truncated {
                needed: key_end as u64,
                available: payload.len() as u64,
            })?;
    if kind == KIND_PUT {
        Ok(KvOp::Put {
            key,
            value,
            value_offset: key_end,
        })
    } else if kind == KIND_DELETE {
        if !value.is_empty() {
            return Err(FormatError::TrailingBytes {
                extra: value.len() as u64,
            });
        }
        Ok(KvOp::Delete { key })
    } else {
        Err(FormatError::BadKind(kind.get()))
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn puts_and_deletes_round_trip(key in proptest::collection::vec(any::<u8>(), 0..64), value in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut put = Vec::new();
            encode_put(&mut put, &key, &value);
            prop_assert_eq!(decode_kv(KIND_PUT, &put, 64).unwrap(), KvOp::Put { key: &key, value: &value, value_offset: 4 + key.len() });
            let mut delete = Vec::new();
            encode_delete(&mut delete, &key);
            prop_assert_eq!(decode_kv(KIND_DELETE, &delete, 64).unwrap(), KvOp::Delete { key: &key });
        }

        #[test]
        fn arbitrary_payloads_never_panic(kind in 1u8..=127, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_kv(RecordKind::new(kind).unwrap(), &payload, 16);
        }
    }

    #[test]
    fn key_lengths_beyond_the_limit_or_the_payload_are_rejected() {
        let mut put = Vec::new();
        encode_put(&mut put, b"0123456789", b"v");
        assert!(matches!(
            decode_kv(KIND_PUT, &put, 9),
            Err(FormatError::LengthTooLarge { .. })
        ));
        assert!(matches!(
            decode_kv(KIND_PUT, &put[..8], 64),
            Err(FormatError::Truncated { .. })
        ));
        let mut delete = Vec::new();
        encode_delete(&mut delete, b"k");
        delete.push(0);
        assert!(matches!(
            decode_kv(KIND_DELETE, &delete, 64),
            Err(FormatError::TrailingBytes { .. })
        ));
    }
}
