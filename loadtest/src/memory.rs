//! The `memory` experiment: the resident memory of a floodgate *process*, in the situations that
//! could make it grow without bound — a huge backlog for one slow customer (does floodgate hold
//! the backlog in memory, or only a bounded window of it?), many customers whose actors are alive
//! but idle (what does one actor cost?), and a stream of hostile requests it must refuse (does
//! refusing them cost memory it keeps?).
//!
//! floodgate runs as a child process from a release binary (see [`crate::process`]), so the figures are
//! its own and not mixed with the load generator's, and its allocator behaves as in service. Every
//! scenario registers customers and reads `VmRSS` and `VmHWM` from `/proc/<pid>/status`; the
//! first two submit with SubmitBatch (see [`submit_all`]). Each scenario is a module.
//!
//! RSS counts what the allocator holds, not what floodgate uses: memory freed after a burst is
//! often kept for reuse, so figures after a burst are upper bounds of what the steady state needs.

mod backlog;
mod hostile;
mod idle_actors;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::builder::RangedU64ValueParser;
use clap::{Args, ValueEnum};
use floodgate::api::proto;
use serde::Serialize;

use crate::arrivals::Arrivals;
use crate::caller::{self, Mode, Plan, Submitted};
use crate::client::AuthedChannel;
use crate::interrupt::unless_interrupted;
use crate::process::{Floodgate, Memory, Program};
use crate::receiver::{Behaviour, Receiver};
use crate::report;

/// How long to let floodgate settle (startup, a burst's tail, the outcome writer) before a
/// reading that should show a steady state.
const SETTLE: Duration = Duration::from_secs(2);

/// Which situation to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One slow customer (one request at a time, --slow-delay each) with a --backlog of
    /// notifications, observed while it is delivered to.
    Backlog,
    /// --customers customers with one delivered notification each, their actors alive but idle.
    IdleActors,
    /// --requests requests of each kind that must be refused (oversized fields, a year-9999
    /// send_at), RSS read after each kind.
    Hostile,
}

/// Options of `floodgate-loadtest memory`.
#[derive(Debug, Args)]
pub(crate) struct MemoryArgs {
    /// The situation to measure.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The floodgate binary to run (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/floodgate")]
    floodgate_bin: PathBuf,
    /// Database for floodgate. A PostgreSQL URL gets a fresh scratch database created beside the
    /// one named and dropped afterwards; any other URL is used as given.
    /// [default: SQLite in a fresh temporary directory]
    #[arg(long)]
    database_url: Option<String>,
    /// backlog: notifications submitted for the slow customer.
    #[arg(long, default_value_t = 1_000_000, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    backlog: u64,
    /// backlog: how long to watch memory while the slow customer is delivered to.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    observe: Duration,
    /// backlog: how long the slow receiver takes per request, one request at a time (100ms is
    /// 10 deliveries/s).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    slow_delay: Duration,
    /// idle-actors: customers, each sent one notification.
    #[arg(long, default_value_t = 10_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    customers: usize,
    /// idle-actors: longest to wait for every notification to arrive.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    deliver_timeout: Duration,
    /// hostile: requests of each kind.
    #[arg(long, default_value_t = 2_000, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    requests: u64,
    /// hostile: size of each oversized field (recipient, idempotency key, payload), in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    hostile_bytes: usize,
    /// Concurrent callers, each with one call in flight: SubmitBatch callers while submitting,
    /// or hostile callers.
    #[arg(long, default_value_t = 4, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    callers: usize,
    /// Notifications per SubmitBatch call (floodgate takes at most 1,000).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    batch_size: usize,
    /// Size of each notification's JSON payload, in bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the chosen scenario against a fresh floodgate process, stops it, and prints the summary.
pub(crate) async fn run(args: MemoryArgs) -> Result<()> {
    let extra_args: &[&str] = match args.scenario {
        Scenario::Backlog | Scenario::Hostile => &[],
        // Actors that stay alive however long the run takes: their memory is what is measured.
        Scenario::IdleActors => &["--idle-timeout", "10m"],
    };
    let floodgate = Floodgate::start(
        &Program::Binary(args.floodgate_bin.clone()),
        args.database_url.as_deref(),
        extra_args,
    )
    .await?;
    let json = args.json.as_deref();
    let measured = unless_interrupted(async {
        match args.scenario {
            Scenario::Backlog => {
                let summary = backlog::run(&args, &floodgate).await?;
                Ok(finish(&summary, backlog::print, json))
            }
            Scenario::IdleActors => {
                let summary = idle_actors::run(&args, &floodgate).await?;
                Ok(finish(&summary, idle_actors::print, json))
            }
            Scenario::Hostile => {
                let summary = hostile::run(&args, &floodgate).await?;
                Ok(finish(&summary, hostile::print, json))
            }
        }
    })
    .await;
    // Stopped whatever happened, so neither the process nor a scratch database outlives the run.
    let stopped = floodgate.stop().await;
    match measured {
        Ok(finished) => {
            stopped?;
            finished
        }
        Err(err) => {
            if let Err(stop_err) = stopped {
                eprintln!("warning: {stop_err:#}");
            }
            Err(err)
        }
    }
}

/// Prints a scenario's summary and writes its JSON.
/// What a scenario measures with: floodgate, a connection to it, a receiver that records every
/// arrival, and floodgate's memory once settled, before the scenario did anything.
struct Rig<'a> {
    floodgate: &'a Floodgate,
    channel: AuthedChannel,
    receiver: &'a Receiver,
    arrivals: &'a Arrivals,
    settled: Memory,
}

/// Lets floodgate settle and reads its memory then, starts a receiver that records every
/// arrival (`serial`: serving one request at a time, each taking this long), connects, and runs
/// `measure` with the [`Rig`]; the receiver is stopped whatever `measure` returns.
async fn with_receiver<T>(
    floodgate: &Floodgate,
    serial: Option<Duration>,
    measure: impl AsyncFnOnce(Rig<'_>) -> Result<T>,
) -> Result<T> {
    tokio::time::sleep(SETTLE).await;
    let settled = floodgate.memory()?;
    let arrivals = Arrivals::new()?;
    let receiver = Receiver::start_with(Behaviour {
        serial,
        arrivals: Some(arrivals.clone()),
    })
    .await?;
    let measured = async {
        let rig = Rig {
            floodgate,
            channel: floodgate.connect().await?,
            receiver: &receiver,
            arrivals: &arrivals,
            settled,
        };
        measure(rig).await
    }
    .await;
    let stopped = receiver.stop().await;
    let result = measured?;
    stopped?;
    Ok(result)
}

fn finish<S: Serialize>(summary: &S, print: fn(&S), json: Option<&Path>) -> Result<()> {
    print(summary);
    match json {
        Some(path) => report::write_json(path, summary),
        None => Ok(()),
    }
}

/// Submits `total` notifications round-robin over `customers` with SubmitBatch, closed loop from
/// `--callers` callers (see [`caller::fill`]), showing floodgate's RSS on every progress line.
async fn submit_all(
    args: &MemoryArgs,
    floodgate: &Floodgate,
    customers: Vec<String>,
    total: u64,
) -> Result<Submitted> {
    let channel = floodgate.connect().await?;
    let plan =
        Plan::new(Mode::Batch, args.batch_size, customers, args.payload_bytes).limited(total);
    caller::fill(&channel, Arc::new(plan), args.callers, total, || {
        Ok(format!("rss {:>7.1} MiB", floodgate.memory()?.rss_mib()))
    })
    .await
}

/// `TIER_SLOW` for a tier number, or the number if floodgate knows tiers this build does not.
fn tier_name(tier: i32) -> String {
    proto::Tier::try_from(tier).map_or_else(|_| tier.to_string(), |t| t.as_str_name().to_owned())
}
