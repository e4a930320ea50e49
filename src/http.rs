//! The HTTP side port: liveness and readiness for load balancers and orchestrators, Prometheus
//! metrics and the live dashboard for SREs.
//!
//! | path | auth | what |
//! |---|---|---|
//! | `/` | none | redirects to `/dashboard` |
//! | `/healthz` | none | the process is up |
//! | `/readyz` | none | the database answers |
//! | `/metrics` | token | Prometheus text format (see [`crate::telemetry::metrics`]) |
//! | `/dashboard` | none (the page asks for a token) | the live dashboard (see [`crate::dashboard`]) |
//! | `/dashboard/api/...` | token | the dashboard's data |
//!
//! "token" means the admin or the read-only metrics token, as `Authorization: Bearer <token>`
//! only: a token in the query string would end up in access logs, proxies and browser history.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::api::Tokens;
use crate::dashboard::{self, history::History};
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, Scrape};

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct HttpState {
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    pub tokens: Tokens,
}

/// Serves the HTTP endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(to_dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/api/overview", get(dashboard::overview))
        .route("/dashboard/api/customers/{id}", get(dashboard::customer))
        .with_state(Arc::new(state));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `GET /`: a person who opens the bare address wants the dashboard. A token travels in the URL
/// fragment (`/#token=…`), which the browser keeps across the redirect and never sends; a query
/// string is dropped, so no token is passed along in a URL a server sees.
async fn to_dashboard() -> axum::response::Redirect {
    axum::response::Redirect::to("/dashboard")
}

/// Ready when the database answers.
async fn ready(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// `GET /metrics`. The backlog comes from the store; if it cannot be read, the rest is still
/// served (an SRE needs metrics most when the database is in trouble).
async fn metrics(State(state): State<Arc<HttpState>>, _: Authorized) -> Response {
    let backlog = match state.store.backlog_all().await {
        Ok(backlog) => backlog,
        Err(err) => {
            tracing::warn!(error = %err, "metrics: cannot read the backlog");
            Vec::new()
        }
    };
    let scrape = Scrape {
        actors: state.dispatcher.all_stats().await,
        backlog,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&scrape),
    )
        .into_response()
}

/// Proof that the request carried the admin or the metrics token in its `Authorization` header.
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequestParts<Arc<HttpState>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<HttpState>,
    ) -> Result<Self, Self::Rejection> {
        let from_header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match from_header {
            Some(token) if state.tokens.reads_metrics(token) => Ok(Authorized),
            Some(_) => Err((StatusCode::UNAUTHORIZED, "invalid token\n").into_response()),
            None => Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "send `Authorization: Bearer <admin or metrics token>`\n",
            )
                .into_response()),
        }
    }
}
