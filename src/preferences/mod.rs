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
//!   updates), no cache: intake reads the table, one query per customer per batch.

mod local;
mod redis;

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{Channel, Lane, Preference, RecipientPreferences, now_millis};
use crate::store::{self, Backend, Store};

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
        let cache = match (&settings.redis_url, store.backend()) {
            (Some(url), _) => Cache::Redis(
                redis::RedisCache::connect(url, &settings.redis_prefix, settings.ttl).await?,
            ),
            (None, Backend::Sqlite) => Cache::Local(local::LocalCache::new(
                store.customers_with_preferences().await?,
            )),
            (None, Backend::Postgres) => Cache::None,
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
        let mut found = self.lookup(customer_id, &[recipient]).await?;
        Ok(found.remove(recipient).unwrap_or_default())
    }

    /// For each `(recipient, channel, lane)` of one customer, why it must not be sent (`None`:
    /// send it). One cache round trip, and one store query for what the cache lacks.
    pub async fn refusals(
        &self,
        customer_id: &str,
        items: &[(&str, Channel, Lane)],
    ) -> Result<Vec<Option<String>>, Error> {
        let mut recipients: Vec<&str> = items.iter().map(|(r, _, _)| *r).collect();
        recipients.sort_unstable();
        recipients.dedup();
        let sets = self.lookup(customer_id, &recipients).await?;
        Ok(items
            .iter()
            .map(|(recipient, channel, lane)| {
                sets.get(*recipient)
                    .and_then(|set| set.refusal(*channel, *lane))
            })
            .collect())
    }

    /// The sets of `recipients`: from the cache, the rest from the store (then offered to the
    /// cache, which keeps them only if nothing newer arrived meanwhile).
    async fn lookup(
        &self,
        customer_id: &str,
        recipients: &[&str],
    ) -> Result<HashMap<String, RecipientPreferences>, Error> {
        let mut found = match &self.cache {
            Cache::None => HashMap::new(),
            Cache::Local(cache) if !cache.has_preferences(customer_id) => {
                return Ok(recipients
                    .iter()
                    .map(|r| ((*r).to_owned(), RecipientPreferences::default()))
                    .collect());
            }
            Cache::Local(cache) => cache.get_many(customer_id, recipients),
            Cache::Redis(cache) => cache.get_many(customer_id, recipients).await?,
        };
        let missing: Vec<&str> = recipients
            .iter()
            .copied()
            .filter(|r| !found.contains_key(*r))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded = self
            .store
            .recipient_preferences(customer_id, &missing)
            .await?;
        match &self.cache {
            Cache::None => {}
            Cache::Local(cache) => {
                for (recipient, set) in &loaded {
                    cache.offer(customer_id, recipient, set);
                }
            }
            Cache::Redis(cache) => cache.fill(customer_id, &loaded).await?,
        }
        found.extend(loaded);
        Ok(found)
    }
}
