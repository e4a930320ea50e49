//! Scoped submit tokens: named bearer tokens, each bound to a set of customer systems, created and
//! revoked through the API while servers run. A scoped token may call what the submit token may
//! (the `Dispatcher` and `Preferences` services) but only for its own customers; several can be
//! valid at once, so a caller's token is rotated without downtime.
//!
//! A token is [`PREFIX`] followed by 32 random bytes (base64url). Only its SHA-256 is stored: it is
//! shown once, at creation, and a copy of the database does not hold a usable token. A plain hash
//! is enough because the secret is 256 random bits; there is nothing to guess offline, so a salt or
//! a slow key-derivation function would add cost and no protection.
//!
//! Every node keeps all scoped tokens in memory (an organisation has tens, not millions) and
//! reloads them from the store every [`REFRESH_INTERVAL`]. Checking a token costs one hash and
//! one map lookup, never a query, so a flood of made-up tokens costs the database nothing. The
//! store is the truth: a token created or revoked through any node is known to every node within
//! one reload (at once on the node that made the change). A node whose reloads have failed for
//! [`STALE_AFTER`] answers scoped tokens UNAVAILABLE until a reload succeeds, so a revoked token is
//! never honoured for longer than that, even by a node cut off from the database.
//!
//! When a token was last used is kept in memory and written to the store every
//! [`USAGE_INTERVAL`], off the request path.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub use crate::model::TokenRecord;
use crate::model::{EpochMillis, now_millis};
use crate::redact::SecretString;
use crate::store::{self, Store};

/// What every scoped token starts with, so one is recognisable in a config file or a leak
/// scanner, and told apart from the admin (`fgadm_`) and metrics (`fgmet_`) tokens.
pub const PREFIX: &str = "fgt_";
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;
/// How often each node reloads the tokens from the store: the bound on how long a token revoked
/// through another node keeps working here.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// After this long without a successful reload, scoped tokens are answered UNAVAILABLE: the
/// longest a revoked token can be honoured anywhere.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// How often the last use of each token is written to the store.
pub const USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// A token just created: its record and the token itself, which is never available again.
#[derive(Debug)]
pub struct NewToken {
    pub record: TokenRecord,
    pub token: SecretString,
}

/// A new random token.
pub fn generate() -> String {
    let secret: [u8; SECRET_BYTES] = rand::random();
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The stored form of `token`: base64url of its SHA-256. `None` when `token` is not shaped like a
/// scoped token (prefix, then 32 bytes of base64url), so no other string is hashed or looked up.
pub fn digest(token: &str) -> Option<String> {
    let secret = token.strip_prefix(PREFIX)?;
    let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
    if bytes.len() != SECRET_BYTES {
        return None;
    }
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())))
}

/// A valid token as the authentication check sees it: its name and customers.
#[derive(Debug)]
pub struct Scoped {
    name: String,
    hash: String,
    customers: HashSet<String>,
    /// The latest use on this node not yet written to the store (epoch milliseconds; 0: none).
    unrecorded_use: AtomicI64,
}

impl Scoped {
    fn new(record: TokenRecord) -> Self {
        Self {
            name: record.name,
            hash: record.hash,
            customers: record.customer_ids.into_iter().collect(),
            unrecorded_use: AtomicI64::new(0),
        }
    }

    /// The token's name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the token may see `customer_id`'s notifications and preferences.
    pub fn allows(&self, customer_id: &str) -> bool {
        self.customers.contains(customer_id)
    }
}

/// What a presented bearer token turned out to be.
#[derive(Debug)]
pub enum Lookup {
    Valid(Arc<Scoped>),
    /// Not a scoped token, or not one that exists (any more).
    Unknown,
    /// Shaped like a scoped token, but the tokens could not be reloaded for [`STALE_AFTER`]:
    /// whether it is still valid is unknown.
    Unconfirmed,
}

/// Every scoped token, in memory, reloaded from the store. Share it behind an `Arc`.
#[derive(Debug)]
pub struct ScopedTokens {
    store: Store,
    // std RwLock: held only to read or swap the map, never across an `.await`.
    snapshot: RwLock<Snapshot>,
}

#[derive(Debug)]
struct Snapshot {
    by_hash: HashMap<String, Arc<Scoped>>,
    /// When the query behind it started: anything committed before then is in it.
    loaded: Instant,
}

impl ScopedTokens {
    /// Loads every token from `store`.
    pub async fn load(store: Store) -> Result<Self, store::Error> {
        let loaded = Instant::now();
        let by_hash = snapshot_of(store.scoped_tokens().await?, &HashMap::new());
        Ok(Self {
            store,
            snapshot: RwLock::new(Snapshot { by_hash, loaded }),
        })
    }

    /// Looks a presented token up, and notes its use.
    ///
    /// The map is keyed by the token's SHA-256, so the comparison a lookup makes is between
    /// hashes: how long it takes can only tell an attacker about the hash of what they sent,
    /// which they can compute anyway, and nothing about a stored token's secret. No
    /// constant-time comparison is needed.
    pub fn find(&self, token: &str) -> Lookup {
        let Some(hash) = digest(token) else {
            return Lookup::Unknown;
        };
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.loaded.elapsed() > STALE_AFTER {
            return Lookup::Unconfirmed;
        }
        match snapshot.by_hash.get(&hash) {
            Some(scoped) => {
                scoped
                    .unrecorded_use
                    .fetch_max(now_millis(), Ordering::Relaxed);
                Lookup::Valid(scoped.clone())
            }
            None => Lookup::Unknown,
        }
    }

    /// Creates a token for `customer_ids` (already checked to exist) and makes it valid on this
    /// node at once. `None` when the name is taken.
    pub async fn create(
        &self,
        name: &str,
        customer_ids: Vec<String>,
    ) -> Result<Option<NewToken>, store::Error> {
        let token = generate();
        let hash = digest(&token).ok_or_else(|| {
            store::Error::Corrupt("a generated token is not shaped like one".into())
        })?;
        let record = TokenRecord {
            name: name.to_owned(),
            hash,
            customer_ids,
            created_at: now_millis(),
            last_used_at: None,
        };
        if !self.store.insert_scoped_token(&record).await? {
            return Ok(None);
        }
        self.reload_after_change().await;
        Ok(Some(NewToken {
            record,
            token: token.into(),
        }))
    }

    /// Every token, ordered by name, with the last uses this node has not written yet.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, store::Error> {
        let mut records = self.store.scoped_tokens().await?;
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for record in &mut records {
            let unrecorded = snapshot
                .by_hash
                .get(&record.hash)
                .map_or(0, |scoped| scoped.unrecorded_use.load(Ordering::Relaxed));
            if unrecorded > 0 {
                record.last_used_at = record.last_used_at.max(Some(unrecorded));
            }
        }
        Ok(records)
    }

    /// Revokes a token: deleted from the store and invalid on this node at once (on other nodes
    /// within [`REFRESH_INTERVAL`]). Returns it as it was; `None` when there is no such token.
    pub async fn revoke(&self, name: &str) -> Result<Option<TokenRecord>, store::Error> {
        let Some(record) = self.store.delete_scoped_token(name).await? else {
            return Ok(None);
        };
        self.snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_hash
            .remove(&record.hash);
        self.reload_after_change().await;
        Ok(Some(record))
    }

    /// Reloads every token from the store. A reload that started before the one already
    /// installed is dropped, so a slow reload never brings back a token revoked since.
    pub async fn reload(&self) -> Result<(), store::Error> {
        let started = Instant::now();
        let records = self.store.scoped_tokens().await?;
        let mut snapshot = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if started >= snapshot.loaded {
            let by_hash = snapshot_of(records, &snapshot.by_hash);
            *snapshot = Snapshot {
                by_hash,
                loaded: started,
            };
        }
        Ok(())
    }

    /// After a create or revoke on this node: the change is committed, so a failed reload only
    /// means the periodic one picks it up.
    async fn reload_after_change(&self) {
        if let Err(err) = self.reload().await {
            tracing::warn!(error = %err, "cannot reload the scoped tokens; retrying shortly");
        }
    }

    /// Reloads every [`REFRESH_INTERVAL`] and writes last uses every [`USAGE_INTERVAL`] until
    /// `stop`; then writes the last uses once more.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut reload = tokio::time::interval(REFRESH_INTERVAL);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut usage = tokio::time::interval(USAGE_INTERVAL);
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = reload.tick() => {
                    if let Err(err) = self.reload().await {
                        tracing::warn!(error = %err, "cannot reload the scoped tokens; retrying");
                    }
                }
                _ = usage.tick() => self.record_usage().await,
            }
        }
        self.record_usage().await;
    }

    /// Writes each token's latest unrecorded use to the store; a use that could not be written
    /// is kept for the next round.
    async fn record_usage(&self) {
        let used: Vec<(Arc<Scoped>, EpochMillis)> = self
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_hash
            .values()
            .filter_map(|scoped| {
                let at = scoped.unrecorded_use.swap(0, Ordering::Relaxed);
                (at > 0).then(|| (scoped.clone(), at))
            })
            .collect();
        for (scoped, at) in used {
            if let Err(err) = self.store.touch_scoped_token(&scoped.hash, at).await {
                tracing::warn!(error = %err, token = scoped.name(), "cannot record a token's last use");
                scoped.unrecorded_use.fetch_max(at, Ordering::Relaxed);
            }
        }
    }
}

/// The in-memory map of `records`, keeping the entries of tokens already known (and so their
/// unrecorded uses).
fn snapshot_of(
    records: Vec<TokenRecord>,
    known: &HashMap<String, Arc<Scoped>>,
) -> HashMap<String, Arc<Scoped>> {
    records
        .into_iter()
        .map(|record| {
            let scoped = match known.get(&record.hash) {
                Some(scoped) => scoped.clone(),
                None => Arc::new(Scoped::new(record)),
            };
            (scoped.hash.clone(), scoped)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_random_and_parse() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert!(digest(&a).is_some() && digest(&b).is_some());
    }

    #[test]
    fn the_digest_is_the_sha256_of_the_whole_token() {
        let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode([7u8; SECRET_BYTES]));
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        assert_eq!(digest(&token), Some(expected.clone()));
        assert_eq!(expected.len(), 43);
        assert!(!expected.contains(&token[PREFIX.len()..]));
        let other = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode([8u8; SECRET_BYTES]));
        assert_ne!(digest(&other), Some(expected));
    }

    #[test]
    fn only_well_formed_tokens_are_hashed() {
        let secret = URL_SAFE_NO_PAD.encode([1u8; SECRET_BYTES]);
        for malformed in [
            String::new(),
            secret.clone(),
            format!("fgadm_{secret}"),
            format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode([1u8; 31])),
            format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode([1u8; 33])),
            format!("{PREFIX}{secret}="),
            format!("{PREFIX}{}!", &secret[1..]),
            format!("{PREFIX}{secret} "),
        ] {
            assert_eq!(digest(&malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn a_scoped_token_allows_only_its_customers() {
        let scoped = Scoped::new(TokenRecord {
            name: "billing".into(),
            hash: "h".into(),
            customer_ids: vec!["acme".into(), "globex".into()],
            created_at: 0,
            last_used_at: None,
        });
        assert!(scoped.allows("acme") && scoped.allows("globex"));
        assert!(!scoped.allows("initech") && !scoped.allows("") && !scoped.allows("ACME"));
        assert_eq!(scoped.name(), "billing");
    }
}
