//! Which claimed notifications are still waiting in an actor's window on this node, not yet
//! being sent.
//!
//! A claim marks a row `in_flight` in the store (that is what leases and fencing need), but a
//! claimed notification may wait in its actor's window for a while: behind the pacer, behind an
//! open circuit, behind a `Retry-After` pause. Reporting it as in flight would tell a caller an
//! attempt is under way when none is, so the API asks here and reports such a notification as
//! still pending. The set holds at most every actor's window (limit plus prefetch), so it stays
//! small. A node only knows its own actors' windows: in a cluster, a non-owner reports what the
//! store says.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use crate::model::NotificationId;

/// Ids of claimed notifications waiting in a window of this node.
#[derive(Debug, Default)]
pub(super) struct Waiting(Mutex<HashSet<i64>>);

impl Waiting {
    /// These notifications entered a window.
    pub(super) fn add(&self, ids: impl IntoIterator<Item = NotificationId>) {
        self.lock().extend(ids.into_iter().map(|id| id.0));
    }

    /// These notifications left their window (an attempt starts, or they were handed back).
    pub(super) fn remove(&self, ids: impl IntoIterator<Item = NotificationId>) {
        let mut set = self.lock();
        for id in ids {
            set.remove(&id.0);
        }
    }

    /// Whether `id` waits in a window of this node.
    pub(super) fn contains(&self, id: NotificationId) -> bool {
        self.lock().contains(&id.0)
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<i64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
