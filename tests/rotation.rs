//! Signing-secret rotation over real sockets: RotateSigningSecret gives a new secret, webhooks
//! carry the old and the new signature while the overlap lasts, and only the new one after it.
//! A secret is shown only in the answer that made it; reads return it empty.
//! Signatures are checked here with HMAC-SHA256 straight from the Standard Webhooks spec, not
//! with floodgate's own verifier.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Backend, Delivery, Receiver, TestDb, TestServer, add_customer, submit_request};
use floodgate::api::proto;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(10);

/// The `v1,` signatures of a `webhook-signature` header that `secret` produced, per the spec:
/// HMAC-SHA256 keyed with the base64 after `whsec_`, over `{id}.{timestamp}.{body}`.
fn signed_with(secret: &str, delivery: &Delivery) -> usize {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", delivery.webhook_id, delivery.timestamp).as_bytes());
    mac.update(&delivery.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    delivery
        .signature
        .split(' ')
        .filter(|entry| *entry == expected)
        .count()
}

async fn rotate(
    server: &TestServer,
    customer_id: &str,
    overlap_seconds: u32,
) -> Result<proto::Customer, tonic::Status> {
    server
        .customers()
        .await
        .rotate_signing_secret(proto::RotateSigningSecretRequest {
            customer_id: customer_id.into(),
            overlap_seconds,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Submits one webhook to `acme` and returns it as the receiver got it (the `count`th).
async fn deliver(server: &TestServer, receiver: &Receiver, key: &str, count: usize) -> Delivery {
    server
        .dispatcher()
        .await
        .submit(submit_request("acme", key, "user-1"))
        .await
        .unwrap();
    let received = receiver.wait_for(count, WAIT).await;
    received[count - 1].clone()
}

async fn rotation_overlaps_then_ends(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(common::test_config(&db)).await;
    let receiver = Receiver::start().await;
    let first = add_customer(&server.grpc_url, "acme", &receiver.url)
        .await
        .signing_secret;
    assert!(
        add_customer(&server.grpc_url, "acme", &receiver.url)
            .await
            .previous_secret_until
            .is_none(),
        "no rotation is under way yet"
    );

    // Before any rotation: one signature, by the first secret.
    let before = deliver(&server, &receiver, "k0", 1).await;
    assert_eq!(before.signature.split(' ').count(), 1);
    assert_eq!(signed_with(&first, &before), 1);

    // A long overlap: every webhook carries both signatures, and either secret verifies.
    let rotated = rotate(&server, "acme", 3600).await.unwrap();
    let second = rotated.signing_secret.clone();
    assert_ne!(second, first);
    assert!(second.starts_with("whsec_"));
    assert_eq!(
        floodgate::sink::signature::decode_secret(&second)
            .unwrap()
            .len(),
        32,
        "the new secret has the generated format"
    );
    let until = rotated.previous_secret_until.expect("overlap end");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3590..=now + 3610).contains(&until.seconds),
        "{until:?}"
    );
    // An upsert that keeps the secret keeps the overlap too (and does not show the secret).
    let kept = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    assert_eq!(kept.signing_secret, "");
    assert_eq!(kept.previous_secret_until, Some(until));

    let during = deliver(&server, &receiver, "k1", 2).await;
    assert_eq!(
        during.signature.split(' ').count(),
        2,
        "{}",
        during.signature
    );
    assert_eq!(signed_with(&first, &during), 1, "the old secret verifies");
    assert_eq!(signed_with(&second, &during), 1, "the new secret verifies");

    // Rotate again with a one-second overlap and let it pass: only the newest secret signs.
    let third = rotate(&server, "acme", 1).await.unwrap().signing_secret;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = deliver(&server, &receiver, "k2", 3).await;
    assert_eq!(after.signature.split(' ').count(), 1, "{}", after.signature);
    assert_eq!(signed_with(&third, &after), 1, "the new secret verifies");
    assert_eq!(
        signed_with(&second, &after),
        0,
        "the expired secret no longer verifies"
    );
    assert_eq!(signed_with(&first, &after), 0);
    let read = server
        .customers()
        .await
        .get_customer(proto::GetCustomerRequest {
            customer_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.signing_secret, "", "reads never show the secret");
    assert_eq!(read.previous_secret_until, None, "the overlap is over");
    server.stop().await.unwrap();
}

on_both_backends!(rotation_overlaps_then_ends);

/// An unknown customer is NOT_FOUND; an overlap over 30 days is INVALID_ARGUMENT and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rotations_are_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(common::test_config(&db)).await;
    let receiver = Receiver::start().await;
    let secret = add_customer(&server.grpc_url, "acme", &receiver.url)
        .await
        .signing_secret;

    let status = rotate(&server, "nobody", 0).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = rotate(&server, "acme", 30 * 24 * 3600 + 1)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("overlap_seconds:"),
        "{status:?}"
    );
    let kept = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    assert_eq!(kept.previous_secret_until, None);
    let webhook = deliver(&server, &receiver, "k0", 1).await;
    assert_eq!(webhook.signature.split(' ').count(), 1);
    assert_eq!(signed_with(&secret, &webhook), 1, "the secret is unchanged");

    // The default overlap is a day.
    let until = rotate(&server, "acme", 0)
        .await
        .unwrap()
        .previous_secret_until
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 86_390..=now + 86_410).contains(&until.seconds),
        "{until:?}"
    );
    server.stop().await.unwrap();
}

/// The signing secret is shown only in the answer that made it: a new customer's upsert, an
/// upsert that sets a new secret, a rotation. Reads, pause, resume and an upsert that keeps it
/// return it empty, and the secret they hide is still the one that signs.
async fn the_signing_secret_is_shown_only_when_new(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(common::test_config(&db)).await;
    let receiver = Receiver::start().await;
    let mut customers = server.customers().await;
    let upsert = |secret: &str| proto::UpsertCustomerRequest {
        customer: Some(proto::Customer {
            id: "acme".into(),
            webhook_url: receiver.url.clone(),
            signing_secret: secret.into(),
            ..Default::default()
        }),
    };
    let get = || proto::GetCustomerRequest {
        customer_id: "acme".into(),
    };

    let created = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    assert!(created.signing_secret.starts_with("whsec_"), "{created:?}");
    let read = customers.get_customer(get()).await.unwrap().into_inner();
    assert_eq!(read.signing_secret, "");
    assert_eq!(read.webhook_url, receiver.url, "the rest is read back");
    let listed = customers
        .list_customers(proto::ListCustomersRequest {})
        .await
        .unwrap()
        .into_inner()
        .customers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].signing_secret, "");
    let kept = customers
        .upsert_customer(upsert(""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.signing_secret, "");
    let paused = customers
        .pause_customer(proto::PauseCustomerRequest {
            customer_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.signing_secret, "");
    let resumed = customers
        .resume_customer(proto::ResumeCustomerRequest {
            customer_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.signing_secret, "");
    assert_eq!(
        signed_with(
            &created.signing_secret,
            &deliver(&server, &receiver, "k1", 1).await
        ),
        1,
        "the hidden secret is the one that signs"
    );

    // A secret set by hand is new, so the answer shows it; setting it again is not.
    let chosen = floodgate::sink::signature::generate_secret();
    let set = customers
        .upsert_customer(upsert(&chosen))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.signing_secret, chosen);
    let again = customers
        .upsert_customer(upsert(&chosen))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.signing_secret, "");

    let rotated = rotate(&server, "acme", 1).await.unwrap();
    assert!(rotated.signing_secret.starts_with("whsec_"));
    assert_ne!(rotated.signing_secret, chosen);
    let read = customers.get_customer(get()).await.unwrap().into_inner();
    assert_eq!(read.signing_secret, "");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = deliver(&server, &receiver, "k2", 2).await;
    assert_eq!(signed_with(&rotated.signing_secret, &after), 1);
    assert_eq!(after.signature.split(' ').count(), 1, "the overlap is over");
    server.stop().await.unwrap();
}

on_both_backends!(the_signing_secret_is_shown_only_when_new);
