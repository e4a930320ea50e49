//! Dispatch: from stored notifications to delivery attempts, one worker per customer system.
//!
//! The [`Dispatcher`] keeps a registry of running customer workers. Intake wakes a customer's
//! worker after each commit; a periodic sweep wakes customers whose work came due in the store
//! (a future `send_at`, a retry backoff) and recovers expired leases. A worker that stays idle
//! exits; the next wake starts a new one. Because every customer has its own worker, its own
//! in-flight limit and its own pacing, one customer's slow endpoint never delays another.

mod customer;
pub mod outcomes;
pub mod retry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::directory::CustomerDirectory;
use crate::model::now_millis;
use crate::sink::webhook::WebhookSink;
use crate::store::{Backend, Store};
use outcomes::OutcomeWriter;
use retry::RetryPolicy;

/// Tunables of the dispatcher. Every field has a documented default (see `Default`).
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Most deliveries in flight to one customer at once. Default 32.
    pub max_in_flight_per_customer: usize,
    /// How long a claim is leased; a claim older than this is presumed dead and redelivered.
    /// Must exceed the webhook timeout. Default 60 s.
    pub lease: Duration,
    /// How often the store is swept for work that came due and for expired leases. Default 1 s.
    pub sweep_interval: Duration,
    /// A worker with nothing to do for this long exits. Default 60 s.
    pub idle_timeout: Duration,
    /// What happens after a failed attempt.
    pub retry: RetryPolicy,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            max_in_flight_per_customer: 32,
            lease: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// Handle to the running dispatcher; cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    directory: Arc<CustomerDirectory>,
    sink: WebhookSink,
    outcomes: OutcomeWriter,
    settings: DispatchSettings,
    workers: Mutex<HashMap<String, Arc<Wake>>>,
    /// Cancelled at shutdown: workers stop claiming; deliveries under way finish.
    stop: CancellationToken,
    /// Every worker and delivery task, so shutdown can wait for them.
    tasks: TaskTracker,
}

/// How a sleeping worker is woken. `pending` closes the race between a wake and a worker that has
/// just decided to exit: the worker re-checks it under the registry lock before leaving.
#[derive(Debug, Default)]
struct Wake {
    notify: Notify,
    pending: AtomicBool,
}

impl Dispatcher {
    /// Starts the dispatcher and its sweep. On SQLite (one node, file locked) every claim left
    /// in flight by a previous process is released at once; on PostgreSQL, other nodes may still
    /// hold their claims, so only expired leases are recovered.
    pub async fn start(
        store: Store,
        directory: Arc<CustomerDirectory>,
        sink: WebhookSink,
        outcomes: OutcomeWriter,
        settings: DispatchSettings,
    ) -> Result<Self, crate::store::Error> {
        if store.backend() == Backend::Sqlite {
            let released = store.release_leases(i64::MAX, now_millis()).await?;
            if released > 0 {
                tracing::info!(
                    released,
                    "returned claims left by the previous run to pending"
                );
            }
        }
        let dispatcher = Self {
            inner: Arc::new(Inner {
                store,
                directory,
                sink,
                outcomes,
                settings,
                workers: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        dispatcher
            .inner
            .tasks
            .spawn(dispatcher.clone().sweep_loop());
        Ok(dispatcher)
    }

    /// Tells `customer_id`'s worker there may be new work, starting one if none is running.
    pub fn wake(&self, customer_id: &str) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        let mut workers = self.workers();
        if let Some(wake) = workers.get(customer_id) {
            wake.pending.store(true, Ordering::Release);
            wake.notify.notify_one();
            return;
        }
        let wake = Arc::new(Wake::default());
        workers.insert(customer_id.to_owned(), wake.clone());
        let worker = customer::CustomerWorker::new(self.clone(), customer_id.to_owned(), wake);
        self.inner.tasks.spawn(worker.run());
    }

    /// Stops claiming new work and waits up to `grace` for deliveries under way to finish.
    /// Returns false if the grace period ran out first (their leases will recover them).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok()
    }

    /// Removes a worker that is about to exit, unless a wake arrived meanwhile (then it stays).
    fn retire(&self, customer_id: &str, wake: &Wake) -> bool {
        let mut workers = self.workers();
        if wake.pending.load(Ordering::Acquire) && !self.inner.stop.is_cancelled() {
            return false;
        }
        workers.remove(customer_id);
        true
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Wake>>> {
        // Only single map operations happen under this lock, so a poisoned map is still whole.
        self.inner
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn sweep_loop(self) {
        let mut tick = tokio::time::interval(self.inner.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = tick.tick() => self.sweep().await,
            }
        }
    }

    async fn sweep(&self) {
        let now = now_millis();
        match self.inner.store.release_leases(now, now).await {
            Ok(0) => {}
            Ok(released) => tracing::warn!(released, "recovered claims whose lease expired"),
            Err(err) => tracing::warn!(error = %err, "lease recovery failed"),
        }
        match self.inner.store.customers_with_due_work(now).await {
            Ok(customers) => customers.iter().for_each(|id| self.wake(id)),
            Err(err) => tracing::warn!(error = %err, "sweep for due work failed"),
        }
    }
}
