//! Security over real sockets: the outbound target policy (at upsert and at connect, redirects,
//! the allow-list), what `last_error` may hold, and secrets sealed at rest.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::post;
use common::{Backend, Receiver, TestDb, TestServer, add_customer, submit_request, test_config};
use floodgate::api::proto;
use floodgate::api::proto::State;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

/// A server whose allow-list is `allow` (the test default opens all of loopback).
async fn server_allowing(db: &TestDb, allow: &[&str]) -> TestServer {
    let mut cfg = test_config(db);
    cfg.allow_target_cidr = allow.iter().map(|c| c.parse().unwrap()).collect();
    TestServer::start(cfg).await
}

async fn upsert(server: &TestServer, customer: proto::Customer) -> Result<(), tonic::Status> {
    server
        .customers()
        .await
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .map(drop)
}

fn webhook_customer(url: &str) -> proto::Customer {
    proto::Customer {
        id: "acme".into(),
        webhook_url: url.into(),
        ..Default::default()
    }
}

/// Submits one webhook notification to `acme` and waits for it to end in `state`.
async fn deliver_one(server: &TestServer, state: State) -> proto::Notification {
    let mut client = server.dispatcher().await;
    let id = client
        .submit(submit_request("acme", "k1", "user-1"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    common::wait_for_state(&mut client, &id, state, WAIT).await
}

/// An HTTP server on `addr` that answers every POST with `status`, `headers` and `body`.
async fn answering(
    addr: &str,
    status: u16,
    headers: Vec<(header::HeaderName, String)>,
    body: &'static str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let headers = headers.clone();
            async move {
                let mut response = axum::response::Response::new(axum::body::Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Every non-public address class is refused at upsert, in every field that names a target,
/// with INVALID_ARGUMENT naming the field and the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blocked_class_is_refused_at_upsert() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_allowing(&db, &[]).await;
    for (url, class) in [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://10.0.0.1/hook", "private"),
        ("http://172.16.5.4/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://100.64.0.1/hook", "CGNAT"),
        ("http://[fd00::1]/hook", "unique local"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0:8080/hook", "unspecified"),
        ("http://[::]/hook", "unspecified"),
    ] {
        let status = upsert(&server, webhook_customer(url)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{url}");
        assert!(
            status.message().starts_with("customer.webhook_url:")
                && status.message().contains(class),
            "{url}: {}",
            status.message()
        );
    }
    let sms = proto::Customer {
        sms: Some(proto::SmsSettings {
            base_url: "http://10.1.2.3".into(),
            account_sid: "AC1".into(),
            auth_token: "token".into(),
            from: "+14155550100".into(),
        }),
        ..webhook_customer("https://hooks.example.com/")
    };
    let status = upsert(&server, sms).await.unwrap_err();
    assert!(
        status.message().starts_with("customer.sms.base_url:"),
        "{status:?}"
    );
    let email = proto::Customer {
        email: Some(proto::EmailSettings {
            smtp_host: "169.254.169.254".into(),
            from: "a@example.com".into(),
            tls: proto::EmailTls::Tls as i32,
            ..Default::default()
        }),
        ..webhook_customer("https://hooks.example.com/")
    };
    let status = upsert(&server, email).await.unwrap_err();
    assert!(
        status.message().starts_with("customer.email.smtp_host:")
            && status.message().contains("link-local"),
        "{status:?}"
    );
    // A public target and a host name are accepted (a name is checked at every connection).
    upsert(&server, webhook_customer("https://93.184.216.34/hook"))
        .await
        .unwrap();
    upsert(&server, webhook_customer("http://localhost:1/hook"))
        .await
        .unwrap();
    server.stop().await.unwrap();
}

/// A host name that resolves to 127.0.0.1 passes the upsert but is refused when connecting: the
/// receiver never sees a request, and the notification fails at once naming the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_at_connect() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_allowing(&db, &[]).await;
    let receiver = Receiver::start().await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    add_customer(&server.grpc_url, "acme", &url).await;
    let failed = deliver_one(&server, State::Failed).await;
    assert_eq!(failed.attempts, 1, "a refused target is not retried");
    assert!(
        failed
            .last_error
            .contains("127.0.0.1 is a loopback address"),
        "{}",
        failed.last_error
    );
    assert!(receiver.received().is_empty());
    server.stop().await.unwrap();
}

/// The same name is reached once the operator allows loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_opens_a_blocked_network() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = server_allowing(&db, &["127.0.0.0/8"]).await;
    let receiver = Receiver::start().await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    add_customer(&server.grpc_url, "acme", &url).await;
    deliver_one(&server, State::Delivered).await;
    assert_eq!(receiver.received().len(), 1);
    server.stop().await.unwrap();
}

/// A 302 to a private address is not followed: the notification fails with the status alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_private_address_is_not_followed() {
    let db = TestDb::new(Backend::Sqlite).await;
    // Only the redirecting receiver's address is open; 127.0.0.2 stays refused.
    let server = server_allowing(&db, &["127.0.0.1/32"]).await;
    let inner = Receiver::start_on("127.0.0.2:0".parse().unwrap()).await;
    let (outer, _task) = answering(
        "127.0.0.1:0",
        302,
        vec![(header::LOCATION, inner.url.clone())],
        "",
    )
    .await;
    add_customer(&server.grpc_url, "acme", &format!("http://{outer}/hook")).await;
    let failed = deliver_one(&server, State::Failed).await;
    assert_eq!(failed.last_error, "HTTP 302 Found");
    assert!(inner.received().is_empty());
    server.stop().await.unwrap();
}

/// Whatever a target answers stays out of `last_error`: the status and its reason phrase only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_error_holds_no_answer_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let (addr, _task) = answering("127.0.0.1:0", 400, vec![], "internal-secret-42").await;
    add_customer(&server.grpc_url, "acme", &format!("http://{addr}/hook")).await;
    let failed = deliver_one(&server, State::Failed).await;
    assert_eq!(failed.last_error, "HTTP 400 Bad Request");
    server.stop().await.unwrap();
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The zero-configuration start keeps its secrets owner-only: the data directory is 0700 (even
/// one created 0755 beforehand), the database with its WAL and shared-memory files and the
/// generated admin token are 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = TestDb::new(Backend::Sqlite).await;
    let data = db.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = test_config(&db);
    cfg.data_dir = data.clone();
    cfg.database_url = None;
    cfg.admin_token = None;
    let token_file = data.join(floodgate::config::ADMIN_TOKEN_FILE);
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    // Wait for the server to be up (it writes the token file before it serves).
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(&token_file)
            && !token.trim().is_empty()
        {
            break token.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut customers = server.customers_with(Some(&token)).await;
    customers
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(webhook_customer(&receiver.url)),
        })
        .await
        .unwrap();
    let mut client = server.dispatcher_with(Some(&token)).await;
    let id = client
        .submit(submit_request("acme", "k1", "user-1"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    common::wait_for_state(&mut client, &id, State::Delivered, WAIT).await;

    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&token_file), 0o600);
    for file in floodgate::private_files::sqlite_files(&data.join("floodgate.db")) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    server.stop().await.unwrap();
}

/// The configured metrics token opens /metrics and nothing on gRPC; health answers without a
/// token; reflection is off when `--grpc-reflection false`, on by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_health_and_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    async fn reflection(url: &str) -> Result<(), tonic::Status> {
        let channel = common::connect(url, None).await;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        answers.message().await.map(drop)
    }

    let db = TestDb::new(Backend::Sqlite).await;
    let token_file = db.dir.path().join("prometheus-token");
    std::fs::write(&token_file, "scrape-only-token\n").unwrap();
    let mut cfg = test_config(&db);
    cfg.metrics_token_file = Some(token_file);
    cfg.grpc_reflection = false;
    let server = TestServer::start(cfg).await;

    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", server.http_addr))
        .bearer_auth("scrape-only-token")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let denied = server
        .dispatcher_with(Some("scrape-only-token"))
        .await
        .get_notification(proto::GetNotificationRequest {
            notification_id: "1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    let health = tonic_health::pb::health_client::HealthClient::new(
        common::connect(&server.grpc_url, None).await,
    )
    .check(tonic_health::pb::HealthCheckRequest::default())
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let off = reflection(&server.grpc_url).await.unwrap_err();
    assert_eq!(off.code(), tonic::Code::Unimplemented);
    server.stop().await.unwrap();

    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    reflection(&server.grpc_url).await.unwrap();
    server.stop().await.unwrap();
}

fn sms_settings(base_url: &str, auth_token: &str) -> proto::Customer {
    proto::Customer {
        sms: Some(proto::SmsSettings {
            base_url: base_url.into(),
            account_sid: "AC1".into(),
            auth_token: auth_token.into(),
            from: "+14155550100".into(),
        }),
        ..webhook_customer("https://hooks.example.com/")
    }
}

fn email_settings(host: &str, password: &str, tls: proto::EmailTls) -> proto::Customer {
    proto::Customer {
        email: Some(proto::EmailSettings {
            smtp_host: host.into(),
            smtp_port: 587,
            username: "mailer".into(),
            password: password.into(),
            from: "a@example.com".into(),
            tls: tls as i32,
        }),
        ..webhook_customer("https://hooks.example.com/")
    }
}

fn field_error(status: tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status.message().to_owned()
}

/// A stored provider secret never follows a new endpoint: changing the SMS base URL or the SMTP
/// host without sending the secret again is INVALID_ARGUMENT; the same endpoint keeps it; SMTP
/// credentials over plain text need the operator's opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_secrets_stay_with_their_endpoint() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.allow_plaintext_smtp_auth = false;
    let server = TestServer::start(cfg).await;
    let starttls = proto::EmailTls::Starttls;

    upsert(&server, sms_settings("https://sms.example.com", "tok"))
        .await
        .unwrap();
    // Same endpoint, secret left out: kept.
    upsert(&server, sms_settings("https://sms.example.com", ""))
        .await
        .unwrap();
    let moved = upsert(&server, sms_settings("https://attacker.example", ""))
        .await
        .unwrap_err();
    assert!(
        field_error(moved).starts_with("customer.sms.auth_token: must be sent again"),
        "moved"
    );
    upsert(&server, sms_settings("https://sms2.example.com", "tok2"))
        .await
        .unwrap();

    upsert(&server, email_settings("smtp.example.com", "pw", starttls))
        .await
        .unwrap();
    upsert(&server, email_settings("smtp.example.com", "", starttls))
        .await
        .unwrap();
    let moved = upsert(
        &server,
        email_settings("smtp.attacker.example", "", starttls),
    )
    .await
    .unwrap_err();
    assert!(field_error(moved).starts_with("customer.email.password: must be sent again"));
    // Dropping TLS is a new endpoint too, and plain text with a password needs the opt-in.
    let downgraded = upsert(
        &server,
        email_settings("smtp.example.com", "", proto::EmailTls::None),
    )
    .await
    .unwrap_err();
    assert!(field_error(downgraded).starts_with("customer.email.password"));
    let plaintext = upsert(
        &server,
        email_settings("smtp.example.com", "pw", proto::EmailTls::None),
    )
    .await
    .unwrap_err();
    assert!(field_error(plaintext).starts_with("customer.email.tls:"));
    server.stop().await.unwrap();
}

/// The SQLite database's bytes (main file and WAL) after a checkpoint, for looking for secrets.
async fn database_bytes(db: &TestDb) -> Vec<u8> {
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
    let main = db.dir.path().join("floodgate.db");
    let mut bytes = std::fs::read(&main).unwrap();
    if let Ok(wal) = std::fs::read(main.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Registers `acme` (webhook to `receiver`, and an SMS channel whose token must be sealed too);
/// returns the signing secret from the answer.
async fn register_with_secrets(server: &TestServer, receiver: &Receiver) -> String {
    let customer = proto::Customer {
        webhook_url: receiver.url.clone(),
        ..sms_settings("https://sms.example.com", SMS_TOKEN)
    };
    server
        .customers()
        .await
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .unwrap()
        .into_inner()
        .signing_secret
}

const SMS_TOKEN: &str = "sms-auth-token-7f3a9c";

/// Submits one webhook to `acme` and checks that the `count`th arrival verifies with `secret`.
async fn delivered_signed_with(
    server: &TestServer,
    receiver: &Receiver,
    count: usize,
    secret: &str,
) {
    server
        .dispatcher()
        .await
        .submit(submit_request("acme", &format!("sealed-{count}"), "u"))
        .await
        .unwrap();
    let arrived = receiver.wait_for(count, WAIT).await;
    assert!(
        arrived[count - 1].verifies_with(secret),
        "webhook {count} is not signed with the expected secret"
    );
}

/// Secrets are sealed in the database: neither the signing secret (nor its key bytes) nor a
/// provider token appear in the SQLite file, the key file is owner-only, and after a restart the
/// server still opens them and signs with the same secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_survive_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;

    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    let secret = register_with_secrets(&server, &receiver).await;
    assert!(secret.starts_with("whsec_"));
    delivered_signed_with(&server, &receiver, 1, &secret).await;
    server.stop().await.unwrap();

    let key_file = db.dir.path().join("secrets-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let bytes = database_bytes(&db).await;
    assert!(holds(&bytes, "acme"), "the file is the database");
    for hidden in [
        secret.as_str(),
        secret.trim_start_matches("whsec_"),
        SMS_TOKEN,
    ] {
        assert!(!holds(&bytes, hidden), "{hidden} is in the database file");
    }

    let server = TestServer::start(test_config(&db)).await;
    delivered_signed_with(&server, &receiver, 2, &secret).await;
    server.stop().await.unwrap();
}

/// Secrets stored in plain text by an older version keep working and are sealed at the next
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_secrets_from_before_are_sealed_at_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    register_with_secrets(&server, &receiver).await;
    server.stop().await.unwrap();

    let plain = floodgate::sink::signature::generate_secret();
    let changed = db
        .execute(&format!(
            "UPDATE customers SET signing_secret = '{plain}' WHERE id = 'acme'"
        ))
        .await;
    assert_eq!(changed, 1);
    assert!(holds(&database_bytes(&db).await, &plain));

    let server = TestServer::start(test_config(&db)).await;
    delivered_signed_with(&server, &receiver, 1, &plain).await;
    server.stop().await.unwrap();
    assert!(
        !holds(&database_bytes(&db).await, &plain),
        "sealed at start"
    );
}

/// A new secrets key with the old one as --secrets-key-file-previous: everything still opens and
/// is sealed again with the new key, after which the old key is no longer needed, and a server
/// with only the old key refuses to start, naming the problem.
async fn a_rotated_secrets_key_takes_over_from_the_previous_one(backend: Backend) {
    use base64::Engine as _;

    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    let secret = register_with_secrets(&server, &receiver).await;
    server.stop().await.unwrap();

    let old_key = db.dir.path().join("secrets-key");
    let new_key = db.dir.path().join("secrets-key-2");
    let fresh: [u8; 32] = rand::random();
    std::fs::write(
        &new_key,
        base64::engine::general_purpose::STANDARD.encode(fresh),
    )
    .unwrap();
    let mut rotated = test_config(&db);
    rotated.secrets_key_file = Some(new_key.clone());
    rotated.secrets_key_file_previous = Some(old_key.clone());
    let server = TestServer::start(rotated).await;
    delivered_signed_with(&server, &receiver, 1, &secret).await;
    server.stop().await.unwrap();

    let mut new_only = test_config(&db);
    new_only.secrets_key_file = Some(new_key);
    let server = TestServer::start(new_only).await;
    delivered_signed_with(&server, &receiver, 2, &secret).await;
    server.stop().await.unwrap();

    let mut old_only = test_config(&db);
    old_only.secrets_key_file = Some(old_key);
    let listeners = floodgate::Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let refused = floodgate::run(old_only, listeners, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("neither --secrets-key-file nor --secrets-key-file-previous"),
        "{refused}"
    );
}
on_both_backends!(a_rotated_secrets_key_takes_over_from_the_previous_one);
