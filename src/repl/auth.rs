//! Challenge–response authentication of a replica to its primary, and of the primary back to
//! the replica: each proves it knows the password with an HMAC-SHA256 over both sides' fresh
//! nonces, so the password never crosses the network and a recorded exchange cannot be
//! replayed (`docs/format.md`, "Authentication").

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::format::repl::AUTH_BYTES;
use crate::wal::random_u64;

/// Who is proving: the two proofs differ, so one side's proof is no use to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prover {
    /// The replica, answering the primary's challenge.
    Replica,
    /// The primary, answering the replica's.
    Primary,
}

/// A fresh nonce.
#[must_use]
pub fn nonce() -> [u8; AUTH_BYTES] {
    let mut out = [0; AUTH_BYTES];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&random_u64().to_le_bytes());
    }
    out
}

fn mac(
    password: &[u8],
    prover: Prover,
    primary_nonce: &[u8],
    replica_nonce: &[u8],
) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(password)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(match prover {
        Prover::Replica => b"shiplog-replication-v1 replica",
        Prover::Primary => b"shiplog-replication-v1 primary",
    });
    mac.update(primary_nonce);
    mac.update(replica_nonce);
    mac
}

/// The proof `prover` sends.
#[must_use]
pub fn proof(
    password: &[u8],
    prover: Prover,
    primary_nonce: &[u8; AUTH_BYTES],
    replica_nonce: &[u8; AUTH_BYTES],
) -> [u8; AUTH_BYTES] {
    mac(password, prover, primary_nonce, replica_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is `prover`'s proof, compared in constant time.
#[must_use]
pub fn verify(
    password: &[u8],
    prover: Prover,
    primary_nonce: &[u8; AUTH_BYTES],
    replica_nonce: &[u8; AUTH_BYTES],
    proof: &[u8; AUTH_BYTES],
) -> bool {
    mac(password, prover, primary_nonce, replica_nonce)
        .verify_slice(proof)
        .is_ok()
}

/// Parses the nonce of the handshake reply `+OK AUTH <64 hex digits>`.
#[must_use]
pub fn parse_challenge(hex: &[u8]) -> Option<[u8; AUTH_BYTES]> {
    // `from_str_radix` would take a sign: only hex digits may pass.
    if hex.len() != 2 * AUTH_BYTES || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0; AUTH_BYTES];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The hex form of a nonce, for the handshake reply.
#[must_use]
pub fn challenge_hex(nonce: &[u8; AUTH_BYTES]) -> String {
    let mut out = String::with_capacity(2 * AUTH_BYTES);
    for b in nonce {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_password_nonces_and_prover() {
        let (p, r) = (nonce(), nonce());
        assert_ne!(p, r);
        let good = proof(b"secret", Prover::Replica, &p, &r);
        assert!(verify(b"secret", Prover::Replica, &p, &r, &good));
        assert!(!verify(b"secret!", Prover::Replica, &p, &r, &good));
        assert!(!verify(b"secret", Prover::Primary, &p, &r, &good));
        assert!(!verify(b"secret", Prover::Replica, &r, &p, &good));
        assert_eq!(parse_challenge(challenge_hex(&p).as_bytes()), Some(p));
        assert_eq!(parse_challenge(b"zz"), None);
        assert_eq!(parse_challenge(&[b'g'; 64]), None);
        // `from_str_radix` accepts a leading `+`: a pair like "+1" must not pass as a byte.
        assert_eq!(parse_challenge(&[b'+', b'1'].repeat(32)), None);
    }
}
