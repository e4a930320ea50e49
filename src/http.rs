//! The HTTP side port: liveness and readiness for load balancers and orchestrators, Prometheus
//! metrics and the live dashboard for SREs.
//!
//! | path | auth | what |
//! |---|---|---|
//! | `/` | none | redirects to `/dashboard` |
//! | `/healthz` | none | the process is up |
//! | `/readyz` | none | the database answers and takes a write |
//! | `/metrics` | token | Prometheus text format (see [`crate::telemetry::metrics`]) |
//! | `/dashboard` | none (the page asks for a token) | the live dashboard (see [`crate::dashboard`]) |
//! | `/dashboard/api/...` | token | the dashboard's data |
//!
//! "token" means the admin or the read-only metrics token, as `Authorization: Bearer <token>`
//! only: a token in the query string would end up in access logs, proxies and browser history.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Tokens;
use crate::connections::{CutStream, Incoming};
use crate::dashboard::{self, history::History};
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, Scrape};

/// What the HTTP handlers share.
#[derive(Debug)]
pub(crate) struct HttpState {
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    pub tokens: Tokens,
}

impl HttpState {
    /// What the dashboard reads its data from.
    fn dashboard(&self) -> dashboard::Sources<'_> {
        dashboard::Sources {
            store: &self.store,
            dispatcher: &self.dispatcher,
            history: &self.history,
        }
    }
}

/// Time limits on the HTTP port, so slow or silent clients cannot hold connections open.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// How long one request may take to be answered.
    pub request_timeout: Duration,
}

/// Serves the HTTP endpoints until `shutdown` completes, then lets requests under way finish.
/// Connections still open after that are ended by the [`crate::connections::Cut`] that
/// accepted them.
pub(crate) async fn serve(
    mut incoming: Incoming,
    state: HttpState,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let request_timeout = limits.request_timeout;
    let app = Router::new()
        .route("/", get(to_dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/api/overview", get(dashboard_overview))
        .route("/dashboard/api/customers/{id}", get(dashboard_customer))
        .layer(axum::middleware::from_fn(
            move |request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(request_timeout, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response()
                    }
                }
            },
        ))
        .with_state(Arc::new(state));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            next = incoming.next() => match next {
                Some((stream, _)) => {
                    connections.spawn(serve_connection(stream, app.clone(), limits, stop.clone()));
                }
                None => break,
            },
        }
    }
    drop(incoming); // stop accepting
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One HTTP/1 connection (keep-alive), closed gracefully when `stop` fires.
async fn serve_connection(
    stream: CutStream,
    app: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
            return;
        }
        _ = stop.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "HTTP connection ended with an error");
    }
}

/// `GET /`: a person who opens the bare address wants the dashboard. A token travels in the URL
/// fragment (`/#token=…`), which the browser keeps across the redirect and never sends; a query
/// string is dropped, so no token is passed along in a URL a server sees.
async fn to_dashboard() -> axum::response::Redirect {
    axum::response::Redirect::to("/dashboard")
}

/// How long `/readyz` waits for the database before answering not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready when the database answers reads *and takes a write* (see [`Store::probe_write`]): a
/// node that cannot store submits must not be sent any.
async fn ready(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    let check = async {
        state.store.ping().await?;
        state.store.probe_write(crate::model::now_millis()).await
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(crate::store::Error::Full(_))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database storage is full\n",
        ),
        Ok(Err(_)) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable for writes\n",
        ),
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
        cluster: state.dispatcher.placement().view(),
        outcomes_queued: state.dispatcher.outcomes_queued(),
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

/// `GET /dashboard/api/overview`, for a token that may read it.
async fn dashboard_overview(State(state): State<Arc<HttpState>>, _: Authorized) -> Response {
    dashboard::overview(state.dashboard()).await
}

/// `GET /dashboard/api/customers/{id}`, for a token that may read it.
async fn dashboard_customer(
    State(state): State<Arc<HttpState>>,
    _: Authorized,
    Path(id): Path<String>,
) -> Response {
    dashboard::customer(state.dashboard(), id).await
}

/// Proof that the request carried the admin or the metrics token in its `Authorization` header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized;

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
