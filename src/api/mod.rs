//! The gRPC front door: the `Dispatcher`, `Customers`, `Preferences`, `Templates`, `Archive` and `Tokens` services,
//! plus the standard health and reflection services. Requests are authenticated here, validated in `convert`, and handed on.

mod archive;
pub mod auth;
mod channels;
mod cluster;
pub mod convert;
mod customers;
mod dispatcher;
mod preferences;
pub mod quota;
mod targets;
mod templates;
mod tokens;

use std::future::Future;
use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::connections::Incoming;
use crate::directory::CustomerDirectory;
use crate::dispatch::Dispatcher;
use crate::intake::Intake;
use crate::store::Store;
pub use auth::{Scope, Tokens};

/// The protobuf types and clients of `floodgate.v1` (from floodgate-client, so the server and
/// its callers share them) and the service traits generated here.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod proto {
    pub use floodgate_client::proto::*;

    tonic::include_proto!("floodgate.v1");

    /// The encoded descriptors of `floodgate.v1`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/floodgate_descriptor.bin"));
}

use proto::archive_server::ArchiveServer;
use proto::cluster_server::ClusterServer;
use proto::customers_server::CustomersServer;
use proto::dispatcher_server::DispatcherServer;
use proto::preferences_server::PreferencesServer;
use proto::templates_server::TemplatesServer;
use proto::tokens_server::TokensServer;

/// What the services share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub intake: Intake,
    pub directory: Arc<CustomerDirectory>,
    pub dispatcher: Dispatcher,
    pub tokens: Tokens,
    /// The scoped tokens (also inside `tokens`), which the `Tokens` service creates and revokes.
    pub scoped_tokens: Arc<crate::scoped_tokens::ScopedTokens>,
    /// Intake counters and submit latency.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Opt-out preferences, checked at intake.
    pub preferences: Arc<crate::preferences::Preferences>,
    /// The Redis idempotency fast path, with `--redis-url`.
    pub fast_path: Option<Arc<crate::idempotency::FastPath>>,
    /// Versioned templates, pinned at intake.
    pub templates: Arc<crate::templates::Templates>,
    /// Which addresses deliveries may reach, checked again at upsert for IP-literal targets.
    pub target_policy: Arc<crate::sink::target_policy::TargetPolicy>,
    /// Whether SMTP may authenticate over plain text (`--allow-plaintext-smtp-auth`).
    pub allow_plaintext_smtp_auth: bool,
    /// Whether gRPC server reflection is served (`--grpc-reflection`).
    pub grpc_reflection: bool,
    /// How far back `ListNotifications` reaches.
    pub inbox_retention: std::time::Duration,
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// Largest accepted gRPC message, in bytes (tonic answers OUT_OF_RANGE above it).
    pub max_message_bytes: usize,
    /// How far ahead `send_at` and `expires_at` may lie.
    pub max_schedule_ahead: std::time::Duration,
    /// The per-customer backlog quota.
    pub backlog_quota: Arc<quota::BacklogQuota>,
    /// Turns row ids into the notification ids callers see, and back.
    pub ids: crate::public_id::PublicIds,
}

impl ApiState {
    /// A registered customer's settings: what preferences and templates belong to.
    pub(crate) async fn known_customer(
        &self,
        customer_id: &str,
    ) -> Result<Arc<crate::model::Customer>, crate::error::Error> {
        convert::customer_id("customer_id", customer_id)?;
        self.directory
            .get(customer_id)
            .await?
            .ok_or_else(|| unknown_customer(customer_id))
    }
}

/// The answer about a customer that does not exist, or that a scoped token may not see: the
/// same, so the two cannot be told apart.
pub(crate) fn unknown_customer(customer_id: &str) -> crate::error::Error {
    crate::error::Error::NotFound(format!("customer {customer_id:?} not found"))
}

/// Could not start the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// HTTP/2 limits of the gRPC port: how much one connection may ask of the server, and how dead
/// peers are found.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    /// Calls one connection may have running at once; more wait (per connection, so one busy
    /// client cannot take every worker).
    pub concurrency_per_connection: usize,
    /// HTTP/2 streams one connection may open at once.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged.
    pub keepalive_interval: std::time::Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: std::time::Duration,
}

/// Serves the API on `incoming` until `shutdown` completes; then stops accepting calls and lets
/// calls under way finish. Connections still open after that are ended by the
/// [`crate::connections::Cut`] that accepted them.
pub async fn serve<H: Health>(
    incoming: Incoming,
    limits: GrpcLimits,
    state: ApiState,
    health_service: HealthServer<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let reflection = if state.grpc_reflection {
        let service = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        Some(service)
    } else {
        None
    };
    let limit = state.max_message_bytes;
    let dispatcher = InterceptedService::new(
        DispatcherServer::new(dispatcher::DispatchService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.dispatcher(),
    );
    let customers = InterceptedService::new(
        CustomersServer::new(customers::CustomerService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.admin_only(),
    );
    let preferences = InterceptedService::new(
        PreferencesServer::new(preferences::PreferenceService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.dispatcher(),
    );
    let templates = InterceptedService::new(
        TemplatesServer::new(templates::TemplateService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.admin_only(),
    );
    let archive = InterceptedService::new(
        ArchiveServer::new(archive::ArchiveService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.admin_only(),
    );
    let tokens = InterceptedService::new(
        TokensServer::new(tokens::TokenService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.admin_only(),
    );
    let cluster = InterceptedService::new(
        ClusterServer::new(cluster::ClusterService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens.admin_only(),
    );
    Server::builder()
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(dispatcher)
        .add_service(customers)
        .add_service(preferences)
        .add_service(templates)
        .add_service(archive)
        .add_service(tokens)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
