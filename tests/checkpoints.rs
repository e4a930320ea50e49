//! Learned controller state survives a restart: a customer's actor resumes at the limit its
//! controller had learned, not from slow start.

mod common;

use std::time::Duration;

use common::{
    Backend, Receiver, TestDb, TestServer, add_customer, customer_stats, submit_many, test_config,
};
use floodgate::api::proto::Lane;

/// The customer's live concurrency limit, as the server reports it.
async fn limit(server: &TestServer, customer: &str) -> u32 {
    customer_stats(&mut server.customers().await, customer)
        .await
        .concurrency_limit
}

async fn a_restarted_node_resumes_the_learned_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    // Eight requests at once, 20 ms each: the controller learns a limit well above slow start's 1.
    receiver.set_capacity(8, Duration::from_millis(20), 2);
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;
    submit_many(&mut client, "acme", Lane::Transactional, "learn", 800).await;
    receiver.wait_for(800, Duration::from_secs(60)).await;
    let learned = limit(&server, "acme").await;
    assert!(
        learned >= 4,
        "the controller learned a limit of only {learned}"
    );
    server.stop().await.unwrap();

    let server = TestServer::start(test_config(&db)).await;
    let mut client = server.dispatcher().await;
    submit_many(&mut client, "acme", Lane::Transactional, "after", 1).await;
    receiver.wait_for(801, Duration::from_secs(10)).await;
    let resumed = limit(&server, "acme").await;
    eprintln!("limit learned {learned}, after the restart {resumed}");
    // A fresh controller would be at 1 or 2 after one delivery.
    assert!(
        resumed + 1 >= learned,
        "resumed at {resumed}, had learned {learned}"
    );
    server.stop().await.unwrap();
}
on_both_backends!(a_restarted_node_resumes_the_learned_limit);
