//! One shutdown deadline: after SIGTERM the real binary exits within `--shutdown-grace`, however
//! its clients and customer systems behave, and exits 0.

mod common;

use std::time::Duration;

use common::process::Floodgate;
use common::{
    ADMIN_TOKEN, Backend, TestDb, add_customer, connect, hanging_endpoint, submit_request,
};
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const GRACE: Duration = Duration::from_secs(2);
/// Exit must come within the grace plus this (process start-up of the exit path, polling).
const SLACK: Duration = Duration::from_millis(1500);

async fn start(db: &TestDb) -> Floodgate {
    Floodgate::start(
        db,
        &[
            "--shutdown-grace",
            "2s",
            // Longer than the grace on purpose: only the deadline can end a hanging attempt.
            "--webhook-timeout",
            "30s",
            "--lease",
            "60s",
        ],
    )
    .await
}

async fn assert_exits_within_grace(mut process: Floodgate, what: &str) {
    let (status, took) = process.terminate(GRACE + Duration::from_secs(20)).await;
    eprintln!("{what}: exited {status:?} {took:?} after SIGTERM (grace {GRACE:?})");
    assert!(status.success(), "{what}: exit status {status:?}");
    assert!(
        took <= GRACE + SLACK,
        "{what}: took {took:?} with a grace of {GRACE:?}"
    );
}

#[tokio::test]
async fn a_silent_grpc_client_does_not_hold_shutdown() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = start(&db).await;
    let _silent = TcpStream::connect(process.grpc).await.unwrap();
    assert_exits_within_grace(process, "silent gRPC client").await;
}

#[tokio::test]
async fn a_half_sent_http_request_does_not_hold_shutdown() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = start(&db).await;
    let mut half = TcpStream::connect(process.http).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: floodgate\r\n")
        .await
        .unwrap();
    // Also a silent client on the HTTP port, before any byte of its request.
    let _silent = TcpStream::connect(process.http).await.unwrap();
    assert_exits_within_grace(process, "half-sent HTTP request").await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_shutdown() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = start(&db).await;
    let (hook, _hanging) = hanging_endpoint().await;
    add_customer(&process.url(), "stuck", &hook).await;
    let mut client = DispatcherClient::new(connect(&process.url(), Some(ADMIN_TOKEN)).await);
    let id = client
        .submit(submit_request("stuck", "k1", "u1"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    common::wait_for_state(
        &mut client,
        &id,
        proto::State::InFlight,
        Duration::from_secs(10),
    )
    .await;
    drop(client);
    assert_exits_within_grace(process, "hanging receiver").await;
}
