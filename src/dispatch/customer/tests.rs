//! The customer actor's pump loop over a fake store, a fake sink and a fake outcome writer, in
//! paused time: the clock only moves when every task waits, so a minute of deliveries takes
//! milliseconds and a handler that waited on I/O shows up as a stalled actor.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ractor::rpc::CallResult;
use tokio_util::task::TaskTracker;

use super::*;
use crate::cluster::Ownership;
use crate::dispatch::DispatchSettings;
use crate::dispatch::checkpoints::CheckpointWriter;
use crate::dispatch::handoff::Handoffs;
use crate::dispatch::policy::{Policy, PolicySettings};
use crate::dispatch::ports::{Attempts, ClaimStore, Io, OutcomeQueue};
use crate::dispatch::waiting::Waiting;
use crate::model::LaneSet;
use crate::model::OutcomeKind;
use crate::model::{ClaimToken, CustomerId, NotificationId};
use crate::sink::{Attempt, Sent};
use crate::store;
use crate::telemetry::metrics::Metrics;

/// A store with a backlog of due notifications per lane, which records what comes back.
#[derive(Debug, Default)]
struct FakeStore {
    /// Due notifications, per lane (transactional, bulk).
    backlog: Mutex<[VecDeque<Claimed>; 2]>,
    /// Every notification handed out by a claim.
    claimed: Mutex<Vec<NotificationId>>,
    /// Every notification handed back.
    released: Mutex<Vec<NotificationId>>,
    /// How long handing back takes.
    release_delay: Duration,
}

impl FakeStore {
    fn with_backlog(lane: Lane, notifications: Vec<Claimed>) -> Self {
        let store = Self::default();
        lock(&store.backlog)[lane.index()].extend(notifications);
        store
    }
}

impl ClaimStore for Arc<FakeStore> {
    fn ask(&self, ask: ClaimAsk) {
        let lanes = ask
            .lanes
            .iter()
            .map(|&(lane, wanted)| {
                let mut backlog = lock(&self.backlog);
                let queue = &mut backlog[lane.index()];
                let claimed: Vec<Claimed> = queue.drain(..wanted.min(queue.len())).collect();
                lock(&self.claimed).extend(claimed.iter().map(|n| n.id));
                LaneClaim {
                    lane,
                    wanted,
                    claimed,
                }
            })
            .collect();
        let _ = ask.actor.send_message(CustomerMsg::Claimed(Ok(lanes)));
    }

    fn release(
        &self,
        held: Vec<(NotificationId, ClaimToken)>,
    ) -> Io<'static, Result<(), store::Error>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::time::sleep(store.release_delay).await;
            lock(&store.released).extend(held.iter().map(|(id, _)| *id));
            Ok(())
        })
    }
}

/// A sink that answers every attempt with success after `rtt`, counting the attempts under way.
#[derive(Debug)]
struct FakeSink {
    rtt: Duration,
    in_flight: AtomicUsize,
    /// The most attempts under way at once.
    most: AtomicUsize,
    sent: Mutex<Vec<NotificationId>>,
}

impl FakeSink {
    fn answering_after(rtt: Duration) -> Self {
        Self {
            rtt,
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            sent: Mutex::default(),
        }
    }
}

impl Attempts for Arc<FakeSink> {
    fn public_id(&self, id: NotificationId) -> String {
        id.0.to_string()
    }

    fn attempt<'a>(&'a self, attempt: Attempt<'a>) -> Io<'a, Sent> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.rtt).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            lock(&self.sent).push(attempt.notification.id);
            Sent {
                result: Ok(()),
                rtt: Some(self.rtt),
            }
        })
    }
}

/// An outcome writer whose queue can be made full.
#[derive(Debug, Default)]
struct FakeOutcomes {
    full: AtomicBool,
    recorded: Mutex<Vec<Outcome>>,
}

impl OutcomeQueue for Arc<FakeOutcomes> {
    fn try_record(&self, outcome: Outcome) -> Result<(), Outcome> {
        if self.full.load(Ordering::SeqCst) {
            return Err(outcome);
        }
        lock(&self.recorded).push(outcome);
        Ok(())
    }

    fn record(&self, outcome: Outcome) -> Io<'_, ()> {
        Box::pin(async move {
            while self.full.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lock(&self.recorded).push(outcome);
        })
    }
}

/// Stands in for the supervisor: the actor only ever asks it to retire.
struct NoSupervisor;

impl Actor for NoSupervisor {
    type Msg = SupervisorMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// One actor over the fakes.
struct Harness {
    store: Arc<FakeStore>,
    sink: Arc<FakeSink>,
    outcomes: Arc<FakeOutcomes>,
    actor: ActorRef<CustomerMsg>,
}

impl Harness {
    async fn start(settings: DispatchSettings, store: FakeStore, sink: FakeSink) -> Self {
        Self::start_with(settings, store, sink, FakeOutcomes::default()).await
    }

    async fn start_with(
        settings: DispatchSettings,
        store: FakeStore,
        sink: FakeSink,
        outcomes: FakeOutcomes,
    ) -> Self {
        let (store, sink, outcomes) = (Arc::new(store), Arc::new(sink), Arc::new(outcomes));
        let ctx = Arc::new(ActorContext {
            claims: Box::new(store.clone()),
            sink: Box::new(sink.clone()),
            outcomes: Box::new(outcomes.clone()),
            handoffs: Arc::new(Handoffs::default()),
            settings,
            metrics: Arc::new(Metrics::default()),
            tasks: TaskTracker::new(),
            ownership: Arc::new(Ownership::everything()),
            checkpoints: CheckpointWriter::default(),
            waiting: Waiting::default(),
            writers: tokio::runtime::Handle::current(),
        });
        let (supervisor, _) = Actor::spawn(None, NoSupervisor, ()).await.unwrap();
        let args = CustomerArgs {
            ctx,
            customer: Arc::new(customer()),
            channel: Channel::Webhook,
            supervisor,
            checkpoint: None,
        };
        let (actor, _) = Actor::spawn(None, CustomerActor, args).await.unwrap();
        actor.send_message(CustomerMsg::Wake(LaneSet::ALL)).unwrap();
        Self {
            store,
            sink,
            outcomes,
            actor,
        }
    }

    /// The actor's stats, asked with a deadline: `None` if it did not answer within a second.
    async fn stats(&self) -> Option<CustomerStats> {
        match self
            .actor
            .call(CustomerMsg::Stats, Some(Duration::from_secs(1)))
            .await
        {
            Ok(CallResult::Success(stats)) => stats,
            _ => None,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

fn customer() -> Customer {
    Customer {
        id: "acme".into(),
        webhook_url: "http://127.0.0.1:9/hook".into(),
        signing_secret: String::new(),
        previous_secret: None,
        max_rate_per_sec: 0,
        paused: false,
        start_tier: None,
        channels: Default::default(),
    }
}

/// `count` due notifications in `lane`, ids from `first`.
fn notifications(first: i64, count: i64, lane: Lane) -> Vec<Claimed> {
    (first..first + count)
        .map(|id| Claimed {
            id: NotificationId(id),
            claim: ClaimToken(1),
            attempts: 1,
            customer_id: CustomerId::from_stored("acme".into()),
            recipient: "r".into(),
            lane,
            channel: Channel::Webhook,
            payload: b"{}".to_vec(),
            created_at: now_millis(),
            expires_at: None,
            template: None,
        })
        .collect()
}

/// Dispatch settings with a fixed pace and at most `max_in_flight` sends under way.
fn fixed(max_in_flight: usize) -> DispatchSettings {
    DispatchSettings {
        policy: PolicySettings {
            policy: Policy::Fixed,
            fixed_rate: 1000.0,
            max_in_flight,
            ..PolicySettings::default()
        },
        ..DispatchSettings::default()
    }
}

#[test]
fn failed_claims_back_off_with_jitter() {
    assert_eq!(claim_retry_after(1, 1.0), CLAIM_RETRY_BASE);
    assert_eq!(claim_retry_after(1, 0.0), CLAIM_RETRY_BASE / 2);
    assert_eq!(claim_retry_after(3, 1.0), CLAIM_RETRY_BASE * 4);
    assert_eq!(claim_retry_after(30, 1.0), CLAIM_RETRY_MAX);
    assert_eq!(claim_retry_after(30, 0.0), CLAIM_RETRY_MAX / 2);
}

#[tokio::test(start_paused = true)]
async fn sends_under_way_never_exceed_the_limit_and_the_window_stays_bounded() {
    for settings in [fixed(3), DispatchSettings::default()] {
        let store = FakeStore::with_backlog(Lane::Bulk, notifications(1, 200, Lane::Bulk));
        let harness = Harness::start(settings, store, FakeSink::answering_after(ms(30))).await;
        let mut most_limit = 0;
        for _ in 0..2000 {
            tokio::time::sleep(ms(5)).await;
            let stats = harness.stats().await.expect("the actor answers");
            let prefetch = DispatchSettings::default().prefetch.max(stats.limit / 2);
            assert!(stats.in_flight <= stats.limit, "{stats:?}");
            assert!(stats.window[1] <= stats.limit + prefetch, "{stats:?}");
            most_limit = most_limit.max(stats.limit);
            if lock(&harness.sink.sent).len() == 200 {
                break;
            }
        }
        assert_eq!(
            lock(&harness.sink.sent).len(),
            200,
            "every notification sent"
        );
        let most = harness.sink.most.load(Ordering::SeqCst);
        assert!(most <= most_limit, "{most} under way, limit {most_limit}");
        assert!(most > 1, "sends overlap: {most}");
        assert_eq!(lock(&harness.outcomes.recorded).len(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_sink_does_not_keep_the_actor_from_its_messages() {
    let store = FakeStore::with_backlog(
        Lane::Transactional,
        notifications(1, 10, Lane::Transactional),
    );
    let harness = Harness::start(
        fixed(4),
        store,
        FakeSink::answering_after(Duration::from_secs(3600)),
    )
    .await;
    tokio::time::sleep(ms(50)).await;
    let stats = harness
        .stats()
        .await
        .expect("the actor answers while sends hang");
    assert_eq!(stats.in_flight, 4);
    assert_eq!(harness.sink.in_flight.load(Ordering::SeqCst), 4);
    assert!(lock(&harness.sink.sent).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_outcome_is_recorded_even_when_the_writer_is_momentarily_full() {
    let mut expired = notifications(7, 1, Lane::Transactional);
    expired[0].expires_at = Some(now_millis() - 1);
    let store = FakeStore::with_backlog(Lane::Transactional, expired);
    let sink = FakeSink::answering_after(ms(10));
    let full = FakeOutcomes {
        full: AtomicBool::new(true),
        ..FakeOutcomes::default()
    };
    let harness = Harness::start_with(fixed(4), store, sink, full).await;
    tokio::time::sleep(ms(200)).await;
    assert!(
        harness.stats().await.is_some(),
        "the actor answers while the writer is full"
    );
    assert!(lock(&harness.outcomes.recorded).is_empty());
    harness.outcomes.full.store(false, Ordering::SeqCst);
    tokio::time::sleep(ms(200)).await;
    assert_eq!(
        *lock(&harness.outcomes.recorded),
        vec![Outcome {
            id: NotificationId(7),
            claim: ClaimToken(1),
            kind: OutcomeKind::Expired,
        }]
    );
    assert!(
        lock(&harness.sink.sent).is_empty(),
        "an expired notification is not sent"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hand_back_releases_the_unsent_claims_before_the_handover_is_answered() {
    let store = FakeStore {
        release_delay: Duration::from_secs(2),
        ..FakeStore::with_backlog(Lane::Bulk, notifications(1, 10, Lane::Bulk))
    };
    let harness = Harness::start(
        fixed(2),
        store,
        FakeSink::answering_after(Duration::from_secs(1)),
    )
    .await;
    tokio::time::sleep(ms(50)).await;
    let (done, mut answered) = oneshot::channel();
    harness
        .actor
        .send_message(CustomerMsg::Release(done))
        .unwrap();
    // The two sends under way end at 1 s; the hand-back's store write at 2 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        answered.try_recv().is_err(),
        "answered before the claims were back"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(answered.try_recv(), Ok(()));
    let claimed: HashSet<_> = lock(&harness.store.claimed).iter().copied().collect();
    let sent: HashSet<_> = lock(&harness.sink.sent).iter().copied().collect();
    let released: HashSet<_> = lock(&harness.store.released).iter().copied().collect();
    assert_eq!(sent.len(), 2);
    assert!(!released.is_empty());
    assert!(sent.is_disjoint(&released));
    assert_eq!(
        &sent | &released,
        claimed,
        "every claim is either sent or handed back"
    );
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
