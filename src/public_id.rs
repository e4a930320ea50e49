//! Notification ids as callers see them: `ntf_` and 22 base62 characters, never the row id.
//!
//! Row ids count up, so their decimal strings would let anyone holding a token walk through other
//! notifications by guessing. Instead the 128-bit block (row id, 64 zero bits) goes through a
//! keyed permutation, a 4-round Feistel network whose round function is HMAC-SHA256 under a key
//! kept in the database (shared by every node, generated on first start). Decoding runs the
//! network backwards and accepts the result only when the 64 zero bits come back, so a guessed,
//! tampered or numeric id is refused here, without a database lookup (a random string passes with
//! probability 2^-64). No column and no index: intake stores row ids as before, and a notification
//! keeps its id (and its `webhook-id`) for life. docs/security.md, "Notification ids", says why.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::NotificationId;

/// What every public notification id starts with, so an id is recognisable in logs and tickets.
pub const PREFIX: &str = "ntf_";
/// Bytes of the permutation's key.
pub const KEY_LEN: usize = 32;
/// Base62 digits after the prefix: enough for any 128-bit value (62^22 > 2^128).
const DIGITS: usize = 22;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Feistel rounds: four make a strong pseudo-random permutation (Luby-Rackoff), which is what
/// lets decoding reject forgeries as well as hide the order.
const ROUNDS: u8 = 4;

/// The stored key is not what this module generated.
#[derive(Debug, thiserror::Error)]
#[error("the notification id key in the database is not {KEY_LEN} bytes of base64")]
pub struct BadKey;

/// Encodes row ids as public ids and back, with one key. Cheap to clone.
#[derive(Clone)]
pub struct PublicIds {
    /// HMAC-SHA256 already keyed; each round clones it rather than keying again.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PublicIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicIds(..)")
    }
}

impl PublicIds {
    /// The codec for `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        }
    }

    /// A fresh random key, as stored text: what the first node to start saves for all.
    pub fn generate_key() -> String {
        STANDARD.encode(rand::random::<[u8; KEY_LEN]>())
    }

    /// The codec for a key as [`generate_key`](Self::generate_key) wrote it.
    pub fn from_stored(stored: &str) -> Result<Self, BadKey> {
        let bytes = STANDARD.decode(stored.trim()).map_err(|_| BadKey)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| BadKey)?;
        Ok(Self::new(&key))
    }

    /// The id callers see for row `id`.
    pub fn encode(&self, id: NotificationId) -> String {
        // Row ids are positive, so the cast keeps every bit.
        let (mut left, mut right) = (id.0 as u64, 0u64);
        for round in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        let mut value = (u128::from(left) << 64) | u128::from(right);
        let mut digits = [0u8; DIGITS];
        for digit in digits.iter_mut().rev() {
            *digit = ALPHABET[(value % 62) as usize];
            value /= 62;
        }
        let mut text = String::with_capacity(PREFIX.len() + DIGITS);
        text.push_str(PREFIX);
        text.extend(digits.iter().map(|&d| char::from(d)));
        text
    }

    /// The row id behind a public id; `None` for anything [`encode`](Self::encode) did not
    /// produce with this key (a guess, a changed character, an old decimal id).
    pub fn decode(&self, text: &str) -> Option<NotificationId> {
        let digits = text.strip_prefix(PREFIX)?;
        if digits.len() != DIGITS {
            return None;
        }
        let mut value = 0u128;
        for byte in digits.bytes() {
            let digit = ALPHABET.iter().position(|&a| a == byte)?;
            value = value.checked_mul(62)?.checked_add(digit as u128)?;
        }
        let (mut left, mut right) = ((value >> 64) as u64, value as u64);
        for round in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        let id = i64::try_from(left).ok().filter(|id| *id > 0)?;
        (right == 0).then_some(NotificationId(id))
    }

    /// The round function: 64 bits of HMAC-SHA256(key, round || half).
    fn round(&self, round: u8, half: u64) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(&[round]);
        mac.update(&half.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PublicIds {
        PublicIds::new(&[7; KEY_LEN])
    }

    #[test]
    fn round_trips() {
        let ids = ids();
        for id in [1, 2, 3, 1000, 1 << 40, i64::MAX] {
            let text = ids.encode(NotificationId(id));
            assert!(text.starts_with(PREFIX), "{text}");
            assert_eq!(text.len(), PREFIX.len() + DIGITS, "{text}");
            assert_eq!(ids.decode(&text), Some(NotificationId(id)), "{text}");
        }
    }

    #[test]
    fn neighbours_look_unrelated() {
        let ids = ids();
        let (a, b) = (
            ids.encode(NotificationId(41)),
            ids.encode(NotificationId(42)),
        );
        let same = a.bytes().zip(b.bytes()).filter(|(x, y)| x == y).count();
        // The prefix and perhaps a digit or two by chance, not a shared stem.
        assert!(same < PREFIX.len() + 6, "{a} {b}");
    }

    #[test]
    fn every_changed_character_is_refused() {
        let ids = ids();
        let text = ids.encode(NotificationId(12345));
        for at in PREFIX.len()..text.len() {
            for &replacement in ALPHABET {
                let mut bytes = text.clone().into_bytes();
                if bytes[at] == replacement {
                    continue;
                }
                bytes[at] = replacement;
                let tampered = String::from_utf8(bytes).unwrap();
                assert_eq!(ids.decode(&tampered), None, "{tampered}");
            }
        }
    }

    #[test]
    fn other_forms_are_refused() {
        let ids = ids();
        let text = ids.encode(NotificationId(5));
        let digits = &text[PREFIX.len()..];
        for other in [
            "5".to_owned(),
            "".to_owned(),
            PREFIX.to_owned(),
            digits.to_owned(),
            format!("{text}0"),
            text[..text.len() - 1].to_owned(),
            format!("{PREFIX}{}", "z".repeat(DIGITS)),
            format!("{PREFIX}{}", "-".repeat(DIGITS)),
            text.to_uppercase(),
        ] {
            assert_eq!(ids.decode(&other), None, "{other:?}");
        }
    }

    #[test]
    fn another_key_reads_nothing() {
        let text = ids().encode(NotificationId(99));
        assert_eq!(PublicIds::new(&[8; KEY_LEN]).decode(&text), None);
    }

    #[test]
    fn stored_keys_load() {
        let stored = PublicIds::generate_key();
        let ids = PublicIds::from_stored(&stored).unwrap();
        let text = ids.encode(NotificationId(3));
        assert_eq!(
            PublicIds::from_stored(&stored).unwrap().decode(&text),
            Some(NotificationId(3))
        );
        assert!(PublicIds::from_stored("short").is_err());
        assert!(PublicIds::from_stored("not base64!").is_err());
    }
}
