//! The `ceiling` experiment: how many HTTP POSTs/s this machine's HTTP stack does with nothing
//! else in the way — reqwest (floodgate's webhook client, built the same way) sending to an axum
//! receiver in its own process, a fixed number of requests in flight. floodgate's delivery rate
//! is judged against this figure, measured in the same run (see `deliver --ceiling`), because on a
//! shared machine the absolute numbers drift from run to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use axum::body::Bytes;
use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use crate::receiver_process::ReceiverProcess;

/// Options of `floodgate-loadtest ceiling`.
#[derive(Debug, Args)]
pub(crate) struct CeilingArgs {
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[command(flatten)]
    pub(crate) load: CeilingLoad,
}

/// How the ceiling is loaded (shared with `deliver --ceiling`).
#[derive(Debug, Clone, Args)]
pub(crate) struct CeilingLoad {
    /// Requests in flight at once.
    #[arg(long = "ceiling-concurrency", default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Body size of each POST, in bytes (about a 200-byte payload's webhook body).
    #[arg(long = "ceiling-body-bytes", default_value_t = 350)]
    pub(crate) body_bytes: usize,
}

/// What the ceiling measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Ceiling {
    pub(crate) concurrency: usize,
    pub(crate) seconds: f64,
    pub(crate) requests_per_sec: f64,
    /// The sender's CPU per request (this harness process, which does nothing else meanwhile).
    pub(crate) sender_cpu_us_per_request: f64,
    /// The receiver process's CPU per request.
    pub(crate) receiver_cpu_us_per_request: f64,
}

impl Ceiling {
    /// One line for the run's output.
    pub(crate) fn describe(&self) -> String {
        format!(
            "bare HTTP ceiling: {:.0} req/s (reqwest -> axum, {} in flight, {:.0}s); sender \
             {:.1} CPU-µs/req, receiver {:.1} CPU-µs/req",
            self.requests_per_sec,
            self.concurrency,
            self.seconds,
            self.sender_cpu_us_per_request,
            self.receiver_cpu_us_per_request
        )
    }
}

/// Runs `floodgate-loadtest ceiling`.
pub(crate) async fn run(args: CeilingArgs) -> Result<()> {
    let receivers = ReceiverProcess::start(1).await?;
    let measured = measure(&receivers, &args.load, args.duration).await;
    receivers.stop().await?;
    println!("{}", measured?.describe());
    Ok(())
}

/// [`measure`], printing its line, unless `duration` is zero (`--ceiling 0s` skips it).
pub(crate) async fn measure_unless_zero(
    receivers: &ReceiverProcess,
    load: &CeilingLoad,
    duration: Duration,
) -> Result<Option<Ceiling>> {
    if duration.is_zero() {
        return Ok(None);
    }
    let ceiling = measure(receivers, load, duration).await?;
    eprintln!("{}", ceiling.describe());
    Ok(Some(ceiling))
}

/// Sends as fast as `load` allows to the receiver process for `duration`.
pub(crate) async fn measure(
    receivers: &ReceiverProcess,
    load: &CeilingLoad,
    duration: Duration,
) -> Result<Ceiling> {
    ensure!(
        load.concurrency >= 1,
        "--ceiling-concurrency must be at least 1"
    );
    // As floodgate's webhook sink builds its client (src/sink/webhook.rs).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let url = receivers.ceiling_url();
    // `Bytes`: each request's body is a cheap clone.
    let body = Bytes::from(vec![b'x'; load.body_bytes]);
    // A short warmup opens the connections before the clock starts.
    run_senders(
        &client,
        &url,
        &body,
        load.concurrency,
        Duration::from_millis(500),
    )
    .await?;
    let sender_cpu = crate::process::cpu_time(std::process::id())?;
    let receiver_cpu = receivers.cpu()?;
    let started = Instant::now();
    let sent = run_senders(&client, &url, &body, load.concurrency, duration).await?;
    let seconds = started.elapsed().as_secs_f64();
    let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / sent.max(1) as f64;
    Ok(Ceiling {
        concurrency: load.concurrency,
        seconds,
        requests_per_sec: sent as f64 / seconds,
        sender_cpu_us_per_request: per_request(
            crate::process::cpu_time(std::process::id())? - sender_cpu,
        ),
        receiver_cpu_us_per_request: per_request(receivers.cpu()? - receiver_cpu),
    })
}

/// `concurrency` loops each sending one POST after another until `duration` has passed; returns
/// the requests answered 2xx.
async fn run_senders(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
) -> Result<u64> {
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
            let (done, answered) = (done.clone(), answered.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let response = client.post(&url).body(body.clone()).send().await?;
                    let ok = response.status().is_success();
                    response.bytes().await?;
                    if ok {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, reqwest::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    for sender in senders {
        sender
            .await
            .context("a ceiling sender panicked")?
            .context("a ceiling request failed")?;
    }
    Ok(answered.load(Ordering::Relaxed))
}
