//! Where every accepted notification that did not arrive is: asked of floodgate, id by id, once
//! the run is over. Still queued (pending, retrying, in flight) is not lost — it is durable in
//! the store and will go out; failed for good (or expired) is floodgate's verdict; unknown to
//! floodgate, or marked delivered without ever arriving, is lost.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use tokio::task::JoinSet;

use crate::arrivals::Arrivals;
use crate::client::AuthedChannel;

/// GetNotification calls in flight at once.
const CONCURRENCY: usize = 32;

/// One customer's accepted notifications that did not arrive, sorted by where they are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Whereabouts {
    /// Pending, retrying or in flight: still in floodgate's store.
    pub(crate) queued: u64,
    /// Failed, expired, suppressed or cancelled.
    pub(crate) failed: u64,
    /// Unknown to floodgate, or delivered according to it but never arrived.
    pub(crate) lost: u64,
}

/// Looks up every id of `missing` (customer index, id) and sorts them per customer. `arrivals`
/// (per customer) is asked again for ids floodgate calls delivered: one may have landed after
/// the missing list was made, and then it is in none of the counts.
pub(crate) async fn find(
    channel: &AuthedChannel,
    missing: Vec<(usize, Box<str>)>,
    arrivals: &[Arc<Arrivals>],
) -> Result<Vec<Whereabouts>> {
    let mut found = vec![Whereabouts::default(); arrivals.len()];
    if missing.is_empty() {
        return Ok(found);
    }
    eprintln!(
        "looking up {} accepted notifications that did not arrive",
        missing.len()
    );
    let missing = Arc::new(missing);
    let mut lookups = JoinSet::new();
    for worker in 0..CONCURRENCY {
        let mut client = DispatcherClient::new(channel.clone());
        let missing = missing.clone();
        lookups.spawn(async move {
            let mut states = Vec::new();
            for (customer, id) in missing.iter().skip(worker).step_by(CONCURRENCY) {
                states.push((*customer, id.clone(), state_of(&mut client, id).await?));
            }
            anyhow::Ok(states)
        });
    }
    while let Some(states) = lookups.join_next().await {
        for (customer, id, state) in states.context("a lookup task panicked")?? {
            let slot = &mut found[customer];
            match state {
                Some(proto::State::Pending | proto::State::Retrying | proto::State::InFlight) => {
                    slot.queued += 1
                }
                Some(proto::State::Delivered) if arrivals[customer].contains(&id) => {}
                Some(proto::State::Delivered) | None => slot.lost += 1,
                Some(_) => slot.failed += 1,
            }
        }
    }
    Ok(found)
}

/// The notification's state, or `None` if floodgate does not know it.
async fn state_of(
    client: &mut DispatcherClient<AuthedChannel>,
    id: &str,
) -> Result<Option<proto::State>> {
    let request = proto::GetNotificationRequest {
        notification_id: id.to_owned(),
    };
    match client.get_notification(request).await {
        Ok(answer) => Ok(proto::State::try_from(answer.get_ref().state).ok()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status).with_context(|| format!("GetNotification {id} failed")),
    }
}
