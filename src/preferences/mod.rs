//! Opt-out preferences at intake: which notifications are stored SUPPRESSED instead of sent.
//!
//! The store is the source of truth. A cache in front of it keeps intake from reading the
//! database for every notification, and it is never allowed to answer with an opt-out older
//! than the last `SetPreference` that returned:
//!
//! - with `--redis-url`, Redis is the cache every node shares. `SetPreference` commits, then
//!   writes the recipient's new set into Redis before it answers (and fails with `UNAVAILABLE`
//!   if it cannot, so the caller retries). Every set carries a version that each change bumps;
//!   a writer replaces only an older version (a small Lua compare-and-set), and a reader filling
//!   a miss only sets an absent key. A slow reader can therefore never put an older set back;
//! - without Redis, on SQLite (one node, guarded by the data directory lock), an in-process
//!   cache, updated by `SetPreference` itself;
//! - without Redis, on PostgreSQL (possibly several nodes, none of which would see another's
//!   updates), no cache: intake reads the table, one query per group commit.

mod local;
mod redis;

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{NewNotification, Preference, RecipientPreferences, now_millis};
use crate::store::{self, Store};

/// Why preferences could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Redis did not answer. On a write the preference is saved but the shared cache may be
    /// stale: the caller must retry.
    #[error("the preference cache (Redis) is unavailable: {0}")]
    Cache(String),
}

/// The preference cache in use.
#[derive(Debug)]
enum Cache {
    /// PostgreSQL without Redis: every lookup reads the store.
    None,
    Local(local::LocalCache),
    Redis(redis::RedisCache),
}

/// Preferences with their cache.
#[derive(Debug)]
pub struct Preferences {
    store: Store,
    cache: Cache,
}

/// Where a preferences service keeps its cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `redis://…`; `None` for no shared cache.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several deployments (or test runs) can share one Redis.
    pub redis_prefix: String,
    /// How long Redis keeps an entry nobody touches.
    pub ttl: Duration,
}

impl Preferences {
    /// Chooses the cache for this store and settings (connecting to Redis if asked).
    pub async fn connect(store: Store, settings: &CacheSettings) -> Result<Self, Error> {
        let cache = match (&settings.redis_url, store.is_single_node()) {
            (Some(url), _) => Cache::Redis(
                redis::RedisCache::connect(url, &settings.redis_prefix, settings.ttl).await?,
            ),
            (None, true) => Cache::Local(local::LocalCache::new(
                store.customers_with_preferences().await?,
            )),
            (None, false) => Cache::None,
        };
        Ok(Self { store, cache })
    }

    /// Saves one preference; once this returns `Ok`, every lookup on every node sees it.
    pub async fn set(
        &self,
        customer_id: &str,
        recipient: &str,
        preference: &Preference,
    ) -> Result<RecipientPreferences, Error> {
        let set = self
            .store
            .set_preference(customer_id, recipient, preference, now_millis())
            .await?;
        match &self.cache {
            Cache::None => {}
            Cache::Local(cache) => {
                cache.customer_has_preferences(customer_id);
                cache.offer(customer_id, recipient, &set);
            }
            Cache::Redis(cache) => cache.publish(customer_id, recipient, &set).await?,
        }
        Ok(set)
    }

    /// Everything one recipient has set.
    pub async fn get(
        &self,
        customer_id: &str,
        recipient: &str,
    ) -> Result<RecipientPreferences, Error> {
        let mut found = self.lookup(&[(customer_id, recipient)]).await?;
        let key = (customer_id.to_owned(), recipient.to_owned());
        Ok(found.remove(&key).unwrap_or_default())
    }

    /// Marks the notifications whose recipient refused them as suppressed (stored with the
    /// reason, never sent). One cache round trip and at most one store query for all of
    /// `items`, whatever the mix of customers: intake calls this once per group commit.
    pub async fn suppress_refused(&self, items: &mut [NewNotification]) -> Result<(), Error> {
        let mut pairs: Vec<Pair<'_>> = items
            .iter()
            .map(|n| (n.customer_id.as_str(), n.recipient.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let sets = self.lookup(&pairs).await?;
        for item in items.iter_mut() {
            let key = (item.customer_id.to_string(), item.recipient.clone());
            item.suppressed = sets
                .get(&key)
                .and_then(|set| set.refusal(item.channel, item.lane));
        }
        Ok(())
    }

    /// The sets of `pairs`: from the cache, the rest from the store (then offered to the
    /// cache, which keeps them only if nothing newer arrived meanwhile).
    async fn lookup(&self, pairs: &[Pair<'_>]) -> Result<Sets, Error> {
        let (mut found, missing) = match &self.cache {
            Cache::None => (Sets::new(), pairs.to_vec()),
            Cache::Local(cache) => {
                let mut found = Sets::new();
                let mut missing = Vec::new();
                for &(customer_id, recipient) in pairs {
                    let key = (customer_id.to_owned(), recipient.to_owned());
                    if !cache.has_preferences(customer_id) {
                        found.insert(key, RecipientPreferences::default());
                    } else if let Some(set) = cache.get(customer_id, recipient) {
                        found.insert(key, set);
                    } else {
                        missing.push((customer_id, recipient));
                    }
                }
                (found, missing)
            }
            Cache::Redis(cache) => {
                let found = cache.get_many(pairs).await?;
                let missing = pairs
                    .iter()
                    .copied()
                    .filter(|(c, r)| !found.contains_key(&((*c).to_owned(), (*r).to_owned())))
                    .collect();
                (found, missing)
            }
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded = self.store.recipient_preferences(&missing).await?;
        match &self.cache {
            Cache::None => {}
            Cache::Local(cache) => {
                for ((customer_id, recipient), set) in &loaded {
                    cache.offer(customer_id, recipient, set);
                }
            }
            Cache::Redis(cache) => cache.fill(&loaded).await?,
        }
        found.extend(loaded);
        Ok(found)
    }
}

/// A customer id and one of its recipients.
type Pair<'a> = (&'a str, &'a str);
/// Preference sets by customer and recipient.
type Sets = HashMap<(String, String), RecipientPreferences>;
