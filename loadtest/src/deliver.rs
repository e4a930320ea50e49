//! The `deliver` experiment: end-to-end throughput. floodgate accepts notifications through
//! SubmitBatch and delivers them to always-200 receivers in the same run, so intake, the store,
//! the dispatcher and the webhook client all compete for the same cores, as they do in service.
//!
//! The load is open loop (see [`crate::caller`]): `--rate` notifications/s, round-robin over the
//! customers, in batches from a few callers on a fixed schedule. Every payload carries its send
//! time, and the receivers (see [`crate::arrivals`]) count each webhook id once and take the
//! latency from that send time to the arrival. After `--duration` the offering stops; with
//! `--drain` the run then waits for everything accepted to arrive, and reports how long that took.

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

use crate::arrivals::Arrivals;
use crate::caller::{self, Live, Mode, Plan, Tally, Window, count_between, positive_rate};
use crate::client;
use crate::interrupt::unless_interrupted;
use crate::receiver::{Behaviour, Receiver};
use crate::report::{self, Latency};
use crate::server::Server;
use summary::{Drain, Progress, Summary};

/// How often the drain checks whether everything has arrived: the drain time's resolution.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Options of `floodgate-loadtest deliver`.
#[derive(Debug, Args)]
pub(crate) struct DeliverArgs {
    /// Customers the notifications are spread over, round-robin: c-0 .. c-(N-1).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    customers: usize,
    /// Always-200 webhook receivers; customer i is delivered to receiver i mod R.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    receivers: usize,
    /// Notifications/s offered, open loop, whatever floodgate answers.
    #[arg(long, default_value_t = 12_000.0, value_parser = positive_rate)]
    rate: f64,
    /// Notifications per SubmitBatch call (floodgate takes at most 1,000).
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    batch_size: usize,
    /// Concurrent callers sharing the schedule, each with one call in flight.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    callers: usize,
    /// How long to measure, after the warmup (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to offer load before measuring; its deliveries and latencies are not counted.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Size of each notification's JSON payload, in bytes (at least the stamp's ~30).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Database for the in-process floodgate. A PostgreSQL URL gets a fresh scratch database
    /// created beside the one named and dropped afterwards; any other URL is used as given.
    /// [default: SQLite in a fresh temporary directory]
    #[arg(long)]
    database_url: Option<String>,
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
    let arrivals = Arrivals::new()?;
    let mut receivers = Vec::with_capacity(args.receivers);
    for _ in 0..args.receivers {
        let behaviour = Behaviour {
            arrivals: Some(arrivals.clone()),
            ..Behaviour::default()
        };
        receivers.push(Receiver::start_with(behaviour).await?);
    }
    let server = match Server::start(args.database_url.as_deref()).await {
        Ok(server) => server,
        Err(err) => {
            let _ = stop_receivers(receivers).await;
            return Err(err);
        }
    };
    let measured = unless_interrupted(measure(&args, &server, &receivers, &arrivals)).await;
    // Stop everything even when the measurement failed: the scratch database must go. The
    // receivers go last, because floodgate's shutdown waits for deliveries under way.
    let stopped = server.stop().await;
    let receivers_stopped = stop_receivers(receivers).await;
    let summary = measured?;
    stopped?;
    receivers_stopped?;
    summary::print(&summary);
    if let Some(path) = &args.json {
        report::write_json(path, &summary)?;
    }
    Ok(())
}

/// Stops every receiver, then reports the first failure.
async fn stop_receivers(receivers: Vec<Receiver>) -> Result<()> {
    let mut result = Ok(());
    for receiver in receivers {
        let stopped = receiver.stop().await;
        if result.is_ok() {
            result = stopped;
        }
    }
    result
}

async fn measure(
    args: &DeliverArgs,
    server: &Server,
    receivers: &[Receiver],
    arrivals: &Arrivals,
) -> Result<Summary> {
    // One connection for registering and for every caller: on 2 cores, more connections do not
    // submit faster (see `intake::connect_channels`).
    let channel = client::connect(server.grpc_url(), server.admin_token()).await?;
    let customers: Vec<String> = (0..args.customers).map(|i| format!("c-{i}")).collect();
    let webhooks: Vec<&str> = receivers.iter().map(Receiver::url).collect();
    let registering = Instant::now();
    client::register_customers(&channel, &customers, &webhooks, false).await?;
    eprintln!(
        "registered {} customers on {} receivers in {:.1}s",
        customers.len(),
        receivers.len(),
        registering.elapsed().as_secs_f64()
    );

    let plan = Arc::new(
        Plan::new(Mode::Batch, args.batch_size, customers, args.payload_bytes)
            .stamped(arrivals.epoch()),
    );
    let calls_per_sec = args.rate / args.batch_size as f64;
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let window = Window {
        from: start + args.warmup,
        until: start + args.warmup + args.duration,
    };
    arrivals.measure_from(window.from);
    // Every schedule before any caller starts: a bad --rate must not leave callers running.
    let schedules = (0..args.callers)
        .map(|i| caller::schedule(start, calls_per_sec, args.callers, i))
        .collect::<Result<Vec<_>>>()?;
    let empty = report::new_histogram()?;
    let callers: Vec<_> = schedules
        .into_iter()
        .map(|schedule| {
            tokio::spawn(caller::run(
                DispatcherClient::new(channel.clone()),
                plan.clone(),
                live.clone(),
                window,
                Some(schedule),
                Tally::new(empty.clone()),
            ))
        })
        .collect();
    let delivered_in_window = count_between(arrivals.unique_counter(), window);

    let offered =
        |elapsed: Duration| (elapsed.min(window.until - start).as_secs_f64() * args.rate) as u64;
    show_progress(&offered, &live, arrivals, start, window).await;
    let mut total = Tally::new(empty);
    for caller in callers {
        total.merge(caller.await.context("a caller panicked")?)?;
    }
    let delivered = delivered_in_window
        .await
        .context("the delivery counter panicked")?;
    let accepted_total = live.accepted.load(Ordering::Relaxed);
    let delivered_total = arrivals.unique();
    let drain = match args.drain {
        true => Some(drain(&offered, &live, arrivals, start, args.drain_timeout).await),
        false => None,
    };

    let secs = args.duration.as_secs_f64();
    let summary = Summary {
        server: server.describe(),
        customers: args.customers,
        receivers: args.receivers,
        callers: args.callers,
        batch_size: args.batch_size,
        payload_bytes: plan.payload_bytes(),
        offered_per_sec: args.rate,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: secs,
        calls: total.calls,
        accepted: total.accepted,
        accepted_per_sec: total.accepted as f64 / secs,
        delivered,
        delivered_per_sec: delivered as f64 / secs,
        submit_latency: Latency::from_micros(&total.latency),
        end_to_end: Latency::from_micros(&arrivals.latency()),
        offered_total: offered(window.until - start),
        sent_total: plan.issued(),
        accepted_total,
        delivered_total,
        backlog_at_end: accepted_total.saturating_sub(delivered_total),
        duplicates: arrivals.duplicates(),
        without_id: arrivals.without_id(),
        errors: total.errors,
        drain,
    };
    let offered_calls = calls_per_sec * secs;
    // One call of slack: a window holds a whole number of calls.
    if (summary.calls as f64) + 1.0 < offered_calls * 0.95 {
        eprintln!(
            "warning: only {} of the {offered_calls:.0} calls scheduled in the window were \
             completed: the callers fell behind the schedule, because floodgate answers too \
             slowly for it (lower --rate) or there are too few callers (raise --callers)",
            summary.calls
        );
    }
    Ok(summary)
}

/// Prints a progress line every second until the window closes (the last one at its close).
/// `offered` is what the schedule called for after some time.
async fn show_progress(
    offered: &impl Fn(Duration) -> u64,
    live: &Live,
    arrivals: &Arrivals,
    start: Instant,
    window: Window,
) {
    let (mut last_at, mut last_delivered) = (start, 0);
    loop {
        let now = (last_at + Duration::from_secs(1)).min(window.until);
        tokio::time::sleep_until(now).await;
        let delivered = arrivals.unique();
        let rate = (delivered - last_delivered) as f64 / (now - last_at).as_secs_f64();
        let phase = if now <= window.from { "warmup" } else { "" };
        Progress::read(
            offered(now - start),
            live,
            arrivals,
            now - start,
            phase,
            rate,
        )
        .print();
        if now >= window.until {
            return;
        }
        (last_at, last_delivered) = (now, delivered);
    }
}

/// Waits until everything accepted has arrived, or `timeout`, printing a progress line every
/// second. Nothing is submitted any more, so the target is fixed.
async fn drain(
    offered: &impl Fn(Duration) -> u64,
    live: &Live,
    arrivals: &Arrivals,
    start: Instant,
    timeout: Duration,
) -> Drain {
    let target = live.accepted.load(Ordering::Relaxed);
    let began = Instant::now();
    let (mut last_at, mut last_delivered) = (began, arrivals.unique());
    loop {
        let delivered = arrivals.unique();
        let now = Instant::now();
        let drained = delivered >= target;
        if drained || now - began >= timeout {
            return Drain {
                drained,
                secs: (now - began).as_secs_f64(),
                backlog_left: target.saturating_sub(delivered),
            };
        }
        if now - last_at >= Duration::from_secs(1) {
            let rate = (delivered - last_delivered) as f64 / (now - last_at).as_secs_f64();
            let elapsed = now - start;
            Progress::read(offered(elapsed), live, arrivals, elapsed, "drain", rate).print();
            (last_at, last_delivered) = (now, delivered);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
