//! Bad input and bad credentials: the right gRPC code naming the field, and nothing stored.

mod common;

use common::{
    ADMIN_TOKEN, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, add_customer, submit_request,
    test_config,
};
use floodgate::api::proto;
use tonic::Code;

async fn bad_input_is_rejected_and_nothing_is_stored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await; // payload limit: 1024 bytes
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;

    let ok = || submit_request("acme", "k", "u");
    let cases: Vec<(proto::SubmitRequest, Code, &str)> = vec![
        (
            proto::SubmitRequest {
                customer_id: String::new(),
                ..ok()
            },
            Code::InvalidArgument,
            "customer_id",
        ),
        (
            proto::SubmitRequest {
                customer_id: "x".repeat(200),
                ..ok()
            },
            Code::InvalidArgument,
            "customer_id",
        ),
        (
            proto::SubmitRequest {
                idempotency_key: String::new(),
                ..ok()
            },
            Code::InvalidArgument,
            "idempotency_key",
        ),
        (
            proto::SubmitRequest {
                idempotency_key: "k".repeat(300),
                ..ok()
            },
            Code::InvalidArgument,
            "idempotency_key",
        ),
        (
            proto::SubmitRequest {
                recipient: String::new(),
                ..ok()
            },
            Code::InvalidArgument,
            "recipient",
        ),
        (
            proto::SubmitRequest {
                payload: vec![b'x'; 1025],
                ..ok()
            },
            Code::InvalidArgument,
            "payload",
        ),
        (
            proto::SubmitRequest { lane: 42, ..ok() },
            Code::InvalidArgument,
            "lane",
        ),
        (
            proto::SubmitRequest {
                customer_id: "ghost".into(),
                ..ok()
            },
            Code::NotFound,
            "ghost",
        ),
    ];
    for (request, code, named) in cases {
        let status = client.submit(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(named),
            "message {:?} should name {named}",
            status.message()
        );
    }

    let too_many = proto::SubmitBatchRequest {
        requests: (0..1001)
            .map(|i| submit_request("acme", &i.to_string(), "u"))
            .collect(),
    };
    let status = client.submit_batch(too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("requests"));

    let status = client
        .get_notification(proto::GetNotificationRequest {
            notification_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // An id the server never handed out names nothing, whatever it looks like.
    for unknown in ["not-a-number", "999999"] {
        let status = client
            .get_notification(proto::GetNotificationRequest {
                notification_id: unknown.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{unknown}");
    }

    let mut customers = server.customers().await;
    for (url, field) in [
        ("ftp://example.com/x", "webhook_url"),
        ("not a url", "webhook_url"),
    ] {
        let customer = proto::Customer {
            id: "bad".into(),
            webhook_url: url.into(),
            ..Default::default()
        };
        let status = customers
            .upsert_customer(proto::UpsertCustomerRequest {
                customer: Some(customer),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field));
    }
    let secretless = proto::Customer {
        id: "bad".into(),
        webhook_url: receiver.url.clone(),
        signing_secret: "plain-text".into(),
        ..Default::default()
    };
    let status = customers
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(secretless),
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("signing_secret"));
    let listed = customers
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.customers.len(), 1, "no bad customer was written");

    assert_eq!(
        db.notification_rows().await,
        0,
        "no bad notification was written"
    );
    server.stop().await.unwrap();
}
on_both_backends!(bad_input_is_rejected_and_nothing_is_stored);

#[tokio::test]
async fn tokens_guard_the_api() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;

    let status = server
        .dispatcher_with(None)
        .await
        .submit(submit_request("acme", "k", "u"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = server
        .dispatcher_with(Some("wrong"))
        .await
        .submit(submit_request("acme", "k", "u"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // The submit token may submit, but not manage customers.
    server
        .dispatcher_with(Some(SUBMIT_TOKEN))
        .await
        .submit(submit_request("acme", "k", "u"))
        .await
        .unwrap();
    let status = server
        .customers_with(Some(SUBMIT_TOKEN))
        .await
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server
        .customers_with(Some(ADMIN_TOKEN))
        .await
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn zero_config_start_generates_and_keeps_an_admin_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.admin_token = None;
    let server = TestServer::start(cfg.clone()).await;
    let path = db.dir.path().join("admin-token");
    let token = {
        // The file is written during start-up; wait for the server to answer first.
        let _ = server
            .dispatcher_with(None)
            .await
            .get_notification(proto::GetNotificationRequest::default())
            .await;
        std::fs::read_to_string(&path).unwrap().trim().to_owned()
    };
    assert!(token.len() >= 32);
    let mut customers = server.customers_with(Some(&token)).await;
    customers
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap();
    let status = server
        .customers_with(None)
        .await
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await.unwrap();

    // A restart keeps the same token.
    let server = TestServer::start(cfg).await;
    server
        .customers_with(Some(&token))
        .await
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let channel = common::connect(&server.grpc_url, None).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let ready = reqwest::get(format!("http://{}/readyz", server.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    server.stop().await.unwrap();
}

/// With the database unreachable (the network to it cut), submits fail with UNAVAILABLE and
/// nothing is stored; once it is reachable again, submits succeed. PostgreSQL only: the cut is a
/// real TCP proxy between floodgate and the database that the test severs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_unavailable_and_acknowledges_nothing() {
    if common::postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL is not set, so the database outage test did not run");
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = common::TcpProxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let mut cfg = test_config(&db);
    cfg.database_url = Some(url.to_string());
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;
    client
        .submit(submit_request("acme", "before", "u"))
        .await
        .unwrap();

    proxy.cut();
    let status = client
        .submit(submit_request("acme", "during", "u"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        if client
            .submit(submit_request("acme", "after", "u"))
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(recovered, "submits work again once the database is back");
    assert_eq!(
        db.notification_rows().await,
        2,
        "the refused submit left no row"
    );
    server.stop().await.unwrap();
}
