//! Test harness: the real server on port 0 with a temporary database (SQLite, or a fresh
//! PostgreSQL database when `DATABASE_URL` is set), real local HTTP receivers, and gRPC clients.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of the harness

pub mod fakes;
pub mod load;
pub mod process;
pub mod prometheus;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use floodgate::ServeConfig;
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const SUBMIT_TOKEN: &str = "test-submit-token";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs the same async test body on SQLite and on PostgreSQL (skipped, with a message, when
/// `DATABASE_URL` is not set).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::common::postgres_url().is_none() {
                    eprintln!(
                        "skipped: DATABASE_URL is not set, so the PostgreSQL variant did not run"
                    );
                    return;
                }
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
}

/// The PostgreSQL server to create test databases on, from `DATABASE_URL`.
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
}

/// A database for one test: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// database that is dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    postgres: Option<(String, String)>, // (admin url, database name)
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("floodgate.db").display()),
                dir,
                postgres: None,
            },
            Backend::Postgres => {
                use sqlx::Connection as _;
                let admin = postgres_url().expect("DATABASE_URL");
                let name = format!(
                    "fg_test_{}_{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let mut url = reqwest::Url::parse(&admin).unwrap();
                url.set_path(&name);
                Self {
                    url: url.to_string(),
                    dir,
                    postgres: Some((admin, name)),
                }
            }
        }
    }

    /// Counts rows of `notifications`, straight from the database.
    pub async fn notification_rows(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM notifications").await
    }

    /// Runs a `SELECT COUNT(*) …` straight on the database.
    pub async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

impl TestDb {
    /// Runs one statement straight on the database (to age rows, for example); returns the
    /// rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop cannot await: use a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Registers customer `id` straight in `store` (tests that run the dispatcher without a
/// server), sending to `webhook_url`, paused or not.
pub async fn register_in_store(
    store: &floodgate::store::Store,
    id: &str,
    webhook_url: &str,
    paused: bool,
) {
    let customer = floodgate::model::Customer {
        id: id.into(),
        webhook_url: webhook_url.into(),
        signing_secret: floodgate::sink::signature::generate_secret(),
        previous_secret: None,
        max_rate_per_sec: 0,
        paused,
        start_tier: None,
        channels: Default::default(),
    };
    store
        .upsert_customer(&customer, floodgate::model::now_millis())
        .await
        .unwrap();
}

/// A due webhook notification of `customer` in `lane` with an empty JSON payload, for tests that
/// write to the store directly.
pub fn stored_notification(
    customer: &str,
    key: String,
    lane: floodgate::model::Lane,
) -> floodgate::model::NewNotification {
    floodgate::model::NewNotification {
        customer_id: floodgate::model::CustomerId::parse(customer).expect("a valid customer id"),
        idempotency_key: key,
        recipient: "u".into(),
        lane,
        payload: b"{}".to_vec(),
        send_at: None,
        expires_at: None,
        channel: floodgate::model::Channel::Webhook,
        suppressed: None,
        template: None,
    }
}

/// The `/metrics` page of the server whose HTTP port is `http`, read with the admin token.
pub async fn metrics_page(http: SocketAddr) -> String {
    reqwest::Client::new()
        .get(format!("http://{http}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A counter's value on the `/metrics` page served at `http`.
pub async fn counter(http: SocketAddr, name: &str) -> f64 {
    let page = metrics_page(http).await;
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not on /metrics"))
}

/// The server configuration tests use: fast retries and sweeps, known tokens.
pub fn test_config(db: &TestDb) -> ServeConfig {
    let mut cfg = ServeConfig::defaults();
    cfg.data_dir = db.dir.path().to_owned();
    cfg.database_url = Some(db.url.clone());
    cfg.admin_token = Some(ADMIN_TOKEN.into());
    cfg.submit_token = Some(SUBMIT_TOKEN.into());
    cfg.retry_base_delay = Duration::from_millis(50);
    cfg.retry_max_delay = Duration::from_millis(400);
    cfg.sweep_interval = Duration::from_millis(100);
    cfg.webhook_timeout = Duration::from_secs(2);
    cfg.lease = Duration::from_secs(5);
    cfg.max_payload_bytes = 1024;
    // The receivers and fakes are local: the test suite opens loopback explicitly, as a
    // development setup does.
    cfg.allow_target_cidr = vec![LOOPBACK.parse().unwrap()];
    // The SMTP fake speaks plain text and checks a password.
    cfg.allow_plaintext_smtp_auth = true;
    cfg
}

/// The network tests allow deliveries to reach.
pub const LOOPBACK: &str = "127.0.0.0/8";

/// floodgate running in this process.
pub struct TestServer {
    pub grpc_url: String,
    pub http_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), floodgate::app::AppError>>>,
}

impl TestServer {
    pub async fn start(cfg: ServeConfig) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(cfg, grpc).await
    }

    /// Starts on a gRPC listener the test made (one whose port a client already knows).
    pub async fn start_on(cfg: ServeConfig, grpc: TcpListener) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // With TLS, by name: the test certificates are issued to localhost.
        let grpc_url = match cfg.tls_files() {
            Some(_) => format!("https://localhost:{}", grpc.local_addr().unwrap().port()),
            None => format!("http://{}", grpc.local_addr().unwrap()),
        };
        let http_addr = http.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = floodgate::Listeners { grpc, http };
        let task = tokio::spawn(floodgate::run(cfg, listeners, async {
            let _ = stopped.await;
        }));
        Self {
            grpc_url,
            http_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn dispatcher(&self) -> DispatcherClient<Authed> {
        self.dispatcher_with(Some(ADMIN_TOKEN)).await
    }

    pub async fn dispatcher_with(&self, token: Option<&str>) -> DispatcherClient<Authed> {
        DispatcherClient::new(connect(&self.grpc_url, token).await)
    }

    pub async fn customers(&self) -> CustomersClient<Authed> {
        self.customers_with(Some(ADMIN_TOKEN)).await
    }

    pub async fn customers_with(&self, token: Option<&str>) -> CustomersClient<Authed> {
        CustomersClient::new(connect(&self.grpc_url, token).await)
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), floodgate::app::AppError> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A channel carrying `authorization: Bearer <token>` (or nothing, to test its absence): the
/// one floodgate-client makes.
pub type Authed = floodgate_client::AuthedChannel;

/// A gRPC channel to `url`, retrying while the server starts.
pub async fn connect(url: &str, token: Option<&str>) -> Authed {
    let mut client = floodgate_client::Client::builder(url);
    if let Some(token) = token {
        client = client.token(token);
    }
    for _ in 0..100 {
        if let Ok(connected) = client.clone().connect().await {
            return connected.channel();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}");
}

/// Registers a customer and returns it as saved (with its signing secret).
pub async fn add_customer(grpc_url: &str, id: &str, webhook_url: &str) -> proto::Customer {
    let customer = proto::Customer {
        id: id.into(),
        webhook_url: webhook_url.into(),
        ..Default::default()
    };
    CustomersClient::new(connect(grpc_url, Some(ADMIN_TOKEN)).await)
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .unwrap()
        .into_inner()
}

/// A submit request with a small JSON payload.
/// `customer`'s figures as `GetCustomerStats` answers them.
pub async fn customer_stats(
    customers: &mut CustomersClient<Authed>,
    customer: &str,
) -> proto::CustomerStats {
    customers
        .get_customer_stats(proto::GetCustomerStatsRequest {
            customer_id: customer.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn submit_request(customer: &str, key: &str, recipient: &str) -> proto::SubmitRequest {
    proto::SubmitRequest {
        customer_id: customer.into(),
        idempotency_key: key.into(),
        recipient: recipient.into(),
        lane: proto::Lane::Transactional as i32,
        payload: format!(r#"{{"key":"{key}"}}"#).into_bytes(),
        send_at: None,
        expires_at: None,
        ..Default::default()
    }
}

/// Polls a notification until it reaches `state`, or panics after `timeout`.
pub async fn wait_for_state(
    client: &mut DispatcherClient<Authed>,
    id: &str,
    state: proto::State,
    timeout: Duration,
) -> proto::Notification {
    wait_for_notification(client, id, &format!("{state:?}"), timeout, |n| {
        n.state == state as i32
    })
    .await
}

/// Polls a notification until `done` holds for it, or panics after `timeout` (saying it never
/// became `what`).
pub async fn wait_for_notification(
    client: &mut DispatcherClient<Authed>,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&proto::Notification) -> bool,
) -> proto::Notification {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = client
            .get_notification(proto::GetNotificationRequest {
                notification_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if done(&n) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "notification {id} never reached {what}; last: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One webhook request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn verifies_with(&self, secret: &str) -> bool {
        floodgate::sink::signature::verify(
            secret,
            &self.webhook_id,
            self.timestamp,
            &self.body,
            &self.signature,
        )
    }
}

/// A real HTTP server standing in for a customer system: records every webhook and answers with
/// the status it is set to, after an optional delay.
pub struct Receiver {
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Delivery>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    arrived: Notify,
    capacity: Mutex<Option<Capacity>>,
    rejected: AtomicU64,
    /// While true, every request waits before it is answered (see [`Receiver::hold`]).
    held: tokio::sync::watch::Sender<bool>,
    /// Requests waiting in a hold now.
    holding: AtomicU64,
}

/// A capacity model: `workers` requests served at once, each taking `service`; up to `queue`
/// more wait their turn (their round trip grows); beyond that the answer is 503 at once.
#[derive(Clone)]
struct Capacity {
    workers: Arc<tokio::sync::Semaphore>,
    service: Duration,
    admitted: Arc<AtomicU64>,
    limit: u64,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_listening(TcpListener::bind(addr).await.unwrap())
    }

    /// Serves on a listener the test made (from a socket it held bound, so its port was never
    /// free for another process to take).
    pub fn start_listening(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        state.status.store(200, Ordering::SeqCst);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            addr,
            state,
            task,
        }
    }

    /// The status every later request is answered with.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// A delay before each answer (a slow customer system).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Holds every request, the ones under way and the ones to come, until [`Receiver::release`]:
    /// an attempt that stays in flight for exactly as long as a test needs, where a fixed delay
    /// would end at a moment the test cannot control.
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// How many requests are being held now: open at once, since none of them was answered.
    pub fn holding(&self) -> u64 {
        self.state.holding.load(Ordering::SeqCst)
    }

    /// Serves like a system of fixed capacity: `workers` concurrent requests taking `service`
    /// each (capacity = workers / service per second), a wait queue of `queue`, 503 beyond.
    pub fn set_capacity(&self, workers: usize, service: Duration, queue: usize) {
        *self.state.capacity.lock().unwrap() = Some(Capacity {
            workers: Arc::new(tokio::sync::Semaphore::new(workers)),
            service,
            admitted: Arc::default(),
            limit: (workers + queue) as u64,
        });
    }

    /// Requests answered 503 because the capacity model was full.
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` webhooks arrived (whatever they were answered).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {count} webhooks, got {}", self.received().len());
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut held = state.held.subscribe();
    if *held.borrow() {
        state.holding.fetch_add(1, Ordering::SeqCst);
        let _ = held.wait_for(|held| !*held).await;
        state.holding.fetch_sub(1, Ordering::SeqCst);
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let capacity = state.capacity.lock().unwrap().clone();
    if let Some(capacity) = capacity {
        if capacity.admitted.fetch_add(1, Ordering::SeqCst) >= capacity.limit {
            capacity.admitted.fetch_sub(1, Ordering::SeqCst);
            state.rejected.fetch_add(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let permit = capacity.workers.acquire().await.unwrap();
        tokio::time::sleep(capacity.service).await;
        drop(permit);
        capacity.admitted.fetch_sub(1, Ordering::SeqCst);
    }
    state.received.lock().unwrap().push(Delivery {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    state.arrived.notify_waiters();
    StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
}

/// A TCP proxy that can be cut (every connection dropped, new ones refused) and restored: a
/// network outage between floodgate and its database, for real.
pub struct TcpProxy {
    pub addr: SocketAddr,
    upstream: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            upstream,
            cut: Arc::default(),
            connections: Arc::default(),
        };
        let (upstream, cut, connections) = (
            proxy.upstream.clone(),
            proxy.cut.clone(),
            proxy.connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(Ordering::SeqCst) {
                    continue; // dropped at once: the client sees its connection closed
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(task);
            }
        });
        proxy
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// A customer system that is dead in the worst way: it accepts connections and never answers.
/// Returns its webhook URL; the listener lives as long as the returned task.
pub async fn hanging_endpoint() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // never read, never answered
        }
    });
    (url, task)
}

/// Submits `count` notifications for `customer` in `lane`, in batches, and returns their ids.
pub async fn submit_many(
    client: &mut DispatcherClient<Authed>,
    customer: &str,
    lane: proto::Lane,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for start in (0..count).step_by(1000) {
        let requests = (start..count.min(start + 1000))
            .map(|i| proto::SubmitRequest {
                lane: lane as i32,
                ..submit_request(customer, &format!("{prefix}-{i}"), "u")
            })
            .collect();
        ids.extend(submit_accepted_ids(client, requests).await);
    }
    ids
}

/// Sends one SubmitBatch whose items must all be accepted; their answers, in order.
pub async fn submit_accepted(
    client: &mut DispatcherClient<Authed>,
    requests: Vec<proto::SubmitRequest>,
) -> Vec<proto::SubmitResponse> {
    let results = client
        .submit_batch(proto::SubmitBatchRequest { requests })
        .await
        .unwrap()
        .into_inner()
        .results;
    results
        .into_iter()
        .map(|r| match r.outcome {
            Some(proto::submit_result::Outcome::Accepted(a)) => a,
            other => panic!("not accepted: {other:?}"),
        })
        .collect()
}

/// [`submit_accepted`], giving the ids.
pub async fn submit_accepted_ids(
    client: &mut DispatcherClient<Authed>,
    requests: Vec<proto::SubmitRequest>,
) -> Vec<String> {
    let answers = submit_accepted(client, requests).await;
    answers.into_iter().map(|a| a.notification_id).collect()
}
