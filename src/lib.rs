//! floodgate: a durable notification dispatcher that delivers to many customer systems, each at
//! the speed it can take.
//!
//! # Layout
//! Data flows one way: front door → intake → store → dispatcher → sink.
//!
//! - [`api`]: the gRPC front door (auth, validation, the `Dispatcher` and `Customers` services).
//! - `intake`: group commit of accepted notifications.
//! - [`store`]: the durable store (SQLite by default, PostgreSQL for many nodes).
//! - [`directory`]: cached customer settings.
//! - [`dispatch`]: one worker per customer system and channel; retries; outcome recording.
//! - [`sink`]: delivery on each channel: signed webhooks, FCM, APNs, SMTP, SMS.
//! - [`app`]: wiring and shutdown order; [`config`]: every `serve` knob ([`ServeConfig`]) and
//!   the data directory's file names; `first_run`: what `serve` tells a person at start-up.
//! - The command line (the client subcommands, the template CSV commands, `floodgate receive`)
//!   is the `floodgate` binary in `src/bin/floodgate/`, built on this crate's public API and
//!   `floodgate-client`; nothing here calls it.
//! - `idempotency`: the optional Redis fast path for repeated idempotency keys.
//! - `retention`: the job that archives old notifications and purges the archive.
//! - `preferences`: recipients' opt-outs, checked at intake; [`templates`]: versioned
//!   templates, checked at intake and rendered at send time.
//! - `connections`: accepted connections, capped and cut at the shutdown deadline.
//! - [`tls`]: TLS on both listeners, reloaded when the certificate files change.
//! - [`failpoints`]: fault injection for tests (the `failpoints` feature).
//! - [`private_files`]: owner-only modes for the data directory, database and token files.
//! - [`public_id`]: notification ids as callers see them, unguessable.
//! - `secrets_at_rest`: signing secrets and provider secrets sealed in the database.
//! - `redact`: the redacting `Debug` every secret goes through.
//! - `bounded_cache`: the in-memory caches' map, started over when full.
//! - [`model`]: the domain words (customer, notification, lane, state).
//!
//! Modules named without a link are private: nothing outside the crate (the binary, `tests/`,
//! `loadtest/`, `fuzz/`) uses them.

pub mod api;
pub mod app;
mod bounded_cache;
pub mod cluster;
pub mod config;
mod connections;
mod dashboard;
pub mod directory;
pub mod dispatch;
pub mod error;
pub mod failpoints;
mod first_run;
mod http;
mod idempotency;
mod intake;
pub mod model;
mod preferences;
pub mod private_files;
pub mod public_id;
mod redact;
mod retention;
pub mod scoped_tokens;
mod secrets_at_rest;
pub mod shutdown;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod tls;

pub use app::{Listeners, run};
pub use config::ServeConfig;
