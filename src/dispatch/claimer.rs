//! The node's claimer: one task that fills every customer actor's window from the store.
//!
//! An actor whose window runs low does not claim on its own. It sends the claimer an ask (which
//! lanes, how many each), and the claimer takes everything asked meanwhile and claims it in one
//! statement for all those customers ([`Store::claim_many`]). While that statement runs, new asks
//! queue up for the next one — the same shape as intake's group commit — so under load the cost
//! per claimed notification falls instead of the database seeing one UPDATE per customer per
//! lane. Each actor gets its own lanes' rows back as [`CustomerMsg::Claimed`], and keeps its own
//! controller, window and lane shares as before.

use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::messages::{ActorKey, CustomerMsg, LaneClaim};
use super::ports::{ClaimStore, Io};
use crate::model::{ClaimToken, Claimed};
use crate::model::{Lane, NotificationId, now_millis};
use crate::store::{self, ClaimRequest, Store};
use crate::telemetry::metrics::{Metrics, StoreOp};

/// Most asks claimed in one round; the store splits them into statements of its own size.
const MAX_ASKS: usize = 1024;

/// One actor's ask: up to this many notifications in each of these lanes.
#[derive(Debug)]
pub(super) struct ClaimAsk {
    pub(super) key: ActorKey,
    pub(super) lanes: Vec<(Lane, usize)>,
    pub(super) actor: ActorRef<CustomerMsg>,
}

/// Sending side of the claimer; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Claimer {
    /// Unbounded, yet bounded in practice: an actor has at most one ask outstanding.
    tx: mpsc::UnboundedSender<ClaimAsk>,
}

/// What the claimer's task needs.
pub(super) struct ClaimerTask {
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    /// How long a claim is leased.
    pub(super) lease_ms: i64,
    /// Ends the task between two rounds (at shutdown).
    pub(super) stop: CancellationToken,
    /// Asks for customers this node may not send for now (another node owns them, or this node
    /// is past its fencing deadline) claim nothing: a stale owner writes no claims.
    pub(super) ownership: Arc<crate::cluster::Ownership>,
}

impl Claimer {
    /// The claimer's handle, and its task to spawn.
    pub(super) fn new(task: ClaimerTask) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, task.run(rx))
    }

    /// Queues an ask. If the claimer has stopped (shutdown), the ask is dropped: the actor is
    /// stopping too.
    pub(super) fn ask(&self, ask: ClaimAsk) {
        let _ = self.tx.send(ask);
    }
}

/// The store as customer actors use it: asks go to the claimer, hand-backs straight to the store.
#[derive(Debug)]
pub(super) struct StoreClaims {
    pub(super) claimer: Claimer,
    pub(super) store: Store,
}

impl ClaimStore for StoreClaims {
    fn ask(&self, ask: ClaimAsk) {
        self.claimer.ask(ask);
    }

    fn release(
        &self,
        held: Vec<(NotificationId, ClaimToken)>,
    ) -> Io<'static, Result<(), store::Error>> {
        let store = self.store.clone();
        Box::pin(async move { store.release_claims(&held, now_millis()).await.map(drop) })
    }
}

impl ClaimerTask {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<ClaimAsk>) {
        let mut asks = Vec::with_capacity(MAX_ASKS);
        loop {
            let received = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                received = rx.recv_many(&mut asks, MAX_ASKS) => received,
            };
            if received == 0 {
                return;
            }
            self.round(std::mem::take(&mut asks)).await;
        }
    }

    /// Claims for every ask in one go and answers each actor.
    async fn round(&self, asks: Vec<ClaimAsk>) {
        let (asks, fenced): (Vec<_>, Vec<_>) = asks
            .into_iter()
            .partition(|ask| self.ownership.may_send(&ask.key.0));
        if !fenced.is_empty() {
            let nothing = vec![Vec::new(); fenced.iter().map(|a| a.lanes.len()).sum()];
            self.answer(fenced, nothing).await;
        }
        if asks.is_empty() {
            return;
        }
        let requests: Vec<ClaimRequest> = asks
            .iter()
            .flat_map(|ask| {
                ask.lanes.iter().map(|&(lane, limit)| ClaimRequest {
                    customer_id: ask.key.0.clone(),
                    channel: ask.key.1,
                    lane,
                    limit,
                })
            })
            .collect();
        let now = now_millis();
        let started = Instant::now();
        let claimed = self
            .store
            .claim_many(&requests, now, now.saturating_add(self.lease_ms))
            .await;
        self.metrics
            .store_latency(StoreOp::Claim, started.elapsed());
        match claimed {
            Ok(claimed) => self.answer(asks, claimed).await,
            Err(err) => {
                tracing::warn!(error = %err, asks = asks.len(), "claim failed; the actors retry after a backoff");
                let err = Arc::new(err);
                for ask in asks {
                    let _ = ask
                        .actor
                        .send_message(CustomerMsg::Claimed(Err(err.clone())));
                }
            }
        }
    }

    /// Gives each actor its lanes' rows. Rows for an actor that has gone meanwhile (it stopped or
    /// failed) are handed straight back rather than left to their lease.
    async fn answer(&self, asks: Vec<ClaimAsk>, claimed: Vec<Vec<Claimed>>) {
        let mut claimed = claimed.into_iter();
        let mut orphans: Vec<(NotificationId, ClaimToken)> = Vec::new();
        for ask in asks {
            let lanes: Vec<LaneClaim> = ask
                .lanes
                .iter()
                .map(|&(lane, wanted)| LaneClaim {
                    lane,
                    wanted,
                    claimed: claimed.next().unwrap_or_default(),
                })
                .collect();
            if let Err(ractor::MessagingErr::SendErr(CustomerMsg::Claimed(Ok(lanes)))) =
                ask.actor.send_message(CustomerMsg::Claimed(Ok(lanes)))
            {
                orphans.extend(
                    lanes
                        .iter()
                        .flat_map(|l| l.claimed.iter().map(|n| (n.id, n.claim))),
                );
            }
        }
        if !orphans.is_empty()
            && let Err(err) = self.store.release_claims(&orphans, now_millis()).await
        {
            tracing::warn!(error = %err, "could not hand back claims of stopped actors; their leases will");
        }
    }
}

/// A failed claim as the actors see it: one store error shared by every ask of the round.
pub(super) type ClaimError = Arc<store::Error>;
