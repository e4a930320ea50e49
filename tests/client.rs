//! floodgate-client against the real server: submit, a batch larger than one call, reads, the
//! runnable example, and retries that ride out a server that is not up yet.

mod common;

#[path = "../client/examples/submit.rs"]
#[allow(dead_code)] // its `main` is the example's, not the test's
mod submit_example;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    ADMIN_TOKEN, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, add_customer, test_config,
};
use floodgate_client::proto::submit_result::Outcome;
use floodgate_client::{Client, Error, MAX_BATCH, RetryPolicy, proto};
use tokio::net::TcpSocket;

/// A submit request whose key and payload name item `i`.
fn request(customer: &str, i: usize) -> proto::SubmitRequest {
    proto::SubmitRequest {
        customer_id: customer.into(),
        idempotency_key: format!("item-{i}"),
        recipient: format!("user-{}", i % 7),
        payload: format!(r#"{{"i":{i}}}"#).into_bytes(),
        ..Default::default()
    }
}

/// The ids of the webhooks `receiver` has seen.
fn delivered_ids(receiver: &Receiver) -> HashSet<String> {
    receiver
        .received()
        .into_iter()
        .map(|delivery| delivery.webhook_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_a_batch_of_any_size_in_order_and_reads_it_back() {
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await; // wait until it serves
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    // host:port, as `floodgate serve` prints it, and the submit token.
    let address = server.grpc_url.trim_start_matches("http://");
    let client = Client::builder(address)
        .token(SUBMIT_TOKEN)
        .connect()
        .await
        .unwrap();

    let single = client.submit(request("acme", 100_000)).await.unwrap();
    assert!(!single.duplicate);
    let again = client.submit(request("acme", 100_000)).await.unwrap();
    assert!(again.duplicate, "the same key is accepted once");
    assert_eq!(again.notification_id, single.notification_id);

    // 2,500 items: three calls (1,000 + 1,000 + 500), where the server refuses more than
    // 1,000 in one. Item 1,234 is too large, so its error must come back in its own place.
    const ITEMS: usize = 2_500;
    const BAD: usize = 1_234;
    const { assert!(ITEMS > 2 * MAX_BATCH) };
    let mut items: Vec<proto::SubmitRequest> = (0..ITEMS).map(|i| request("acme", i)).collect();
    items[BAD].payload = vec![b'x'; 4096]; // over the test server's 1,024-byte limit
    let results = client.submit_batch(items).await.unwrap();
    assert_eq!(results.len(), ITEMS);
    let mut accepted = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match &result.outcome {
            Some(Outcome::Accepted(ok)) => {
                assert_ne!(i, BAD, "the oversized item was accepted");
                assert!(!ok.duplicate);
                accepted.push((i, ok.notification_id.clone()));
            }
            Some(Outcome::Error(error)) => {
                assert_eq!(i, BAD, "item {i} refused: {}", error.message);
                assert_eq!(error.code, tonic::Code::InvalidArgument as i32);
            }
            None => panic!("item {i} has no outcome"),
        }
    }
    assert_eq!(accepted.len(), ITEMS - 1);

    // Results are in input order: the notification at each chunk's edges carries the key of
    // the item in that place.
    for (i, id) in accepted
        .iter()
        .filter(|(i, _)| [0, 999, 1000, 1999, 2000, 2499].contains(i))
    {
        let stored = client.get_notification(id).await.unwrap();
        assert_eq!(stored.idempotency_key, format!("item-{i}"));
        assert_eq!(stored.customer_id, "acme");
    }

    // Every accepted notification is delivered, exactly those.
    let mut expected: HashSet<String> = accepted.into_iter().map(|(_, id)| id).collect();
    expected.insert(single.notification_id.clone());
    receiver
        .wait_for(expected.len(), Duration::from_secs(60))
        .await;
    assert_eq!(delivered_ids(&receiver), expected);
    let read = client
        .get_notification(&single.notification_id)
        .await
        .unwrap();
    assert_eq!(read.state(), proto::State::Delivered);

    // The generated clients share the connection: an admin-only call with the submit token
    // is refused, as the server's roles say.
    let denied = client
        .customers()
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    server.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_submits_and_sees_its_notifications_delivered() {
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;

    let outcomes = submit_example::run(&server.grpc_url, SUBMIT_TOKEN, "acme", 4)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 5, "one alone and four in a batch");
    for (id, state) in &outcomes {
        assert_eq!(*state, proto::State::Delivered, "{id}");
    }
    let ids: HashSet<String> = outcomes.into_iter().map(|(id, _)| id).collect();
    assert_eq!(delivered_ids(&receiver), ids);
    server.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_with_the_same_key_until_the_server_is_up() {
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    // Register the customer on a first run of the server, then stop it: the second run, on
    // the same database, is the one the client waits for.
    let first = TestServer::start(test_config(&db)).await;
    common::connect(&first.grpc_url, Some(ADMIN_TOKEN)).await;
    add_customer(&first.grpc_url, "acme", &receiver.url).await;
    first.stop().await.expect("a clean stop");

    // A port that is bound but not listening: every connection is refused until `listen`.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = socket.local_addr().unwrap().to_string();

    // Connecting now fails at once; so does a submit whose retries run out, after exactly
    // its attempts.
    let refused = Client::builder(address.as_str())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Connect { .. }), "{refused:?}");
    let impatient = Client::builder(address.as_str())
        .token(ADMIN_TOKEN)
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        })
        .connect_lazy()
        .unwrap();
    match impatient.submit(request("acme", 1)).await.unwrap_err() {
        Error::Status {
            call,
            attempts,
            status,
        } => {
            assert_eq!((call, attempts), ("Submit", 3));
            assert_eq!(status.code(), tonic::Code::Unavailable);
        }
        other => panic!("expected UNAVAILABLE after 3 attempts, got {other:?}"),
    }

    // A patient client starts submitting while nothing listens ...
    let client = Client::builder(address.as_str())
        .token(ADMIN_TOKEN)
        .retry(RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        })
        .connect_lazy()
        .unwrap();
    let submitting = tokio::spawn({
        let client = client.clone();
        async move { client.submit(request("acme", 1)).await }
    });
    let batching = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .submit_batch((2..5).map(|i| request("acme", i)).collect())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!submitting.is_finished() && !batching.is_finished());

    // ... and succeeds once the server listens on that port.
    let server = TestServer::start_on(test_config(&db), socket.listen(1024).unwrap()).await;
    let submitted = submitting.await.unwrap().unwrap();
    let batch = batching.await.unwrap().unwrap();
    let mut ids = vec![submitted.notification_id.clone()];
    for result in batch {
        match result.outcome {
            Some(Outcome::Accepted(ok)) => ids.push(ok.notification_id),
            other => panic!("batch item not accepted: {other:?}"),
        }
    }
    receiver.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(delivered_ids(&receiver), ids.iter().cloned().collect());
    // The retried submit kept its key: the same request again is a duplicate of it.
    let again = client.submit(request("acme", 1)).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.notification_id, submitted.notification_id);
    server.stop().await.expect("a clean stop");
}

/// A caller's build pulls in the gRPC stack and nothing of the server: the crate's dependencies
/// stay within this list, and tonic without its server half (axum, the hyper server).
#[test]
fn the_client_depends_on_the_grpc_stack_only() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/client/Cargo.toml")).unwrap();
    let dependencies: Vec<&str> = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .expect("a [dependencies] table")
        .split("\n[")
        .next()
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .collect();
    let allowed = [
        "prost",
        "prost-types",
        "rand",
        "thiserror",
        "tokio",
        "tonic",
        "tonic-prost",
    ];
    for line in &dependencies {
        let name = line.split('=').next().unwrap().trim();
        assert!(
            allowed.contains(&name),
            "floodgate-client depends on {name}"
        );
    }
    let tonic = dependencies
        .iter()
        .find(|line| line.starts_with("tonic "))
        .expect("tonic");
    assert!(tonic.contains("default-features = false"), "{tonic}");
    assert!(
        !tonic.contains("server") && !tonic.contains("router"),
        "{tonic}"
    );
}
