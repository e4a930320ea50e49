//! Webhook receivers in a process of their own, so that what floodgate spends delivering is not
//! mixed with what the receivers spend receiving: each process's CPU time is read on its own.
//!
//! The harness starts itself again with the hidden `receiver-process` subcommand, and stops it
//! with SIGTERM. The child
//! serves `--count` always-200 receivers (as [`crate::receiver`] does in-process) plus a control
//! port that reports what arrived ([`Arrivals`]) as JSON, and `/ceiling`, a plain 200 for the
//! bare HTTP ceiling (see [`crate::ceiling`]) that is not counted as an arrival. Payload stamps
//! count from a wall-clock epoch both processes agree on.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::SignalKind;
use tokio::time::Instant;

use crate::arrivals::Arrivals;
use crate::process::{cpu_time, sigterm};
use crate::receiver::{Behaviour, HttpServer, Receiver};
use crate::report::Latency;

/// The hidden subcommand that runs the receivers.
pub(crate) const RECEIVER_PROCESS: &str = "receiver-process";

/// How long the child may take to print its addresses.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of the hidden `receiver-process` subcommand.
#[derive(Debug, Args)]
pub(crate) struct ReceiverProcessArgs {
    /// Receivers (ports) to serve.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Stamps in payloads count µs from this Unix time, in µs (the sender's epoch).
    #[arg(long)]
    epoch_unix_us: u64,
}

/// What the control port reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// Notifications that arrived, each counted once.
    pub(crate) unique: u64,
    /// Arrivals of an id that had already arrived.
    pub(crate) duplicates: u64,
    /// Arrivals without a `webhook-id`.
    pub(crate) without_id: u64,
    /// End-to-end latency of stamped notifications sent after `measure-from`.
    pub(crate) latency: Latency,
}

/// The child's side: serves until its stdin closes (the harness exited or stopped it).
pub(crate) async fn serve(args: ReceiverProcessArgs) -> Result<()> {
    ensure!(args.count >= 1, "--count must be at least 1");
    let arrivals = Arrivals::since(instant_of_unix_us(args.epoch_unix_us))?;
    let mut receivers = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let behaviour = Behaviour {
            arrivals: Some(arrivals.clone()),
            ..Behaviour::default()
        };
        receivers.push(Receiver::start_with(behaviour).await?);
    }
    let control = HttpServer::start(
        Router::new()
            .route("/arrivals", get(counts))
            .route("/measure-from/{us}", post(measure_from))
            .route("/ceiling", post(ceiling))
            .with_state(arrivals),
    )
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "control {}", base_url(control.url()))?;
        for receiver in &receivers {
            writeln!(out, "receiver {}", receiver.url())?;
        }
        out.flush()?;
    }
    // The harness stops it with SIGTERM (or SIGKILL, if the harness itself dies first).
    tokio::signal::unix::signal(SignalKind::terminate())
        .context("cannot listen for SIGTERM")?
        .recv()
        .await;
    for receiver in receivers {
        receiver.stop().await?;
    }
    control.stop().await
}

async fn counts(State(arrivals): State<Arc<Arrivals>>) -> axum::Json<Counts> {
    axum::Json(Counts {
        unique: arrivals.unique(),
        duplicates: arrivals.duplicates(),
        without_id: arrivals.without_id(),
        latency: Latency::from_micros(&arrivals.latency()),
    })
}

async fn measure_from(State(arrivals): State<Arc<Arrivals>>, Path(us): Path<u64>) -> StatusCode {
    arrivals.measure_from(arrivals.epoch() + Duration::from_micros(us));
    StatusCode::NO_CONTENT
}

/// Reads the body (as a webhook receiver must, to keep the connection) and answers 200.
async fn ceiling(_body: Bytes) -> StatusCode {
    StatusCode::OK
}

/// The receivers' process, seen from the harness.
#[derive(Debug)]
pub(crate) struct ReceiverProcess {
    /// `kill_on_drop`: an early return still ends it.
    child: Child,
    pid: u32,
    epoch: Instant,
    control: String,
    urls: Vec<String>,
    http: reqwest::Client,
}

impl ReceiverProcess {
    /// Starts `count` receivers in a new process, stamps counting from now.
    pub(crate) async fn start(count: usize) -> Result<Self> {
        let epoch = Instant::now();
        let epoch_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_micros();
        let me = std::env::current_exe().context("cannot find this harness's binary")?;
        let mut child = Command::new(me)
            .arg(RECEIVER_PROCESS)
            .arg("--count")
            .arg(count.to_string())
            .arg("--epoch-unix-us")
            .arg(epoch_unix_us.to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the receiver process")?;
        let pid = child.id().context("the receiver process has no pid")?;
        let stdout = child
            .stdout
            .take()
            .context("the receiver process has no stdout")?;
        let (control, urls) = tokio::time::timeout(READY_TIMEOUT, read_addresses(stdout, count))
            .await
            .context("the receiver process did not start in time")??;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        eprintln!("receivers started: pid {pid}, {count} port(s)");
        Ok(Self {
            child,
            pid,
            epoch,
            control,
            urls,
            http,
        })
    }

    /// Where stamps count from: hand it to [`crate::caller::Plan::stamped`].
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The receivers' webhook URLs.
    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The URL answering the bare-HTTP ceiling's requests.
    pub(crate) fn ceiling_url(&self) -> String {
        format!("{}/ceiling", self.control)
    }

    /// What has arrived so far.
    pub(crate) async fn counts(&self) -> Result<Counts> {
        let response = self
            .http
            .get(format!("{}/arrivals", self.control))
            .send()
            .await
            .context("cannot ask the receiver process for its counts")?;
        ensure!(
            response.status().is_success(),
            "the receiver process answered {}",
            response.status()
        );
        response
            .json()
            .await
            .context("the receiver process's counts are unreadable")
    }

    /// Times only notifications sent at or after `at`.
    pub(crate) async fn measure_from(&self, at: Instant) -> Result<()> {
        let us = at.saturating_duration_since(self.epoch).as_micros();
        let response = self
            .http
            .post(format!("{}/measure-from/{us}", self.control))
            .send()
            .await
            .context("cannot reach the receiver process")?;
        ensure!(
            response.status().is_success(),
            "the receiver process answered {}",
            response.status()
        );
        Ok(())
    }

    /// CPU time the receivers have used so far.
    pub(crate) fn cpu(&self) -> Result<Duration> {
        cpu_time(self.pid)
    }

    /// Ends the process (SIGTERM; SIGKILL if it does not stop within 10 s).
    pub(crate) async fn stop(mut self) -> Result<()> {
        sigterm(self.pid).await?;
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                let status = status.context("cannot wait for the receiver process")?;
                ensure!(
                    status.success(),
                    "the receiver process exited with {status}"
                );
                Ok(())
            }
            Err(_) => {
                self.child
                    .kill()
                    .await
                    .context("cannot kill the receivers")?;
                bail!("the receiver process did not stop within 10 s; killed it");
            }
        }
    }
}

/// Reads the child's `control <url>` line and its `receiver <url>` lines.
async fn read_addresses(
    stdout: tokio::process::ChildStdout,
    count: usize,
) -> Result<(String, Vec<String>)> {
    let mut lines = BufReader::new(stdout).lines();
    let mut control = None;
    let mut urls = Vec::with_capacity(count);
    while control.is_none() || urls.len() < count {
        let Some(line) = lines.next_line().await? else {
            bail!("the receiver process exited before printing its addresses");
        };
        match line.split_once(' ') {
            Some(("control", url)) => control = Some(url.to_owned()),
            Some(("receiver", url)) => urls.push(url.to_owned()),
            _ => bail!("unexpected line from the receiver process: {line:?}"),
        }
    }
    Ok((control.unwrap_or_default(), urls))
}

/// The `Instant` at which the wall clock read `unix_us`: how a child shares the harness's epoch.
fn instant_of_unix_us(unix_us: u64) -> Instant {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = now_unix.saturating_sub(Duration::from_micros(unix_us));
    Instant::now()
        .checked_sub(since)
        .unwrap_or_else(Instant::now)
}

/// `http://host:port` out of a receiver URL (`http://host:port/webhook`).
fn base_url(url: &str) -> &str {
    url.strip_suffix("/webhook").unwrap_or(url)
}
