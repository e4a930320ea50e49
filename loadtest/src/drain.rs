//! The `drain` experiment: how fast floodgate empties a backlog. `--backlog` notifications are
//! stored scheduled for one moment (`send_at`, `--hold` after the run starts), so nothing is
//! delivered while they are stored, and then all of them fall due at once. Nothing new arrives
//! after that, so every delivery starts from the store: the sweep wakes every customer's actor,
//! and the actors fill their windows through the claimer's batched claims instead of taking
//! hand-offs at intake. That is the path a dispatcher runs on after an outage of its customer
//! systems, or of itself, or when a scheduled campaign falls due, and when throughput matters
//! most; `deliver` rarely exercises it, because there every actor with room in its window takes
//! new work straight from intake.
//!
//! The summary gives delivered/s from the moment the backlog fell due to the last arrival (and
//! over the middle 80% of the arrivals, without the start and the tail), floodgate's CPU-µs per
//! delivered notification, and, with `--ceiling`, the share of the bare HTTP ceiling measured
//! first against the same receivers. Beside the drain, a probe sends unary Submits at
//! `--probe-rate`, so the summary shows what a caller waits while the claims and outcomes of a
//! drain hold the store's writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::caller::{self, Live, Mode, PROBE_CALLERS, Plan, Submitted, Tally, Window};
use crate::ceiling::Ceiling;
use crate::client;
use crate::client::AuthedChannel;
use crate::cluster::Cluster;
use crate::receiver_process::ReceiverProcess;
use crate::report::{self, Latency};
use crate::rig::EndToEnd;

/// How often the drain looks at what has arrived: the resolution of its times.
const POLL: Duration = Duration::from_millis(50);

/// Options of `floodgate-loadtest drain`.
#[derive(Debug, Args)]
pub(crate) struct DrainArgs {
    #[command(flatten)]
    end_to_end: EndToEnd,
    /// Customers the backlog is spread over, round-robin: c-0 .. c-(N-1).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    customers: usize,
    /// Notifications stored before they fall due.
    #[arg(long, default_value_t = 200_000, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    backlog: u64,
    /// Notifications per SubmitBatch call while storing the backlog.
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    batch_size: usize,
    /// Concurrent callers storing the backlog, each with one call in flight.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    callers: usize,
    /// Size of each notification's JSON payload, in bytes (at least the stamp's ~30).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// When the backlog falls due, counted from the start of storing it: storing must finish
    /// before then (the run says so if it does not).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Unary Submit calls/s sent while the backlog drains, to time what one caller waits beside
    /// the claims and outcomes of a drain (0 for none).
    #[arg(long, default_value_t = 50.0)]
    probe_rate: f64,
    /// How long the probe runs, from the moment the backlog falls due (keep it shorter than the
    /// drain, so every probe is timed beside it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    probe_for: Duration,
    /// Longest the drain may take before the run gives up and reports what is left.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Everything a drain measured.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    server: String,
    customers: usize,
    receivers: usize,
    payload_bytes: usize,
    /// Storing the backlog before it fell due.
    stored: Submitted,
    /// Everything stored arrived before `--timeout`.
    drained: bool,
    /// From the moment the backlog fell due to the last arrival (or the timeout).
    drain_secs: f64,
    /// Stored but not arrived when the drain ended.
    left: u64,
    /// First arrivals per second over the whole drain.
    delivered_per_sec: f64,
    /// First arrivals per second between the 10% and the 90% arrival: the steady rate.
    middle_per_sec: Option<f64>,
    /// floodgate's CPU time during the drain per notification delivered.
    server_cpu_us_per_delivered: f64,
    /// floodgate's CPU time during the drain per second of it: cores busy (of the machine's 2).
    server_cores: f64,
    /// The receiver process's CPU time per notification delivered.
    receiver_cpu_us_per_delivered: f64,
    /// `--probe-rate`: unary Submit calls/s during the drain.
    probe_rate: f64,
    /// Unary Submit latency from each call's scheduled time, during the drain.
    probe_latency: Latency,
    /// Failed probe calls and rejected probe items.
    probe_errors: u64,
    /// Arrivals of a webhook id that had already arrived.
    duplicates: u64,
    /// The bare HTTP ceiling measured at the start of the run (`--ceiling`).
    ceiling: Option<Ceiling>,
}

/// Runs the experiment and prints its summary.
pub(crate) async fn run(args: DrainArgs) -> Result<()> {
    let (mut summary, ceiling) = args
        .end_to_end
        .run(1, async |server, receivers| {
            measure(&args, server, receivers).await
        })
        .await?;
    summary.ceiling = ceiling;
    print(&summary);
    if let Some(path) = &args.json {
        report::write_json(path, &summary)?;
    }
    Ok(())
}

async fn measure(
    args: &DrainArgs,
    server: &Cluster,
    receivers: &ReceiverProcess,
) -> Result<Summary> {
    let channel = server.connect(0).await?;
    let customers: Vec<String> = (0..args.customers).map(|i| format!("c-{i}")).collect();
    let webhooks: Vec<&str> = receivers.urls().iter().map(String::as_str).collect();
    client::register_customers(&channel, &customers, &webhooks, false).await?;
    eprintln!("registered {} customers", customers.len());

    let (due, due_wall) = (Instant::now() + args.hold, SystemTime::now() + args.hold);
    let probe_plan = Plan::new(Mode::Submit, 1, customers.clone(), args.payload_bytes)
        .stamped(receivers.epoch());
    let plan = Plan::new(Mode::Batch, args.batch_size, customers, args.payload_bytes)
        .stamped(receivers.epoch())
        .due_at(due_wall)
        .limited(args.backlog);
    let payload_bytes = plan.payload_bytes();
    let stored = caller::fill(&channel, Arc::new(plan), args.callers, args.backlog, || {
        Ok(String::new())
    })
    .await?;
    ensure!(
        Instant::now() < due,
        "storing the backlog took {:.1}s, past --hold {:?}: raise --hold",
        stored.secs,
        args.hold
    );
    let early = receivers.counts().await?.unique;
    ensure!(
        early == 0,
        "{early} notifications arrived before they were due"
    );
    eprintln!(
        "the backlog falls due in {:.1}s",
        (due - Instant::now()).as_secs_f64()
    );
    tokio::time::sleep_until(due).await;

    let (server_cpu, receiver_cpu) = (server.cpu()?, receivers.cpu()?);
    let probe_live = Arc::new(Live::default());
    let probes = start_probes(args, &channel, probe_plan, &probe_live, due)?;
    let target = || stored.accepted + probe_live.accepted.load(Ordering::Relaxed);
    let probing = || probes.iter().any(|probe| !probe.is_finished());
    let arrivals = watch(receivers, target, probing, due, args.timeout).await?;
    let (server_cpu, receiver_cpu) = (server.cpu()? - server_cpu, receivers.cpu()? - receiver_cpu);
    let duplicates = receivers.counts().await?.duplicates;
    let mut probed = Tally::new(report::new_histogram()?);
    for probe in probes {
        probed.merge(probe.await.context("the probe panicked")?)?;
    }
    let target = target();

    let delivered = arrivals.delivered.max(1) as f64;
    let per_delivered = |cpu: Duration| cpu.as_secs_f64() * 1e6 / delivered;
    Ok(Summary {
        server: server.describe(),
        customers: args.customers,
        receivers: args.end_to_end.receivers,
        payload_bytes,
        stored,
        drained: arrivals.delivered >= target,
        drain_secs: arrivals.secs,
        left: target.saturating_sub(arrivals.delivered),
        delivered_per_sec: arrivals.delivered as f64 / arrivals.secs,
        middle_per_sec: arrivals.middle_per_sec(target),
        server_cpu_us_per_delivered: per_delivered(server_cpu),
        server_cores: server_cpu.as_secs_f64() / arrivals.secs,
        receiver_cpu_us_per_delivered: per_delivered(receiver_cpu),
        probe_rate: args.probe_rate,
        probe_latency: Latency::from_micros(&probed.latency),
        probe_errors: probed.errors.values().sum(),
        duplicates,
        ceiling: None,
    })
}

/// Starts `--probe-rate` unary Submits a second from `due`, for `--probe-for`, over
/// [`PROBE_CALLERS`] callers (none at rate 0).
fn start_probes(
    args: &DrainArgs,
    channel: &AuthedChannel,
    plan: Plan,
    live: &Arc<Live>,
    due: Instant,
) -> Result<Vec<JoinHandle<Tally>>> {
    if args.probe_rate <= 0.0 {
        return Ok(Vec::new());
    }
    let plan = Arc::new(plan);
    let window = Window {
        from: due,
        until: due + args.probe_for,
    };
    let empty = report::new_histogram()?;
    (0..PROBE_CALLERS)
        .map(|i| {
            let schedule = caller::schedule(due, args.probe_rate, PROBE_CALLERS, i)?;
            Ok(tokio::spawn(caller::run(
                DispatcherClient::new(channel.clone()),
                plan.clone(),
                live.clone(),
                window,
                Some(schedule),
                Tally::new(empty.clone()),
            )))
        })
        .collect()
}

/// What [`watch`] saw.
struct Arrivals {
    /// First arrivals by the end.
    delivered: u64,
    /// From `began` to the last arrival (or the timeout).
    secs: f64,
    /// When the 10% and the 90% arrival were seen, in seconds from `began`.
    tenth: Option<f64>,
    ninetieth: Option<f64>,
}

impl Arrivals {
    /// First arrivals per second between the 10% and the 90% arrival of `target`.
    fn middle_per_sec(&self, target: u64) -> Option<f64> {
        let (from, until) = (self.tenth?, self.ninetieth?);
        (until > from).then(|| 0.8 * target as f64 / (until - from))
    }
}

/// Waits until `target()` notifications have arrived and `probing()` is over, or `timeout`,
/// printing a progress line every second. The target grows while the probe's Submits are
/// accepted.
async fn watch(
    receivers: &ReceiverProcess,
    target: impl Fn() -> u64,
    probing: impl Fn() -> bool,
    began: Instant,
    timeout: Duration,
) -> Result<Arrivals> {
    let mut arrivals = Arrivals {
        delivered: 0,
        secs: 0.0,
        tenth: None,
        ninetieth: None,
    };
    let (mut last_at, mut last_delivered) = (began, 0);
    loop {
        let (target, probing) = (target(), probing());
        let counts = receivers.counts().await?;
        let now = Instant::now();
        let secs = (now - began).as_secs_f64();
        arrivals.delivered = counts.unique;
        arrivals.secs = secs;
        if arrivals.tenth.is_none() && counts.unique * 10 >= target {
            arrivals.tenth = Some(secs);
        }
        if arrivals.ninetieth.is_none() && counts.unique * 10 >= target * 9 {
            arrivals.ninetieth = Some(secs);
        }
        if (counts.unique >= target && !probing) || now - began >= timeout {
            return Ok(arrivals);
        }
        if now - last_at >= Duration::from_secs(1) {
            let rate = (counts.unique - last_delivered) as f64 / (now - last_at).as_secs_f64();
            eprintln!(
                "[{secs:>5.1}s] drain   delivered {:>9} / {target} {rate:>8.0}/s  dup {}",
                counts.unique, counts.duplicates
            );
            (last_at, last_delivered) = (now, counts.unique);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print(s: &Summary) {
    println!();
    println!("server:        {}", s.server);
    println!(
        "setup:         {} customers on {} always-200 receivers, {}-byte payloads",
        s.customers, s.receivers, s.payload_bytes
    );
    println!(
        "stored:        {} accepted before they fell due, in {:.1}s ({:.0}/s, {} errors)",
        s.stored.accepted,
        s.stored.secs,
        s.stored.accepted as f64 / s.stored.secs,
        s.stored.errors
    );
    match s.drained {
        true => println!("drain:         everything arrived in {:.2}s", s.drain_secs),
        false => println!(
            "drain:         timed out after {:.1}s with {} not arrived",
            s.drain_secs, s.left
        ),
    }
    let middle = s
        .middle_per_sec
        .map_or_else(|| "n/a".to_owned(), |rate| format!("{rate:.0}"));
    println!(
        "delivered/s:   {:.0} over the drain, {middle} between the 10% and the 90% arrival",
        s.delivered_per_sec
    );
    println!(
        "floodgate CPU: {:.1} µs per delivered notification ({:.2} cores busy); receivers {:.1} µs",
        s.server_cpu_us_per_delivered, s.server_cores, s.receiver_cpu_us_per_delivered
    );
    if s.probe_rate > 0.0 {
        let l = &s.probe_latency;
        println!(
            "submit probe:  p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  ({} unary calls at {}/s during the drain, {} errors)",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples, s.probe_rate, s.probe_errors
        );
    }
    if let Some(ceiling) = &s.ceiling {
        println!("ceiling:       {}", ceiling.describe());
        println!(
            "of ceiling:    delivered/s over the drain is {:.1}% of the bare HTTP ceiling",
            100.0 * s.delivered_per_sec / ceiling.requests_per_sec
        );
    }
    println!("duplicates:    {}", s.duplicates);
}
