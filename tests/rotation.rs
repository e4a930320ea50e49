//! Signing-secret rotation over real sockets: RotateSigningSecret gives a new secret, webhooks
//! carry the old and the new signature while the overlap lasts, and only the new one after it.
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
    // Reads report the same secret and overlap, and an upsert that keeps the secret keeps both.
    let kept = add_customer(&server.grpc_url, "acme", &receiver.url).await;
    assert_eq!(kept.signing_secret, second);
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
    assert_eq!(read.signing_secret, third);
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
    assert_eq!(kept.signing_secret, secret);
    assert_eq!(kept.previous_secret_until, None);

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
