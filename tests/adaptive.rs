//! The adaptive dispatcher over real HTTP: each customer system is sent about what it can take,
//! a dead one does not slow a healthy one, a bulk flood does not delay transactional
//! notifications, and a panicking actor is restarted without losing anything.
//!
//! These are behaviour checks with generous margins; the precise figures live in BENCHMARKS.md.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    Backend, Receiver, TestDb, TestServer, add_customer, customer_stats, hanging_endpoint,
    submit_many, test_config,
};
use floodgate::api::proto::{self, Lane};
use tokio::time::Instant;

/// Waits until `receiver` has `count` deliveries; returns how long that took.
async fn time_until(receiver: &Receiver, count: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    receiver.wait_for(count, limit).await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customer_gets_close_to_its_capacity() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    // Capacities: 2 workers x 20 ms = 100/s, and 8 workers x 20 ms = 400/s.
    let small = Receiver::start().await;
    small.set_capacity(2, Duration::from_millis(20), 2);
    let large = Receiver::start().await;
    large.set_capacity(8, Duration::from_millis(20), 8);
    add_customer(&server.grpc_url, "small", &small.url).await;
    add_customer(&server.grpc_url, "large", &large.url).await;
    let mut client = server.dispatcher().await;
    submit_many(&mut client, "small", Lane::Transactional, "s", 600).await;
    submit_many(&mut client, "large", Lane::Transactional, "l", 2400).await;

    // Let the controllers find the capacity, then measure goodput over 3 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (small_before, large_before) = (small.received().len(), large.received().len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let small_rate = (small.received().len() - small_before) as f64 / 3.0;
    let large_rate = (large.received().len() - large_before) as f64 / 3.0;
    let (small_rejects, large_rejects) = (small.rejected(), large.rejected());
    eprintln!(
        "goodput: small {small_rate:.0}/s of 100/s ({small_rejects} rejected), large {large_rate:.0}/s of 400/s ({large_rejects} rejected)"
    );
    assert!(
        small_rate >= 60.0,
        "small customer at {small_rate:.0}/s of 100/s"
    );
    assert!(
        large_rate >= 240.0,
        "large customer at {large_rate:.0}/s of 400/s"
    );
    let small_share = small_rejects as f64 / (small.received().len() as f64 + small_rejects as f64);
    let large_share = large_rejects as f64 / (large.received().len() as f64 + large_rejects as f64);
    assert!(
        small_share < 0.1 && large_share < 0.1,
        "rejections {small_share:.3} / {large_share:.3}"
    );

    let stats = customer_stats(&mut server.customers().await, "large").await;
    assert!(
        stats.delivered_per_sec > 0.0 && stats.concurrency_limit >= 1,
        "{stats:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_customer_does_not_slow_a_healthy_one() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await; // webhook timeout: 2 s
    let healthy = Receiver::start().await;
    healthy.set_capacity(4, Duration::from_millis(10), 4);
    add_customer(&server.grpc_url, "healthy", &healthy.url).await;
    let mut client = server.dispatcher().await;

    submit_many(&mut client, "healthy", Lane::Transactional, "alone", 300).await;
    let alone = time_until(&healthy, 300, Duration::from_secs(30)).await;

    let (dead_url, _dead) = hanging_endpoint().await;
    add_customer(&server.grpc_url, "dead", &dead_url).await;
    submit_many(&mut client, "dead", Lane::Transactional, "d", 1000).await;
    submit_many(&mut client, "healthy", Lane::Transactional, "beside", 300).await;
    let beside = time_until(&healthy, 600, Duration::from_secs(30)).await;
    eprintln!(
        "300 deliveries to the healthy customer: {alone:?} alone, {beside:?} beside a dead one"
    );
    assert!(
        beside < alone * 2 + Duration::from_millis(500),
        "alone {alone:?}, beside a dead one {beside:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_flood_does_not_delay_transactional_notifications() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    receiver.set_capacity(2, Duration::from_millis(20), 2); // 100/s
    add_customer(&server.grpc_url, "slow", &receiver.url).await;
    let mut client = server.dispatcher().await;

    submit_many(&mut client, "slow", Lane::Bulk, "campaign", 3000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let urgent: HashSet<String> = submit_many(&mut client, "slow", Lane::Transactional, "bill", 20)
        .await
        .into_iter()
        .collect();
    loop {
        let arrived = receiver
            .received()
            .iter()
            .filter(|d| urgent.contains(&d.webhook_id))
            .count();
        if arrived == urgent.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{arrived} of 20 transactional after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let bulk_done = receiver.received().len() - urgent.len();
    eprintln!(
        "20 transactional behind a 3,000 bulk campaign at 100/s: all delivered in {took:?} ({bulk_done} bulk delivered so far)"
    );
    assert!(bulk_done < 3000, "the campaign was still running");
    // At ~100/s with bulk holding a 10% share, 20 notifications need ~0.25 s of capacity.
    assert!(
        took < Duration::from_secs(2),
        "transactional waited {took:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_start_tier_and_stats_over_the_api() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    let mut customers = server.customers().await;
    let customer = proto::Customer {
        id: "fragile".into(),
        webhook_url: receiver.url.clone(),
        start_tier: proto::Tier::Slow as i32,
        ..Default::default()
    };
    let saved = customers
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saved.start_tier, proto::Tier::Slow as i32);
    // Registering starts no actor: a new customer has nothing to send yet. (The pause is not
    // new, and its actor shows the pause below.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let registered = customer_stats(&mut customers, "fragile").await;
    assert_eq!(registered.tier, proto::Tier::Idle as i32, "{registered:?}");
    let paused = customers
        .pause_customer(proto::PauseCustomerRequest {
            customer_id: "fragile".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);

    let mut client = server.dispatcher().await;
    submit_many(&mut client, "fragile", Lane::Transactional, "p", 5).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        receiver.received().is_empty(),
        "a paused customer is sent nothing"
    );
    let stats = customer_stats(&mut customers, "fragile").await;
    assert_eq!(stats.backlog_transactional, 5, "{stats:?}");
    assert_eq!(stats.tier, proto::Tier::Paused as i32, "{stats:?}");

    customers
        .resume_customer(proto::ResumeCustomerRequest {
            customer_id: "fragile".into(),
        })
        .await
        .unwrap();
    receiver.wait_for(5, Duration::from_secs(10)).await;
    // The receiver sees the last webhook a moment before the actor hears the answer and counts
    // it: poll until the count settles (or the deadline says it never will).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = customer_stats(&mut customers, "fragile").await;
        if stats.delivered_total >= 5 || tokio::time::Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.backlog_transactional, 0);
    assert_eq!(
        stats.tier,
        proto::Tier::Slow as i32,
        "started in the configured tier: {stats:?}"
    );
    assert_eq!(stats.delivered_total, 5);

    let all = customers
        .list_customer_stats(proto::ListCustomerStatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    let status = customers
        .get_customer_stats(proto::GetCustomerStatsRequest {
            customer_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}
