//! Retention: the inbox serves the configured window; the job moves older finished
//! notifications to the archive (admin-only reading) and purges the archive after its own
//! retention — by rows on SQLite, by dropping monthly partitions on PostgreSQL. Unfinished
//! notifications are never moved.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    ADMIN_TOKEN, Authed, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, add_customer,
    connect, submit_request, test_config, wait_for_state,
};
use floodgate::api::proto;
use floodgate::api::proto::archive_client::ArchiveClient;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: i64 = 86_400_000;

fn inbox_request(page_token: &str) -> proto::ListNotificationsRequest {
    proto::ListNotificationsRequest {
        customer_id: "shop".into(),
        recipient: "alice".into(),
        page_size: 2,
        page_token: page_token.into(),
    }
}

/// Every idempotency key on every page of alice's inbox.
async fn inbox(client: &mut DispatcherClient<Authed>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_notifications(inbox_request(&token))
            .await
            .unwrap()
            .into_inner();
        keys.extend(page.notifications.into_iter().map(|n| n.idempotency_key));
        if page.next_page_token.is_empty() {
            return keys;
        }
        token = page.next_page_token;
    }
}

/// Every idempotency key on every page of alice's archive.
async fn archived(client: &mut ArchiveClient<Authed>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_archived_notifications(inbox_request(&token))
            .await
            .unwrap()
            .into_inner();
        keys.extend(page.notifications.into_iter().map(|n| n.idempotency_key));
        if page.next_page_token.is_empty() {
            return keys;
        }
        token = page.next_page_token;
    }
}

/// Submits `key` to alice of shop and waits until it is delivered; returns its id.
async fn submit_delivered(client: &mut DispatcherClient<Authed>, key: &str) -> String {
    let id = client
        .submit(submit_request("shop", key, "alice"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    wait_for_state(client, &id, proto::State::Delivered, WAIT).await;
    id
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|k| (*k).to_owned()).collect()
}

async fn old_notifications_are_archived_then_purged(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = test_config(&db);
    cfg.retention_interval = Duration::from_millis(200);
    // Two rows per batch, so every pass takes several batches.
    cfg.retention_batch = 2;
    cfg.retention_pause = Duration::from_millis(1);
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut client = server.dispatcher().await;

    let mut ids = Vec::new();
    for key in ["k0", "k1", "k2", "k3", "k4", "k5"] {
        ids.push(submit_delivered(&mut client, key).await);
    }
    // Not finished (due in an hour): never archived, however old.
    let later = prost_types::Timestamp {
        seconds: floodgate::model::now_millis() / 1000 + 3600,
        nanos: 0,
    };
    let pending = client
        .submit(proto::SubmitRequest {
            send_at: Some(later),
            ..submit_request("shop", "pending", "alice")
        })
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    assert_eq!(
        inbox(&mut client).await,
        keys(&["k0", "k1", "k2", "k3", "k4", "k5", "pending"])
    );

    // Age them: 100 days (past the inbox, inside the archive) and 400 days (past both).
    let aged = db
        .execute(&format!(
            "UPDATE notifications SET created_at = created_at - {} \
             WHERE idempotency_key IN ('k0', 'k1', 'k2', 'pending')",
            100 * DAY_MS
        ))
        .await;
    assert_eq!(aged, 4);
    db.execute(&format!(
        "UPDATE notifications SET created_at = created_at - {} \
         WHERE idempotency_key IN ('k3', 'k4')",
        400 * DAY_MS
    ))
    .await;

    let mut archive = ArchiveClient::new(connect(&server.grpc_url, Some(ADMIN_TOKEN)).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = archived(&mut archive).await;
        if now == keys(&["k0", "k1", "k2"]) && db.notification_rows().await == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "archive never settled: {now:?}, {} live rows",
            db.notification_rows().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(inbox(&mut client).await, keys(&["k5"]));
    let moved = client
        .get_notification(proto::GetNotificationRequest {
            notification_id: ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::NotFound);
    let still = wait_for_state(&mut client, &pending, proto::State::Pending, WAIT).await;
    assert_eq!(still.idempotency_key, "pending");

    // The archive is for support staff: a submit token cannot read it.
    let mut outsider = ArchiveClient::new(connect(&server.grpc_url, Some(SUBMIT_TOKEN)).await);
    let refused = outsider
        .list_archived_notifications(inbox_request(""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    server.stop().await.unwrap();
}
on_both_backends!(old_notifications_are_archived_then_purged);

/// A notification id is never given twice, even once every notification before it has been
/// archived. (SQLite gives a new row the largest id in its table plus one: were the newest row
/// archived, the next notification would take its id again.)
async fn ids_are_not_reused_after_the_newest_notifications_are_archived(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = test_config(&db);
    cfg.retention_interval = Duration::from_millis(200);
    let server = TestServer::start(cfg).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut client = server.dispatcher().await;

    let mut old_ids = BTreeSet::new();
    for key in ["k0", "k1"] {
        old_ids.insert(submit_delivered(&mut client, key).await);
    }
    db.execute(&format!(
        "UPDATE notifications SET created_at = created_at - {}",
        100 * DAY_MS
    ))
    .await;
    let mut archive = ArchiveClient::new(connect(&server.grpc_url, Some(ADMIN_TOKEN)).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !archived(&mut archive).await.contains("k0") {
        assert!(tokio::time::Instant::now() < deadline, "k0 never archived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let new_id = client
        .submit(submit_request("shop", "k2", "alice"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    assert!(
        !old_ids.contains(&new_id),
        "{new_id} was given before: {old_ids:?}"
    );
    let stored = wait_for_state(&mut client, &new_id, proto::State::Delivered, WAIT).await;
    assert_eq!(stored.idempotency_key, "k2");
    server.stop().await.unwrap();
}
on_both_backends!(ids_are_not_reused_after_the_newest_notifications_are_archived);
