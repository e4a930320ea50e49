//! floodgate as a separate child process, so its resident memory is its own and not shared with
//! the load generator's: started from a built binary on a fresh data directory, a fresh database
//! (see [`crate::database`]), free ports and a random admin token, and always stopped again.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use serde::Serialize;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::client::{self, AuthedChannel};
use crate::database::RunDatabase;

/// Longest floodgate may take to answer its first call (PostgreSQL migrations included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long floodgate has after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// floodgate's own shutdown grace: well inside [`STOP_TIMEOUT`], so a slow customer's deliveries
/// under way cannot turn an orderly stop into a kill.
const SHUTDOWN_GRACE: &str = "10s";

/// A floodgate child process.
#[derive(Debug)]
pub(super) struct Floodgate {
    /// `kill_on_drop`: an early return or a panic still kills it (with SIGKILL).
    child: Child,
    pid: u32,
    grpc_url: String,
    admin_token: String,
    backend: &'static str,
    database: Option<RunDatabase>,
    /// Holds the SQLite file; removed when the run ends.
    _data_dir: TempDir,
}

/// A process's resident memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Memory {
    /// `VmRSS`: resident now.
    pub(super) rss_kib: u64,
    /// `VmHWM`: the most ever resident (the high-water mark).
    pub(super) hwm_kib: u64,
}

impl Memory {
    pub(super) fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub(super) fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }

    /// Reads `VmRSS` and `VmHWM` (both in kB) out of a `/proc/<pid>/status` text.
    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        };
        Some(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

impl Floodgate {
    /// Starts `bin serve` with `extra_args` and waits until it answers calls. `database_url` is
    /// handled as for the in-process server (a PostgreSQL URL gets a scratch database).
    pub(super) async fn start(
        bin: &Path,
        database_url: Option<&str>,
        extra_args: &[&str],
    ) -> Result<Self> {
        let database = RunDatabase::prepare(database_url).await?;
        match Self::launch(bin, &database, extra_args).await {
            Ok(mut floodgate) => {
                floodgate.database = Some(database);
                Ok(floodgate)
            }
            Err(err) => {
                database.release_quietly().await;
                Err(err)
            }
        }
    }

    async fn launch(bin: &Path, database: &RunDatabase, extra_args: &[&str]) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("floodgate-memory-")
            .tempdir()
            .context("cannot create a temporary data directory")?;
        let admin_token = client::random_admin_token();
        let (grpc_addr, http_addr) = free_ports()?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--admin-token")
            .arg(&admin_token)
            .arg("--shutdown-grace")
            .arg(SHUTDOWN_GRACE);
        if let Some(url) = database.url() {
            command.arg("--database-url").arg(url);
        }
        command.args(extra_args);
        // Warnings only, like this harness itself, unless RUST_LOG says otherwise: its log goes
        // to the shared stderr, and info lines would bury the progress lines.
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        // Its own process group: a Ctrl-C at the terminal reaches only the harness, which then
        // stops floodgate in order (see `crate::interrupt`).
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the floodgate process has no pid")?;
        let grpc_url = format!("http://{grpc_addr}");
        if let Err(err) = wait_until_ready(&mut child, &grpc_url, &admin_token).await {
            let _ = child.kill().await;
            return Err(err);
        }
        eprintln!("floodgate started: pid {pid}, gRPC {grpc_addr}");
        Ok(Self {
            child,
            pid,
            grpc_url,
            admin_token,
            backend: database.backend(),
            database: None,
            _data_dir: data_dir,
        })
    }

    /// What a summary calls this server.
    pub(super) fn describe(&self) -> String {
        format!("floodgate process on {}", self.backend)
    }

    /// A new connection to it, with the admin token.
    pub(super) async fn connect(&self) -> Result<AuthedChannel> {
        client::connect(&self.grpc_url, &self.admin_token).await
    }

    /// Its resident memory now.
    pub(super) fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Memory::parse(&status)
            .with_context(|| format!("no VmRSS and VmHWM in {path}: has floodgate exited?"))
    }

    /// Stops it the orderly way (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]), then drops the
    /// scratch database. Always call it, failed run or not.
    pub(super) async fn stop(mut self) -> Result<()> {
        let stopped = self.terminate().await;
        let released = match self.database.take() {
            Some(database) => database.release().await,
            None => Ok(()),
        };
        stopped?;
        released
    }

    async fn terminate(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("cannot check the floodgate process")?
        {
            bail!("floodgate had already exited ({status}); its log is above");
        }
        if let Err(err) = sigterm(self.pid).await {
            self.child.kill().await.context("cannot kill floodgate")?;
            return Err(err.context("killed floodgate instead"));
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("cannot wait for floodgate to exit")?;
                ensure!(
                    status.success(),
                    "floodgate exited with {status} after SIGTERM"
                );
                Ok(())
            }
            Err(_) => {
                self.child.kill().await.context("cannot kill floodgate")?;
                bail!(
                    "floodgate did not exit within {}s of SIGTERM; killed it",
                    STOP_TIMEOUT.as_secs()
                );
            }
        }
    }
}

/// Sends SIGTERM with the `kill` utility: std and tokio only send SIGKILL, and the harness takes
/// no unsafe code and no new dependency for one signal.
async fn sigterm(pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status()
        .await
        .context("cannot run `kill` to send SIGTERM to floodgate")?;
    ensure!(status.success(), "`kill -s TERM {pid}` failed ({status})");
    Ok(())
}

/// Two free ports on 127.0.0.1, found by binding port 0 and letting go: another process could
/// take one in between, but then floodgate fails to start and says so.
fn free_ports() -> Result<(SocketAddr, SocketAddr)> {
    let bind = || TcpListener::bind("127.0.0.1:0").context("cannot find a free port");
    // Both held at once, so they differ.
    let (grpc, http) = (bind()?, bind()?);
    let addr = |l: &TcpListener| l.local_addr().context("cannot read a free port's address");
    Ok((addr(&grpc)?, addr(&http)?))
}

/// Waits until the child answers a call, or fails if it exits or [`READY_TIMEOUT`] passes.
async fn wait_until_ready(child: &mut Child, grpc_url: &str, token: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child
            .try_wait()
            .context("cannot check the floodgate process")?
        {
            bail!("floodgate exited before serving ({status}); its log is above");
        }
        match client::answers_calls(grpc_url, token).await {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| {
                    format!(
                        "floodgate did not answer within {}s",
                        READY_TIMEOUT.as_secs()
                    )
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_hwm_from_proc_status() {
        let status =
            "Name:\tfloodgate\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        let memory = Memory::parse(status).unwrap();
        assert_eq!((memory.rss_kib, memory.hwm_kib), (40960, 51200));
        assert_eq!(memory.rss_mib(), 40.0);
        assert!(Memory::parse("Name:\tfloodgate\n").is_none());
    }

    #[test]
    fn this_process_has_a_readable_status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let memory = Memory::parse(&status).unwrap();
        assert!(memory.rss_kib > 0 && memory.hwm_kib >= memory.rss_kib);
    }
}
