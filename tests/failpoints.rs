//! Every failpoint, fired under load: callers see UNAVAILABLE (or nothing, for background
//! work), nothing accepted is lost, and the node carries on by itself once the fault stops.
//! Needs the `failpoints` feature: `cargo test --features failpoints --test failpoints`.
#![cfg(feature = "failpoints")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{Load, all_delivered, all_marked_delivered};
use common::{Backend, Receiver, TestDb, TestServer, add_customer, test_config};
use floodgate::dispatch::outcomes::OutcomeWriter;
use floodgate::failpoints::{self, point};
use floodgate::model::{
    ClaimToken, Inserted, Lane, NotificationId, Outcome, OutcomeKind, State, now_millis,
};
use floodgate::store::{Commit, Store, StoreOptions};
use floodgate::telemetry::metrics::Metrics;

/// Fires `point` for `held` under load and reports what callers saw.
async fn fire(backend: Backend, point: &'static str, held: Duration) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let mut cfg = test_config(&db);
    // Outcomes that cannot be written come back through their lease: keep it short.
    cfg.lease = Duration::from_secs(3);
    let server = TestServer::start(cfg).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let load = Load::start(server.grpc_url.clone(), "acme", Duration::from_millis(5));
    load.wait("some submits are accepted", Duration::from_secs(20), |t| {
        t.accepted.len() >= 20
    })
    .await;

    failpoints::arm(point, u64::MAX);
    tokio::time::sleep(held).await;
    let fired = failpoints::disarm(point);
    let healed = Instant::now();
    let recovered = load.recovered_after(healed, Duration::from_secs(20)).await;
    load.wait("more submits are accepted", Duration::from_secs(20), |t| {
        t.last_accepted
            .is_some_and(|at| at > healed + Duration::from_millis(200))
    })
    .await;
    let tally = load.stop();
    for code in tally.refused.keys() {
        assert_eq!(
            code, "Unavailable",
            "{point}: callers saw {:?}",
            tally.refused
        );
    }
    let started = Instant::now();
    all_delivered(&receiver, &tally.accepted).await;
    // Then every row must say so; by now any redelivery (a lost outcome) has happened too.
    all_marked_delivered(&server.grpc_url, &tally.accepted).await;
    let duplicates = all_delivered(&receiver, &tally.accepted).await;
    eprintln!(
        "FAILPOINT {point} ({backend:?}) fired {fired} times over {held:?}: callers saw {:?}; next accept {recovered:?} after; all {} accepted delivered and marked so ({:?} after the load), 0 lost, {duplicates} duplicates",
        tally.refused,
        tally.accepted.len(),
        started.elapsed()
    );
    assert!(fired > 0, "{point} was never reached");
    server.stop().await.unwrap();
}

async fn every_failpoint(backend: Backend) {
    for (point, held) in [
        (point::STORE_INSERT, Duration::from_millis(500)),
        (point::STORE_INSERT_COMMIT, Duration::from_millis(500)),
        (point::STORE_CLAIM, Duration::from_millis(500)),
        // Longer than the outcome writer's retries (1 s in all): it gives up, and the leases
        // bring those notifications back.
        (point::STORE_OUTCOME, Duration::from_secs(2)),
        (point::STORE_LEASE_SWEEP, Duration::from_millis(500)),
        (point::SINK_SEND, Duration::from_millis(500)),
    ] {
        fire(backend, point, held).await;
    }
}

/// A flush answers only once every outcome recorded before it is in the store, whichever
/// outcome writer took it (PostgreSQL runs several at once): a handover releases its customers
/// right after the flush, so an outcome still being written then would be sent again. The first
/// write fails once, so its writer waits 100 ms before retrying; the flush comes meanwhile, and
/// on PostgreSQL another writer takes it with nothing of its own to write first.
async fn a_flush_waits_for_a_writer_still_retrying(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let now = now_millis();
    let items: Vec<_> = (0..2)
        .map(|i| common::stored_notification("acme", format!("k{i}"), Lane::Bulk))
        .collect();
    let ids: Vec<NotificationId> = store
        .insert_notifications(Commit::Group, &items, &[true, true], now, now + 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|inserted| match inserted {
            Inserted::New(id) => id,
            other => panic!("not stored: {other:?}"),
        })
        .collect();
    let delivered = |id| Outcome {
        id,
        claim: ClaimToken::FIRST,
        kind: OutcomeKind::Delivered,
    };
    let (writer, stopped) = OutcomeWriter::spawn(store.clone(), Arc::new(Metrics::default()));

    failpoints::arm(point::STORE_OUTCOME, 1);
    writer.record(delivered(ids[0])).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    writer.record(delivered(ids[1])).await;
    writer.flush().await;
    for id in &ids {
        let state = store.get_notification(*id).await.unwrap().unwrap().state;
        assert_eq!(
            state,
            State::Delivered,
            "{backend:?}: the flush came back first"
        );
    }
    assert_eq!(failpoints::disarm(point::STORE_OUTCOME), 1);
    drop(writer);
    stopped.await.unwrap();
}

/// A commit that fails at `store.insert.commit` stores none of its rows, whether it is one key
/// (its `INSERT` alone, no transaction: the point fires just before it) or several (a
/// transaction of several statements: the point fires after they ran, and it rolls back). The
/// same keys sent again are all new.
async fn a_failed_commit_stores_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    // 1 key: one statement; 3 keys: statements of 2 and 1 rows in a transaction.
    for (size, commit) in [(1, Commit::Express), (3, Commit::Group)] {
        let items: Vec<_> = (0..size)
            .map(|i| common::stored_notification("acme", format!("k{size}-{i}"), Lane::Bulk))
            .collect();
        failpoints::arm(point::STORE_INSERT_COMMIT, 1);
        let failed = store
            .insert_notifications(commit, &items, &[], now_millis(), 0)
            .await;
        assert!(
            failed.is_err(),
            "{backend:?}, {size} keys: the commit did not fail"
        );
        assert_eq!(failpoints::disarm(point::STORE_INSERT_COMMIT), 1);
        let again = store
            .insert_notifications(commit, &items, &[], now_millis(), 0)
            .await
            .unwrap();
        assert!(
            again.iter().all(|r| matches!(r, Inserted::New(_))),
            "{backend:?}, {size} keys: the failed commit stored some: {again:?}"
        );
    }
}

/// `floodgate_intake_handed_off_total`: notifications intake gave straight to their actor.
async fn handed_off(server: &TestServer) -> f64 {
    common::counter(server.http_addr, "floodgate_intake_handed_off_total").await
}

/// A commit that fails gives back the hand-off credits it reserved. Before a commit, intake
/// takes a credit from the actor of each notification due now; one that is not stored must give
/// it back, or the actor's window shrinks for good and fresh notifications stop going straight
/// to it. Here a batch bigger than any window (so it reserves every credit the actor has) fails
/// at `store.insert`; each of the notifications sent after it is still handed over.
async fn a_failed_commit_gives_back_its_hand_off_credits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;
    let mut sent = 0;
    let mut send = async |key: String| {
        let request = common::submit_request("acme", &key, "u");
        client.submit(request).await.unwrap();
        sent += 1;
        receiver.wait_for(sent, Duration::from_secs(10)).await;
    };
    // The first notification starts the actor; once it has drained its backlog it grants
    // credits, and the next ones are handed over.
    for n in 0.. {
        assert!(n < 50, "{backend:?}: nothing was ever handed over");
        send(format!("warm-{n}")).await;
        if handed_off(&server).await > 0.0 {
            break;
        }
    }

    failpoints::arm(point::STORE_INSERT, 1);
    let requests = (0..1000)
        .map(|i| common::submit_request("acme", &format!("failed-{i}"), "u"))
        .collect();
    let failed = server
        .dispatcher()
        .await
        .submit_batch(floodgate::api::proto::SubmitBatchRequest { requests })
        .await;
    assert_eq!(failpoints::disarm(point::STORE_INSERT), 1);
    assert_eq!(
        failed.map(|_| ()).map_err(|status| status.code()),
        Err(tonic::Code::Unavailable),
        "{backend:?}: the failed batch"
    );

    // Each of the next ones finds a credit: an idle actor's window has room for at least its
    // prefetch (4), and had the failed batch kept its credits there would be none until the
    // window grew.
    let before = handed_off(&server).await;
    for n in 0..3 {
        send(format!("after-{n}")).await;
    }
    let after = handed_off(&server).await;
    assert_eq!(
        after - before,
        3.0,
        "{backend:?}: not everything sent after the failed commit was handed over"
    );
    server.stop().await.unwrap();
}

// One test per backend, points one after another: the failpoint registry is process-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failpoint_heals_with_nothing_lost() {
    every_failpoint(Backend::Sqlite).await;
    a_flush_waits_for_a_writer_still_retrying(Backend::Sqlite).await;
    a_failed_commit_stores_nothing(Backend::Sqlite).await;
    a_failed_commit_gives_back_its_hand_off_credits(Backend::Sqlite).await;
    if common::postgres_url().is_some() {
        every_failpoint(Backend::Postgres).await;
        a_flush_waits_for_a_writer_still_retrying(Backend::Postgres).await;
        a_failed_commit_stores_nothing(Backend::Postgres).await;
        a_failed_commit_gives_back_its_hand_off_credits(Backend::Postgres).await;
    } else {
        eprintln!("PostgreSQL part skipped: DATABASE_URL is not set");
    }
}
