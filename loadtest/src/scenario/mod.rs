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
//! - [`ownership`]: bucket owners over a cluster run; takeover and join times.
//! - [`outcome`]: what one policy's run measured, per customer group.
//! - [`whereabouts`]: where each accepted notification that did not arrive is.
//! - [`report`]: the table, the JSON and the SVG.

mod entrances;
mod load;
mod outcome;
mod ownership;
mod report;
mod spec;
mod system;
mod whereabouts;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Args, ValueEnum};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::arrivals::Arrivals;
use crate::client::{self, AuthedChannel};
use crate::cluster::{self, Cluster, node_id};
use crate::interrupt::unless_interrupted;
use crate::process::Program;
use entrances::Entrances;
use load::Target;
use outcome::{Customer, PolicyRun};
use ownership::{ClusterOutcome, NodeChange, Sampler};
use spec::{NodeEvent, Scenario, TierName};
use system::System;

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
    /// Where to write report.json and report.svg. [default: target/loadtest/<scenario>]
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

/// The floodgate a policy's run talks to.
enum Server {
    /// One node, or several on one database.
    Started(Box<Cluster>),
    Target {
        url: String,
        token: String,
        tls_ca: Option<PathBuf>,
    },
}

impl Server {
    /// A connection to one running node.
    async fn connect(&self) -> Result<AuthedChannel> {
        match self {
            Server::Started(cluster) => {
                let (i, _) = cluster
                    .live()
                    .next()
                    .context("no floodgate node is running")?;
                cluster.connect(i).await
            }
            Server::Target { url, token, tls_ca } => {
                client::connect(url, token, tls_ca.as_deref()).await
            }
        }
    }

    /// A connection to every running node, with its number.
    async fn connect_all(&self) -> Result<Vec<(usize, AuthedChannel)>> {
        match self {
            Server::Started(cluster) => cluster.connect_all().await,
            Server::Target { .. } => Ok(vec![(0, self.connect().await?)]),
        }
    }

    fn describe(&self) -> String {
        match self {
            Server::Started(cluster) => cluster.describe(),
            Server::Target { url, .. } => format!("floodgate at {url}"),
        }
    }

    /// The nodes the harness started, to kill and add.
    fn cluster(&mut self) -> Result<&mut Cluster> {
        match self {
            Server::Started(cluster) => Ok(cluster),
            Server::Target { .. } => bail!("cannot kill or add nodes of a --target floodgate"),
        }
    }

    /// The PostgreSQL database of started nodes, whose lease table says who owns what.
    fn database_url(&self) -> Option<&str> {
        match self {
            Server::Started(cluster) => cluster.database_url(),
            Server::Target { .. } => None,
        }
    }

    async fn stop(self) -> Result<()> {
        match self {
            Server::Started(cluster) => cluster.stop().await,
            Server::Target { .. } => Ok(()),
        }
    }
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

/// The simulated customers of a run, in group order, with the group each belongs to.
struct Fleet {
    customers: Vec<(usize, System)>,
}

impl Fleet {
    async fn start(
        scenario: &Scenario,
        epoch: Instant,
        prefix: &str,
    ) -> Result<(Self, Vec<String>)> {
        let mut customers = Vec::with_capacity(scenario.customer_count());
        let mut ids = Vec::with_capacity(scenario.customer_count());
        for (g, group) in scenario.customers.iter().enumerate() {
            for id in group.ids(prefix) {
                let arrivals = Arrivals::since(epoch)?;
                customers.push((g, System::start(group, arrivals).await?));
                ids.push(id);
            }
        }
        Ok((Self { customers }, ids))
    }

    async fn stop(self) -> Result<()> {
        let mut stopping = JoinSet::new();
        for (_, system) in self.customers {
            stopping.spawn(system.stop());
        }
        while let Some(stopped) = stopping.join_next().await {
            stopped.context("a simulated customer system panicked")??;
        }
        Ok(())
    }

    fn delivered(&self) -> u64 {
        self.customers
            .iter()
            .map(|(_, s)| s.arrivals().unique())
            .sum()
    }

    fn overloaded(&self) -> u64 {
        self.customers
            .iter()
            .map(|(_, s)| {
                let r = s.responses();
                r.overloaded + r.abandoned
            })
            .sum()
    }
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

/// Makes the scenario's crash, or its node kills and additions, at their times; returns the
/// changes as made. A node leaves the entrances before it is killed and joins them once it
/// answers calls.
async fn change_nodes(
    scenario: &Scenario,
    server: &mut Server,
    entrances: &Entrances,
    start: Instant,
) -> Result<Vec<NodeChange>> {
    if let Some(at) = scenario.crash_at {
        tokio::time::sleep_until(start + at.0).await;
        server.cluster()?.kill_and_restart(0).await?;
    }
    let mut changes = Vec::new();
    for (at, event) in scenario.node_events() {
        tokio::time::sleep_until(start + at).await;
        let cluster = server.cluster()?;
        match event {
            NodeEvent::Kill(node) => {
                entrances.close(node);
                cluster.kill(node).await?;
                changes.push(NodeChange::Killed {
                    node: node_id(node),
                    at: start.elapsed(),
                });
            }
            NodeEvent::Add(planned) => {
                let began = Instant::now();
                let node = cluster.add().await?;
                ensure!(
                    node == planned,
                    "started node {node}, but the scenario numbers it {planned}"
                );
                let ready = began.elapsed();
                entrances.open(node, cluster.connect(node).await?);
                eprintln!("{} joined", node_id(node));
                changes.push(NodeChange::Added {
                    node: node_id(node),
                    at: began - start,
                    ready,
                    running: cluster.live().map(|(i, _)| node_id(i)).collect(),
                });
            }
        }
    }
    Ok(changes)
}

/// Registers every customer with its system's URL and secret and its group's configured tier.
async fn register(
    scenario: &Scenario,
    channel: &AuthedChannel,
    fleet: &Fleet,
    ids: &[String],
) -> Result<()> {
    let customers = fleet
        .customers
        .iter()
        .zip(ids)
        .map(|((group, system), id)| proto::Customer {
            id: id.clone(),
            webhook_url: system.url().to_owned(),
            signing_secret: system.secret().to_owned(),
            start_tier: scenario.customers[*group]
                .tier
                .map_or(proto::Tier::Unspecified, |tier| match tier {
                    TierName::Fast => proto::Tier::Fast,
                    TierName::Medium => proto::Tier::Medium,
                    TierName::Slow => proto::Tier::Slow,
                }) as i32,
            ..proto::Customer::default()
        })
        .collect();
    client::upsert_customers(channel, customers).await
}

/// What each customer is offered, in fleet order.
fn targets(scenario: &Scenario, ids: &[String]) -> Vec<Target> {
    let mut ids = ids.iter();
    let mut targets = Vec::with_capacity(ids.len());
    for group in &scenario.customers {
        for id in ids.by_ref().take(group.count) {
            targets.push(Target {
                id: id.clone(),
                rates: [group.rate, group.bulk_rate],
                campaign: group.campaign.as_ref().map(|c| (c.at.0, c.count)),
            });
        }
    }
    targets
}

/// Every customer's stats, by id, from the node running its controller.
async fn stats(server: &Server) -> Result<HashMap<String, proto::CustomerStats>> {
    let mut merged = HashMap::new();
    for (_, channel) in server.connect_all().await? {
        let answer = CustomersClient::new(channel)
            .list_customer_stats(proto::ListCustomerStatsRequest {})
            .await
            .context("ListCustomerStats failed")?;
        merge_stats(&mut merged, answer.into_inner().stats);
    }
    Ok(merged)
}

/// Adds one node's stats to `merged`. Only the node that owns a customer runs its controller;
/// every other node reports it idle, so a live controller's stats win over idle ones.
fn merge_stats(
    merged: &mut HashMap<String, proto::CustomerStats>,
    stats: Vec<proto::CustomerStats>,
) {
    let idle = proto::Tier::Idle as i32;
    for one in stats {
        match merged.entry(one.customer_id.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(one);
            }
            Entry::Occupied(mut entry) => {
                if entry.get().tier == idle && one.tier != idle {
                    entry.insert(one);
                }
            }
        }
    }
}

/// Waits until every customer has received as many notifications as were accepted for it, or
/// until `until`.
async fn drain(fleet: &Fleet, ledger: &load::Ledger, until: Instant) {
    let done = || {
        fleet
            .customers
            .iter()
            .enumerate()
            .all(|(i, (_, s))| s.arrivals().unique() >= ledger.accepted_count(i))
    };
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pauses every customer, so nothing is delivered while the run is accounted for (and a
/// `--target` server does not keep sending to systems that are about to go away).
async fn pause_all(channel: &AuthedChannel, ids: &[String]) -> Result<()> {
    let mut pausing = JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(16).max(1)) {
        let mut customers = CustomersClient::new(channel.clone());
        let chunk = chunk.to_vec();
        pausing.spawn(async move {
            for customer_id in chunk {
                customers
                    .pause_customer(proto::PauseCustomerRequest { customer_id })
                    .await
                    .context("PauseCustomer failed")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(paused) = pausing.join_next().await {
        paused.context("a pausing task panicked")??;
    }
    Ok(())
}

/// The progress line, once a second while the load runs and drains.
struct Progress {
    label: String,
    start: Instant,
    load_end: Instant,
    warmup_end: Instant,
    ledger: Arc<load::Ledger>,
    arrivals: Vec<Arc<Arrivals>>,
}

impl Progress {
    fn new(
        label: &str,
        start: Instant,
        scenario: &Scenario,
        ledger: Arc<load::Ledger>,
        arrivals: Vec<Arc<Arrivals>>,
    ) -> Self {
        Self {
            label: label.to_owned(),
            start,
            load_end: start + scenario.duration.0,
            warmup_end: start + scenario.warmup.0,
            ledger,
            arrivals,
        }
    }

    async fn run(self) {
        let mut ticker =
            tokio::time::interval_at(self.start + Duration::from_secs(1), Duration::from_secs(1));
        let mut before = 0;
        loop {
            let now = ticker.tick().await;
            let delivered: u64 = self.arrivals.iter().map(|a| a.unique()).sum();
            let phase = if now <= self.warmup_end {
                "warmup"
            } else if now <= self.load_end {
                "load"
            } else {
                "drain"
            };
            eprintln!(
                "[{:>4.0}s] {} {phase:<6} offered {:>8}  accepted {:>8}  delivered {:>8} ({:>6}/s)  submit errors {}",
                (now - self.start).as_secs_f64(),
                self.label,
                self.ledger.offered_total(),
                self.ledger.accepted_total(),
                delivered,
                delivered - before,
                self.ledger.error_total()
            );
            before = delivered;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(customer: &str, tier: proto::Tier, limit: u32) -> proto::CustomerStats {
        proto::CustomerStats {
            customer_id: customer.into(),
            tier: tier as i32,
            concurrency_limit: limit,
            ..proto::CustomerStats::default()
        }
    }

    #[test]
    fn a_customers_stats_come_from_the_node_running_its_controller() {
        let mut merged = HashMap::new();
        // Node 0 owns a; node 1 owns b; both report the other's customer idle.
        merge_stats(
            &mut merged,
            vec![
                stats("a", proto::Tier::Fast, 40),
                stats("b", proto::Tier::Idle, 0),
                stats("c", proto::Tier::Idle, 0),
            ],
        );
        merge_stats(
            &mut merged,
            vec![
                stats("a", proto::Tier::Idle, 0),
                stats("b", proto::Tier::Slow, 3),
                stats("c", proto::Tier::Idle, 0),
            ],
        );
        assert_eq!(merged["a"].concurrency_limit, 40);
        assert_eq!(merged["b"].tier, proto::Tier::Slow as i32);
        assert_eq!(merged["b"].concurrency_limit, 3);
        assert_eq!(merged["c"].tier, proto::Tier::Idle as i32);
        assert_eq!(merged.len(), 3);
    }
}
