//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`, with the
//! secret given as `whsec_<base64>`. Customers verify with any Standard Webhooks library; the
//! same [`verify`] is used by floodgate's own tests and load-test receivers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";
/// Bytes of key material in a generated secret (Standard Webhooks allows 24 to 64).
const GENERATED_SECRET_BYTES: usize = 32;

/// A signing secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing secret must be \"whsec_\" followed by base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

/// A fresh random secret in Standard Webhooks form.
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The raw key inside a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, InvalidSecret> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
    let key = STANDARD.decode(encoded).map_err(|_| InvalidSecret)?;
    if (24..=64).contains(&key.len()) {
        Ok(key)
    } else {
        Err(InvalidSecret)
    }
}

/// The `webhook-signature` header value for one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(mac(key, msg_id, timestamp, body).finalize().into_bytes())
    )
}

/// True when any `v1,` signature in the (space-separated) header matches the message.
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Ok(key) = decode_secret(secret) else {
        return false;
    };
    header.split(' ').any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|sig| STANDARD.decode(sig).ok())
            // verify_slice compares in constant time.
            .is_some_and(|sig| {
                mac(&key, msg_id, timestamp, body)
                    .verify_slice(&sig)
                    .is_ok()
            })
    })
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference implementations.
    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = decode_secret(secret).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &signature
        ));
        assert!(!verify(secret, "msg_other", 1614265330, body, &signature));
    }

    #[test]
    fn generated_secrets_decode() {
        let secret = generate_secret();
        assert_eq!(
            decode_secret(&secret).unwrap().len(),
            GENERATED_SECRET_BYTES
        );
        assert_eq!(decode_secret("whsec_short"), Err(InvalidSecret));
        assert_eq!(decode_secret("nope"), Err(InvalidSecret));
    }
}
