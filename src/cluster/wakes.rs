//! Wakes across nodes: any node accepts a Submit, but only the customer's owner runs its actor.
//!
//! After its commit, a node that does not own the customer sends the customer id on the
//! PostgreSQL channel [`CHANNEL`] (`NOTIFY`); every node listens, and the owner wakes its actor.
//! This only shortens the wait: correctness never depends on it. The owner's sweep (every
//! `--sweep-interval`) finds the same work if a notification is lost, the listening connection
//! drops, or a pooler in transaction mode swallows `LISTEN`.
//!
//! Payloads are lines: `w <customer id>` (new work) or `s <customer id>` (its settings changed:
//! the owner reloads them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ownership::Ownership;
use crate::store::Store;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "floodgate_wakes";
/// Wakes that may wait for the sender before new ones are dropped (the sweep still finds them).
const QUEUE: usize = 16 * 1024;
/// PostgreSQL's payload limit is 8,000 bytes; stay under it.
const MAX_PAYLOAD: usize = 7_000;
/// Wait before listening again after the listening connection failed.
const RELISTEN: Duration = Duration::from_secs(1);

/// What another node should do for a customer it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemoteEvent {
    /// New work was committed.
    Work,
    /// Its settings changed: reload them.
    Settings,
}

/// Sends wakes to the owning node; cheap to clone.
#[derive(Debug, Clone)]
pub struct RemoteWakes {
    tx: mpsc::Sender<(RemoteEvent, String)>,
}

impl RemoteWakes {
    /// Starts the sender task on `store`.
    pub fn spawn(store: Store, stop: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, tokio::spawn(send_loop(store, rx, stop)))
    }

    /// Tells the customer's owner about `event`. Never waits: when the queue is full the wake is
    /// dropped and the owner's sweep finds the work instead.
    pub fn send(&self, event: RemoteEvent, customer_id: &str) {
        let _ = self.tx.try_send((event, customer_id.to_owned()));
    }
}

/// Gathers queued wakes, drops repeats, and notifies in as few statements as fit.
async fn send_loop(
    store: Store,
    mut rx: mpsc::Receiver<(RemoteEvent, String)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, 1024) => n,
        };
        if received == 0 {
            return;
        }
        let unique: BTreeSet<_> = batch.drain(..).collect();
        for payload in payloads(&unique) {
            if let Err(err) = store.notify(CHANNEL, &payload).await {
                tracing::debug!(error = %err, "could not notify the owning node; its sweep will find the work");
            }
        }
    }
}

/// The lines of `events`, packed into payloads of at most [`MAX_PAYLOAD`] bytes.
fn payloads(events: &BTreeSet<(RemoteEvent, String)>) -> Vec<String> {
    let mut all = Vec::new();
    let mut payload = String::new();
    for (event, customer) in events {
        let tag = match event {
            RemoteEvent::Work => 'w',
            RemoteEvent::Settings => 's',
        };
        if !payload.is_empty() && payload.len() + customer.len() + 3 > MAX_PAYLOAD {
            all.push(std::mem::take(&mut payload));
        }
        if !payload.is_empty() {
            payload.push('\n');
        }
        payload.push(tag);
        payload.push(' ');
        payload.push_str(customer);
    }
    if !payload.is_empty() {
        all.push(payload);
    }
    all
}

/// One line of a payload.
fn parse_line(line: &str) -> Option<(RemoteEvent, &str)> {
    let (tag, customer) = line.split_once(' ')?;
    let event = match tag {
        "w" => RemoteEvent::Work,
        "s" => RemoteEvent::Settings,
        _ => return None,
    };
    Some((event, customer))
}

/// Listens on [`CHANNEL`] until `stop`, calling `on_event` for every customer this node owns.
/// A failed connection is retried every second; meanwhile the sweep carries the work.
pub async fn listen(
    database_url: String,
    ownership: Arc<Ownership>,
    on_event: impl Fn(RemoteEvent, &str) + Send + 'static,
    stop: CancellationToken,
) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect(&database_url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for wakes from other nodes; relying on the sweep");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RELISTEN) => continue,
                    }
                }
            },
        };
        loop {
            let notification = tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.recv() => n,
            };
            let notification = match notification {
                Ok(notification) => notification,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the connection listening for wakes; listening again");
                    break;
                }
            };
            for (event, customer) in notification.payload().lines().filter_map(parse_line) {
                if ownership.owns(customer) {
                    on_event(event, customer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_stay_under_the_limit() {
        let events: BTreeSet<_> = (0..2000)
            .map(|i| (RemoteEvent::Work, format!("customer-{i}")))
            .chain([(RemoteEvent::Settings, "acme".to_owned())])
            .collect();
        let payloads = payloads(&events);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: BTreeSet<_> = payloads
            .iter()
            .flat_map(|p| p.lines())
            .filter_map(parse_line)
            .map(|(e, c)| (e, c.to_owned()))
            .collect();
        assert_eq!(back, events);
        assert_eq!(parse_line("x acme"), None);
    }
}
