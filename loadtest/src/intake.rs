//! The `intake` experiment: how many notifications/s floodgate accepts, and how long each call
//! takes, with `Submit` or `SubmitBatch`.
//!
//! Closed loop (the default) finds the ceiling; open loop (`--rate`) gives honest percentiles
//! below it (see [`crate::caller`]).
//!
//! A call counts if it completes inside the measured window (after the warmup); the last calls,
//! still under way when the window closes, are awaited but not counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use tokio::time::Instant;

use crate::caller::{self, Live, Mode, Plan, Tally, Window, count_between, positive_rate};
use crate::client::{self, AuthedChannel};
use crate::interrupt::unless_interrupted;
use crate::receiver::Receiver;
use crate::report::{self, Latency, Summary};
use crate::server::Server;

/// Registered as the webhook of paused customers: never called, but the URL must be valid.
const UNUSED_WEBHOOK: &str = "http://127.0.0.1:9/unused";

/// Options of `floodgate-loadtest intake`.
#[derive(Debug, Args)]
pub(crate) struct IntakeArgs {
    /// Submit: unary `Submit` calls; batch: `SubmitBatch` calls of --batch-size notifications.
    #[arg(long, value_enum, default_value_t = Mode::Submit)]
    mode: Mode,
    /// Concurrent callers, each with one call in flight.
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    concurrency: usize,
    /// HTTP/2 connections the callers share (caller i uses connection i mod N). Measured on 2
    /// cores with 64 submit callers: one connection is fastest (see `connect_channels`).
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    channels: usize,
    /// Notifications per SubmitBatch call (batch mode only; floodgate takes at most 1,000).
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    batch_size: usize,
    /// How long to measure, after the warmup (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to run before measuring; calls completed during it are not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Open loop: send this many calls/s in total, spread over the callers on a fixed schedule,
    /// and measure latency from each call's scheduled time. Default: closed loop, as fast as
    /// answers come back.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Customers the notifications are spread over, round-robin: load-0 .. load-(N-1).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    customers: usize,
    /// Size of each notification's JSON payload, in bytes (at least the JSON skeleton's ~30).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Database for the in-process floodgate. A PostgreSQL URL gets a fresh scratch database
    /// created beside the one named and dropped afterwards; any other URL is used as given.
    /// [default: SQLite in a fresh temporary directory]
    #[arg(long, conflicts_with = "target")]
    database_url: Option<String>,
    /// Measure an already-running floodgate at this gRPC URL instead of starting one in-process
    /// (e.g. http://127.0.0.1:50051). Its load-N customers are created or replaced.
    #[arg(long)]
    target: Option<String>,
    /// Admin token of the --target server (customers are registered with it).
    #[arg(long, env = "FLOODGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate an https:// --target's certificate must chain to [default: the public
    /// web roots].
    #[arg(long, env = "FLOODGATE_TLS_CA", requires = "target")]
    tls_ca: Option<PathBuf>,
    /// Also deliver: the customers are unpaused and point at an in-process always-200 webhook
    /// receiver, and paused again at the end (for --target, the server must reach 127.0.0.1 here,
    /// and it delivers the backlog of earlier runs too). By default they stay paused so the
    /// cores go to intake alone.
    #[arg(long)]
    deliver: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the experiment and prints its summary.
pub(crate) async fn run(args: IntakeArgs) -> Result<()> {
    ensure!(
        !args.duration.is_zero(),
        "--duration must be longer than 0s"
    );
    let remote = match &args.target {
        Some(url) => Some(Target {
            url: url.clone(),
            token: args
                .token
                .clone()
                .context("--target needs the server's admin token: --token or FLOODGATE_TOKEN")?,
            name: url.clone(),
            tls_ca: args.tls_ca.clone(),
        }),
        None => None,
    };
    let receiver = match args.deliver {
        true => Some(Receiver::start().await?),
        false => None,
    };
    let (server, target) = match remote {
        Some(target) => (None, target),
        None => {
            let server = Server::start(args.database_url.as_deref()).await?;
            let target = Target {
                url: server.grpc_url().to_owned(),
                token: server.admin_token().to_owned(),
                name: server.describe(),
                tls_ca: None,
            };
            (Some(server), target)
        }
    };
    let measured = unless_interrupted(measure(&args, &target, receiver.as_ref())).await;
    // Stop everything even when the measurement failed: the scratch database must go. The
    // receiver goes last, because floodgate's shutdown waits for deliveries under way.
    let stopped = match server {
        Some(server) => server.stop().await,
        None => Ok(()),
    };
    if let Some(receiver) = receiver {
        receiver.stop().await?;
    }
    let summary = measured?;
    stopped?;
    report::print(&summary);
    if let Some(path) = &args.json {
        report::write_json(path, &summary)?;
    }
    Ok(())
}

/// The server under test.
struct Target {
    url: String,
    token: String,
    /// What the summary calls it.
    name: String,
    /// The CA an `https://` target's certificate chains to.
    tls_ca: Option<PathBuf>,
}

async fn measure(
    args: &IntakeArgs,
    target: &Target,
    receiver: Option<&Receiver>,
) -> Result<Summary> {
    let admin = client::connect(&target.url, &target.token, target.tls_ca.as_deref()).await?;
    let customers: Vec<String> = (0..args.customers).map(|i| format!("load-{i}")).collect();
    let webhook = receiver.map_or(UNUSED_WEBHOOK, Receiver::url);
    client::register_customers(&admin, &customers, &[webhook], !args.deliver).await?;
    let channels = connect_channels(args, target).await?;

    let plan = Arc::new(Plan::new(
        args.mode,
        args.batch_size,
        customers.clone(),
        args.payload_bytes,
    ));
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let window = Window {
        from: start + args.warmup,
        until: start + args.warmup + args.duration,
    };
    let empty = report::new_histogram()?;
    let mut callers = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        let client = DispatcherClient::new(channels[i % channels.len()].clone());
        let schedule = args
            .rate
            .map(|rate| caller::schedule(start, rate, args.concurrency, i))
            .transpose()?;
        let tally = Tally::new(empty.clone());
        callers.push(tokio::spawn(caller::run(
            client,
            plan.clone(),
            live.clone(),
            window,
            schedule,
            tally,
        )));
    }
    let delivered = receiver.map(|r| count_between(r.counter(), window));

    show_progress(&live, start, window).await;
    let mut total = Tally::new(empty);
    for caller in callers {
        let tally = caller.await.context("a caller panicked")?;
        total.merge(tally)?;
    }
    let delivered = match delivered {
        Some(task) => Some(task.await.context("the delivery counter panicked")?),
        None => None,
    };
    if args.deliver {
        // The receiver goes away with this process: pause the customers again, so a --target
        // server does not retry their backlog against a closed port for the next day.
        client::register_customers(&admin, &customers, &[webhook], true).await?;
    }

    let secs = args.duration.as_secs_f64();
    let summary = Summary {
        mode: args.mode.name(),
        server: target.name.clone(),
        concurrency: args.concurrency,
        channels: channels.len(),
        batch_size: plan.batch_size(),
        customers: args.customers,
        payload_bytes: plan.payload_bytes(),
        deliver: args.deliver,
        offered_calls_per_sec: args.rate,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: secs,
        calls: total.calls,
        accepted: total.accepted,
        accepted_per_sec: total.accepted as f64 / secs,
        calls_per_sec: total.calls as f64 / secs,
        latency: Latency::from_micros(&total.latency),
        errors: total.errors,
        delivered,
    };
    if let Some(rate) = args.rate
        && summary.calls_per_sec < rate * 0.95
    {
        eprintln!(
            "warning: only {:.0} of the {rate:.0} calls/s offered were completed; the callers fell \
             behind (raise --concurrency or lower --rate)",
            summary.calls_per_sec
        );
    }
    Ok(summary)
}

/// Opens `--channels` HTTP/2 connections. Each tonic `Channel` is one connection whose streams
/// are multiplexed; clones share it. Measured on this 2-core machine (in-process SQLite, 64
/// submit callers, 10 s runs): 1, 2, 4, 8 and 16 connections all gave 14–16k accepted/s, the
/// spread between repeated runs of one setting as wide as between settings (batch mode, 8
/// callers: 1 and 4 identical). Client and server share the two cores, so a second connection's
/// I/O task finds no idle core; one connection is the default because it is the simplest.
async fn connect_channels(args: &IntakeArgs, target: &Target) -> Result<Vec<AuthedChannel>> {
    let mut channels = Vec::with_capacity(args.channels);
    for _ in 0..args.channels.min(args.concurrency) {
        channels.push(client::connect(&target.url, &target.token, target.tls_ca.as_deref()).await?);
    }
    Ok(channels)
}

/// Prints a progress line every second until the window closes (the last one at its close).
async fn show_progress(live: &Live, start: Instant, window: Window) {
    let (mut last_at, mut last_accepted) = (start, 0);
    loop {
        let now = (last_at + Duration::from_secs(1)).min(window.until);
        tokio::time::sleep_until(now).await;
        let accepted = live.accepted.load(Ordering::Relaxed);
        let rate = (accepted - last_accepted) as f64 / (now - last_at).as_secs_f64();
        report::progress(report::Progress {
            elapsed: now - start,
            warming_up: now <= window.from,
            accepted,
            rate,
            max_latency: Duration::from_micros(live.max_latency_us.swap(0, Ordering::Relaxed)),
            errors: live.errors.load(Ordering::Relaxed),
        });
        if now >= window.until {
            return;
        }
        (last_at, last_accepted) = (now, accepted);
    }
}
