//! Bounded inputs: every unbounded request is refused with a clear code, and a hostile template
//! is stopped in bounded time without slowing the probes.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb, TestServer, add_customer, connect, submit_request, test_config};
use floodgate::api::proto;
use floodgate::api::proto::preferences_client::PreferencesClient;
use floodgate::api::proto::templates_client::TemplatesClient;
use tonic::Code;

const ADMIN: Option<&str> = Some(common::ADMIN_TOKEN);

fn status_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Status {
    result.expect_err("refused")
}

#[tokio::test]
async fn oversized_recipients_are_refused_by_every_rpc_that_takes_one() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "shop", "http://127.0.0.1:9/hook").await;
    let huge = "r".repeat(4 * 1024 * 1024);

    let mut dispatcher = server.dispatcher().await;
    let status = status_of(
        dispatcher
            .list_notifications(proto::ListNotificationsRequest {
                customer_id: "shop".into(),
                recipient: huge.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("recipient"), "{status:?}");

    let mut preferences = PreferencesClient::new(connect(&server.grpc_url, ADMIN).await);
    let status = status_of(
        preferences
            .get_preferences(proto::GetPreferencesRequest {
                customer_id: "shop".into(),
                recipient: huge.clone(),
            })
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let status = status_of(dispatcher.submit(submit_request("shop", "k", &huge)).await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = status_of(dispatcher.submit(submit_request("shop", &huge, "u")).await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("idempotency_key"),
        "{status:?}"
    );
}

#[tokio::test]
async fn schedules_beyond_the_horizon_are_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "shop", "http://127.0.0.1:9/hook").await;
    let mut dispatcher = server.dispatcher().await;
    let year_9999 = prost_types::Timestamp {
        seconds: 253_402_300_799,
        nanos: 0,
    };
    for (field, request) in [
        (
            "send_at",
            proto::SubmitRequest {
                send_at: Some(year_9999),
                ..submit_request("shop", "late", "u")
            },
        ),
        (
            "expires_at",
            proto::SubmitRequest {
                expires_at: Some(year_9999),
                ..submit_request("shop", "forever", "u")
            },
        ),
    ] {
        let status = status_of(dispatcher.submit(request).await);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
    // Within the horizon is fine.
    let soon = prost_types::Timestamp {
        seconds: (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600) as i64,
        nanos: 0,
    };
    dispatcher
        .submit(proto::SubmitRequest {
            send_at: Some(soon),
            ..submit_request("shop", "in-an-hour", "u")
        })
        .await
        .expect("an hour ahead is accepted");
}

#[tokio::test]
async fn a_customer_over_its_backlog_quota_gets_resource_exhausted() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.max_backlog_per_customer = 5;
    let server = TestServer::start(cfg).await;
    add_customer(&server.grpc_url, "shop", "http://127.0.0.1:9/hook").await;
    add_customer(&server.grpc_url, "other", "http://127.0.0.1:9/hook").await;
    let mut customers = server.customers().await;
    for id in ["shop", "other"] {
        customers
            .pause_customer(proto::PauseCustomerRequest {
                customer_id: id.into(),
            })
            .await
            .unwrap();
    }
    let mut dispatcher = server.dispatcher().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let accepted = dispatcher
            .submit(submit_request("shop", &format!("k{i}"), "u"))
            .await
            .expect("within the quota");
        ids.push(accepted.into_inner().notification_id);
    }
    let status = status_of(dispatcher.submit(submit_request("shop", "k5", "u")).await);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("waiting"), "{status:?}");
    // In a batch the item is refused on its own.
    let results = dispatcher
        .submit_batch(proto::SubmitBatchRequest {
            requests: vec![
                submit_request("shop", "k6", "u"),
                submit_request("other", "k0", "u"),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    match &results[0].outcome {
        Some(proto::submit_result::Outcome::Error(err)) => {
            assert_eq!(err.code, Code::ResourceExhausted as i32, "{err:?}")
        }
        other => panic!("over the quota: {other:?}"),
    }
    let metrics = common::metrics_page(server.http_addr).await;
    assert!(
        metrics.contains("floodgate_backlog_quota_refused_total{customer=\"shop\"} 2"),
        "the refusals are counted per customer: {metrics}"
    );
    assert!(
        matches!(
            results[1].outcome,
            Some(proto::submit_result::Outcome::Accepted(_))
        ),
        "another customer is not affected: {results:?}"
    );

    // Once the backlog shrinks, the store is counted again and the customer is admitted.
    for id in &ids[..2] {
        dispatcher
            .cancel_notification(proto::CancelNotificationRequest {
                notification_id: id.clone(),
            })
            .await
            .expect("a pending notification can be cancelled");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match dispatcher.submit(submit_request("shop", "k7", "u")).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still refused 10 s after the backlog shrank: {status:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("unexpected answer: {status:?}"),
        }
    }
}

async fn save_template(server: &TestServer, id: &str, body: &str) {
    let mut templates = TemplatesClient::new(connect(&server.grpc_url, ADMIN).await);
    templates
        .upsert_template(proto::UpsertTemplateRequest {
            template: Some(proto::Template {
                customer_id: "shop".into(),
                template_id: id.into(),
                contents: vec![proto::TemplateContent {
                    channel: proto::Channel::Webhook as i32,
                    subject: String::new(),
                    body: body.into(),
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_templates_are_refused_in_bounded_time_while_healthz_answers() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "shop", "http://127.0.0.1:9/hook").await;
    // ~10 GB of output, and a loop that writes nothing but never ends in practice.
    save_template(
        &server,
        "huge",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    )
    .await;
    save_template(
        &server,
        "spin",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    .await;

    let healthz = format!("http://{}/healthz", server.http_addr);
    let probe = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut slowest = Duration::ZERO;
        for _ in 0..40 {
            let started = Instant::now();
            let response = client.get(&healthz).send().await.unwrap();
            assert!(response.status().is_success());
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        slowest
    });
    let started = Instant::now();
    let mut submits = Vec::new();
    for (i, template) in ["huge", "spin", "huge", "spin"].iter().enumerate() {
        let url = server.grpc_url.clone();
        let template = (*template).to_owned();
        submits.push(tokio::spawn(async move {
            let mut dispatcher = floodgate::api::proto::dispatcher_client::DispatcherClient::new(
                connect(&url, ADMIN).await,
            );
            dispatcher
                .submit(proto::SubmitRequest {
                    payload: Vec::new(),
                    template_id: template,
                    variables: Some(prost_types::Struct::default()),
                    ..submit_request("shop", &format!("t{i}"), "u")
                })
                .await
        }));
    }
    for submit in submits {
        let status = status_of(submit.await.unwrap());
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("variables"), "{status:?}");
    }
    let refused_in = started.elapsed();
    let slowest = probe.await.unwrap();
    eprintln!(
        "4 hostile renders refused in {refused_in:?}; slowest /healthz meanwhile {slowest:?}"
    );
    // Generous bounds for a shared CI machine; the figures above are the measurement.
    assert!(refused_in < Duration::from_secs(5), "{refused_in:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}

#[tokio::test]
async fn a_slowloris_client_is_disconnected_at_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.http_header_read_timeout = Duration::from_millis(300);
    let server = TestServer::start(cfg).await;
    let mut slow = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // The server closes the connection (perhaps after a 408); the read ends either way.
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is still open after 3 s");
    eprintln!(
        "half-sent headers: connection closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_connections_over_the_cap_wait_for_a_place() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.http_max_connections = 1;
    let server = TestServer::start(cfg).await;
    let healthz = format!("http://{}/healthz", server.http_addr);
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap()
    };
    client()
        .get(&healthz)
        .send()
        .await
        .expect("served below the cap");
    let holder = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    // Give the server a moment to accept the holder, then the next one must wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if client().get(&healthz).send().await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a connection over the cap was served"
        );
    }
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client().get(&healthz).send().await.is_err() {
        assert!(Instant::now() < deadline, "the freed place was not reused");
    }
}

/// An SMTP server that answers every command correctly, each after `delay`: each command is
/// within the per-command timeout, the whole dialogue is not.
async fn slow_smtp(delay: Duration) -> u16 {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 slow.smtp ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match line.to_ascii_uppercase() {
                        _ if in_data && line != "." => continue,
                        _ if in_data => {
                            in_data = false;
                            "250 queued"
                        }
                        l if l.starts_with("EHLO") => "250-slow.smtp\r\n250 AUTH PLAIN",
                        l if l.starts_with("AUTH") => "235 accepted",
                        l if l.starts_with("DATA") => {
                            in_data = true;
                            "354 go on"
                        }
                        l if l.starts_with("QUIT") => "221 bye",
                        _ => "250 ok",
                    };
                    tokio::time::sleep(delay).await;
                    if write
                        .write_all(format!("{answer}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_attempt_is_bounded_as_a_whole() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.webhook_timeout = Duration::from_secs(1);
    let server = TestServer::start(cfg).await;
    let port = slow_smtp(Duration::from_millis(600)).await;
    server
        .customers()
        .await
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(proto::Customer {
                id: "mailer".into(),
                webhook_url: "http://127.0.0.1:9/hook".into(),
                email: Some(proto::EmailSettings {
                    smtp_host: "127.0.0.1".into(),
                    smtp_port: u32::from(port),
                    username: "user".into(),
                    password: "secret".into(),
                    from: "floodgate@example.com".into(),
                    tls: proto::EmailTls::None as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut dispatcher = server.dispatcher().await;
    let id = dispatcher
        .submit(proto::SubmitRequest {
            channel: proto::Channel::Email as i32,
            payload: br#"{"subject":"Hi","body":"Hello"}"#.to_vec(),
            ..submit_request("mailer", "slow", "alice@example.com")
        })
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        let n = dispatcher
            .get_notification(proto::GetNotificationRequest {
                notification_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if !n.last_error.is_empty() {
            break n;
        }
        assert!(Instant::now() < deadline, "no attempt ended: {n:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        n.last_error.contains("longer than"),
        "the attempt was cut as a whole: {}",
        n.last_error
    );
}
