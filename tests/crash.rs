//! The real binary, killed: SIGKILL with deliveries in flight loses nothing; SIGTERM drains and
//! exits 0.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::process::Floodgate;
use common::{ADMIN_TOKEN, Backend, Receiver, TestDb, add_customer, connect, submit_many};
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;

/// The floodgate binary serving `db`, with fast retries and a short lease (so a killed
/// process's claims come back quickly).
async fn start(db: &TestDb) -> Floodgate {
    Floodgate::start(
        db,
        &[
            "--retry-base-delay",
            "50ms",
            "--retry-max-delay",
            "200ms",
            "--webhook-timeout",
            "2s",
            "--lease",
            "3s",
            "--shutdown-grace",
            "10s",
        ],
    )
    .await
}

async fn submit_all(url: &str, customer: &str, count: usize) -> Vec<String> {
    let mut client = DispatcherClient::new(connect(url, Some(ADMIN_TOKEN)).await);
    submit_many(
        &mut client,
        customer,
        proto::Lane::Transactional,
        "n",
        count,
    )
    .await
}

async fn sigkill_with_deliveries_in_flight_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(100)); // slow enough that the kill lands mid-flight
    let mut process = start(&db).await;
    add_customer(&process.url(), "acme", &receiver.url).await;
    let accepted = submit_all(&process.url(), "acme", 300).await;

    receiver.wait_for(40, Duration::from_secs(20)).await;
    process.kill().await;
    let before_restart = receiver.received().len();
    let process = start(&db).await;

    let wanted: HashSet<String> = accepted.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let received = receiver.received();
        let seen: HashSet<String> = received.iter().map(|d| d.webhook_id.clone()).collect();
        if wanted.is_subset(&seen) {
            let duplicates = received.len() - seen.len();
            eprintln!(
                "{backend:?}: {} accepted, {before_restart} webhooks before SIGKILL, all {} arrived after restart, {duplicates} duplicate deliveries",
                accepted.len(),
                wanted.len()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted notifications never arrived",
            wanted.difference(&seen).count(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(process);
}
on_both_backends!(sigkill_with_deliveries_in_flight_loses_nothing);

/// A notification intake handed straight to its running actor is stored leased, not pending:
/// when the process dies mid-delivery, the lease brings it back and it is delivered.
async fn sigkill_after_a_hand_off_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let mut process = start(&db).await;
    add_customer(&process.url(), "acme", &receiver.url).await;
    // A first delivery starts acme's actor; with its lane drained it takes hand-offs.
    submit_all(&process.url(), "acme", 1).await;
    receiver.wait_for(1, Duration::from_secs(20)).await;

    receiver.set_delay(Duration::from_secs(3600)); // the next attempt never finishes
    let handed_before = common::counter(process.http, "floodgate_intake_handed_off_total").await;
    let mut client = DispatcherClient::new(connect(&process.url(), Some(ADMIN_TOKEN)).await);
    let id = client
        .submit(common::submit_request("acme", "handed", "u"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    let handed_after = common::counter(process.http, "floodgate_intake_handed_off_total").await;
    assert_eq!(
        handed_after - handed_before,
        1.0,
        "the Submit was handed to acme's actor"
    );
    process.kill().await;

    receiver.set_delay(Duration::ZERO);
    let process = start(&db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !receiver.received().iter().any(|d| d.webhook_id == id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handed-off notification {id} never arrived after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = DispatcherClient::new(connect(&process.url(), Some(ADMIN_TOKEN)).await);
    common::wait_for_state(
        &mut client,
        &id,
        proto::State::Delivered,
        Duration::from_secs(20),
    )
    .await;
}
on_both_backends!(sigkill_after_a_hand_off_loses_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_deliveries_under_way_and_exits_zero() {
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(500));
    let mut process = start(&db).await;
    add_customer(&process.url(), "acme", &receiver.url).await;
    let accepted = submit_all(&process.url(), "acme", 5).await;
    let mut client = DispatcherClient::new(connect(&process.url(), Some(ADMIN_TOKEN)).await);
    // At least one is now in flight (each takes 500 ms at the receiver).
    common::wait_for_state(
        &mut client,
        &accepted[0],
        proto::State::InFlight,
        Duration::from_secs(20),
    )
    .await;

    let (status, _) = process.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    let before_exit: HashSet<String> = receiver
        .received()
        .into_iter()
        .map(|d| d.webhook_id)
        .collect();
    assert!(
        !before_exit.is_empty(),
        "the delivery under way finished before exit"
    );

    // Outcomes of finished deliveries were recorded: after a restart they read DELIVERED and are
    // not sent again; what had not been sent (handed back at shutdown) is delivered now.
    let process = start(&db).await;
    let mut client = DispatcherClient::new(connect(&process.url(), Some(ADMIN_TOKEN)).await);
    for id in &before_exit {
        let n = client
            .get_notification(proto::GetNotificationRequest {
                notification_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(n.state, proto::State::Delivered as i32, "notification {id}");
    }
    receiver
        .wait_for(accepted.len(), Duration::from_secs(20))
        .await;
    let received: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|d| d.webhook_id)
        .collect();
    let distinct: HashSet<&String> = received.iter().collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "every accepted notification arrived"
    );
    assert_eq!(
        received.len(),
        accepted.len(),
        "none was sent twice: {received:?}"
    );
}
