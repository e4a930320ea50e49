//! Webhook receivers that answer 200: by default the fastest possible customer system, so a run
//! with deliveries measures floodgate's cost of delivering and not a customer's speed; or, with
//! [`Behaviour::serial`], a slow one that takes requests one at a time. Both count what arrives,
//! and can hand every arrival to shared [`Arrivals`] for per-id counting and latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::arrivals::Arrivals;

/// How long [`Receiver::stop`] lets requests under way finish. A slow receiver can hold a long
/// queue of requests whose sender is already gone; they are not worth waiting for.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a receiver behaves besides answering 200.
#[derive(Debug, Clone, Default)]
pub(crate) struct Behaviour {
    /// Serve one request at a time, each taking this long: a slow customer system with a single
    /// worker (100 ms gives 10 requests/s, whatever the sender's concurrency).
    pub(crate) serial: Option<Duration>,
    /// Where to report each arrival.
    pub(crate) arrivals: Option<Arc<Arrivals>>,
}

/// What every request handler shares.
struct Shared {
    received: Arc<AtomicU64>,
    /// The single worker's turn, and how long each request takes.
    serial: Option<(Mutex<()>, Duration)>,
    arrivals: Option<Arc<Arrivals>>,
}

/// A running receiver on 127.0.0.1.
#[derive(Debug)]
pub(crate) struct Receiver {
    server: HttpServer,
    received: Arc<AtomicU64>,
}

impl Receiver {
    /// Binds a free port and starts answering every request with 200 at once.
    pub(crate) async fn start() -> Result<Self> {
        Self::start_with(Behaviour::default()).await
    }

    /// Binds a free port and starts answering every request with 200, as `behaviour` says.
    pub(crate) async fn start_with(behaviour: Behaviour) -> Result<Self> {
        let received = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            received: received.clone(),
            // tokio's mutex is fair: requests take their turns in arrival order.
            serial: behaviour.serial.map(|time| (Mutex::new(()), time)),
            arrivals: behaviour.arrivals,
        });
        let server = HttpServer::start(Router::new().fallback(accept).with_state(shared)).await?;
        Ok(Self { server, received })
    }

    /// The URL to register as the customers' webhook.
    pub(crate) fn url(&self) -> &str {
        self.server.url()
    }

    /// The count of webhooks received (redeliveries included), live.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }

    /// Stops accepting and waits a little for requests under way (see [`STOP_GRACE`]).
    pub(crate) async fn stop(self) -> Result<()> {
        self.server.stop().await
    }
}

/// An HTTP server on a free port of 127.0.0.1, serving `/webhook` (and every other path) with
/// one axum router: the part every kind of receiver shares.
#[derive(Debug)]
pub(crate) struct HttpServer {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Binds a free port and starts serving `app`.
    pub(crate) async fn start(app: Router) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the webhook receiver")?;
        let addr = listener
            .local_addr()
            .context("cannot read the receiver's address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            url: format!("http://{addr}/webhook"),
            stop,
            task,
        })
    }

    /// The URL to register as a customer's webhook.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting and waits a little for requests under way (see [`STOP_GRACE`]).
    pub(crate) async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(ended) => ended
                .context("the webhook receiver panicked")?
                .context("the webhook receiver failed"),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

/// Reads the whole body before answering: an unread body makes hyper close the connection, and
/// floodgate would then pay a reconnect per delivery.
async fn accept(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Held until the answer is counted, so a serial receiver answers at its pace exactly.
    let _turn = match &shared.serial {
        Some((worker, time)) => {
            let turn = worker.lock().await;
            tokio::time::sleep(*time).await;
            Some(turn)
        }
        None => None,
    };
    shared.received.fetch_add(1, Ordering::Relaxed);
    if let Some(arrivals) = &shared.arrivals {
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
        arrivals.record(id, &body);
    }
    StatusCode::OK
}
