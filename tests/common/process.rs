//! The real `floodgate` binary as a child process, for tests about signals, exits and the
//! process as a whole.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{ADMIN_TOKEN, TestDb};

/// A running `floodgate serve` on fixed addresses; killed when dropped.
pub struct Floodgate {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    child: Option<Child>,
}

impl Floodgate {
    /// Starts the binary on `db` with test-friendly defaults plus `extra` flags (a flag in
    /// `extra` replaces the default sweep interval or target allow-list).
    ///
    /// Its ports are picked free and released for the child to bind, so another process can take
    /// one in between: a child that exits before it is ready is started again on new ports.
    pub async fn start(db: &TestDb, extra: &[&str]) -> Self {
        Self::launch(db, db.dir.path(), extra, None).await
    }

    /// Like [`start`](Self::start), with a data directory of its own: several nodes on one
    /// PostgreSQL database each need one.
    pub async fn start_in(db: &TestDb, data_dir: &Path, extra: &[&str]) -> Self {
        Self::launch(db, data_dir, extra, None).await
    }

    /// Like [`start`](Self::start), logging at debug level into `log` (stdout and stderr).
    pub async fn start_logging(db: &TestDb, extra: &[&str], log: &Path) -> Self {
        Self::launch(db, db.dir.path(), extra, Some(log)).await
    }

    async fn launch(db: &TestDb, data_dir: &Path, extra: &[&str], log: Option<&Path>) -> Self {
        for _ in 0..3 {
            let (grpc, http) = (free_addr(), free_addr());
            let mut command = Command::new(env!("CARGO_BIN_EXE_floodgate"));
            command
                .arg("serve")
                .args(["--grpc-addr", &grpc.to_string()])
                .args(["--http-addr", &http.to_string()])
                .args(["--data-dir", &data_dir.display().to_string()])
                .args(["--database-url", &db.url])
                .args(["--admin-token", ADMIN_TOKEN]);
            // Test-friendly defaults, unless `extra` sets the same flag.
            for (flag, value) in [
                ("--sweep-interval", "100ms"),
                ("--allow-target-cidr", super::LOOPBACK),
            ] {
                if !extra.contains(&flag) {
                    command.args([flag, value]);
                }
            }
            command.args(extra).stdin(Stdio::null());
            match log {
                Some(path) => {
                    // A new file per attempt: only the process that runs leaves its log.
                    let file = std::fs::File::create(path).expect("create the log file");
                    command
                        .env("RUST_LOG", "debug")
                        .stdout(file.try_clone().expect("the log file"))
                        .stderr(file);
                }
                None => {
                    command.env("RUST_LOG", "warn").stdout(Stdio::null());
                }
            }
            let child = command.spawn().expect("start floodgate");
            let mut process = Self {
                grpc,
                http,
                child: Some(child),
            };
            if process.ready_unless_exited().await {
                return process;
            }
        }
        panic!("floodgate exited before it was ready, three times");
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Polls `/readyz` until it answers 200 (true) or the process exits (false).
    async fn ready_unless_exited(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/readyz", self.http);
        let client = reqwest::Client::new();
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return true;
            }
            let child = self.child.as_mut().expect("running");
            if child.try_wait().expect("wait for floodgate").is_some() {
                return false;
            }
            assert!(Instant::now() < deadline, "floodgate did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) to the running process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([format!("-{name}"), child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Sends SIGKILL and waits for the process to be gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL floodgate");
        while child.try_wait().expect("wait for floodgate").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit; returns the status and how long the
    /// process took to exit. Panics (after SIGKILL) if it is still running at `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        while sent.elapsed() < limit {
            if let Some(status) = child.try_wait().expect("wait for floodgate") {
                return (status, sent.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("floodgate still running {limit:?} after SIGTERM");
    }
}

impl Drop for Floodgate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free local port (bound and released: the child binds it a moment later), never one this
/// test binary was given before. The kernel may hand a released port out again at once, and two
/// tests starting children at the same time then got the same one: the child that lost the race
/// exited, and the other's `/readyz` answered for it.
pub fn free_addr() -> SocketAddr {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        if given.get_or_insert_with(HashSet::new).insert(addr.port()) {
            return addr;
        }
    }
}
