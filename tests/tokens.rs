//! Scoped submit tokens over real sockets: created, listed and revoked through the `Tokens`
//! service; a scoped token submits and reads for its own customers, and everything of another
//! customer is NOT_FOUND, exactly as if it did not exist.

mod common;

use std::time::Duration;

use common::{
    ADMIN_TOKEN, Authed, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, add_customer,
    connect, submit_request, test_config,
};
use floodgate::api::proto;
use floodgate::api::proto::archive_client::ArchiveClient;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::preferences_client::PreferencesClient;
use floodgate::api::proto::tokens_client::TokensClient;
use tonic::Code;

/// Longer than the documented bound on revocation (5 s on every node, 15 s for a node cut off
/// from its database), so a poll that reaches it has found a bug.
const REVOCATION_BOUND: Duration = Duration::from_secs(20);

/// floodgate-client, authenticated as the admin (for its typed token methods).
async fn admin(server: &TestServer) -> floodgate_client::Client {
    connect(&server.grpc_url, Some(ADMIN_TOKEN)).await; // waits until the server answers
    floodgate_client::Client::builder(server.grpc_url.as_str())
        .token(ADMIN_TOKEN)
        .connect()
        .await
        .unwrap()
}

async fn dispatcher(server: &TestServer, token: &str) -> DispatcherClient<Authed> {
    server.dispatcher_with(Some(token)).await
}

async fn preferences(server: &TestServer, token: &str) -> PreferencesClient<Authed> {
    PreferencesClient::new(connect(&server.grpc_url, Some(token)).await)
}

/// Creates a token and returns its value.
async fn create(admin: &floodgate_client::Client, name: &str, customers: &[&str]) -> String {
    let created = admin
        .create_token(name, customers.iter().map(|c| (*c).to_owned()).collect())
        .await
        .unwrap();
    let shown = created.scoped_token.unwrap();
    assert_eq!(shown.name, name);
    assert!(shown.created_at.is_some() && shown.last_used_at.is_none());
    assert!(created.token.starts_with("fgt_"), "{}", created.token);
    created.token
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.unwrap_err().code()
}

fn not_found<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    status.message().to_owned()
}

/// Submits one notification, due in an hour (so it stays pending), and returns its id.
async fn submit_later(client: &mut DispatcherClient<Authed>, customer: &str, key: &str) -> String {
    let send_at = floodgate::api::convert::timestamp(floodgate::model::now_millis() + 3_600_000);
    client
        .submit(proto::SubmitRequest {
            send_at: Some(send_at),
            ..submit_request(customer, key, "user-1")
        })
        .await
        .unwrap()
        .into_inner()
        .notification_id
}

fn inbox(customer: &str) -> proto::ListNotificationsRequest {
    proto::ListNotificationsRequest {
        customer_id: customer.into(),
        recipient: "user-1".into(),
        page_size: 0,
        page_token: String::new(),
    }
}

fn opt_out(customer: &str) -> proto::SetPreferenceRequest {
    proto::SetPreferenceRequest {
        preference: Some(proto::Preference {
            customer_id: customer.into(),
            recipient: "user-1".into(),
            opted_out: true,
            ..Default::default()
        }),
    }
}

/// Polls until `token` is refused UNAUTHENTICATED, within [`REVOCATION_BOUND`].
async fn wait_until_refused(server: &TestServer, token: &str, id: &str) {
    let mut client = dispatcher(server, token).await;
    let deadline = tokio::time::Instant::now() + REVOCATION_BOUND;
    loop {
        let answer = client
            .get_notification(proto::GetNotificationRequest {
                notification_id: id.into(),
            })
            .await;
        match answer {
            Err(status) if status.code() == Code::Unauthenticated => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "a revoked token still works: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two tokens, one per customer: each submits and reads its own customer's notifications, and
/// every look at the other customer is answered as if it did not exist.
async fn a_scoped_token_sees_only_its_customers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    let admin = admin(&server).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    add_customer(&server.grpc_url, "globex", &receiver.url).await;
    let token_a = create(&admin, "acme-billing", &["acme"]).await;
    let token_b = create(&admin, "globex-billing", &["globex"]).await;

    // Each token works for its own customer: submit, read, inbox, preferences.
    let mut a = dispatcher(&server, &token_a).await;
    let mine = submit_later(&mut a, "acme", "a-1").await;
    let read = a
        .get_notification(proto::GetNotificationRequest {
            notification_id: mine.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.customer_id, "acme");
    let listed = a
        .list_notifications(inbox("acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.notifications.len(), 1);
    let mut prefs_a = preferences(&server, &token_a).await;
    prefs_a.set_preference(opt_out("acme")).await.unwrap();
    let mut b = dispatcher(&server, &token_b).await;
    let theirs = submit_later(&mut b, "globex", "b-1").await;

    // Another customer's notification is exactly as missing as one that does not exist.
    let get = |id: &str| proto::GetNotificationRequest {
        notification_id: id.into(),
    };
    let foreign = not_found(a.get_notification(get(&theirs)).await);
    assert_eq!(foreign, format!("notification {theirs:?} not found"));
    // An id that names nothing: the same one with its last character changed.
    let mut missing_id = theirs.clone();
    let last = missing_id.pop().unwrap();
    missing_id.push(if last == 'a' { 'b' } else { 'a' });
    let missing = not_found(a.get_notification(get(&missing_id)).await);
    assert_eq!(missing, format!("notification {missing_id:?} not found"));
    // Cancelling it is refused the same way, and leaves it alone.
    let cancel = proto::CancelNotificationRequest {
        notification_id: theirs.clone(),
    };
    not_found(a.cancel_notification(cancel).await);
    let untouched = b.get_notification(get(&theirs)).await.unwrap().into_inner();
    assert_eq!(untouched.state, proto::State::Pending as i32);

    // Another customer, and a customer that does not exist, get the same answer everywhere.
    for customer in ["globex", "no-such-customer"] {
        let expected = format!("customer {customer:?} not found");
        let submitted = a.submit(submit_request(customer, "a-x", "user-1")).await;
        assert_eq!(not_found(submitted), expected);
        let listed = a.list_notifications(inbox(customer)).await;
        assert_eq!(not_found(listed), expected);
        let set = prefs_a.set_preference(opt_out(customer)).await;
        assert_eq!(not_found(set), expected);
        let got = prefs_a
            .get_preferences(proto::GetPreferencesRequest {
                customer_id: customer.into(),
                recipient: "user-1".into(),
            })
            .await;
        assert_eq!(not_found(got), expected);
    }
    // B's opt-out was not set by A's attempt.
    let b_prefs = preferences(&server, &token_b)
        .await
        .get_preferences(proto::GetPreferencesRequest {
            customer_id: "globex".into(),
            recipient: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(b_prefs.preferences.is_empty(), "{b_prefs:?}");

    // A batch mixing customers: the foreign item alone is refused, NOT_FOUND.
    let results = a
        .submit_batch(proto::SubmitBatchRequest {
            requests: vec![
                submit_request("acme", "a-2", "user-1"),
                submit_request("globex", "a-3", "user-1"),
                submit_request("acme", "a-4", "user-1"),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let outcome = |i: usize| results[i].outcome.clone().unwrap();
    use proto::submit_result::Outcome;
    assert!(matches!(outcome(0), Outcome::Accepted(_)));
    match outcome(1) {
        Outcome::Error(error) => {
            assert_eq!(error.code, Code::NotFound as i32);
            assert_eq!(error.message, "customer \"globex\" not found");
        }
        other => panic!("a foreign item was accepted: {other:?}"),
    }
    assert!(matches!(outcome(2), Outcome::Accepted(_)));

    // Admin-only services stay closed to a scoped token; the archive too.
    let mut customers = server.customers_with(Some(&token_a)).await;
    let listed = customers
        .list_customers(proto::ListCustomersRequest {})
        .await;
    assert_eq!(code(listed), Code::PermissionDenied);
    let mut tokens = TokensClient::new(connect(&server.grpc_url, Some(&token_a)).await);
    assert_eq!(
        code(tokens.list_tokens(proto::ListTokensRequest {}).await),
        Code::PermissionDenied
    );
    let mut archive = ArchiveClient::new(connect(&server.grpc_url, Some(&token_a)).await);
    let archived = archive.list_archived_notifications(inbox("acme")).await;
    assert_eq!(code(archived), Code::PermissionDenied);
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", server.http_addr))
        .bearer_auth(&token_a)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), reqwest::StatusCode::UNAUTHORIZED);

    // The unscoped submit token still sees every customer.
    let mut unscoped = dispatcher(&server, SUBMIT_TOKEN).await;
    unscoped.get_notification(get(&theirs)).await.unwrap();
    unscoped.get_notification(get(&mine)).await.unwrap();

    // The list names the tokens and their customers, never a value or a hash.
    let listed = admin.list_tokens().await.unwrap();
    let names: Vec<(&str, &[String])> = listed
        .iter()
        .map(|t| (t.name.as_str(), t.customer_ids.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("acme-billing", &["acme".to_owned()][..]),
            ("globex-billing", &["globex".to_owned()][..])
        ]
    );
    let shown = format!("{listed:?}");
    for token in [&token_a, &token_b] {
        assert!(!shown.contains(token.as_str()), "{shown}");
        assert!(!shown.contains(&token[4..]), "{shown}");
        let hash = floodgate::scoped_tokens::digest(token).unwrap();
        assert!(!shown.contains(&hash), "{shown}");
    }
    server.stop().await.unwrap();
}
on_both_backends!(a_scoped_token_sees_only_its_customers);

/// Rotation: a second token for the same customer works beside the first; once the first is
/// revoked it is refused UNAUTHENTICATED, and the second keeps working.
async fn tokens_rotate_without_downtime(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    let admin = admin(&server).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let old = create(&admin, "acme-2025", &["acme"]).await;
    let id = submit_later(&mut dispatcher(&server, &old).await, "acme", "k-1").await;
    let new = create(&admin, "acme-2026", &["acme"]).await;
    assert_ne!(old, new);
    for token in [&old, &new] {
        dispatcher(&server, token)
            .await
            .get_notification(proto::GetNotificationRequest {
                notification_id: id.clone(),
            })
            .await
            .unwrap();
    }
    let revoked = admin.revoke_token("acme-2025").await.unwrap();
    assert_eq!(revoked.name, "acme-2025");
    assert_eq!(revoked.customer_ids, ["acme"]);
    wait_until_refused(&server, &old, &id).await;
    submit_later(&mut dispatcher(&server, &new).await, "acme", "k-2").await;
    let names: Vec<String> = admin
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme-2026"]);

    // What the Tokens service refuses.
    let status = |err: floodgate_client::Error| err.status().map(tonic::Status::code);
    let again = admin.revoke_token("acme-2025").await.unwrap_err();
    assert_eq!(status(again), Some(Code::NotFound));
    let taken = admin
        .create_token("acme-2026", vec!["acme".into()])
        .await
        .unwrap_err();
    assert_eq!(status(taken), Some(Code::AlreadyExists));
    let unknown = admin
        .create_token("x", vec!["acme".into(), "nobody".into()])
        .await
        .unwrap_err();
    assert_eq!(status(unknown), Some(Code::NotFound));
    let empty = admin.create_token("x", Vec::new()).await.unwrap_err();
    assert_eq!(status(empty), Some(Code::InvalidArgument));
    let bad_name = admin
        .create_token("has space", vec!["acme".into()])
        .await
        .unwrap_err();
    assert_eq!(status(bad_name), Some(Code::InvalidArgument));
    // A made-up token of the right shape is simply unknown.
    let made_up = format!("fgt_{}", "A".repeat(43));
    let mut client = dispatcher(&server, &made_up).await;
    let answer = client.submit(submit_request("acme", "k-3", "user-1")).await;
    assert_eq!(code(answer), Code::Unauthenticated);
    server.stop().await.unwrap();
}
on_both_backends!(tokens_rotate_without_downtime);

/// When a token was last used is written off the request path, and at the latest when the
/// server stops: after a restart the list shows it; a token never used shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_use_is_recorded_and_survives_a_restart() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    let admin_client = admin(&server).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let used = create(&admin_client, "used", &["acme"]).await;
    create(&admin_client, "unused", &["acme"]).await;
    let before = floodgate::model::now_millis();
    submit_later(&mut dispatcher(&server, &used).await, "acme", "k-1").await;
    // This node shows the use at once, from memory.
    let listed = admin_client.list_tokens().await.unwrap();
    assert!(listed[1].last_used_at.is_some(), "{listed:?}");
    drop(admin_client);
    server.stop().await.unwrap();

    let server = TestServer::start(test_config(&db)).await;
    let listed = admin(&server).await.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    let (unused, used_shown) = (&listed[0], &listed[1]);
    assert_eq!(unused.name, "unused");
    assert!(unused.last_used_at.is_none(), "{unused:?}");
    assert_eq!(used_shown.name, "used");
    let at = used_shown.last_used_at.expect("the use was written");
    assert!(at.seconds * 1000 >= before - 1000, "{at:?} before {before}");
    // The token still works after the restart: it lives in the store, not in memory.
    submit_later(&mut dispatcher(&server, &used).await, "acme", "k-2").await;
    server.stop().await.unwrap();
}

/// Several nodes on one PostgreSQL database: a token created through one works on the other,
/// and one revoked through one is refused by the other within the documented bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_node() {
    if common::postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL is not set, so the two-node test did not run");
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let first = TestServer::start(test_config(&db)).await;
    // A node of its own: each node of a cluster needs its own data directory.
    let second_dir = tempfile::tempdir().unwrap();
    let mut second_config = test_config(&db);
    second_config.data_dir = second_dir.path().to_owned();
    // …and the same secrets key as every other node on the database.
    second_config.secrets_key_file = Some(db.dir.path().join("secrets-key"));
    let second = TestServer::start(second_config).await;
    let receiver = Receiver::start().await;
    let admin = admin(&first).await;
    add_customer(&first.grpc_url, "acme", &receiver.url).await;
    let token = create(&admin, "acme-svc", &["acme"]).await;
    // The second node learns of the new token within one reload.
    let deadline = tokio::time::Instant::now() + REVOCATION_BOUND;
    let id = loop {
        let answer = dispatcher(&second, &token)
            .await
            .submit(submit_request("acme", "k-1", "user-1"))
            .await;
        match answer {
            Ok(accepted) => break accepted.into_inner().notification_id,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert!(tokio::time::Instant::now() < deadline, "never valid");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    admin.revoke_token("acme-svc").await.unwrap();
    wait_until_refused(&second, &token, &id).await;
    wait_until_refused(&first, &token, &id).await;
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}
