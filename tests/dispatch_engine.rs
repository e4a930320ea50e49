//! The dispatch engine's promises, on both stores: one claim statement fills many actors'
//! windows and honours each window and lane share exactly; intake keeps answering while every
//! customer's actor claims at once; a commit failing halfway stores none of its rows. (A
//! handed-off notification surviving SIGKILL is in crash.rs, which runs the real binary.)

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, Receiver, TestDb, TestServer, add_customer, submit_request, test_config};
use floodgate::api::proto;
use floodgate::model::{
    Channel, ClaimToken, Claimed, EpochMillis, Inserted, Lane, NotificationId, Outcome,
    OutcomeKind, State, now_millis,
};
use floodgate::store::{ClaimRequest, Commit, Store, StoreOptions};

/// Stores `count` due notifications of `customer` in `lane`, oldest first; returns their ids.
async fn enqueue(store: &Store, customer: &str, lane: Lane, count: usize) -> Vec<NotificationId> {
    let items: Vec<_> = (0..count)
        .map(|i| common::stored_notification(customer, format!("{customer}-{lane:?}-{i}"), lane))
        .collect();
    let mut ids = Vec::new();
    // One transaction per row, so the rows are stored in this order.
    for item in items {
        let results = store
            .insert_notifications(
                Commit::Group,
                std::slice::from_ref(&item),
                &[],
                now_millis(),
                0,
            )
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
            assert_eq!(
                (c.claim, c.attempts),
                (ClaimToken::FIRST, 1),
                "a first claim of {:?}",
                c.id
            );
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

/// A drain's claim: one ask takes more rows than one lease statement carries (256 on SQLite, where
/// the rows are leased in slices and read back afterwards). Every row is leased once, answered to
/// the ask it belongs to, oldest first, and the store holds exactly those in flight.
async fn a_claim_of_many_rows_leases_each_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let stored = |customer: &str, lane: Lane, count: usize| {
        (0..count)
            .map(|i| common::stored_notification(customer, format!("{customer}-{i}"), lane))
            .collect::<Vec<_>>()
    };
    let mut items = stored("big", Lane::Transactional, 600);
    items.extend(stored("small", Lane::Bulk, 40));
    store
        .insert_notifications(Commit::Group, &items, &[], now_millis(), 0)
        .await
        .unwrap();
    let requests = [
        ask("big", Lane::Transactional, 550),
        ask("small", Lane::Bulk, 50),
        ask("big", Lane::Bulk, 10),
    ];

    let now = now_millis();
    let first = store
        .claim_many(&requests, now, now + 60_000)
        .await
        .unwrap();
    let sizes: Vec<usize> = first.iter().map(Vec::len).collect();
    assert_eq!(sizes, [550, 40, 0], "each ask filled from its own lane");
    for (request, claimed) in requests.iter().zip(&first) {
        for c in claimed {
            assert_eq!(
                (c.customer_id.as_str(), c.lane, c.claim, c.attempts),
                (
                    request.customer_id.as_str(),
                    request.lane,
                    ClaimToken::FIRST,
                    1
                )
            );
        }
        let ids = ids(claimed);
        assert!(ids.is_sorted(), "oldest first");
    }
    let in_flight = db
        .count("SELECT count(*) FROM notifications WHERE state = 2")
        .await;
    assert_eq!(
        in_flight, 590,
        "every answered row is leased, and only those"
    );

    let second = store
        .claim_many(&requests, now, now + 60_000)
        .await
        .unwrap();
    let sizes: Vec<usize> = second.iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 0, 0], "only what the first claim left");
    let all: Vec<NotificationId> = first.iter().chain(&second).flat_map(|c| ids(c)).collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        640,
        "no row claimed twice"
    );
    store.close().await;
}
on_both_backends!(a_claim_of_many_rows_leases_each_once);

/// Stores one transactional notification of `customer`, accepted at `accepted` and due at
/// `due_at` (a `send_at` after `accepted`).
async fn enqueue_due(
    store: &Store,
    customer: &str,
    key: &str,
    accepted: EpochMillis,
    due_at: EpochMillis,
) -> NotificationId {
    let mut item = common::stored_notification(customer, key.into(), Lane::Transactional);
    item.send_at = Some(due_at);
    match store
        .insert_notifications(Commit::Group, &[item], &[], accepted, 0)
        .await
        .unwrap()[0]
    {
        Inserted::New(id) => id,
        ref other => panic!("not stored: {other:?}"),
    }
}

async fn state_of(store: &Store, id: NotificationId) -> floodgate::model::Notification {
    store.get_notification(id).await.unwrap().expect("stored")
}

/// The claim statement takes only pending and retrying rows that are due, oldest due first
/// (not in insertion order), up to the asked limit; rows another claim holds, rows in a final
/// state and rows not yet due are left alone.
async fn claims_take_due_ready_rows_in_due_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let now = now_millis();
    let accepted = now - 60_000;
    // Stored newest due first, so due order is the reverse of insertion order.
    let late = enqueue_due(&store, "acme", "late", accepted, now - 1_000).await;
    let mid = enqueue_due(&store, "acme", "mid", accepted, now - 3_000).await;
    let retrying = enqueue_due(&store, "acme", "retrying", accepted, now - 4_000).await;
    let early = enqueue_due(&store, "acme", "early", accepted, now - 5_000).await;
    let future = enqueue_due(&store, "acme", "future", now, now + 60_000).await;
    db.execute(&format!(
        "UPDATE notifications SET state = {} WHERE id = {}",
        State::Retrying.code(),
        retrying.0
    ))
    .await;
    // Rows in every other state, all due long ago: none may be claimed.
    let mut not_ready = Vec::new();
    for state in [
        State::InFlight,
        State::Delivered,
        State::Failed,
        State::Suppressed,
        State::Expired,
        State::Cancelled,
    ] {
        let id = enqueue_due(&store, "acme", state.as_str(), accepted, now - 10_000).await;
        db.execute(&format!(
            "UPDATE notifications SET state = {}, lease_until = {} WHERE id = {}",
            state.code(),
            now + 60_000,
            id.0
        ))
        .await;
        not_ready.push(id);
    }

    let two = [ask("acme", Lane::Transactional, 2)];
    let first = store.claim_many(&two, now, now + 60_000).await.unwrap();
    assert_eq!(
        ids(&first[0]),
        [early, retrying],
        "the two due first, within the limit of 2"
    );
    // The first claim's rows are leased now: another claim skips them.
    let all = [ask("acme", Lane::Transactional, 100)];
    let second = store.claim_many(&all, now, now + 60_000).await.unwrap();
    assert_eq!(
        ids(&second[0]),
        [mid, late],
        "the rest that is due, in due order"
    );
    let third = store.claim_many(&all, now, now + 60_000).await.unwrap();
    assert!(
        third[0].is_empty(),
        "only rows not ready are left: {:?}",
        ids(&third[0])
    );
    for id in not_ready.into_iter().chain([future]) {
        let n = state_of(&store, id).await;
        assert_eq!(n.attempts, 0, "{id:?} ({:?}) was claimed", n.state);
    }
    // Once due, the future row is claimed like any other.
    let later = store
        .claim_many(&all, now + 60_000, now + 120_000)
        .await
        .unwrap();
    assert_eq!(ids(&later[0]), [future]);
    store.close().await;
}
on_both_backends!(claims_take_due_ready_rows_in_due_order);

/// The sweep that wakes actors finds exactly the unpaused customers with work due by `now`, in
/// either lane (on SQLite its ids come back as one JSON row).
async fn the_sweep_finds_the_unpaused_customers_with_due_work(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    for (id, paused) in [
        ("acme", false),
        ("beta.x_1", false),
        ("gamma", true),
        ("delta", false),
        ("idle", false),
    ] {
        common::register_in_store(&store, id, "http://127.0.0.1:9/hook", paused).await;
    }
    enqueue(&store, "acme", Lane::Transactional, 1).await;
    enqueue(&store, "beta.x_1", Lane::Bulk, 2).await;
    enqueue(&store, "gamma", Lane::Transactional, 1).await;
    let now = now_millis();
    enqueue_due(&store, "delta", "later", now, now + 60_000).await;

    let mut found = store.customers_with_due_work(now + 1).await.unwrap();
    found.sort();
    assert_eq!(found, ["acme", "beta.x_1"]);
    store.close().await;
}
on_both_backends!(the_sweep_finds_the_unpaused_customers_with_due_work);

/// An outcome is a compare-and-set on the claim token: once a lease ran out and the row was
/// claimed again, the first worker's outcome is refused and changes nothing, while the current
/// claim's outcome (in the same statement) applies.
async fn an_outcome_under_a_superseded_claim_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let stored = enqueue(&store, "acme", Lane::Transactional, 2).await;
    let (stale_id, other_id) = (stored[0], stored[1]);
    let now = now_millis();
    let all = [ask("acme", Lane::Transactional, 10)];
    let first = store.claim_many(&all, now, now + 1_000).await.unwrap();
    let stale = first[0].iter().find(|c| c.id == stale_id).unwrap().claim;
    let other = first[0].iter().find(|c| c.id == other_id).unwrap().claim;

    // The lease runs out and the lease sweep hands the rows back; they are claimed again.
    assert_eq!(
        store
            .release_leases(now + 1_000, now + 2_000)
            .await
            .unwrap(),
        2
    );
    let second = store
        .claim_many(&all, now + 2_000, now + 60_000)
        .await
        .unwrap();
    let current = second[0].iter().find(|c| c.id == stale_id).unwrap().claim;
    assert_ne!(current, stale, "a new claim, a new token");
    let before = state_of(&store, stale_id).await;

    // The first worker reports late: refused, the row untouched.
    let applied = store
        .record_outcomes(
            &[Outcome {
                id: stale_id,
                claim: stale,
                kind: OutcomeKind::Delivered,
            }],
            now + 3_000,
        )
        .await
        .unwrap();
    assert_eq!(applied, 0, "a superseded claim's outcome applied");
    let after = state_of(&store, stale_id).await;
    assert_eq!(after.state, State::InFlight);
    assert_eq!(
        (
            after.attempts,
            after.delivered_at,
            after.last_error.clone(),
            after.updated_at
        ),
        (
            before.attempts,
            before.delivered_at,
            before.last_error,
            before.updated_at
        ),
        "the refused outcome changed the row"
    );

    // In one statement: the other row's stale outcome is refused, this row's current one applies.
    let other_current = second[0].iter().find(|c| c.id == other_id).unwrap().claim;
    assert_ne!(other_current, other);
    let applied = store
        .record_outcomes(
            &[
                Outcome {
                    id: other_id,
                    claim: other,
                    kind: OutcomeKind::Failed {
                        error: "stale".into(),
                    },
                },
                Outcome {
                    id: stale_id,
                    claim: current,
                    kind: OutcomeKind::Delivered,
                },
            ],
            now + 4_000,
        )
        .await
        .unwrap();
    assert_eq!(applied, 1);
    let delivered = state_of(&store, stale_id).await;
    assert_eq!(
        (delivered.state, delivered.delivered_at),
        (State::Delivered, Some(now + 4_000))
    );
    let untouched = state_of(&store, other_id).await;
    assert_eq!(
        (untouched.state, untouched.last_error),
        (State::InFlight, None)
    );

    // A claim's outcome applies once: the row is no longer in flight.
    let again = store
        .record_outcomes(
            &[Outcome {
                id: stale_id,
                claim: current,
                kind: OutcomeKind::Failed {
                    error: "twice".into(),
                },
            }],
            now + 5_000,
        )
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(state_of(&store, stale_id).await.state, State::Delivered);
    store.close().await;
}
on_both_backends!(an_outcome_under_a_superseded_claim_is_refused);

/// A commit whose `INSERT` fails halfway stores none of its rows. Here a trigger refuses the
/// second of four rows (as a failed constraint or a full disk would): on SQLite the statement is
/// `INSERT OR FAIL`, which leaves the first row in the transaction instead of undoing it, so
/// only the commit's rollback keeps it out. The same keys sent again are all new.
async fn a_commit_failing_halfway_stores_none_of_its_rows(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    match backend {
        Backend::Sqlite => {
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON notifications \
                 WHEN NEW.idempotency_key = 'half-1' BEGIN SELECT RAISE(FAIL, 'refused'); END",
            )
            .await;
        }
        Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.idempotency_key = 'half-1' THEN RAISE EXCEPTION 'refused'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON notifications \
                 FOR EACH ROW EXECUTE FUNCTION refuse()",
            )
            .await;
        }
    }
    let items: Vec<_> = (0..4)
        .map(|i| common::stored_notification("acme", format!("half-{i}"), Lane::Bulk))
        .collect();
    let failed = store
        .insert_notifications(Commit::Group, &items, &[], now_millis(), 0)
        .await;
    assert!(failed.is_err(), "{backend:?}: the trigger did not refuse");
    assert_eq!(
        db.notification_rows().await,
        0,
        "{backend:?}: a row before the failure was kept"
    );

    db.execute(match backend {
        Backend::Sqlite => "DROP TRIGGER refuse",
        Backend::Postgres => "DROP TRIGGER refuse ON notifications",
    })
    .await;
    let again = store
        .insert_notifications(Commit::Group, &items, &[], now_millis(), 0)
        .await
        .unwrap();
    assert!(
        again.iter().all(|r| matches!(r, Inserted::New(_))),
        "{backend:?}: {again:?}"
    );
}
on_both_backends!(a_commit_failing_halfway_stores_none_of_its_rows);

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
