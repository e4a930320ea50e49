//! The `run` subcommand: one scenario file, run once per pacing policy, reported side by side.
//!
//! For each policy the harness starts floodgate — one child process, or several nodes on one
//! PostgreSQL database (see [`crate::cluster`]) — on a fresh database (or uses `--target`),
//! starts one simulated customer system per customer ([`system`]), registers them, offers the
//! scenario's load to every running node ([`load`], [`entrances`]) while SIGKILLing floodgate or
//! killing and adding nodes if the scenario says so (sampling who owns the buckets meanwhile,
//! [`ownership`]), lets accepted notifications drain, then pauses every customer and accounts for
//! every accepted id: arrived, still queued in floodgate's store, or lost. [`report`] prints the
//! table and writes the JSON and the SVG chart.
//!
//! Modules:
//! - [`spec`]: the scenario file.
//! - [`system`]: a simulated customer system with a capacity model.
//! - [`load`]: the open-loop load and the ledger of accepted ids.
//! - [`entrances`]: which node each call goes to.
//! - [`nodes`]: the floodgate a run talks to, and the node kills and additions made to it.
//! - [`fleet`]: the run's simulated customer systems, registered, drained and paused.
//! - [`progress`]: the progress line.
//! - [`ownership`]: bucket owners over a cluster run; takeover and join times.
//! - [`outcome`]: what one policy's run measured, per customer group.
//! - [`whereabouts`]: where each accepted notification that did not arrive is.
//! - [`report`]: the table, the JSON and the SVG.

mod entrances;
mod fleet;
mod load;
mod nodes;
mod outcome;
mod ownership;
mod progress;
mod report;
mod spec;
mod system;
mod whereabouts;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::{Args, ValueEnum};
use tokio::time::Instant;

use crate::cluster::{self, Cluster};
use crate::interrupt::unless_interrupted;
use crate::process::Program;
use entrances::Entrances;
use fleet::{Fleet, drain, pause_all, register, targets};
use nodes::{Server, change_nodes, stats};
use outcome::{Customer, PolicyRun};
use ownership::{ClusterOutcome, Sampler};
use progress::Progress;
use spec::Scenario;

/// Arguments of `floodgate-loadtest run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The scenario file, e.g. loadtest/scenarios/heterogeneous.toml.
    scenario: PathBuf,
    /// Policies to run the scenario with, one after another (repeat the flag, or separate with
    /// commas). [default: adaptive, fixed, static-tiers]
    #[arg(long, value_enum, value_delimiter = ',')]
    policy: Vec<PolicyName>,
    /// Database for each started floodgate. A PostgreSQL URL gets a fresh scratch database
    /// created beside the one named and dropped afterwards; a scenario with several nodes needs
    /// one. [default: SQLite in a fresh temporary directory]
    #[arg(long)]
    database_url: Option<String>,
    /// Run against this already running floodgate (its gRPC URL) instead of starting one; it
    /// must reach 127.0.0.1 to deliver. Its own --policy applies; `crash` and cluster scenarios
    /// need a floodgate the harness started.
    #[arg(long, requires = "token")]
    target: Option<String>,
    /// Admin token of the --target floodgate.
    #[arg(long, env = "FLOODGATE_TOKEN")]
    token: Option<String>,
    /// PEM CA certificate an https:// --target's certificate must chain to [default: the public
    /// web roots].
    #[arg(long, env = "FLOODGATE_TLS_CA", requires = "target")]
    tls_ca: Option<PathBuf>,
    /// Run floodgate from this binary instead of this harness's built-in copy.
    #[arg(long)]
    floodgate_bin: Option<PathBuf>,
    /// Leave out the scenario's bulk campaigns: the baseline a campaign's effect is measured
    /// against.
    #[arg(long)]
    without_campaigns: bool,
    /// Where to write report.json and report.svg. [default: target/loadtest/SCENARIO, the scenario file's name]
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A pacing policy, as floodgate's `--policy` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyName {
    Adaptive,
    Fixed,
    StaticTiers,
}

impl PolicyName {
    fn as_str(self) -> &'static str {
        match self {
            PolicyName::Adaptive => "adaptive",
            PolicyName::Fixed => "fixed",
            PolicyName::StaticTiers => "static-tiers",
        }
    }
}

/// Runs the scenario with each policy, then prints and writes the report.
pub(crate) async fn run(args: RunArgs) -> Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if args.without_campaigns {
        for group in &mut scenario.customers {
            group.campaign = None;
        }
    }
    let name = args
        .scenario
        .file_stem()
        .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
    ensure!(
        args.target.is_none() || scenario.crash_at.is_none(),
        "{name} kills floodgate: it needs a floodgate the harness starts (leave out --target)"
    );
    ensure!(
        args.target.is_none() || !scenario.is_cluster(),
        "{name} runs several floodgate nodes: it needs nodes the harness starts (leave out --target)"
    );
    if args.target.is_none() {
        cluster::ensure_shareable(args.database_url.as_deref(), scenario.nodes_started())
            .with_context(|| format!("cannot run {name}"))?;
    }
    let policies = match (&args.target, args.policy.is_empty()) {
        (Some(_), _) => vec![None],
        (None, true) => vec![
            Some(PolicyName::Adaptive),
            Some(PolicyName::Fixed),
            Some(PolicyName::StaticTiers),
        ],
        (None, false) => args.policy.iter().copied().map(Some).collect(),
    };
    eprintln!(
        "scenario {name}: {} ({} customers, {}s load + up to {}s drain, per policy)",
        scenario.description,
        scenario.customer_count(),
        scenario.duration.0.as_secs(),
        scenario.drain.0.as_secs()
    );
    let mut runs = Vec::new();
    for policy in policies {
        runs.push(run_policy(&scenario, policy, &args).await?);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loadtest").join(&name));
    let report = report::Report::new(&name, &scenario, args.without_campaigns, runs);
    report.print();
    report.write(&out)?;
    eprintln!("wrote {0}/report.json and {0}/report.svg", out.display());
    Ok(())
}

/// One policy's run, start to finish; floodgate is stopped whatever happens.
async fn run_policy(
    scenario: &Scenario,
    policy: Option<PolicyName>,
    args: &RunArgs,
) -> Result<PolicyRun> {
    let label = policy.map_or("target", PolicyName::as_str);
    eprintln!("--- policy {label}");
    let mut server = match (&args.target, policy) {
        (Some(url), _) => Server::Target {
            url: url.clone(),
            token: args.token.clone().unwrap_or_default(),
            tls_ca: args.tls_ca.clone(),
        },
        (None, policy) => {
            let program = args
                .floodgate_bin
                .clone()
                .map_or(Program::Harness, Program::Binary);
            let flags = policy_flags(scenario, policy.unwrap_or(PolicyName::Adaptive));
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Server::Started(Box::new(
                Cluster::start(
                    &program,
                    args.database_url.as_deref(),
                    scenario.nodes,
                    &flags,
                )
                .await?,
            ))
        }
    };
    let measured =
        unless_interrupted(drive(scenario, label, &mut server, args.target.is_some())).await;
    let stopped = server.stop().await;
    let run = measured?;
    stopped?;
    Ok(run)
}

/// floodgate's flags for a policy, the scenario's baseline settings and its cluster timing.
fn policy_flags(scenario: &Scenario, policy: PolicyName) -> Vec<String> {
    let [fast, medium, slow] = scenario.baselines.tier_rates;
    let mut flags = vec![
        "--policy".into(),
        policy.as_str().into(),
        "--fixed-rate".into(),
        scenario.baselines.fixed_rate.to_string(),
        "--tier-rates".into(),
        fast.to_string(),
        medium.to_string(),
        slow.to_string(),
    ];
    flags.extend(scenario.cluster.flags());
    flags
}

/// Sets up the fleet, runs the load, drains, and accounts; the fleet is stopped whatever
/// happens.
async fn drive(
    scenario: &Scenario,
    label: &str,
    server: &mut Server,
    shared_server: bool,
) -> Result<PolicyRun> {
    let epoch = Instant::now();
    // On a shared server, ids unique to this run; on a fresh one, the readable names.
    let prefix = if shared_server {
        format!("{:06x}-", rand::random::<u32>() & 0xff_ffff)
    } else {
        String::new()
    };
    let (mut fleet, ids) = Fleet::start(scenario, epoch, &prefix).await?;
    let result = drive_fleet(scenario, label, server, epoch, &mut fleet, &ids).await;
    let stopped = fleet.stop().await;
    let run = result?;
    stopped?;
    Ok(run)
}

async fn drive_fleet(
    scenario: &Scenario,
    label: &str,
    server: &mut Server,
    epoch: Instant,
    fleet: &mut Fleet,
    ids: &[String],
) -> Result<PolicyRun> {
    let channel = server.connect().await?;
    let registering = Instant::now();
    register(scenario, &channel, fleet, ids).await?;
    eprintln!(
        "registered {} customers in {:.1}s",
        ids.len(),
        registering.elapsed().as_secs_f64()
    );
    // The load starts on a whole second after the epoch, so the arrivals' per-second timeline
    // lines up with the load's seconds.
    let offset = Duration::from_secs(epoch.elapsed().as_secs() + 1);
    let start = epoch + offset;
    let load_end = start + scenario.duration.0;
    let drain_end = load_end + scenario.drain.0;
    for (_, system) in &mut fleet.customers {
        system.begin(start);
        system.arrivals().measure_from(start + scenario.warmup.0);
    }
    let targets = Arc::new(targets(scenario, ids));
    let entrances = Entrances::new(server.connect_all().await?);
    let sampler = match (scenario.is_cluster(), server.database_url()) {
        (true, Some(url)) => Some(Sampler::start(url, start).await?),
        _ => None,
    };

    let (ledger, progress) = load::Ledger::shared(targets.len()).map(|ledger| {
        let arrivals = fleet
            .customers
            .iter()
            .map(|(_, s)| s.arrivals().clone())
            .collect();
        let line = Progress::new(label, start, scenario, ledger.clone(), arrivals);
        (ledger, tokio::spawn(line.run()))
    })?;
    let load = load::run(
        scenario,
        targets,
        entrances.clone(),
        epoch,
        start,
        drain_end,
        ledger,
    );
    let changes = change_nodes(scenario, server, &entrances, start);
    let (ledger, changes) = tokio::join!(load, changes);
    let changes = changes?;
    // The crash may have replaced the connection's server, or killed its node: connect afresh.
    let channel = server.connect().await?;
    let at_load_end = stats(server).await?;
    drain(fleet, &ledger, drain_end).await;
    let samples = sampler.map(Sampler::finish);
    progress.abort();
    pause_all(&channel, ids).await?;
    eprintln!(
        "load done: {} offered, {} accepted, {} delivered, {} overload answers",
        ledger.offered_total(),
        ledger.accepted_total(),
        fleet.delivered(),
        fleet.overloaded()
    );
    let arrivals: Vec<_> = fleet
        .customers
        .iter()
        .map(|(_, s)| s.arrivals().clone())
        .collect();
    let missing = (0..ids.len())
        .flat_map(|i| {
            let arrived = &arrivals[i];
            ledger
                .accepted(i)
                .into_iter()
                .filter(|id| !arrived.contains(id))
                .map(move |id| (i, id))
        })
        .collect();
    let whereabouts = whereabouts::find(&channel, missing, &arrivals).await?;
    let customers: Vec<Customer> = fleet
        .customers
        .iter()
        .enumerate()
        .map(|(i, (group, system))| {
            Customer::account(
                *group,
                system,
                &ledger,
                i,
                at_load_end.get(&ids[i]),
                whereabouts[i],
            )
        })
        .collect();
    let mut run = PolicyRun::new(
        label,
        server.describe(),
        scenario,
        offset,
        &ledger,
        customers,
    )?;
    run.cluster =
        samples.map(|samples| ClusterOutcome::new(scenario.nodes, &changes, &samples, &run.groups));
    Ok(run)
}
