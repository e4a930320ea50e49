//! The HTTP side port: liveness and readiness for load balancers and orchestrators.
//! (Metrics and the dashboard will live here too.)

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::store::Store;

/// Serves the HTTP endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(store);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Ready when the database answers.
async fn ready(State(store): State<Store>) -> (StatusCode, &'static str) {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}
