//! The gRPC front door: the `Dispatcher`, `Customers`, `Preferences`, `Templates`, `Archive` and `Tokens` services,
//! plus the standard health and reflection services. Requests are authenticated here, validated in `convert`, and handed on
//! to intake or the store. Handlers work in the domain error, [`crate::error::Error`], which becomes a `Status` in one place,
//! `answer`; what they share is [`ApiState`], reached through its methods.

mod archive;
pub mod auth;
mod channels;
mod cluster;
pub mod convert;
mod customers;
mod dispatcher;
mod preferences;
pub mod quota;
mod state;
mod targets;
mod templates;
mod tokens;

use std::future::Future;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::connections::Incoming;
pub use auth::{Scope, Tokens};
pub use state::{ApiLimits, ApiParts, ApiState};

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

/// The one place a handler's domain error becomes the `Status` a caller sees: every handler
/// works in [`crate::error::Error`] and answers through here.
fn answer<T>(result: Result<T, crate::error::Error>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
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
/// `connections::Cut` that accepted them.
pub async fn serve<H: Health>(
    incoming: Incoming,
    limits: GrpcLimits,
    state: ApiState,
    health_service: HealthServer<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let reflection = if state.limits().grpc_reflection {
        let service = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        Some(service)
    } else {
        None
    };
    let limit = state.limits().max_message_bytes;
    let dispatcher = InterceptedService::new(
        DispatcherServer::new(dispatcher::DispatchService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().dispatcher(),
    );
    let customers = InterceptedService::new(
        CustomersServer::new(customers::CustomerService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().admin_only(),
    );
    let preferences = InterceptedService::new(
        PreferencesServer::new(preferences::PreferenceService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().dispatcher(),
    );
    let templates = InterceptedService::new(
        TemplatesServer::new(templates::TemplateService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().admin_only(),
    );
    let archive = InterceptedService::new(
        ArchiveServer::new(archive::ArchiveService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().admin_only(),
    );
    let tokens = InterceptedService::new(
        TokensServer::new(tokens::TokenService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().admin_only(),
    );
    let cluster = InterceptedService::new(
        ClusterServer::new(cluster::ClusterService::new(state.clone()))
            .max_decoding_message_size(limit),
        state.tokens().admin_only(),
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
