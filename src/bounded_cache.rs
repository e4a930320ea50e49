//! A map kept in memory up to a bound, then started over. For caches of things that are cheap to
//! read again (template versions, recipients' preferences, webhook targets): starting over when
//! full costs a few reads, where an eviction order would cost bookkeeping on every hit.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Values by key, at most `capacity` of them. A std `Mutex`: held only for one map operation,
/// never across an `.await`.
pub(crate) struct BoundedCache<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Eq + Hash, V> BoundedCache<K, V> {
    /// An empty cache that starts over once it holds `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::default(),
            capacity,
        }
    }

    /// A copy of what is kept for `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
        V: Clone,
    {
        self.map().get(key).cloned()
    }

    /// Keeps `value` for `key`.
    pub(crate) fn insert(&self, key: K, value: V) {
        self.full_or_not().insert(key, value);
    }

    /// Changes what is kept for `key` (the default value if nothing is).
    pub(crate) fn update(&self, key: K, change: impl FnOnce(&mut V))
    where
        V: Default,
    {
        change(self.full_or_not().entry(key).or_default());
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// The map, emptied first if it is full, ready for one more entry.
    fn full_or_not(&self) -> MutexGuard<'_, HashMap<K, V>> {
        let mut map = self.map();
        if map.len() >= self.capacity {
            map.clear();
        }
        map
    }

    /// The map. A panic elsewhere cannot leave it half-written (every change is one map
    /// operation), so a poisoned lock is used as it is.
    fn map(&self) -> MutexGuard<'_, HashMap<K, V>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V> std::fmt::Debug for BoundedCache<K, V> {
    /// Without the entries: a webhook URL kept as a key may carry a user name and password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_starts_over_and_never_holds_more_than_its_capacity() {
        let cache = BoundedCache::new(3);
        for i in 0..3 {
            cache.insert(i, i * 10);
        }
        assert_eq!(cache.get(&2), Some(20));
        assert_eq!(cache.len(), 3);
        cache.insert(3, 30);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&0), None);
        assert_eq!(cache.get(&3), Some(30));
    }

    #[test]
    fn update_changes_an_entry_in_place_or_starts_from_the_default() {
        let cache: BoundedCache<&str, u32> = BoundedCache::new(10);
        cache.update("a", |n| *n += 1);
        cache.update("a", |n| *n += 1);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn debug_shows_no_entries() {
        let cache = BoundedCache::new(10);
        cache.insert("http://u:p@host/".to_owned(), 1);
        assert!(!format!("{cache:?}").contains("u:p@"));
    }
}
