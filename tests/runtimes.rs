//! The binary's two runtimes: the customer actors and their sends on `--delivery-threads`
//! threads (`floodgate-main`), the gRPC API and the database's writers on a thread per core
//! (`floodgate-front`), and a notification crosses both on its way to the customer system.

mod common;

use std::time::Duration;

use common::process::Floodgate;
use common::{ADMIN_TOKEN, Backend, Receiver, TestDb, add_customer, connect, submit_request};
use floodgate::api::proto::dispatcher_client::DispatcherClient;

/// How many of the process's threads carry this name (Linux: `/proc/<pid>/task/*/comm`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

async fn delivers_one(process: &Floodgate, customer: &str) {
    let receiver = Receiver::start().await;
    add_customer(&process.url(), customer, &receiver.url).await;
    let mut client = DispatcherClient::new(connect(&process.url(), Some(ADMIN_TOKEN)).await);
    let id = client
        .submit(submit_request(customer, "k", "u"))
        .await
        .expect("Submit")
        .into_inner()
        .notification_id;
    let delivered = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(delivered[0].webhook_id, id);
}

#[tokio::test]
async fn deliveries_run_on_the_threads_delivery_threads_asks_for() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = Floodgate::start(&db, &["--delivery-threads", "3"]).await;
    assert_eq!(threads_named(process.pid(), "floodgate-main"), 3);
    assert_eq!(threads_named(process.pid(), "floodgate-front"), cores());
    delivers_one(&process, "acme").await;
}

#[tokio::test]
async fn by_default_deliveries_get_half_the_cores() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = Floodgate::start(&db, &[]).await;
    assert_eq!(
        threads_named(process.pid(), "floodgate-main"),
        (cores() / 2).max(1)
    );
    delivers_one(&process, "acme").await;
}
