//! floodgate as a separate child process: its resident memory is its own and not shared with the
//! load generator's, and it can be killed with SIGKILL and started again on the same data (the
//! `crash` scenario), or killed for good (a cluster's node, see [`crate::cluster`]). Started on a fresh data directory, a fresh database (see
//! [`crate::database`]), free ports and a random admin token, and always stopped again.
//!
//! The program is either a built `floodgate` binary, or this harness itself with its hidden
//! `floodgate-serve` subcommand (the same `floodgate serve`, linked in), so a run needs nothing
//! built beforehand.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
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

/// What to run as floodgate.
#[derive(Debug, Clone)]
pub(crate) enum Program {
    /// A built `floodgate` binary, run as `<path> serve`.
    Binary(PathBuf),
    /// This harness, run as `<itself> floodgate-serve`.
    Harness,
}

impl Program {
    /// The command line up to the server's own flags.
    fn command(&self) -> Result<Command> {
        Ok(match self {
            Program::Binary(path) => {
                ensure!(
                    path.is_file(),
                    "{} does not exist: build it with `cargo build --release` or pass \
                     --floodgate-bin",
                    path.display()
                );
                let mut command = Command::new(path);
                command.arg("serve");
                command
            }
            Program::Harness => {
                let me = std::env::current_exe().context("cannot find this harness's binary")?;
                let mut command = Command::new(me);
                command.arg(crate::FLOODGATE_SERVE);
                command
            }
        })
    }
}

/// A floodgate child process.
#[derive(Debug)]
pub(crate) struct Floodgate {
    /// `kill_on_drop`: an early return or a panic still kills it (with SIGKILL).
    child: Child,
    pid: u32,
    /// How it was started, to start it again after a kill.
    launch: Launch,
    backend: &'static str,
    database: Option<RunDatabase>,
    /// Holds the SQLite file; removed when the run ends.
    _data_dir: TempDir,
}

/// A process's resident memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub(crate) rss_kib: u64,
    /// `VmHWM`: the most ever resident (the high-water mark).
    pub(crate) hwm_kib: u64,
}
impl Memory {
    pub(crate) fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub(crate) fn hwm_mib(&self) -> f64 {
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

/// Everything needed to start floodgate, again and again, on the same data and ports.
#[derive(Debug)]
struct Launch {
    program: Program,
    /// `--data-dir`, `--database-url` and the caller's own flags.
    args: Vec<String>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc_url: String,
    admin_token: String,
}

impl Launch {
    /// Starts the process and waits until it answers calls.
    async fn spawn(&self) -> Result<(Child, u32)> {
        let mut command = self.program.command()?;
        command
            .arg("--grpc-addr")
            .arg(self.grpc_addr.to_string())
            .arg("--http-addr")
            .arg(self.http_addr.to_string())
            .arg("--admin-token")
            .arg(&self.admin_token)
            .arg("--shutdown-grace")
            .arg(SHUTDOWN_GRACE)
            // The simulated customer systems listen on loopback, which the outbound target
            // policy refuses unless it is opened.
            .arg("--allow-target-cidr")
            .arg("127.0.0.0/8")
            .args(&self.args);
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
        let mut child = command.spawn().context("cannot start floodgate")?;
        let pid = child.id().context("the floodgate process has no pid")?;
        if let Err(err) = wait_until_ready(&mut child, &self.grpc_url, &self.admin_token).await {
            let _ = child.kill().await;
            return Err(err);
        }
        eprintln!("floodgate started: pid {pid}, gRPC {}", self.grpc_addr);
        Ok((child, pid))
    }
}

impl Floodgate {
    /// Starts `program` with `extra_args` and waits until it answers calls. `database_url` is
    /// handled as for the in-process server (a PostgreSQL URL gets a scratch database).
    pub(crate) async fn start(
        program: &Program,
        database_url: Option<&str>,
        extra_args: &[&str],
    ) -> Result<Self> {
        let database = RunDatabase::prepare(database_url).await?;
        match Self::launch(program, &database, extra_args).await {
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

    /// Starts `program` on `database`, which the caller keeps and releases: how the nodes of a
    /// cluster share one database (see [`crate::cluster`]).
    pub(crate) async fn launch(
        program: &Program,
        database: &RunDatabase,
        extra_args: &[&str],
    ) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("floodgate-load-")
            .tempdir()
            .context("cannot create a temporary data directory")?;
        let (grpc_addr, http_addr) = free_ports()?;
        let mut args = vec![
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
        ];
        if let Some(url) = database.url() {
            args.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        args.extend(extra_args.iter().map(|&arg| arg.to_owned()));
        let launch = Launch {
            program: program.clone(),
            args,
            grpc_addr,
            http_addr,
            grpc_url: format!("http://{grpc_addr}"),
            admin_token: client::random_admin_token(),
        };
        let (child, pid) = launch.spawn().await?;
        Ok(Self {
            child,
            pid,
            launch,
            backend: database.backend(),
            database: None,
            _data_dir: data_dir,
        })
    }

    /// Kills it with SIGKILL — no shutdown, claims left in the store — and starts it again on the
    /// same data, database and ports, as an operator's restart after a crash would.
    pub(crate) async fn kill_and_restart(&mut self) -> Result<()> {
        self.child.kill().await.context("cannot kill floodgate")?;
        eprintln!("floodgate killed (SIGKILL): pid {}", self.pid);
        let (child, pid) = self.launch.spawn().await?;
        self.child = child;
        self.pid = pid;
        Ok(())
    }

    /// Kills it with SIGKILL for good — no shutdown, leases and claims left in the store — as a
    /// crashed machine would: the cluster's survivors must take over.
    pub(crate) async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("cannot kill floodgate")?;
        eprintln!("floodgate killed (SIGKILL): pid {}", self.pid);
        Ok(())
    }

    /// What a summary calls this server.
    pub(crate) fn describe(&self) -> String {
        format!("floodgate process on {}", self.backend)
    }

    /// A new connection to it, with the admin token.
    pub(crate) async fn connect(&self) -> Result<AuthedChannel> {
        client::connect(&self.launch.grpc_url, &self.launch.admin_token, None).await
    }

    /// Its resident memory now.
    pub(crate) fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Memory::parse(&status)
            .with_context(|| format!("no VmRSS and VmHWM in {path}: has floodgate exited?"))
    }

    /// CPU time (user and system, all threads) it has used since it started.
    pub(crate) fn cpu(&self) -> Result<Duration> {
        cpu_time(self.pid)
    }

    /// Stops it the orderly way (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]), then drops the
    /// scratch database. Always call it, failed run or not.
    pub(crate) async fn stop(mut self) -> Result<()> {
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

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux build that
/// matters here, and the harness takes no libc for `sysconf`.
const USER_HZ: u64 = 100;

/// CPU time (user + system, every thread) of process `pid`, from `/proc/<pid>/stat`: how the
/// `deliver` experiment reports what each process spent per delivered notification.
pub(crate) fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
        .with_context(|| format!("no CPU times in {path}"))
}

/// `utime + stime` (fields 14 and 15) out of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Sends SIGTERM with the `kill` utility: std and tokio only send SIGKILL, and the harness takes
/// no unsafe code and no new dependency for one signal.
pub(crate) async fn sigterm(pid: u32) -> Result<()> {
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
    fn reads_cpu_ticks_from_proc_stat() {
        let stat = "42 (float gate) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("42 (x) S"), None);
        assert!(cpu_time(std::process::id()).is_ok());
    }

    #[test]
    fn this_process_has_a_readable_status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let memory = Memory::parse(&status).unwrap();
        assert!(memory.rss_kib > 0 && memory.hwm_kib >= memory.rss_kib);
    }
}
