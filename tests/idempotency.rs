//! The Redis idempotency fast path: a repeated key is answered from Redis, even while the
//! database is unreachable, and only when the content matches; new keys and changed content
//! still need the database. Runs when both `DATABASE_URL` and `REDIS_URL` are set (the cut is a
//! real TCP proxy between floodgate and PostgreSQL).

mod common;

use common::{Receiver, TestDb, TestServer, add_customer, submit_request, test_config};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_answered_from_redis_without_the_database() {
    let (Some(_), Ok(redis_url)) = (common::postgres_url(), std::env::var("REDIS_URL")) else {
        eprintln!("skipped: DATABASE_URL and REDIS_URL are both needed for the fast-path test");
        return;
    };
    let db = TestDb::new(common::Backend::Postgres).await;
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = common::TcpProxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let mut cfg = test_config(&db);
    cfg.database_url = Some(url.to_string());
    cfg.redis_url = Some(redis_url.clone());
    let prefix = format!("fg-test-{:08x}:", rand::random::<u32>());
    cfg.redis_prefix = prefix.clone();
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;

    let first = client
        .submit(submit_request("acme", "order-1", "u"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    // Redis remembers the key with the row id the database gave (not the id callers see),
    // right after the caller was answered.
    let redis = redis::Client::open(redis_url).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let mut remembered = None;
    for _ in 0..100 {
        remembered = redis::cmd("GET")
            .arg(format!("{prefix}idem:4:acme:order-1"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if remembered.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let remembered: String = remembered.expect("the key is in Redis within 5 s");
    let (row_id, _fingerprint) = remembered.split_once('|').expect("id|fingerprint");
    assert!(row_id.parse::<i64>().is_ok(), "{remembered}");

    proxy.cut();
    let repeat = client
        .submit(submit_request("acme", "order-1", "u"))
        .await
        .expect("a known repeat needs no database")
        .into_inner();
    assert!(repeat.duplicate);
    assert_eq!(repeat.notification_id, first.notification_id);

    let new_key = client
        .submit(submit_request("acme", "order-2", "u"))
        .await
        .unwrap_err();
    assert_eq!(new_key.code(), Code::Unavailable, "{new_key:?}");
    let changed = client
        .submit(proto_with_payload("order-1", br#"{"other":1}"#))
        .await
        .unwrap_err();
    assert_eq!(
        changed.code(),
        Code::Unavailable,
        "changed content goes to the database"
    );

    proxy.restore();
    let mut conflict = None;
    for _ in 0..50 {
        match client
            .submit(proto_with_payload("order-1", br#"{"other":1}"#))
            .await
        {
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => {
                conflict = Some(other);
                break;
            }
        }
    }
    let conflict = conflict.expect("the database came back").unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    assert_eq!(db.notification_rows().await, 1);
    server.stop().await.unwrap();
}

fn proto_with_payload(key: &str, payload: &[u8]) -> floodgate::api::proto::SubmitRequest {
    floodgate::api::proto::SubmitRequest {
        payload: payload.to_vec(),
        ..submit_request("acme", key, "u")
    }
}
