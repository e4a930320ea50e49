//! Where the load's calls go: every running floodgate node, in turn. A node is opened once it
//! answers calls and closed just before it is killed, so calls spread over whichever nodes run,
//! and most notifications are accepted by a node that does not own their customer. A call that
//! fails anyway (its node died under it) is sent again to the next node, with the same
//! idempotency keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::client::AuthedChannel;

/// The running nodes' connections, by node number; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entrances {
    open: Arc<RwLock<Vec<(usize, AuthedChannel)>>>,
    next: Arc<AtomicUsize>,
}

impl Entrances {
    /// Entrances through `channels`, each with its node's number.
    pub(crate) fn new(channels: Vec<(usize, AuthedChannel)>) -> Self {
        Self {
            open: Arc::new(RwLock::new(channels)),
            next: Arc::default(),
        }
    }

    /// Node `node` answers calls: send it its share.
    pub(crate) fn open(&self, node: usize, channel: AuthedChannel) {
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((node, channel));
    }

    /// Node `node` is about to go: send it nothing more.
    pub(crate) fn close(&self, node: usize) {
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(n, _)| *n != node);
    }

    /// The connection the next call goes through, or `None` when no node is open.
    pub(crate) fn next(&self) -> Option<AuthedChannel> {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        if open.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(open[turn % open.len()].1.clone())
    }
}
