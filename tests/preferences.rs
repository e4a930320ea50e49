//! Opt-out preferences: a refused notification is stored SUPPRESSED with the reason and never
//! sent, from the moment `SetPreference` returns — on one node, and across nodes with and
//! without Redis.

mod common;

use std::time::Duration;

use common::{
    ADMIN_TOKEN, Authed, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, add_customer,
    connect, postgres_url, submit_request, test_config, wait_for_state,
};
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::preferences_client::PreferencesClient;

const WAIT: Duration = Duration::from_secs(20);

async fn preferences(server: &TestServer) -> PreferencesClient<Authed> {
    // Any valid token: the services that own users' settings hold a submit token.
    PreferencesClient::new(connect(&server.grpc_url, Some(SUBMIT_TOKEN)).await)
}

async fn set(
    client: &mut PreferencesClient<Authed>,
    recipient: &str,
    lane: proto::Lane,
    opted_out: bool,
) -> proto::Preference {
    client
        .set_preference(proto::SetPreferenceRequest {
            preference: Some(proto::Preference {
                customer_id: "shop".into(),
                recipient: recipient.into(),
                lane: lane as i32,
                opted_out,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Submits one notification and returns its id.
async fn submit(
    client: &mut DispatcherClient<Authed>,
    key: &str,
    recipient: &str,
    lane: proto::Lane,
) -> String {
    client
        .submit(proto::SubmitRequest {
            lane: lane as i32,
            ..submit_request("shop", key, recipient)
        })
        .await
        .unwrap()
        .into_inner()
        .notification_id
}

async fn state(client: &mut DispatcherClient<Authed>, id: &str) -> proto::Notification {
    client
        .get_notification(proto::GetNotificationRequest {
            notification_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn opt_outs_apply_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut client = server.dispatcher().await;
    let mut prefs = preferences(&server).await;
    use proto::Lane::{Bulk, Transactional, Unspecified};
    use proto::State::{Delivered, Suppressed};

    // Before any preference: delivered (and alice's empty set is now cached).
    let first = submit(&mut client, "k1", "alice", Bulk).await;
    wait_for_state(&mut client, &first, Delivered, WAIT).await;

    // Alice refuses bulk: the very next bulk submit is suppressed, transactional still goes.
    let saved = set(&mut prefs, "alice", Bulk, true).await;
    assert!(saved.opted_out && saved.lane == Bulk as i32 && saved.updated_at.is_some());
    let refused = submit(&mut client, "k2", "alice", Bulk).await;
    let n = state(&mut client, &refused).await;
    assert_eq!(n.state, Suppressed as i32, "{n:?}");
    assert!(n.last_error.contains("opted out of bulk"), "{n:?}");
    let wanted = submit(&mut client, "k3", "alice", Transactional).await;
    wait_for_state(&mut client, &wanted, Delivered, WAIT).await;

    // In a batch, only alice's item is suppressed.
    let requests = vec![
        proto::SubmitRequest {
            lane: Bulk as i32,
            ..submit_request("shop", "k4", "alice")
        },
        proto::SubmitRequest {
            lane: Bulk as i32,
            ..submit_request("shop", "k5", "bob")
        },
    ];
    let ids = common::submit_accepted_ids(&mut client, requests).await;
    assert_eq!(state(&mut client, &ids[0]).await.state, Suppressed as i32);
    wait_for_state(&mut client, &ids[1], Delivered, WAIT).await;

    // Every lane refused, transactional allowed by its own preference: the lane's own wins.
    set(&mut prefs, "carol", Unspecified, true).await;
    set(&mut prefs, "carol", Transactional, false).await;
    let bulk = submit(&mut client, "k6", "carol", Bulk).await;
    assert_eq!(state(&mut client, &bulk).await.state, Suppressed as i32);
    let transactional = submit(&mut client, "k7", "carol", Transactional).await;
    wait_for_state(&mut client, &transactional, Delivered, WAIT).await;

    // Alice opts back in: sent again at once.
    set(&mut prefs, "alice", Bulk, false).await;
    let back = submit(&mut client, "k8", "alice", Bulk).await;
    wait_for_state(&mut client, &back, Delivered, WAIT).await;

    let listed = prefs
        .get_preferences(proto::GetPreferencesRequest {
            customer_id: "shop".into(),
            recipient: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .preferences;
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Suppressed notifications never reached the customer system.
    let received: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|d| d.webhook_id)
        .collect();
    for id in [&refused, &ids[0], &bulk] {
        assert!(!received.contains(id), "suppressed {id} was delivered");
    }
    server.stop().await.unwrap();
}
on_both_backends!(opt_outs_apply_at_once);

#[tokio::test]
async fn bad_preferences_and_unavailable_channels_are_invalid_arguments() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "shop", "http://127.0.0.1:9/webhook").await;
    let mut prefs = preferences(&server).await;
    let attempt = |preference: proto::Preference| {
        let mut prefs = prefs.clone();
        async move {
            prefs
                .set_preference(proto::SetPreferenceRequest {
                    preference: Some(preference),
                })
                .await
                .unwrap_err()
        }
    };
    let good = proto::Preference {
        customer_id: "shop".into(),
        recipient: "alice".into(),
        opted_out: true,
        ..Default::default()
    };
    let err = attempt(proto::Preference {
        recipient: String::new(),
        ..good.clone()
    })
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("preference.recipient"), "{err:?}");
    let err = attempt(proto::Preference {
        channel: 99,
        ..good.clone()
    })
    .await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("preference.channel"), "{err:?}");
    let err = attempt(proto::Preference {
        customer_id: "nobody".into(),
        ..good.clone()
    })
    .await;
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Preferences may name channels the customer has not configured…
    prefs
        .set_preference(proto::SetPreferenceRequest {
            preference: Some(proto::Preference {
                channel: proto::Channel::Sms as i32,
                ..good
            }),
        })
        .await
        .unwrap();
    // …but notifications may not be submitted to them until it does.
    let err = server
        .dispatcher()
        .await
        .submit(proto::SubmitRequest {
            channel: proto::Channel::Fcm as i32,
            ..submit_request("shop", "k", "alice")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("channel:"), "{err:?}");
    let err = PreferencesClient::new(connect(&server.grpc_url, None).await)
        .get_preferences(proto::GetPreferencesRequest {
            customer_id: "shop".into(),
            recipient: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    server.stop().await.unwrap();
}

/// Two nodes on one PostgreSQL database: an opt-out set on one is applied by the other at once,
/// whose cache had already seen the recipient.
async fn nodes_share_opt_outs(redis_url: Option<String>) {
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = Receiver::start().await;
    let prefix = format!("floodgate-test-{:016x}:", rand::random::<u64>());
    let node = |data_dir: &std::path::Path| {
        let mut cfg = test_config(&db);
        cfg.data_dir = data_dir.to_owned();
        // Nodes sharing a database share the key that seals its secrets.
        cfg.secrets_key_file = Some(db.dir.path().join("secrets-key"));
        cfg.redis_url = redis_url.clone();
        cfg.redis_prefix = prefix.clone();
        cfg
    };
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestServer::start(node(dirs.0.path())).await;
    add_customer(&a.grpc_url, "shop", &receiver.url).await;
    let b = TestServer::start(node(dirs.1.path())).await;
    let mut on_b = DispatcherClient::new(connect(&b.grpc_url, Some(ADMIN_TOKEN)).await);
    let mut prefs_a = preferences(&a).await;

    let warm = submit(&mut on_b, "w", "alice", proto::Lane::Bulk).await;
    assert_ne!(
        state(&mut on_b, &warm).await.state,
        proto::State::Suppressed as i32
    );
    for round in 0..3 {
        set(&mut prefs_a, "alice", proto::Lane::Bulk, true).await;
        let refused = submit(&mut on_b, &format!("r{round}"), "alice", proto::Lane::Bulk).await;
        let n = state(&mut on_b, &refused).await;
        assert_eq!(
            n.state,
            proto::State::Suppressed as i32,
            "round {round}: {n:?}"
        );
        set(&mut prefs_a, "alice", proto::Lane::Bulk, false).await;
        let allowed = submit(&mut on_b, &format!("a{round}"), "alice", proto::Lane::Bulk).await;
        let n = state(&mut on_b, &allowed).await;
        assert_ne!(
            n.state,
            proto::State::Suppressed as i32,
            "round {round}: {n:?}"
        );
    }
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_opt_outs_through_redis() {
    let (Some(_), Ok(redis_url)) = (postgres_url(), std::env::var("REDIS_URL")) else {
        eprintln!("skipped: needs DATABASE_URL (PostgreSQL) and REDIS_URL");
        return;
    };
    nodes_share_opt_outs(Some(redis_url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_opt_outs_without_redis() {
    if postgres_url().is_none() {
        eprintln!("skipped: needs DATABASE_URL (PostgreSQL)");
        return;
    }
    nodes_share_opt_outs(None).await;
}
