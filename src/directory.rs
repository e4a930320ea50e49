//! The customer directory: customer settings cached in memory in front of the store.
//!
//! Intake checks that a customer exists for every submitted notification and each worker reads its
//! customer's settings before every claim, so both must be cheap. Entries are refreshed from the
//! store after `ttl`, so settings changed through another node (PostgreSQL) arrive within that
//! time; changes through this node apply at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::model::Customer;
use crate::store::{self, Store};

/// Cached customers; share it behind an `Arc`.
#[derive(Debug)]
pub struct CustomerDirectory {
    store: Store,
    ttl: Duration,
    // std RwLock: held only for map operations, never across an `.await`.
    entries: RwLock<HashMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    customer: Arc<Customer>,
    loaded: Instant,
}

impl CustomerDirectory {
    /// An empty directory over `store`, refreshing entries older than `ttl`.
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The customer's current settings, or `None` if no such customer exists.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Customer>>, store::Error> {
        if let Some(entry) = self.cached(id).filter(|e| e.loaded.elapsed() < self.ttl) {
            return Ok(Some(entry.customer));
        }
        let Some(customer) = self.store.get_customer(id).await? else {
            self.write().remove(id);
            return Ok(None);
        };
        Ok(Some(self.put(customer)))
    }

    /// The customer's settings read from the store now, bypassing the cache: another node
    /// changed them.
    pub async fn reload(&self, id: &str) -> Result<Option<Arc<Customer>>, store::Error> {
        self.write().remove(id);
        self.get(id).await
    }

    /// Records settings just written to the store, so this node uses them at once.
    pub fn put(&self, customer: Customer) -> Arc<Customer> {
        let customer = Arc::new(customer);
        let entry = Entry {
            customer: customer.clone(),
            loaded: Instant::now(),
        };
        self.write().insert(customer.id.clone(), entry);
        customer
    }

    fn cached(&self, id: &str) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is safe to keep using.
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
