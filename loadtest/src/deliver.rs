//! The `deliver` experiment: end-to-end throughput. floodgate accepts notifications through
//! SubmitBatch and delivers them to always-200 receivers in the same run, so intake, the store,
//! the dispatcher and the webhook client all compete for the same cores, as they do in service.
//!
//! floodgate, the receivers and this load generator are three processes, so each one's CPU time
//! is its own: the summary gives floodgate's CPU-µs per delivered notification. With `--ceiling`
//! the run first measures the bare HTTP ceiling (see [`crate::ceiling`]) against the same
//! receiver process, and reports delivery as a share of it.
//!
//! The load is open loop (see [`crate::caller`]): `--rate` notifications/s, round-robin over the
//! customers, in batches from a few callers on a fixed schedule. Beside it, a probe sends unary
//! Submits at `--probe-rate`, so the summary shows what a single caller waits while deliveries
//! run flat out. Every payload carries its send time, and the receivers (see [`crate::arrivals`])
//! count each webhook id once and take the latency from that send time to the arrival. After
//! `--duration` the offering stops; with `--drain` the run then waits for everything accepted to
//! arrive, and reports how long that took.
//!
//! With `--nodes N` floodgate runs as N nodes of one cluster on one PostgreSQL database (see
//! [`crate::cluster`]): caller i submits to node i mod N, so every node accepts a share and hands
//! most of it to the customers' owners, and the CPU figures are the nodes' together. Runs with
//! N = 1, 2, 3 on the same machine compare end-to-end throughput as a cluster grows.

mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use tokio::time::Instant;

use crate::caller::{self, Live, Mode, PROBE_CALLERS, Plan, Tally, Window, positive_rate};
use crate::client;
use crate::cluster::Cluster;
use crate::receiver_process::ReceiverProcess;
use crate::report::{self, Latency};
use crate::rig::EndToEnd;
use summary::{Drain, Progress, Summary, WindowTotals};

/// How often the drain checks whether everything has arrived: the drain time's resolution.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Options of `floodgate-loadtest deliver`.
#[derive(Debug, Args)]
pub(crate) struct DeliverArgs {
    #[command(flatten)]
    end_to_end: EndToEnd,
    /// Customers the notifications are spread over, round-robin: c-0 .. c-(N-1).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    customers: usize,
    /// Notifications/s offered, open loop, whatever floodgate answers.
    #[arg(long, default_value_t = 12_000.0, value_parser = positive_rate)]
    rate: f64,
    /// Notifications per SubmitBatch call (floodgate takes at most 1,000).
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    batch_size: usize,
    /// Concurrent callers sharing the schedule, each with one call in flight.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    callers: usize,
    /// Closed loop: each caller sends its next batch as soon as the last is answered, ignoring
    /// --rate. Intake is kept full without a queue growing in front of it, so --probe-rate
    /// measures what one Submit waits beside saturated intake and deliveries, not that queue.
    #[arg(long)]
    closed_loop: bool,
    /// How long to measure, after the warmup (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to offer load before measuring; its deliveries and latencies are not counted.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Size of each notification's JSON payload, in bytes (at least the stamp's ~30).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// floodgate nodes of one cluster, all on the --database-url PostgreSQL database (more than
    /// one needs PostgreSQL); the callers are spread over them.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=8))]
    nodes: usize,
    /// Unary Submit calls/s sent beside the batches, to time what one caller waits while
    /// deliveries run flat out (0 for none).
    #[arg(long, default_value_t = 50.0)]
    probe_rate: f64,
    /// After the offering stops, wait until everything accepted has arrived (at most
    /// --drain-timeout) and report how long that took.
    #[arg(long)]
    drain: bool,
    /// Longest the drain may take.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the experiment and prints its summary.
pub(crate) async fn run(args: DeliverArgs) -> Result<()> {
    ensure!(
        !args.duration.is_zero(),
        "--duration must be longer than 0s"
    );
    crate::cluster::ensure_shareable(args.end_to_end.database_url.as_deref(), args.nodes)?;
    let (mut summary, ceiling) = args
        .end_to_end
        .run(args.nodes, async |server, receivers| {
            measure(&args, server, receivers).await
        })
        .await?;
    summary.ceiling = ceiling;
    summary::print(&summary);
    if let Some(path) = &args.json {
        report::write_json(path, &summary)?;
    }
    Ok(())
}

async fn measure(
    args: &DeliverArgs,
    server: &Cluster,
    receivers: &ReceiverProcess,
) -> Result<Summary> {
    // One connection per node, for registering and for every caller: on 2 cores, more
    // connections do not submit faster (see `intake::connect_channels`).
    let channels: Vec<_> = server
        .connect_all()
        .await?
        .into_iter()
        .map(|(_, channel)| channel)
        .collect();
    let channel = channels.first().context("no floodgate node is running")?;
    let customers: Vec<String> = (0..args.customers).map(|i| format!("c-{i}")).collect();
    let webhooks: Vec<&str> = receivers.urls().iter().map(String::as_str).collect();
    let registering = Instant::now();
    client::register_customers(channel, &customers, &webhooks, false).await?;
    eprintln!(
        "registered {} customers on {} receivers in {:.1}s",
        customers.len(),
        webhooks.len(),
        registering.elapsed().as_secs_f64()
    );

    let plan = Arc::new(
        Plan::new(
            Mode::Batch,
            args.batch_size,
            customers.clone(),
            args.payload_bytes,
        )
        .stamped(receivers.epoch()),
    );
    let probe_plan = Arc::new(
        Plan::new(Mode::Submit, 1, customers, args.payload_bytes).stamped(receivers.epoch()),
    );
    let calls_per_sec = args.rate / args.batch_size as f64;
    let (live, probe_live) = (Arc::new(Live::default()), Arc::new(Live::default()));
    let start = Instant::now();
    let window = Window {
        from: start + args.warmup,
        until: start + args.warmup + args.duration,
    };
    receivers.measure_from(window.from).await?;
    // Every schedule before any caller starts: a bad --rate must not leave callers running.
    let schedules = (0..args.callers)
        .map(|i| match args.closed_loop {
            true => Ok(None),
            false => caller::schedule(start, calls_per_sec, args.callers, i).map(Some),
        })
        .collect::<Result<Vec<_>>>()?;
    let probe_schedules = match args.probe_rate > 0.0 {
        true => (0..PROBE_CALLERS)
            .map(|i| caller::schedule(start, args.probe_rate, PROBE_CALLERS, i))
            .collect::<Result<Vec<_>>>()?,
        false => Vec::new(),
    };
    let empty = report::new_histogram()?;
    let spawn_caller = |plan: &Arc<Plan>, live: &Arc<Live>, schedule, i: usize| {
        tokio::spawn(caller::run(
            DispatcherClient::new(channels[i % channels.len()].clone()),
            plan.clone(),
            live.clone(),
            window,
            schedule,
            Tally::new(empty.clone()),
        ))
    };
    let callers: Vec<_> = schedules
        .into_iter()
        .enumerate()
        .map(|(i, schedule)| spawn_caller(&plan, &live, schedule, i))
        .collect();
    let probes: Vec<_> = probe_schedules
        .into_iter()
        .enumerate()
        .map(|(i, schedule)| spawn_caller(&probe_plan, &probe_live, Some(schedule), i))
        .collect();

    let accepted_so_far =
        || live.accepted.load(Ordering::Relaxed) + probe_live.accepted.load(Ordering::Relaxed);
    // Closed loop offers exactly what the callers send.
    let offered = |elapsed: Duration| match args.closed_loop {
        true => plan.issued(),
        false => (elapsed.min(window.until - start).as_secs_f64() * args.rate) as u64,
    };
    let totals = show_progress(
        &offered,
        &accepted_so_far,
        &live,
        server,
        receivers,
        start,
        window,
    )
    .await?;
    let mut total = Tally::new(empty.clone());
    for caller in callers {
        total.merge(caller.await.context("a caller panicked")?)?;
    }
    let mut probed = Tally::new(empty);
    for probe in probes {
        probed.merge(probe.await.context("the probe panicked")?)?;
    }
    let accepted_total = accepted_so_far();
    let at_end = receivers.counts().await?;
    let drain = match args.drain {
        true => Some(
            drain(
                &offered,
                accepted_total,
                &live,
                receivers,
                start,
                args.drain_timeout,
            )
            .await?,
        ),
        false => None,
    };
    let arrived = receivers.counts().await?;

    let secs = args.duration.as_secs_f64();
    let delivered = totals.delivered;
    let per_delivered = |cpu: Duration| cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64;
    let mut errors = total.errors;
    for (kind, n) in probed.errors {
        *errors.entry(format!("probe {kind}")).or_default() += n;
    }
    let summary = Summary {
        server: server.describe(),
        nodes: args.nodes,
        customers: args.customers,
        receivers: args.end_to_end.receivers,
        callers: args.callers,
        batch_size: args.batch_size,
        payload_bytes: plan.payload_bytes(),
        offered_per_sec: (!args.closed_loop).then_some(args.rate),
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: secs,
        calls: total.calls,
        accepted: total.accepted,
        accepted_per_sec: total.accepted as f64 / secs,
        delivered,
        delivered_per_sec: delivered as f64 / secs,
        submit_latency: Latency::from_micros(&total.latency),
        probe_rate: args.probe_rate,
        probe_latency: Latency::from_micros(&probed.latency),
        end_to_end: arrived.latency,
        server_cpu_us_per_delivered: per_delivered(totals.server_cpu),
        server_cores: totals.server_cpu.as_secs_f64() / secs,
        receiver_cpu_us_per_delivered: per_delivered(totals.receiver_cpu),
        ceiling: None,
        offered_total: offered(window.until - start),
        sent_total: plan.issued() + probe_plan.issued(),
        accepted_total,
        delivered_total: at_end.unique,
        backlog_at_end: accepted_total.saturating_sub(at_end.unique),
        duplicates: arrived.duplicates,
        without_id: arrived.without_id,
        errors,
        drain,
    };
    let offered_calls = calls_per_sec * secs;
    // One call of slack: a window holds a whole number of calls.
    if !args.closed_loop && (summary.calls as f64) + 1.0 < offered_calls * 0.95 {
        eprintln!(
            "warning: only {} of the {offered_calls:.0} calls scheduled in the window were \
             completed: the callers fell behind the schedule, because floodgate answers too \
             slowly for it (lower --rate) or there are too few callers (raise --callers)",
            summary.calls
        );
    }
    Ok(summary)
}

/// Prints a progress line every second until the window closes (the last one at its close), and
/// reads what arrived and the CPU each process used inside the window.
async fn show_progress(
    offered: &impl Fn(Duration) -> u64,
    accepted: &impl Fn() -> u64,
    live: &Live,
    server: &Cluster,
    receivers: &ReceiverProcess,
    start: Instant,
    window: Window,
) -> Result<WindowTotals> {
    let (mut last_at, mut last_delivered) = (start, 0);
    let mut at_start = None;
    loop {
        let next = last_at + Duration::from_secs(1);
        // The window's edges are read exactly, not at the next whole second.
        let now = match at_start {
            None if next >= window.from => window.from,
            _ => next.min(window.until),
        };
        tokio::time::sleep_until(now).await;
        let counts = receivers.counts().await?;
        if now == window.from && at_start.is_none() {
            at_start = Some((counts.unique, server.cpu()?, receivers.cpu()?));
        }
        let rate = (counts.unique - last_delivered) as f64 / (now - last_at).as_secs_f64();
        let phase = if now < window.from { "warmup" } else { "" };
        Progress::new(
            offered(now - start),
            accepted(),
            live,
            &counts,
            now - start,
            phase,
            rate,
        )
        .print();
        if now >= window.until {
            let (unique, server_cpu, receiver_cpu) =
                at_start.context("the window closed before it opened")?;
            return Ok(WindowTotals {
                delivered: counts.unique - unique,
                server_cpu: server.cpu()? - server_cpu,
                receiver_cpu: receivers.cpu()? - receiver_cpu,
            });
        }
        (last_at, last_delivered) = (now, counts.unique);
    }
}

/// Waits until everything accepted (`target`) has arrived, or `timeout`, printing a progress line
/// every second. Nothing is submitted any more, so the target is fixed.
async fn drain(
    offered: &impl Fn(Duration) -> u64,
    target: u64,
    live: &Live,
    receivers: &ReceiverProcess,
    start: Instant,
    timeout: Duration,
) -> Result<Drain> {
    let began = Instant::now();
    let (mut last_at, mut last_delivered) = (began, receivers.counts().await?.unique);
    loop {
        let counts = receivers.counts().await?;
        let now = Instant::now();
        let drained = counts.unique >= target;
        if drained || now - began >= timeout {
            return Ok(Drain {
                drained,
                secs: (now - began).as_secs_f64(),
                backlog_left: target.saturating_sub(counts.unique),
            });
        }
        if now - last_at >= Duration::from_secs(1) {
            let rate = (counts.unique - last_delivered) as f64 / (now - last_at).as_secs_f64();
            let elapsed = now - start;
            Progress::new(
                offered(elapsed),
                target,
                live,
                &counts,
                elapsed,
                "drain",
                rate,
            )
            .print();
            (last_at, last_delivered) = (now, counts.unique);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
