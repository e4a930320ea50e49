//! The idempotency fast path (with `--redis-url`): a repeated idempotency key is answered from
//! Redis, without a database round trip.
//!
//! The database's unique key stays the source of truth: Redis only remembers keys the
//! database has accepted (`SET NX`, with a TTL), each with the row id (callers see it only
//! encoded, see [`crate::public_id`]) and a fingerprint of the content. A repeat with the same
//! fingerprint is a duplicate of that id; anything else —
//! a miss, a different fingerprint, Redis unreachable — goes to the database as before, which
//! decides between new, duplicate and conflict. So Redis can make intake faster, never wrong.
//!
//! The caller is not kept waiting while its keys are remembered ([`FastPath::remember_later`]):
//! that is a round trip to Redis the answer does not depend on, and a key not yet remembered
//! only sends its next repeat to the database.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::model::Inserted;
use crate::model::{NewNotification, NotificationId};

/// Could not connect to Redis at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis for the idempotency fast path: {0}")]
pub struct ConnectError(#[from] redis::RedisError);

/// Pipelines of `SET NX` that may be on their way to Redis at once. Each is bounded by the
/// response timeout ([`redis_config`]); beyond this many (Redis slow or gone), what intake
/// accepts is not remembered, which costs a repeat of it one database round trip.
const REMEMBERING: usize = 256;

/// Remembered idempotency keys in Redis.
pub struct FastPath {
    connection: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    /// One permit per pipeline of [`FastPath::remember_later`] in flight.
    remembering: Arc<Semaphore>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("prefix", &self.prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// How floodgate talks to Redis (fast path and preference cache alike). Redis is a cache in
/// front of the database, so a dead Redis must fail calls within a fraction of a second, never
/// hold a caller for the client's default retries (6 reconnects with backoff, several seconds):
/// the fast path then falls back to the database, and intake answers UNAVAILABLE at once. The
/// manager keeps reconnecting in the background either way.
pub(crate) fn redis_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_millis(250)))
        .set_connection_timeout(Some(Duration::from_millis(250)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(100))
}

impl FastPath {
    /// Connects (the connection manager reconnects by itself later).
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, ConnectError> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            connection: ConnectionManager::new_with_config(client, redis_config()).await?,
            prefix: prefix.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
            remembering: Arc::new(Semaphore::new(REMEMBERING)),
        })
    }

    /// The Redis key and content fingerprint of each item, worked out once per submit.
    pub fn entries(&self, items: &[NewNotification]) -> Vec<Entry> {
        items
            .iter()
            .map(|n| Entry {
                // The customer id's length keeps `a:b` + `c` apart from `a` + `b:c`.
                key: format!(
                    "{}idem:{}:{}:{}",
                    self.prefix,
                    n.customer_id.len(),
                    n.customer_id,
                    n.idempotency_key
                ),
                fingerprint: fingerprint_of(n),
            })
            .collect()
    }

    /// For each entry, the id it duplicates when Redis knows its key with the same content.
    /// One MGET; on a Redis error every entry is unknown (the database will tell).
    pub async fn known(&self, entries: &[Entry]) -> Vec<Option<NotificationId>> {
        if entries.is_empty() {
            return Vec::new();
        }
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = match redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
        {
            Ok(values) => values,
            Err(err) => {
                tracing::warn!(error = %err, "idempotency fast path unavailable; asking the database");
                return vec![None; entries.len()];
            }
        };
        entries
            .iter()
            .zip(values)
            .map(|(entry, value)| {
                let (id, fingerprint) = value.as_deref()?.split_once('|')?;
                (fingerprint == entry.fingerprint)
                    .then(|| id.parse().ok().map(NotificationId))
                    .flatten()
            })
            .collect()
    }

    /// [`FastPath::remember`] in a task of its own, so that the caller is answered without
    /// waiting for Redis. Skipped, with a debug log, while [`REMEMBERING`] pipelines are still
    /// in flight; no task at all when the call stored nothing (every key was already known).
    pub fn remember_later(self: &Arc<Self>, entries: Vec<Entry>, results: Vec<Inserted>) {
        if entries.is_empty() {
            return;
        }
        let Ok(permit) = self.remembering.clone().try_acquire_owned() else {
            tracing::debug!(
                keys = entries.len(),
                "idempotency keys not remembered: Redis is behind"
            );
            return;
        };
        let fast_path = Arc::clone(self);
        tokio::spawn(async move {
            fast_path.remember(&entries, &results).await;
            drop(permit);
        });
    }

    /// Remembers the keys the database just accepted (new or duplicate; `results` in the order
    /// of `entries`), in one pipeline of `SET NX EX`. Failures are only logged: the next
    /// repeat asks the database.
    async fn remember(&self, entries: &[Entry], results: &[Inserted]) {
        let mut pipe = redis::pipe();
        let mut any = false;
        for (entry, inserted) in entries.iter().zip(results) {
            let (Inserted::New(id) | Inserted::Duplicate(id)) = inserted else {
                continue;
            };
            pipe.cmd("SET")
                .arg(&entry.key)
                .arg(format!("{}|{}", id.0, entry.fingerprint))
                .arg("NX")
                .arg("EX")
                .arg(self.ttl_secs)
                .ignore();
            any = true;
        }
        if !any {
            return;
        }
        let mut connection = self.connection.clone();
        if let Err(err) = pipe.query_async::<()>(&mut connection).await {
            tracing::warn!(error = %err, "cannot remember idempotency keys in Redis");
        }
    }
}

/// One submitted item as the fast path knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    key: String,
    fingerprint: String,
}

/// What makes a repeat a duplicate rather than a conflict (as [`NewNotification::same_content`]
/// decides), hashed.
fn fingerprint_of(n: &NewNotification) -> String {
    let mut hash = Sha256::new();
    hash.update((n.recipient.len() as u64).to_le_bytes());
    hash.update(n.recipient.as_bytes());
    hash.update(n.lane.code().to_le_bytes());
    hash.update(&n.payload);
    let digest = hash.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Lane};

    fn item(recipient: &str, lane: Lane, payload: &[u8]) -> NewNotification {
        NewNotification {
            customer_id: crate::model::CustomerId::parse("c").unwrap(),
            idempotency_key: "k".into(),
            recipient: recipient.into(),
            lane,
            payload: payload.to_vec(),
            send_at: None,
            expires_at: None,
            channel: Channel::Webhook,
            suppressed: None,
            template: None,
        }
    }

    #[test]
    fn fingerprints_follow_what_makes_a_conflict() {
        let a = item("u", Lane::Bulk, b"{}");
        assert_eq!(fingerprint_of(&a), fingerprint_of(&a.clone()));
        assert_ne!(
            fingerprint_of(&a),
            fingerprint_of(&item("v", Lane::Bulk, b"{}"))
        );
        assert_ne!(
            fingerprint_of(&a),
            fingerprint_of(&item("u", Lane::Transactional, b"{}"))
        );
        assert_ne!(
            fingerprint_of(&a),
            fingerprint_of(&item("u", Lane::Bulk, b"{ }"))
        );
        // The recipient's length is hashed too: "ab" + "c" is not "a" + "bc".
        assert_ne!(
            fingerprint_of(&item("u1", Lane::Bulk, b"x")),
            fingerprint_of(&item("u", Lane::Bulk, b"1x"))
        );
    }
}
