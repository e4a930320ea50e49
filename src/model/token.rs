//! Scoped tokens as stored: a name, the hash of the secret, and the customers it may see.

use super::EpochMillis;

/// One scoped token as stored and listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique; names the token in `list` and `revoke` (letters, digits, '-', '_', '.').
    pub name: String,
    /// base64url of the SHA-256 of the token (see [`crate::scoped_tokens::digest`]).
    pub hash: String,
    /// The customer systems the token may see.
    pub customer_ids: Vec<String>,
    pub created_at: EpochMillis,
    /// When it was last used, as of the last write of usage (`None`: never).
    pub last_used_at: Option<EpochMillis>,
}
