//! Wiring: opens the store, starts intake, the dispatcher and both servers, and shuts them down in
//! a fixed order.
//!
//! Shutdown order, all within one deadline (`--shutdown-grace` after the signal):
//! 1. the signal arrives; health turns NOT_SERVING;
//! 2. the gRPC and HTTP servers stop accepting and let calls under way finish (so every answered
//!    submit is committed); connections still open at half the grace (silent clients, half-sent
//!    requests, idle keep-alives) are closed; the dashboard's sampler stops too, and the scoped
//!    token reloader writes the tokens' last uses. In a cluster the node also leaves the node
//!    table, so the others plan without it, and from then on only renews the leases it holds;
//! 3. the dispatcher stops claiming and waits for deliveries under way, until nine tenths of the
//!    grace, and writes its controllers' checkpoints;
//! 4. intake writers drain their queue, the outcome writer writes the last outcomes; a cluster
//!    node then releases its leases, so the others take its customers at their next heartbeat;
//! 5. the database pool closes.
//!
//! At the deadline whatever still runs is abandoned and the process exits. Anything cut off is
//! still safe: it is in the store, and its lease returns it.

mod cluster_node;
mod drain;
mod front_runtime;
mod tokens;

pub use front_runtime::main_runtime;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::api::{self, ApiLimits, ApiParts, ApiState};
use crate::cluster::{Membership, Placement};
use crate::config::ServeConfig;
use crate::connections::{Cut, Tls};
use crate::dashboard::history::History;
use crate::directory::CustomerDirectory;
use crate::dispatch::Dispatcher;
use crate::dispatch::outcomes::OutcomeWriter;
use crate::http::HttpState;
use crate::idempotency::FastPath;
use crate::intake::Intake;
use crate::preferences::Preferences;
use crate::public_id::PublicIds;
use crate::scoped_tokens::ScopedTokens;
use crate::secrets_at_rest::{Sealer, SecretsKey};
use crate::shutdown::Deadline;
use crate::sink::Sinks;
use crate::sink::webhook::WebhookSettings;
use crate::store::{self, Store, StoreOptions};
use crate::telemetry::metrics::Metrics;
use crate::templates::Templates;
use crate::tls::{Listener, ServerTls};
use cluster_node::ClusterNode;
use drain::{drain_server, finish_by};
use tokens::resolve_tokens;

/// How long customer settings are cached before being re-read (changes made on other nodes).
const DIRECTORY_TTL: Duration = Duration::from_secs(5);

/// The two bound sockets the server uses. Binding is the caller's job, so tests can bind port 0.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Dispatch(#[from] crate::dispatch::StartError),
    #[error(transparent)]
    FastPath(#[from] crate::idempotency::ConnectError),
    #[error("cannot set up preferences: {0}")]
    Preferences(#[from] crate::preferences::Error),
    #[error(transparent)]
    WebhookClient(#[from] crate::sink::webhook::ClientError),
    #[error(transparent)]
    IdKey(#[from] crate::public_id::BadKey),
    #[error(transparent)]
    SecretsKey(#[from] crate::secrets_at_rest::KeyFileError),
    #[error(transparent)]
    Api(#[from] api::ServeError),
    #[error("cannot use the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the data directory {path} owner-only: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot join the cluster: {0}")]
    NodeId(#[from] crate::cluster::NodeIdError),
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error("a server task panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot start the front runtime's threads: {0}")]
    FrontRuntime(#[source] std::io::Error),
}

/// Why `floodgate serve` failed: set-up problems the operator can fix, or the server's own error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot set up logging: {0}")]
    Logging(String),
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "cannot listen on {flag} {addr}: {source}{}",
        crate::first_run::bind_hint(source, flag, env)
    )]
    Bind {
        flag: &'static str,
        env: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("floodgate stopped with an error: {0}")]
    App(#[from] AppError),
}

/// `floodgate serve`: sets up logging, binds the configured addresses and runs until SIGINT or
/// SIGTERM. A library function so the load harness can run floodgate as a child process of its
/// own binary (and SIGKILL it) without needing a separately built `floodgate`.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    crate::telemetry::init(cfg.log_format).map_err(|e| ServeError::Logging(e.to_string()))?;
    cfg.validate()?;
    let shutdown = crate::shutdown::signal();
    let bind = |flag: &'static str, env: &'static str, addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                flag,
                env,
                addr,
                source,
            })
    };
    let grpc = bind("--grpc-addr", "FLOODGATE_GRPC_ADDR", cfg.grpc_addr).await?;
    let http = bind("--http-addr", "FLOODGATE_HTTP_ADDR", cfg.http_addr).await?;
    println!("{}", crate::first_run::banner(&cfg, &grpc, &http));
    run(cfg, Listeners { grpc, http }, shutdown).await?;
    Ok(())
}

/// Runs floodgate until `shutdown` completes, then shuts down in the order given above.
pub async fn run(
    cfg: ServeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    if cfg.data_dir.exists()
        || cfg.database_url.is_none()
        || cfg.admin_token.is_none()
        || cfg.metrics_token_file.is_none()
        || cfg.secrets_key_file.is_none()
    {
        // Owner-only: it holds the database, the admin token and the secrets key.
        crate::private_files::tighten_dir(&cfg.data_dir).map_err(|source| AppError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
    }
    // Before anything else: a certificate that does not load is a configuration error.
    let tls = cfg.tls_files().map(ServerTls::load).transpose()?;
    let sealer = Sealer::new(
        SecretsKey::load_or_generate(&cfg.secrets_key_path())?,
        cfg.secrets_key_file_previous
            .as_deref()
            .map(SecretsKey::load)
            .transpose()?,
    );
    // Declared before everything that spawns on it, so it is dropped after all of them.
    let front = front_runtime::FrontRuntime::start().map_err(AppError::FrontRuntime)?;
    let store = Store::connect(
        &cfg.database_url(),
        &StoreOptions {
            max_connections: cfg.db_max_connections,
            sealer: Some(Arc::new(sealer)),
            writers_runtime: Some(front.handle()),
            ..StoreOptions::default()
        },
    )
    .await?;
    let scoped_tokens = Arc::new(ScopedTokens::load(store.clone()).await?);
    let tokens = resolve_tokens(&cfg)?.with_scoped(scoped_tokens.clone());
    let ids = PublicIds::from_stored(
        &store
            .notification_id_key(&PublicIds::generate_key())
            .await?,
    )?;
    let directory = Arc::new(CustomerDirectory::new(store.clone(), DIRECTORY_TTL));
    let target_policy = Arc::new(cfg.target_policy());
    let sink = Sinks::new(
        &WebhookSettings {
            timeout: cfg.webhook_timeout,
            connect_timeout: cfg.webhook_timeout.min(Duration::from_secs(5)),
            target_policy: target_policy.clone(),
            allow_plaintext_smtp_auth: cfg.allow_plaintext_smtp_auth,
            max_connections_per_host: cfg.webhook_max_connections_per_host,
        },
        ids.clone(),
    )?;
    let preferences = Arc::new(Preferences::connect(store.clone(), &cfg.preference_cache()).await?);
    let templates = Arc::new(Templates::new(store.clone()).with_limits(cfg.render_limits()));
    let fast_path = match &cfg.redis_url {
        Some(url) => Some(Arc::new(
            FastPath::connect(url, &cfg.redis_prefix, cfg.idempotency_cache_ttl).await?,
        )),
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let (outcomes, outcome_writer) = OutcomeWriter::spawn(store.clone(), metrics.clone());
    let node = match store.is_single_node() {
        true => None,
        false => Some(ClusterNode::prepare(&cfg, &store)?),
    };
    let placement = node
        .as_ref()
        .map_or_else(Placement::single, |node| node.placement.clone());
    let dispatcher = Dispatcher::start(
        store.clone(),
        directory.clone(),
        templates.clone(),
        sink,
        outcomes,
        cfg.dispatch_settings(),
        metrics.clone(),
        placement,
    )
    .await?;
    let cluster = match node {
        Some(node) => Some(
            node.join(&cfg, &store, &dispatcher, metrics.clone())
                .await?,
        ),
        None => None,
    };
    let (intake, intake_writers) = Intake::spawn(
        store.clone(),
        dispatcher.clone(),
        store.intake_writers(),
        metrics.clone(),
        preferences.clone(),
        templates.clone(),
        fast_path,
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let state = ApiState::new(ApiParts {
        store: store.clone(),
        intake,
        directory,
        dispatcher: dispatcher.clone(),
        tokens: tokens.clone(),
        scoped_tokens: scoped_tokens.clone(),
        metrics: metrics.clone(),
        preferences,
        templates,
        target_policy,
        backlog_quota: Arc::new(api::quota::BacklogQuota::new(
            Some(cfg.max_backlog_per_customer).filter(|limit| *limit > 0),
        )),
        ids,
        limits: ApiLimits {
            grpc_reflection: cfg.grpc_reflection,
            allow_plaintext_smtp_auth: cfg.allow_plaintext_smtp_auth,
            inbox_retention: cfg.inbox_retention,
            max_payload_bytes: cfg.max_payload_bytes,
            max_message_bytes: cfg.max_message_bytes,
            max_schedule_ahead: cfg.max_schedule_ahead,
        },
    });
    let stop = CancellationToken::new();
    let cut = Cut::default();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let http_addr = listeners.http.local_addr().ok();
    let tls_for = |listener| tls.clone().map(|server| Tls { server, listener });
    let mut tls_watcher = tls
        .clone()
        .map(|tls| tokio::spawn(tls.watch(crate::tls::RELOAD_INTERVAL, stop.clone())));
    let mut grpc = front.handle().spawn(api::serve(
        cut.accept(listeners.grpc, None, tls_for(Listener::Grpc)),
        cfg.grpc_limits(),
        state,
        health_service,
        stop.clone().cancelled_owned(),
    ));
    // The retention job, the token reloader (last uses) and the HTTP server (`/readyz` probes a
    // write) take turns at the write connection: on the writers' runtime, like every writer, so
    // no turn is held by a task waiting behind the main runtime's sends.
    let mut retention = front.handle().spawn(crate::retention::run(
        store.clone(),
        cfg.retention(),
        metrics.clone(),
        stop.clone(),
    ));
    let mut scoped_reloader = front.handle().spawn(scoped_tokens.run(stop.clone()));
    let history = Arc::new(History::default());
    let mut sampler = tokio::spawn({
        let (history, dispatcher, stop) = (history.clone(), dispatcher.clone(), stop.clone());
        async move { history.run(dispatcher, stop).await }
    });
    let http_state = HttpState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        metrics,
        history,
        tokens,
    };
    let mut http = front.handle().spawn(crate::http::serve(
        cut.accept(
            listeners.http,
            Some(cfg.http_max_connections),
            tls_for(Listener::Http),
        ),
        http_state,
        cfg.http_limits(),
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(grpc = ?grpc_addr, http = ?http_addr, tls = tls.is_some(), "floodgate serving");

    // 1. Wait for the signal (or for the gRPC server to fail on its own).
    let early_exit = tokio::select! {
        _ = shutdown => None,
        result = &mut grpc => Some(result),
    };
    let deadline = Deadline::after(cfg.shutdown_grace);
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    stop.cancel();
    if let Some(cluster) = &cluster {
        cluster.start_leaving(&store).await;
    }
    // 2. Both servers finish the calls under way; lingering connections are cut at half-time.
    let calls_end = deadline.share(0.5);
    let grpc_done = async {
        match early_exit {
            Some(result) => Some(result),
            None => drain_server(&mut grpc, &cut, calls_end, deadline.end()).await,
        }
    };
    let (grpc_result, http_result) = tokio::join!(
        grpc_done,
        drain_server(&mut http, &cut, calls_end, deadline.end())
    );
    // The sampler holds the dispatcher; the retention job stops between two batches (nothing is
    // ever half-moved).
    finish_by(&mut sampler, deadline.end(), "the dashboard sampler").await;
    finish_by(&mut retention, deadline.end(), "the retention job").await;
    // It writes the tokens' last uses once more as it stops.
    finish_by(
        &mut scoped_reloader,
        deadline.end(),
        "the scoped token reloader",
    )
    .await;
    if let Some(watcher) = &mut tls_watcher {
        finish_by(watcher, deadline.end(), "the TLS reload check").await;
    }
    // 3. Deliveries under way finish, leaving the last tenth for the writers.
    if !dispatcher
        .shutdown(Deadline::left(deadline.share(0.9)))
        .await
    {
        tracing::warn!(
            "deliveries did not finish within the grace period; their leases will recover them"
        );
    }
    let cluster = match cluster {
        Some(cluster) => Some(cluster.stop(deadline.end()).await),
        None => None,
    };
    drop(dispatcher);
    // 4. Queued submits and outcomes are written. Both writers end once their senders are gone.
    for mut writer in intake_writers {
        finish_by(&mut writer, deadline.end(), "an intake writer").await;
    }
    let mut outcome_writer = outcome_writer;
    finish_by(&mut outcome_writer, deadline.end(), "the outcome writer").await;
    // Every outcome and checkpoint is written: the buckets may go to the other nodes.
    if let Some(cluster) = cluster {
        Membership::<Dispatcher>::release_all(&store, &cluster.id, &cluster.ownership).await;
    }
    // 5. The rest.
    if tokio::time::timeout_at(deadline.end(), store.close())
        .await
        .is_err()
    {
        tracing::warn!("the database pool did not close within the grace period");
    }
    tracing::info!("floodgate stopped");
    if let Some(result) = http_result {
        result?.map_err(AppError::Http)?;
    }
    if let Some(result) = grpc_result {
        result??;
    }
    Ok(())
}
