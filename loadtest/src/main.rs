//! `floodgate-loadtest`: measures floodgate under load, one subcommand per experiment.
//!
//! # Layout
//! - [`intake`]: the `intake` subcommand — how many notifications/s the front door accepts.
//! - [`server`]: floodgate started in-process on a scratch database, so a run needs nothing set up.
//! - [`client`]: connections to floodgate (the bearer token) and customer registration.
//! - [`receiver`]: an always-200 webhook receiver, for runs that also deliver.
//! - [`report`]: latency percentiles, the progress line and the final summary (text and JSON).

mod client;
mod intake;
mod receiver;
mod report;
mod server;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// floodgate's load-test harness.
#[derive(Debug, Parser)]
#[command(name = "floodgate-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure how many notifications/s floodgate accepts (Submit or SubmitBatch).
    Intake(Box<intake::IntakeArgs>),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // Only warnings by default: an in-process floodgate's info lines would bury the progress
    // lines, but its warnings (failed group commits, stalls) are exactly what a load test is for.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")?;
    match cli.command {
        Command::Intake(args) => intake::run(*args).await,
    }
}
