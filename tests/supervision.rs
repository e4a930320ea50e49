//! Supervision, at the dispatch layer (real SQLite store, real HTTP receivers): a customer actor
//! that panics is restarted, loses nothing, and its neighbour never notices.
//! Needs the `failpoints` feature (for `Dispatcher::inject_panic`):
//! `cargo test --features failpoints --test supervision`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Receiver, TestDb};
use floodgate::directory::CustomerDirectory;
use floodgate::dispatch::outcomes::OutcomeWriter;
use floodgate::dispatch::{DispatchSettings, Dispatcher};
use floodgate::model::{Inserted, Lane, now_millis};
use floodgate::public_id::{KEY_LEN, PublicIds};
use floodgate::sink::Sinks;
use floodgate::sink::webhook::WebhookSettings;
use floodgate::store::{Commit, Store, StoreOptions};
use floodgate::templates::Templates;
use tokio::time::Instant;

/// Stores `count` notifications for `customer`; the webhook ids they will arrive under.
async fn enqueue(store: &Store, ids: &PublicIds, customer: &str, count: usize) -> HashSet<String> {
    let items: Vec<_> = (0..count)
        .map(|i| {
            common::stored_notification(customer, format!("{customer}-{i}"), Lane::Transactional)
        })
        .collect();
    let results = store
        .insert_notifications(Commit::Group, &items, &[], now_millis(), 0)
        .await
        .unwrap();
    results
        .into_iter()
        .map(|r| match r {
            Inserted::New(id) => ids.encode(id),
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn wait_for_all(receiver: &Receiver, ids: &HashSet<String>, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let seen: HashSet<String> = receiver
            .received()
            .into_iter()
            .map(|d| d.webhook_id)
            .collect();
        if ids.is_subset(&seen) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{} of {} never arrived",
            ids.difference(&seen).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of `ids` the receiver has seen.
fn delivered(receiver: &Receiver, ids: &HashSet<String>) -> usize {
    let seen: HashSet<String> = receiver
        .received()
        .into_iter()
        .map(|d| d.webhook_id)
        .collect();
    ids.intersection(&seen).count()
}

/// One customer as the test sees it: its id, its receiver and the webhook ids it must get.
struct Watched<'a> {
    id: &'a str,
    receiver: &'a Receiver,
    ids: &'a HashSet<String>,
}

impl Watched<'_> {
    fn unsent(&self) -> usize {
        self.ids.len() - delivered(self.receiver, self.ids)
    }
}

/// What [`wait_for_restart`] saw.
struct Restart {
    /// From the call to the new actor's first stats.
    took: Duration,
    /// The customer's notifications not yet delivered when its actor was first seen gone.
    unsent_at_gap: usize,
}

/// Polls the crashed customer's stats until its actor has been replaced: first a gap (no actor
/// while the restart waits out its backoff, or totals counted again from zero by a new actor),
/// then a running actor again. An actor that never crashed shows no gap while it has work; one
/// that is never restarted shows no actor after the gap. Meanwhile the neighbour's actor must
/// stay the same one (its totals only grow) and stay up while it has work.
async fn wait_for_restart(
    dispatcher: &Dispatcher,
    crashed: &Watched<'_>,
    neighbour: &Watched<'_>,
    limit: Duration,
) -> Restart {
    let started = Instant::now();
    let totals = |stats: &Option<floodgate::dispatch::CustomerStats>| {
        stats.as_ref().map(|s| s.delivered_total)
    };
    let mut crashed_total = 0;
    let mut neighbour_total = 0;
    let mut unsent_at_gap = None;
    loop {
        let neighbour_stats = dispatcher.stats(neighbour.id).await;
        match totals(&neighbour_stats) {
            Some(total) => {
                assert!(
                    total >= neighbour_total,
                    "the neighbour's actor was replaced during the crash ({total} delivered, \
                     {neighbour_total} before)"
                );
                neighbour_total = total;
            }
            None => assert_eq!(
                neighbour.unsent(),
                0,
                "the neighbour's actor stopped during the crash with work left"
            ),
        }
        match totals(&dispatcher.stats(crashed.id).await) {
            Some(total) if unsent_at_gap.is_none() && total >= crashed_total => {
                crashed_total = total;
            }
            Some(_) if unsent_at_gap.is_some() => {
                return Restart {
                    took: started.elapsed(),
                    unsent_at_gap: unsent_at_gap.unwrap_or_default(),
                };
            }
            // No actor, or a new one counting from zero.
            _ => {
                unsent_at_gap.get_or_insert_with(|| crashed.unsent());
            }
        }
        assert!(
            started.elapsed() < limit,
            "no restart of {}'s actor within {limit:?} (gap seen: {unsent_at_gap:?})",
            crashed.id
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_is_restarted_and_loses_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let crashing = Receiver::start().await;
    crashing.set_delay(Duration::from_millis(20));
    let neighbour = Receiver::start().await;
    neighbour.set_delay(Duration::from_millis(20));
    common::register_in_store(&store, "crashing", &crashing.url, false).await;
    common::register_in_store(&store, "neighbour", &neighbour.url, false).await;

    let directory = Arc::new(CustomerDirectory::new(
        store.clone(),
        Duration::from_secs(5),
    ));
    let ids = PublicIds::new(&[3; KEY_LEN]);
    let sink = Sinks::new(
        &WebhookSettings {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            // The receivers are local: open loopback explicitly.
            target_policy: Arc::new(floodgate::sink::target_policy::TargetPolicy::new(vec![
                "127.0.0.0/8".parse().unwrap(),
            ])),
            allow_plaintext_smtp_auth: false,
            max_connections_per_host: None,
        },
        ids.clone(),
    )
    .unwrap();
    let metrics = Arc::new(floodgate::telemetry::metrics::Metrics::default());
    let (outcomes, writer) = OutcomeWriter::spawn(store.clone(), metrics.clone());
    let settings = DispatchSettings {
        lease: Duration::from_secs(3),
        sweep_interval: Duration::from_millis(100),
        ..DispatchSettings::default()
    };
    let dispatcher = Dispatcher::start(
        store.clone(),
        directory,
        Arc::new(Templates::new(store.clone())),
        sink,
        outcomes,
        settings,
        metrics,
        floodgate::cluster::Placement::single(),
    )
    .await
    .unwrap();

    let crashing_ids = enqueue(&store, &ids, "crashing", 300).await;
    let neighbour_ids = enqueue(&store, &ids, "neighbour", 300).await;
    dispatcher.wake("crashing");
    dispatcher.wake("neighbour");
    crashing.wait_for(30, Duration::from_secs(10)).await;
    let neighbour_at_panic = neighbour.received().len();
    dispatcher.inject_panic("crashing");

    let restart = wait_for_restart(
        &dispatcher,
        &Watched {
            id: "crashing",
            receiver: &crashing,
            ids: &crashing_ids,
        },
        &Watched {
            id: "neighbour",
            receiver: &neighbour,
            ids: &neighbour_ids,
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(
        restart.unsent_at_gap > 0,
        "the actor went away only once all its work was done (an idle stop, not a crash)"
    );
    let neighbour_during = neighbour.received().len() - neighbour_at_panic;
    assert!(
        neighbour_during > 0,
        "the neighbour delivered nothing while the crashed actor was down ({:?} from the panic \
         to the restart)",
        restart.took
    );

    let neighbour_took = wait_for_all(&neighbour, &neighbour_ids, Duration::from_secs(20)).await;
    let crashing_took = wait_for_all(&crashing, &crashing_ids, Duration::from_secs(30)).await;
    let duplicates = crashing.received().len() - crashing_ids.len();
    eprintln!(
        "restarted {:?} after the panic with {} still to send; the neighbour delivered \
         {neighbour_during} meanwhile and finished in {neighbour_took:?}; the crashed customer's \
         300 all arrived in {crashing_took:?} ({duplicates} duplicate deliveries)",
        restart.took, restart.unsent_at_gap
    );
    assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
    drop(dispatcher);
    writer.await.unwrap();
}
