//! `floodgate-loadtest`: measures floodgate under load, one subcommand per experiment.
//!
//! # Layout
//! Experiments, one module each:
//! - [`scenario`]: the `run` subcommand — a scenario file's simulated customer systems and load,
//!   run under each pacing policy and reported side by side (table, JSON, SVG).
//! - [`intake`]: the `intake` subcommand — how many notifications/s the front door accepts.
//! - [`deliver`]: the `deliver` subcommand — end-to-end throughput: accepted and delivered per
//!   second, submit-to-arrival latency, backlog and drain time.
//! - [`ceiling`]: the `ceiling` subcommand — the bare HTTP ceiling (reqwest → axum) that
//!   delivery rates are judged against.
//! - [`store_ceiling`]: the `store-ceiling` subcommand — rows/s straight into the store, the
//!   ceiling intake is judged against.
//! - [`memory`]: the `memory` subcommand — a floodgate process's RSS with a huge backlog for one
//!   slow customer, with many idle customer actors, or while it refuses hostile requests.
//!
//! What they share:
//! - [`caller`]: the submitting callers — open- or closed-loop pacing, what each call sends
//!   (optionally stamped with its send time, optionally a fixed total), per-caller tallies.
//! - [`process`]: floodgate as a child process (this harness's built-in copy, or a binary), which
//!   can be SIGKILLed and restarted.
//! - [`cluster`]: several such processes as the nodes of one cluster on one database, killed and
//!   added while a run goes on.
//! - [`server`]: floodgate started in-process on a scratch database, so a run needs nothing set up.
//! - [`database`]: the run's database — SQLite by default, or a scratch PostgreSQL database.
//! - [`client`]: connections to floodgate (the bearer token) and customer registration.
//! - [`receiver`]: webhook receivers answering 200 — at once, or one request at a time slowly.
//! - [`receiver_process`]: the same receivers in a process of their own, whose CPU is counted
//!   apart from floodgate's.
//! - [`arrivals`]: what the receivers saw — each webhook id once, duplicates, end-to-end latency.
//! - [`report`]: latency percentiles, the progress line and the intake summary (text and JSON).
//! - [`interrupt`]: Ctrl-C and SIGTERM end a run through its normal cleanup.

mod arrivals;
mod caller;
mod ceiling;
mod client;
mod cluster;
mod database;
mod deliver;
mod drain;
mod intake;
mod interrupt;
mod memory;
mod process;
mod receiver;
mod receiver_process;
mod report;
mod rig;
mod scenario;
mod server;
mod store_ceiling;

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

/// The hidden subcommand that runs floodgate itself: `floodgate-serve` takes exactly the flags
/// of `floodgate serve`.
pub(crate) const FLOODGATE_SERVE: &str = "floodgate-serve";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file (loadtest/scenarios/*.toml) with each pacing policy and report them
    /// side by side.
    Run(Box<scenario::RunArgs>),
    /// Measure how many notifications/s floodgate accepts (Submit or SubmitBatch).
    Intake(Box<intake::IntakeArgs>),
    /// Measure end-to-end delivery: notifications/s accepted and delivered to always-200
    /// receivers in the same run, and the latency from submit to arrival.
    Deliver(Box<deliver::DeliverArgs>),
    /// Measure how fast a backlog drains: notifications stored scheduled for one moment, which
    /// then fall due at once, so every delivery is claimed from the store.
    Drain(Box<drain::DrainArgs>),
    /// Measure the bare HTTP ceiling: POSTs/s from reqwest to an axum receiver in its own
    /// process, a fixed number in flight.
    Ceiling(Box<ceiling::CeilingArgs>),
    /// Measure the store's own ceiling: notification rows/s inserted straight into floodgate's
    /// store, in fixed-size transactions, with nothing in front of it.
    StoreCeiling(Box<store_ceiling::StoreCeilingArgs>),
    /// Measure a floodgate process's resident memory with a huge backlog for one slow customer,
    /// with many idle customer actors, or while it refuses hostile requests.
    Memory(Box<memory::MemoryArgs>),
    /// `floodgate serve`, built into the harness so runs need no separately built binary.
    #[command(name = FLOODGATE_SERVE, hide = true)]
    FloodgateServe(Box<floodgate::ServeConfig>),
    /// Webhook receivers in a process of their own (see `receiver_process`).
    #[command(name = receiver_process::RECEIVER_PROCESS, hide = true)]
    ReceiverProcess(receiver_process::ReceiverProcessArgs),
}

/// The server's allocator (see floodgate's main.rs), so in-process measurements match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::FloodgateServe(cfg) = cli.command {
        // The runtime `floodgate serve` would start, and floodgate sets up its own logging.
        let runtime =
            floodgate::app::main_runtime(&cfg).context("cannot start floodgate's runtime")?;
        return Ok(runtime.block_on(floodgate::app::serve(*cfg))?);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(harness(cli))
}

/// Every subcommand but the built-in server, on a runtime with a thread per core.
async fn harness(cli: Cli) -> Result<()> {
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
        Command::Deliver(args) => deliver::run(*args).await,
        Command::Memory(args) => memory::run(*args).await,
        Command::Ceiling(args) => ceiling::run(*args).await,
        Command::Drain(args) => drain::run(*args).await,
        Command::StoreCeiling(args) => store_ceiling::run(*args).await,
        Command::ReceiverProcess(args) => receiver_process::serve(args).await,
        Command::Run(args) => scenario::run(*args).await,
        Command::FloodgateServe(_) => unreachable!("handled above"),
    }
}
