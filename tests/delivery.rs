//! End to end over real gRPC and real HTTP: submit → stored → delivered (signed), duplicates,
//! retries, permanent failures, scheduling and the inbox. Every test runs on SQLite and on
//! PostgreSQL (when `DATABASE_URL` is set).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    Authed, Backend, Receiver, TestDb, TestServer, add_customer, submit_request, test_config,
    wait_for_notification, wait_for_state,
};
use floodgate::api::convert::timestamp;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::{self, State};
use floodgate::model::now_millis;

const WAIT: Duration = Duration::from_secs(15);

async fn submit_is_delivered_signed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    let customer = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    assert!(customer.signing_secret.starts_with("whsec_"));

    let mut client = server.dispatcher().await;
    let mut request = submit_request("acme", "order-1", "user-7");
    request.lane = proto::Lane::Bulk as i32;
    let accepted = client.submit(request).await.unwrap().into_inner();
    assert!(!accepted.duplicate);

    let delivered = receiver.wait_for(1, WAIT).await;
    let webhook = &delivered[0];
    assert_eq!(webhook.webhook_id, accepted.notification_id);
    assert!(
        webhook.verifies_with(&customer.signing_secret),
        "signature must verify"
    );
    let body = webhook.json();
    assert_eq!(body["id"], accepted.notification_id.as_str());
    assert_eq!(body["customer_id"], "acme");
    assert_eq!(body["recipient"], "user-7");
    assert_eq!(body["lane"], "bulk");
    assert_eq!(body["payload"]["key"], "order-1");

    let n = wait_for_state(
        &mut client,
        &accepted.notification_id,
        State::Delivered,
        WAIT,
    )
    .await;
    assert_eq!(n.attempts, 1);
    assert!(n.delivered_at.is_some());
    server.stop().await.unwrap();
}
on_both_backends!(submit_is_delivered_signed);

async fn duplicate_key_is_delivered_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let client = server.dispatcher().await;

    // Twenty copies at the same instant: exactly one is new, all get the same id.
    let answers = futures_join_all(unary_copies(&client, "same-key", 20)).await;
    let ids: HashSet<_> = answers.iter().map(|a| a.notification_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one id for one key: {answers:?}");
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);

    // The same key with other content is a conflict, not a duplicate.
    let mut changed = submit_request("acme", "same-key", "u");
    changed.payload = b"{\"other\":true}".to_vec();
    let conflict = client.clone().submit(changed).await.unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);

    receiver.wait_for(1, WAIT).await;
    // A fixed wait on purpose: nothing must arrive during it (a second copy would, with the
    // test's 50 ms retries and 100 ms sweeps, well within it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "delivered exactly once");
    assert_eq!(db.notification_rows().await, 1);
    server.stop().await.unwrap();
}
on_both_backends!(duplicate_key_is_delivered_once);

/// A unary Submit is committed by intake's express writers and a SubmitBatch of more than ten by
/// its group-commit writers; on PostgreSQL the two commit at the same time on separate
/// connections. One key sent both ways at once must still be one notification, delivered once.
async fn a_key_sent_by_submit_and_by_batch_at_once_is_one_notification(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let client = server.dispatcher().await;

    let unary = unary_copies(&client, "shared", 10);
    // Each batch: eleven keys of its own, then the shared one.
    let batches = (0..10).map(|b| {
        let mut client = client.clone();
        async move {
            let mut requests: Vec<_> = (0..11)
                .map(|i| submit_request("acme", &format!("batch{b}-{i}"), "u"))
                .collect();
            requests.push(submit_request("acme", "shared", "u"));
            common::submit_accepted(&mut client, requests).await
        }
    });
    let (unary, batches) = tokio::join!(futures_join_all(unary), futures_join_all(batches));
    let shared: Vec<_> = unary
        .iter()
        .chain(batches.iter().map(|answers| &answers[11]))
        .collect();
    let ids: HashSet<_> = shared.iter().map(|a| a.notification_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one id for one key: {shared:?}");
    assert_eq!(shared.iter().filter(|a| !a.duplicate).count(), 1);

    let expected = 10 * 11 + 1;
    receiver.wait_for(expected, WAIT).await;
    // A fixed wait on purpose, as above: a second copy of the shared key would arrive in it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        expected,
        "each key delivered once"
    );
    assert_eq!(db.notification_rows().await, expected as i64);
    server.stop().await.unwrap();
}
on_both_backends!(a_key_sent_by_submit_and_by_batch_at_once_is_one_notification);

async fn receiver_down_is_retried_until_it_is_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    // A port bound but not listening: connections are refused until the receiver starts on it,
    // and no other process can take it meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    add_customer(&server.grpc_url, "acme", &format!("http://{addr}/hook")).await;
    let mut client = server.dispatcher().await;
    let id = client
        .submit(submit_request("acme", "k", "u"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;

    let retrying = wait_for_state(&mut client, &id, State::Retrying, WAIT).await;
    assert!(
        retrying.last_error.contains("connect"),
        "last error: {}",
        retrying.last_error
    );
    // The receiver stays down through a second failed attempt: retries go on while it is down.
    common::wait_for_notification(&mut client, &id, "a second failed attempt", WAIT, |n| {
        n.attempts >= 2 && n.state == State::Retrying as i32
    })
    .await;

    let receiver = Receiver::start_listening(socket.listen(1024).unwrap());
    receiver.wait_for(1, WAIT).await;
    let n = wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    assert!(n.attempts >= 3, "took {} attempts", n.attempts);
    server.stop().await.unwrap();
}
on_both_backends!(receiver_down_is_retried_until_it_is_back);

async fn server_errors_are_retried_and_client_errors_fail_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = test_config(&db);
    cfg.retry_max_attempts = 3;
    let server = TestServer::start(cfg).await;
    let flaky = Receiver::start().await;
    flaky.set_status(503);
    let rejecting = Receiver::start().await;
    rejecting.set_status(400);
    add_customer(&server.grpc_url, "flaky", &flaky.url).await;
    add_customer(&server.grpc_url, "strict", &rejecting.url).await;
    let mut client = server.dispatcher().await;

    let strict_id = client
        .submit(submit_request("strict", "k", "u"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    let failed = wait_for_state(&mut client, &strict_id, State::Failed, WAIT).await;
    assert_eq!(failed.attempts, 1, "a 400 is not retried");
    assert!(
        failed.last_error.contains("400"),
        "reason kept: {}",
        failed.last_error
    );

    let flaky_id = client
        .submit(submit_request("flaky", "k", "u"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    let failed = wait_for_state(&mut client, &flaky_id, State::Failed, WAIT).await;
    assert_eq!(failed.attempts, 3, "retried up to the budget");
    assert!(
        failed.last_error.contains("503"),
        "reason kept: {}",
        failed.last_error
    );
    assert_eq!(flaky.received().len(), 3);
    server.stop().await.unwrap();
}
on_both_backends!(server_errors_are_retried_and_client_errors_fail_at_once);

async fn send_at_waits_and_expired_is_never_sent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;

    // Due later, so it is claimed from the store rather than handed to its actor at intake;
    // non-ASCII text checks that the payload's bytes survive the claim's read-back.
    let mut later = submit_request("acme", "later", "u");
    later.payload = r#"{"key":"later","text":"grüße ✓"}"#.as_bytes().to_vec();
    later.send_at = Some(timestamp(now_millis() + 1500));
    let later_id = client
        .submit(later)
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    // A fixed wait on purpose: nothing must arrive during it (send_at is 800 ms after it).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(receiver.received().is_empty(), "sent before send_at");
    wait_for_state(&mut client, &later_id, State::Delivered, WAIT).await;
    let delivered = receiver.received();
    assert_eq!(delivered[0].webhook_id, later_id);
    assert_eq!(delivered[0].json()["payload"]["text"], "grüße ✓");

    // Due after it expires: ends EXPIRED and never reaches the receiver.
    let mut doomed = submit_request("acme", "doomed", "u");
    let expires_at = now_millis() + 450;
    doomed.send_at = Some(timestamp(expires_at - 50));
    doomed.expires_at = Some(timestamp(expires_at));
    let doomed_id = client
        .submit(doomed)
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    // Pause the customer so the send time passes the expiry before anything is claimed.
    let mut paused = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    paused.paused = true;
    server
        .customers()
        .await
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(paused.clone()),
        })
        .await
        .unwrap();
    while now_millis() <= expires_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    paused.paused = false;
    server
        .customers()
        .await
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(paused),
        })
        .await
        .unwrap();
    wait_for_state(&mut client, &doomed_id, State::Expired, WAIT).await;
    assert!(
        receiver
            .received()
            .iter()
            .all(|d| d.webhook_id != doomed_id)
    );
    server.stop().await.unwrap();
}
on_both_backends!(send_at_waits_and_expired_is_never_sent);

async fn batch_and_inbox(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;

    let mut requests: Vec<_> = (0..5)
        .map(|i| submit_request("acme", &format!("b{i}"), "inbox-user"))
        .collect();
    requests.push(submit_request("nobody", "x", "inbox-user")); // unknown customer
    requests.push(submit_request("acme", "b0", "inbox-user")); // duplicate inside the batch
    let results = client
        .submit_batch(proto::SubmitBatchRequest { requests })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 7);
    let accepted = |i: usize| match &results[i].outcome {
        Some(proto::submit_result::Outcome::Accepted(a)) => a.clone(),
        other => panic!("item {i}: {other:?}"),
    };
    match &results[5].outcome {
        Some(proto::submit_result::Outcome::Error(e)) => {
            assert_eq!(e.code, tonic::Code::NotFound as i32)
        }
        other => panic!("item 5: {other:?}"),
    }
    assert!(accepted(6).duplicate);
    assert_eq!(accepted(6).notification_id, accepted(0).notification_id);

    receiver.wait_for(5, WAIT).await;
    // Newest first, two per page.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_notifications(proto::ListNotificationsRequest {
                customer_id: "acme".into(),
                recipient: "inbox-user".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.notifications.into_iter().map(|n| n.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<_> = (0..5).rev().map(|i| accepted(i).notification_id).collect();
    assert_eq!(seen, expected);
    server.stop().await.unwrap();
}
on_both_backends!(batch_and_inbox);

/// `copies` unary Submits of `key` for acme, each with its own handle on the connection, to be
/// run at once.
fn unary_copies(
    client: &DispatcherClient<Authed>,
    key: &'static str,
    copies: usize,
) -> impl Iterator<Item = impl std::future::Future<Output = proto::SubmitResponse> + Send + 'static>
{
    let client = client.clone();
    (0..copies).map(move |_| {
        let mut client = client.clone();
        async move {
            client
                .submit(submit_request("acme", key, "u"))
                .await
                .unwrap()
                .into_inner()
        }
    })
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

/// A notification an actor has claimed but not started sending (it waits behind the one attempt
/// its customer may have open) is reported PENDING; only the one being sent is IN_FLIGHT.
async fn only_a_notification_being_sent_is_in_flight(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = test_config(&db);
    cfg.max_in_flight_per_customer = 1;
    // The first attempt is held until the checks below are done: it must not time out first.
    cfg.webhook_timeout = WAIT;
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    receiver.hold();
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        let accepted = client
            .submit(submit_request("acme", key, "user-1"))
            .await
            .unwrap()
            .into_inner();
        ids.push(accepted.notification_id);
    }
    // While the receiver holds the first attempt, the others wait in the actor's window. A
    // notification the claimer has leased but not yet handed to the actor reads IN_FLIGHT for
    // that moment, so the states are read until they settle (or the deadline), then checked.
    let deadline = tokio::time::Instant::now() + WAIT;
    let settled = |states: &[State]| {
        states.iter().filter(|s| **s == State::InFlight).count() == 1
            && states.iter().filter(|s| **s == State::Pending).count() == 2
    };
    let states = loop {
        let mut states = Vec::new();
        for id in &ids {
            let n = client
                .get_notification(proto::GetNotificationRequest {
                    notification_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            states.push(n.state());
        }
        if settled(&states) {
            break states;
        }
        if tokio::time::Instant::now() >= deadline {
            assert!(
                states.contains(&State::InFlight),
                "no attempt started: {states:?}"
            );
            break states;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let in_flight = states.iter().filter(|s| **s == State::InFlight).count();
    assert_eq!(in_flight, 1, "one attempt at a time: {states:?}");
    assert_eq!(
        states.iter().filter(|s| **s == State::Pending).count(),
        2,
        "{states:?}"
    );
    // The actor claims the two waiting ones a moment after the first went out: wait until the
    // store holds all three in flight (state 2), whatever the API reports for the waiting two.
    while db
        .count("SELECT COUNT(*) FROM notifications WHERE state = 2")
        .await
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiting notifications were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its worker has it, though it reads PENDING: too late to cancel, and the answer says why.
    let last = ids.last().unwrap().clone();
    let refused = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: last,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("taken by its worker"),
        "{}",
        refused.message()
    );
    receiver.release();
    for id in &ids {
        wait_for_state(&mut client, id, State::Delivered, WAIT).await;
    }
    server.stop().await.unwrap();
}
on_both_backends!(only_a_notification_being_sent_is_in_flight);

/// With `--webhook-max-connections-per-host 2`, three customer systems behind one host have at
/// most two requests open to it, however wide their own windows; the others wait their turn
/// and are delivered once the host answers.
async fn a_host_cap_bounds_the_requests_open_to_one_host(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = test_config(&db);
    cfg.webhook_max_connections_per_host = std::num::NonZeroUsize::new(2);
    // The held requests must not time out while the test looks at them.
    cfg.webhook_timeout = WAIT;
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    receiver.hold();
    let mut client = server.dispatcher().await;
    let mut firsts = Vec::new();
    for customer in ["one", "two", "three"] {
        add_customer(&server.grpc_url, customer, &receiver.url).await;
        for key in ["a", "b"] {
            let accepted = client
                .submit(submit_request(customer, key, "user-1"))
                .await
                .unwrap()
                .into_inner();
            if key == "a" {
                firsts.push(accepted.notification_id);
            }
        }
    }
    // Every customer system's first notification is taken for sending: without the cap, each
    // would now have a request open at the receiver.
    for id in &firsts {
        wait_for_state(&mut client, id, State::InFlight, WAIT).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.holding() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first two requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.holding(),
        2,
        "no more than the cap open to the host"
    );
    receiver.release();
    receiver.wait_for(6, WAIT).await;
    server.stop().await.unwrap();
}
on_both_backends!(a_host_cap_bounds_the_requests_open_to_one_host);

/// Under a host's cap, a request that runs out of time (the one holding the host's only place,
/// and the one that waited for it) is retried like any timeout: once the host answers, both
/// notifications are delivered.
async fn requests_that_time_out_under_a_host_cap_are_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = test_config(&db);
    cfg.webhook_max_connections_per_host = std::num::NonZeroUsize::new(1);
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    receiver.hold();
    let mut client = server.dispatcher().await;
    let mut ids = Vec::new();
    for customer in ["one", "two"] {
        add_customer(&server.grpc_url, customer, &receiver.url).await;
        let accepted = client
            .submit(submit_request(customer, "a", "user-1"))
            .await
            .unwrap()
            .into_inner();
        ids.push(accepted.notification_id);
    }
    // The test configuration's 2 s attempt timeout runs out while the receiver holds.
    for id in &ids {
        wait_for_notification(&mut client, id, "a second attempt", WAIT, |n| {
            n.attempts >= 2
        })
        .await;
    }
    receiver.release();
    for id in &ids {
        wait_for_state(&mut client, id, State::Delivered, WAIT).await;
    }
    server.stop().await.unwrap();
}
on_both_backends!(requests_that_time_out_under_a_host_cap_are_retried);
