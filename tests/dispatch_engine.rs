//! The dispatch engine's promises, on both stores: one claim statement fills many actors'
//! windows and honours each window and lane share exactly; intake keeps answering while every
//! customer's actor claims at once. (A handed-off notification surviving SIGKILL is in crash.rs,
//! which runs the real binary.)

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, Receiver, TestDb, TestServer, add_customer, submit_request, test_config};
use floodgate::api::proto;
use floodgate::model::{Channel, Lane, NotificationId, now_millis};
use floodgate::store::{ClaimRequest, Claimed, Inserted, Store, StoreOptions};

/// Stores `count` due notifications of `customer` in `lane`, oldest first; returns their ids.
async fn enqueue(store: &Store, customer: &str, lane: Lane, count: usize) -> Vec<NotificationId> {
    let items: Vec<_> = (0..count)
        .map(|i| common::stored_notification(customer, format!("{customer}-{lane:?}-{i}"), lane))
        .collect();
    let mut ids = Vec::new();
    // One transaction per row, so the rows are stored in this order.
    for item in items {
        let results = store
            .insert_notifications(std::slice::from_ref(&item), &[], now_millis(), 0)
            .await
            .unwrap();
        match results[0] {
            Inserted::New(id) => ids.push(id),
            ref other => panic!("not stored: {other:?}"),
        }
    }
    ids
}

fn ask(customer: &str, lane: Lane, limit: usize) -> ClaimRequest {
    ClaimRequest {
        customer_id: customer.into(),
        channel: Channel::Webhook,
        lane,
        limit,
    }
}

fn ids(claimed: &[Claimed]) -> Vec<NotificationId> {
    claimed.iter().map(|c| c.id).collect()
}

async fn one_claim_fills_each_window_and_lane_share(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let acme_tx = enqueue(&store, "acme", Lane::Transactional, 6).await;
    let acme_bulk = enqueue(&store, "acme", Lane::Bulk, 5).await;
    let beta_tx = enqueue(&store, "beta", Lane::Transactional, 2).await;
    let gamma_bulk = enqueue(&store, "gamma", Lane::Bulk, 3).await;
    let requests = [
        ask("acme", Lane::Transactional, 4),
        ask("acme", Lane::Bulk, 1),
        ask("beta", Lane::Transactional, 5),
        ask("gamma", Lane::Transactional, 5), // gamma has only bulk work
        ask("nobody", Lane::Bulk, 3),
    ];

    let now = now_millis();
    let first = store
        .claim_many(&requests, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(first.len(), requests.len(), "one answer per request");
    assert_eq!(
        ids(&first[0]),
        acme_tx[..4],
        "acme's transactional share, oldest first"
    );
    assert_eq!(ids(&first[1]), acme_bulk[..1], "acme's bulk share");
    assert_eq!(
        ids(&first[2]),
        beta_tx,
        "all beta has, though it asked for more"
    );
    assert!(
        first[3].is_empty(),
        "gamma's bulk rows are not in its transactional lane"
    );
    assert!(first[4].is_empty());
    for (request, claimed) in requests.iter().zip(&first) {
        for c in claimed {
            assert_eq!(
                (c.customer_id.as_str(), c.lane),
                (request.customer_id.as_str(), request.lane)
            );
            assert_eq!((c.claim, c.attempts), (1, 1), "a first claim of {}", c.id);
        }
    }

    // Claimed rows are leased: the next round gets only what is left.
    let second = store
        .claim_many(&requests, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(ids(&second[0]), acme_tx[4..]);
    assert_eq!(ids(&second[1]), acme_bulk[1..2]);
    assert!(second[2].is_empty() && second[3].is_empty() && second[4].is_empty());
    let all: Vec<NotificationId> = first.iter().chain(&second).flat_map(|c| ids(c)).collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "no row claimed twice");

    // Another customer's lane, claimed in its own statement, is untouched by the rounds above.
    let gamma = store
        .claim_many(&[ask("gamma", Lane::Bulk, 10)], now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(ids(&gamma[0]), gamma_bulk);
    store.close().await;
}
on_both_backends!(one_claim_fills_each_window_and_lane_share);

/// Many customers with work at once keep the claimer busy; unary Submits in the middle of it
/// still complete, and every notification is delivered.
async fn intake_completes_while_every_actor_claims(backend: Backend) {
    const CUSTOMERS: usize = 150;
    const EACH: usize = 20;
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    for c in 0..CUSTOMERS {
        add_customer(&server.grpc_url, &format!("c{c}"), &receiver.url).await;
    }
    add_customer(&server.grpc_url, "probe", &receiver.url).await;

    let mut client = server.dispatcher().await;
    let requests: Vec<_> = (0..CUSTOMERS * EACH)
        .map(|i| submit_request(&format!("c{}", i % CUSTOMERS), &format!("k{i}"), "u"))
        .collect();
    for chunk in requests.chunks(1000) {
        client
            .submit_batch(proto::SubmitBatchRequest {
                requests: chunk.to_vec(),
            })
            .await
            .unwrap();
    }

    // The storm: every customer's actor is claiming and recording outcomes now.
    let mut probes = Vec::new();
    for i in 0..30 {
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            client.submit(submit_request("probe", &format!("p{i}"), "u")),
        )
        .await
        .expect("a Submit completes while deliveries run")
        .expect("a Submit is accepted while deliveries run")
        .into_inner();
        probes.push(answer.notification_id);
    }
    let before_drain = receiver.received().len();

    let total = CUSTOMERS * EACH + probes.len();
    let received = receiver.wait_for(total, Duration::from_secs(120)).await;
    let seen: HashSet<String> = received.into_iter().map(|d| d.webhook_id).collect();
    assert_eq!(
        seen.len(),
        total,
        "every accepted notification was delivered"
    );
    assert!(probes.iter().all(|id| seen.contains(id)));
    eprintln!(
        "{backend:?}: 30 Submits completed with {before_drain} of {} deliveries done",
        CUSTOMERS * EACH
    );
    server.stop().await.unwrap();
}
on_both_backends!(intake_completes_while_every_actor_claims);
