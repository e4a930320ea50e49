//! The processes an end-to-end experiment (`deliver`, `drain`) runs: webhook receivers in a
//! process of their own, the bare HTTP ceiling measured against them first, and floodgate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use clap::builder::RangedU64ValueParser;

use crate::ceiling::{self, Ceiling, CeilingLoad};
use crate::cluster::Cluster;
use crate::interrupt::unless_interrupted;
use crate::process::Program;
use crate::receiver_process::ReceiverProcess;

/// The options every end-to-end experiment takes: what to start, and where.
#[derive(Debug, Args)]
pub(crate) struct EndToEnd {
    /// Always-200 webhook receivers; customer i is delivered to receiver i mod R.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub(crate) receivers: usize,
    /// Database for floodgate. A PostgreSQL URL gets a fresh scratch database created beside
    /// the one named and dropped afterwards; any other URL is used as given.
    /// [default: SQLite in a fresh temporary directory]
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Run this floodgate binary (`<path> serve`) instead of the copy built into the harness.
    #[arg(long)]
    floodgate_bin: Option<PathBuf>,
    /// An extra flag for `floodgate serve` (repeat it for more), e.g. `--server-arg=--lease=30s`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// First measure the bare HTTP ceiling against the same receivers for this long (0s to skip).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ceiling: Duration,
    #[command(flatten)]
    ceiling_load: CeilingLoad,
}

impl EndToEnd {
    /// Starts the receivers, measures the ceiling, starts floodgate (`nodes` nodes of one
    /// cluster) and runs `measure` against
    /// them. Everything is stopped even when the measurement failed (the scratch database must
    /// go), the receivers last, because floodgate's shutdown waits for deliveries under way.
    pub(crate) async fn run<T>(
        &self,
        nodes: usize,
        measure: impl AsyncFnOnce(&Cluster, &ReceiverProcess) -> Result<T>,
    ) -> Result<(T, Option<Ceiling>)> {
        let receivers = ReceiverProcess::start(self.receivers).await?;
        let ceiling =
            ceiling::measure_unless_zero(&receivers, &self.ceiling_load, self.ceiling).await?;
        let program = match &self.floodgate_bin {
            Some(path) => Program::Binary(path.clone()),
            None => Program::Harness,
        };
        let server_args: Vec<&str> = self.server_args.iter().map(String::as_str).collect();
        let started =
            Cluster::start(&program, self.database_url.as_deref(), nodes, &server_args).await;
        let server = match started {
            Ok(server) => server,
            Err(err) => {
                let _ = receivers.stop().await;
                return Err(err);
            }
        };
        let measured = unless_interrupted(measure(&server, &receivers)).await;
        let stopped = server.stop().await;
        let receivers_stopped = receivers.stop().await;
        let measured = measured?;
        stopped?;
        receivers_stopped?;
        Ok((measured, ceiling))
    }
}
