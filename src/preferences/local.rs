//! The in-process preference cache (one node, no Redis): recipient sets by customer and
//! recipient, each replaced only by a newer version. Bounded: when full it starts over, which
//! only costs a few store reads.
//!
//! It also knows every customer that has any preference at all (loaded at start, kept up to date
//! by `SetPreference` on this, the only node): a customer whose recipients never set anything —
//! most of them — costs intake no lookup.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::bounded_cache::BoundedCache;
use crate::model::RecipientPreferences;

/// Recipients kept before the cache starts over (a few hundred bytes each).
const CAPACITY: usize = 200_000;

#[derive(Debug)]
pub(super) struct LocalCache {
    sets: BoundedCache<(String, String), RecipientPreferences>,
    /// Customers with at least one preference row.
    customers: Mutex<HashSet<String>>,
}

impl LocalCache {
    /// A cache that knows which customers have preferences.
    pub(super) fn new(customers: HashSet<String>) -> Self {
        Self {
            sets: BoundedCache::new(CAPACITY),
            customers: Mutex::new(customers),
        }
    }

    /// Whether any recipient of the customer ever set a preference.
    pub(super) fn has_preferences(&self, customer_id: &str) -> bool {
        self.customers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(customer_id)
    }

    /// Notes that the customer now has preferences (before `SetPreference` answers).
    pub(super) fn customer_has_preferences(&self, customer_id: &str) {
        self.customers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(customer_id.to_owned());
    }

    /// The cached set of one recipient.
    pub(super) fn get(&self, customer_id: &str, recipient: &str) -> Option<RecipientPreferences> {
        self.sets
            .get(&(customer_id.to_owned(), recipient.to_owned()))
    }

    /// Keeps `set` unless a newer version is already cached.
    pub(super) fn offer(&self, customer_id: &str, recipient: &str, set: &RecipientPreferences) {
        self.sets
            .update((customer_id.to_owned(), recipient.to_owned()), |kept| {
                if set.version >= kept.version {
                    *kept = set.clone();
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Preference};

    fn set(version: i64, opted_out: bool) -> RecipientPreferences {
        RecipientPreferences {
            version,
            preferences: vec![Preference {
                channel: Channel::Webhook,
                lane: None,
                opted_out,
                updated_at: 0,
            }],
        }
    }

    #[test]
    fn an_older_set_never_replaces_a_newer_one() {
        let cache = LocalCache::new(HashSet::from(["c".to_owned()]));
        cache.offer("c", "u", &set(2, true));
        cache.offer("c", "u", &set(1, false));
        assert_eq!(cache.get("c", "u"), Some(set(2, true)));
        cache.offer("c", "u", &set(3, false));
        assert_eq!(cache.get("c", "u"), Some(set(3, false)));
        assert_eq!(cache.get("c", "v"), None);
    }
}
