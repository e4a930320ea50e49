//! Notification ids callers and receivers see: opaque, not sequential, refused when tampered
//! with or in the old decimal form, the same in the webhook as in Submit's answer (on every
//! retry), and the same after a restart. Every test runs on SQLite and on PostgreSQL (when
//! `DATABASE_URL` is set).

mod common;

use std::time::Duration;

use common::{
    Backend, Receiver, TestDb, TestServer, add_customer, submit_many, submit_request, test_config,
    wait_for_state,
};
use floodgate::api::proto::{self, State};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);
const PREFIX: &str = "ntf_";

/// Characters two ids share at the start, after the prefix.
fn shared_stem(a: &str, b: &str) -> usize {
    a[PREFIX.len()..]
        .bytes()
        .zip(b[PREFIX.len()..].bytes())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The id with its last character replaced by another valid one.
fn tampered(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

async fn ids_are_opaque_and_not_sequential(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;

    let ids = submit_many(&mut client, "acme", proto::Lane::Bulk, "seq", 40).await;
    for id in &ids {
        assert!(id.starts_with(PREFIX), "{id}");
        assert_eq!(id.len(), PREFIX.len() + 22, "{id}");
        assert!(
            id[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric()),
            "{id}"
        );
        assert!(id.parse::<i64>().is_err(), "{id}");
    }
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    // Consecutive notifications share no stem (four shared characters by chance: ~1 in 15
    // million per pair), and their order cannot be read from the ids.
    for pair in ids.windows(2) {
        assert!(shared_stem(&pair[0], &pair[1]) < 4, "{pair:?}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_ne!(sorted, ids, "ids sort in submission order");
    server.stop().await.unwrap();
}
on_both_backends!(ids_are_opaque_and_not_sequential);

async fn tampered_and_numeric_ids_are_not_found(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;
    // Scheduled a day ahead, so it is still cancellable at the end.
    let mut request = submit_request("acme", "k", "inbox-user");
    request.send_at = Some(floodgate::api::convert::timestamp(
        floodgate::model::now_millis() + 86_400_000,
    ));
    let id = client
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .notification_id;

    let found = client
        .get_notification(proto::GetNotificationRequest {
            notification_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.id, id);

    for wrong in [tampered(&id), "1".to_owned(), id[PREFIX.len()..].to_owned()] {
        let status = client
            .get_notification(proto::GetNotificationRequest {
                notification_id: wrong.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{wrong}: {status:?}");
        let status = client
            .cancel_notification(proto::CancelNotificationRequest {
                notification_id: wrong.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{wrong}: {status:?}");
    }

    // A page token is an id too: a forged one is refused, a real one pages on.
    let status = client
        .list_notifications(proto::ListNotificationsRequest {
            customer_id: "acme".into(),
            recipient: "inbox-user".into(),
            page_size: 1,
            page_token: "2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The untouched id still names the notification.
    let cancelled = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.id, id);
    assert_eq!(cancelled.state, State::Cancelled as i32);
    server.stop().await.unwrap();
}
on_both_backends!(tampered_and_numeric_ids_are_not_found);

async fn receivers_see_the_submitted_id_on_every_attempt(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    // Refused until two attempts arrived, then accepted: one notification, several attempts.
    receiver.set_status(503);
    let customer = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let mut client = server.dispatcher().await;
    let id = client
        .submit(submit_request("acme", "retried", "u"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;

    receiver.wait_for(2, WAIT).await;
    receiver.set_status(200);
    let delivered = wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    let attempts = receiver.received();
    assert_eq!(attempts.len(), delivered.attempts as usize);
    assert!(attempts.len() >= 2, "{attempts:?}");
    for attempt in &attempts {
        assert_eq!(attempt.webhook_id, id);
        assert_eq!(attempt.json()["id"], id.as_str());
        assert!(attempt.verifies_with(&customer.signing_secret));
    }
    server.stop().await.unwrap();
}
on_both_backends!(receivers_see_the_submitted_id_on_every_attempt);

async fn ids_outlive_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let first = server
        .dispatcher()
        .await
        .submit(submit_request("acme", "before", "u"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    server.stop().await.unwrap();

    // The key is in the database: the next process (or another node) reads the same ids.
    let server = TestServer::start(test_config(&db)).await;
    let mut client = server.dispatcher().await;
    let found = client
        .get_notification(proto::GetNotificationRequest {
            notification_id: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.idempotency_key, "before");
    let again = client
        .submit(submit_request("acme", "before", "u"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.notification_id, first);
    server.stop().await.unwrap();
}
on_both_backends!(ids_outlive_a_restart);
