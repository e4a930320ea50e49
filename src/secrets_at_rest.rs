//! Secrets at rest: customers' signing secrets and provider settings (FCM service-account keys,
//! APNs keys, SMTP passwords, SMS tokens) are sealed with ChaCha20-Poly1305 before they reach the
//! database, so a copied database file, backup or replica holds no usable secret without the key
//! file (`--secrets-key-file`, generated owner-only beside the admin token).
//!
//! A sealed value reads `fgsealed1:<key id>:<base64 of nonce, ciphertext and tag>`. The key id
//! (derived from the key) says which key sealed it, so a rotated key's values are still opened
//! with `--secrets-key-file-previous` and sealed again with the current key. Each value is bound
//! to its place (column and customer), so a sealed value copied to another customer or field does
//! not open. A value without the prefix is plain text from before sealing: it is read as it is,
//! and sealed at the next start. docs/security.md, "Secrets at rest", is the operator's side.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// What every sealed value starts with (format version 1).
const PREFIX: &str = "fgsealed1:";
/// Bytes of a key.
pub(crate) const KEY_LEN: usize = 32;

/// A sealed value that cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "a secret in the database was sealed with key {0}, which is neither --secrets-key-file nor \
         --secrets-key-file-previous (every node sharing a database needs the same key file)"
    )]
    UnknownKey(String),
    #[error(
        "a sealed secret in the database does not open: it is damaged or was moved from another field"
    )]
    Damaged,
}

/// The key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot use the secrets key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the secrets key file {0} does not hold {KEY_LEN} bytes of base64 (make one with `head -c {KEY_LEN} /dev/urandom | base64`)"
    )]
    Malformed(PathBuf),
}

/// One sealing key and its id.
pub struct SecretsKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

impl SecretsKey {
    /// The key for 32 raw bytes.
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"floodgate secrets key id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a ChaCha20-Poly1305 key is {KEY_LEN} bytes"));
        Self {
            id,
            key: LessSafeKey::new(unbound),
        }
    }

    /// The key in a key file (base64 of 32 bytes, surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The key in `path`, or a new one saved there owner-only when the file is missing: what a
    /// first start does, like the admin token.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyFileError> {
        let saved = crate::private_files::read_or_create(path, || STANDARD.encode(random_key()))
            .map_err(|source| KeyFileError::Io {
                path: path.to_owned(),
                source,
            })?;
        if saved.created {
            tracing::info!(path = %path.display(), "generated the secrets key; back it up with the database, which cannot be read without it");
        }
        Self::parse(path, &saved.content)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, KeyFileError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyFileError::Malformed(path.to_owned()))?;
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyFileError::Malformed(path.to_owned()))?;
        Ok(Self::new(&bytes))
    }

    /// Which key this is, as sealed values name it (not secret: derived one-way from the key).
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn random_key() -> [u8; KEY_LEN] {
    rand::random()
}

/// Whether a stored value is sealed (rather than plain text from before sealing).
pub(crate) fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// A value read from the database, opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub value: String,
    /// Plain text, or sealed with the previous key: to be sealed again with the current one.
    pub stale: bool,
}

/// Seals with the current key; opens with it or the previous one.
#[derive(Debug)]
pub struct Sealer {
    current: SecretsKey,
    previous: Option<SecretsKey>,
}

impl Sealer {
    /// Seals with `current`; `previous` (a rotated key) only opens.
    pub fn new(current: SecretsKey, previous: Option<SecretsKey>) -> Self {
        Self { current, previous }
    }

    /// `value` sealed with the current key, bound to `place` (which column of which row).
    pub fn seal(&self, value: &str, place: &str) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = value.as_bytes().to_vec();
        // Sealing fails only for inputs of hundreds of gigabytes.
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut sealed,
            )
            .unwrap_or_else(|_| unreachable!("a secret is far below ChaCha20-Poly1305's limit"));
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(blob))
    }

    /// A stored value, opened (plain text from before sealing passes as it is, marked stale).
    pub fn open(&self, stored: &str, place: &str) -> Result<Opened, SealError> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(Opened {
                value: stored.to_owned(),
                stale: true,
            });
        };
        let (id, blob) = sealed.split_once(':').ok_or(SealError::Damaged)?;
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let mut blob = STANDARD.decode(blob).map_err(|_| SealError::Damaged)?;
        if blob.len() < NONCE_LEN {
            return Err(SealError::Damaged);
        }
        let mut sealed = blob.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&blob).map_err(|_| SealError::Damaged)?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut sealed)
            .map_err(|_| SealError::Damaged)?;
        let value = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Damaged)?;
        Ok(Opened {
            value,
            stale: key.id != self.current.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::new(&[byte; KEY_LEN])
    }

    #[test]
    fn sealed_values_open_in_their_place_only() {
        let sealer = Sealer::new(key(1), None);
        let sealed = sealer.seal("whsec_abc", "signing_secret/acme");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            sealer.seal("whsec_abc", "signing_secret/acme"),
            "fresh nonces"
        );
        assert_eq!(
            sealer.open(&sealed, "signing_secret/acme"),
            Ok(Opened {
                value: "whsec_abc".into(),
                stale: false
            })
        );
        assert_eq!(
            sealer.open(&sealed, "signing_secret/other"),
            Err(SealError::Damaged)
        );
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            sealer.open(&tampered, "signing_secret/acme"),
            Err(SealError::Damaged)
        );
    }

    #[test]
    fn plain_text_reads_as_stale() {
        let sealer = Sealer::new(key(1), None);
        assert_eq!(
            sealer.open("whsec_old", "x"),
            Ok(Opened {
                value: "whsec_old".into(),
                stale: true
            })
        );
    }

    #[test]
    fn a_rotated_key_still_opens_and_an_unknown_one_is_named() {
        let old = Sealer::new(key(1), None);
        let sealed = old.seal("secret", "p");
        let rotated = Sealer::new(key(2), Some(key(1)));
        assert_eq!(
            rotated.open(&sealed, "p"),
            Ok(Opened {
                value: "secret".into(),
                stale: true
            })
        );
        let without = Sealer::new(key(2), None);
        assert_eq!(
            without.open(&sealed, "p"),
            Err(SealError::UnknownKey(key(1).id().to_owned()))
        );
    }

    #[test]
    fn key_files_are_generated_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets-key");
        let first = SecretsKey::load_or_generate(&path).unwrap();
        let again = SecretsKey::load_or_generate(&path).unwrap();
        assert_eq!(first.id(), again.id());
        assert_eq!(SecretsKey::load(&path).unwrap().id(), first.id());
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            SecretsKey::load(&path),
            Err(KeyFileError::Malformed(_))
        ));
        assert!(matches!(
            SecretsKey::load(&dir.path().join("missing")),
            Err(KeyFileError::Io { .. })
        ));
    }
}
