//! An always-200 webhook receiver: the fastest possible customer system, so a run with deliveries
//! measures floodgate's cost of delivering and not a customer's speed. It only counts what arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running receiver on 127.0.0.1.
#[derive(Debug)]
pub(crate) struct Receiver {
    url: String,
    received: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Receiver {
    /// Binds a free port and starts answering every request with 200.
    pub(crate) async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the webhook receiver")?;
        let addr = listener
            .local_addr()
            .context("cannot read the receiver's address")?;
        let received = Arc::new(AtomicU64::new(0));
        let app = Router::new().fallback(accept).with_state(received.clone());
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
            received,
            stop,
            task,
        })
    }

    /// The URL to register as the customers' webhook.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The count of webhooks received, live.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }

    /// Stops accepting and waits for requests under way.
    pub(crate) async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .context("the webhook receiver panicked")?
            .context("the webhook receiver failed")
    }
}

/// Reads the whole body before answering: an unread body makes hyper close the connection, and
/// floodgate would then pay a reconnect per delivery.
async fn accept(State(received): State<Arc<AtomicU64>>, _body: Bytes) -> StatusCode {
    received.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}
