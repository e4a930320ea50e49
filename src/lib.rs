//! floodgate: a durable notification dispatcher that delivers to many customer systems, each at
//! the speed it can take.
//!
//! # Layout
//! Data flows one way: front door → intake → store → dispatcher → sink.
//!
//! - [`api`]: the gRPC front door (auth, validation, the `Dispatcher` and `Customers` services).
//! - [`intake`]: group commit of accepted notifications.
//! - [`store`]: the durable store (SQLite by default, PostgreSQL for many nodes).
//! - [`directory`]: cached customer settings.
//! - [`dispatch`]: one worker per customer system and channel; retries; outcome recording.
//! - [`sink`]: delivery on each channel: signed webhooks, FCM, APNs, SMTP, SMS.
//! - [`app`]: wiring and shutdown order; [`config`]: every knob; [`client`]: the CLI client;
//!   [`receiver`]: a webhook receiver for trying floodgate out.
//! - [`model`]: the domain words (customer, notification, lane, state).

pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod directory;
pub mod dispatch;
pub mod error;
pub mod http;
pub mod intake;
pub mod model;
pub mod preferences;
pub mod receiver;
pub mod shutdown;
pub mod sink;
pub mod store;
pub mod telemetry;

pub use app::{Listeners, run};
pub use config::ServeConfig;
