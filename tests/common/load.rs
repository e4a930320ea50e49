//! A steady stream of submits for fault tests, and the check that everything it got accepted
//! was delivered.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floodgate::api::convert::timestamp;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::model::now_millis;

use super::{ADMIN_TOKEN, Receiver, connect, submit_request};

/// One submit in this many is scheduled ahead (see [`Load`]).
const SCHEDULED_EVERY: u64 = 4;
/// How far ahead: enough that it is stored pending, not handed to the actor.
const SCHEDULED_AHEAD: Duration = Duration::from_millis(20);

/// What a stream of submits saw.
#[derive(Default)]
pub struct Tally {
    pub accepted: Vec<String>,
    pub refused: BTreeMap<String, u64>,
    pub last_accepted: Option<Instant>,
    pub last_refused: Option<Instant>,
}

/// Submits one notification after another (unique keys) until stopped, tallying the answers.
/// Every [`SCHEDULED_EVERY`]th is scheduled [`SCHEDULED_AHEAD`] ahead: a notification due at once
/// goes straight from intake to its actor, so without these the stream would leave the claim
/// path (the sweep, the claimer, its statement) idle and a fault there unexercised.
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(url: String, customer: &'static str, pause: Duration) -> Self {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn({
            let tally = tally.clone();
            async move {
                let mut client = DispatcherClient::new(connect(&url, Some(ADMIN_TOKEN)).await);
                for n in 0.. {
                    let mut request = submit_request(customer, &format!("load-{n}"), "u");
                    if n % SCHEDULED_EVERY == 0 {
                        let at = now_millis() + SCHEDULED_AHEAD.as_millis() as i64;
                        request.send_at = Some(timestamp(at));
                    }
                    let answer = client.submit(request).await;
                    {
                        let mut tally = tally.lock().unwrap();
                        match answer {
                            Ok(answer) => {
                                tally.accepted.push(answer.into_inner().notification_id);
                                tally.last_accepted = Some(Instant::now());
                            }
                            Err(status) => {
                                *tally
                                    .refused
                                    .entry(format!("{:?}", status.code()))
                                    .or_default() += 1;
                                tally.last_refused = Some(Instant::now());
                            }
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        });
        Self { tally, task }
    }

    /// Waits until `condition` holds for the tally (or panics after `timeout`).
    pub async fn wait(&self, what: &str, timeout: Duration, condition: impl Fn(&Tally) -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition(&self.tally.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the first submit accepted after `since`; returns how long after `since`.
    pub async fn recovered_after(&self, since: Instant, timeout: Duration) -> Duration {
        self.wait("a submit is accepted again", timeout, |t| {
            t.last_accepted.is_some_and(|at| at > since)
        })
        .await;
        self.tally.lock().unwrap().last_accepted.unwrap() - since
    }

    /// How many submits were refused with `code` (a `tonic::Code` in `Debug` form) so far.
    pub fn refused(&self, code: &str) -> u64 {
        self.tally
            .lock()
            .unwrap()
            .refused
            .get(code)
            .copied()
            .unwrap_or(0)
    }

    pub fn stop(self) -> Tally {
        self.task.abort();
        Arc::try_unwrap(self.tally)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|shared| std::mem::take(&mut shared.lock().unwrap()))
    }
}

/// Waits until every accepted notification reached the receiver; returns the duplicates.
pub async fn all_delivered(receiver: &Receiver, accepted: &[String]) -> usize {
    let wanted: HashSet<&String> = accepted.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received = receiver.received();
        let seen: HashSet<&String> = received.iter().map(|d| &d.webhook_id).collect();
        if wanted.iter().all(|id| seen.contains(id)) {
            return received.len() - seen.len();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted notifications were never delivered",
            wanted.iter().filter(|id| !seen.contains(*id)).count(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every id in `ids` reads DELIVERED (outcomes lost to a fault come back through
/// their lease first, so this can take a lease or two); returns how long it took.
pub async fn all_marked_delivered(grpc_url: &str, ids: &[String]) -> Duration {
    use floodgate::api::proto;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut client = DispatcherClient::new(connect(grpc_url, Some(ADMIN_TOKEN)).await);
    let mut waiting: Vec<&String> = ids.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            let state = client
                .get_notification(proto::GetNotificationRequest {
                    notification_id: id.clone(),
                })
                .await
                .map(|n| n.into_inner().state)
                .unwrap_or_default();
            if state != proto::State::Delivered as i32 {
                still.push(id);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} notifications never read DELIVERED",
                waiting.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}
