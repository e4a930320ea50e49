//! Real faults under load: the disk fills up, the PostgreSQL link is cut, Redis goes away.
//! Each time callers get UNAVAILABLE or RESOURCE_EXHAUSTED (never INTERNAL, never an OK for
//! something not stored), `/readyz` says not ready where the store is at fault, the node heals by
//! itself once the fault is gone, and every accepted notification is delivered.
//!
//! Each test prints one line for the Faults table in docs/operations.md.

mod common;

use std::time::{Duration, Instant};

use common::load::{Load, Tally, all_delivered};
use common::{Backend, Receiver, TcpProxy, TestDb, TestServer, add_customer, test_config};

async fn readyz(server: &TestServer) -> u16 {
    reqwest::get(format!("http://{}/readyz", server.http_addr))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn no_internal_errors(tally: &Tally) {
    for code in tally.refused.keys() {
        assert!(
            code == "Unavailable" || code == "ResourceExhausted",
            "callers saw {code}: {:?}",
            tally.refused
        );
    }
}

/// A tmpfs mounted over a directory for the life of the guard (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Result<Self, String> {
        if unsafe_free_euid() != 0 {
            return Err("not running as root".into());
        }
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        match status.success() {
            true => Ok(Self(dir.to_owned())),
            false => Err(format!("mount -t tmpfs failed: {status}")),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The effective user id, from `id -u` (the crate forbids unsafe code, tests included).
fn unsafe_free_euid() -> u32 {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|uid| uid.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).expect("ballast file");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    for size in [64 * 1024, 4096, 512, 1] {
        while file.write_all(&chunk[..size]).is_ok() && file.flush().is_ok() {
            written += size as u64;
        }
    }
    let _ = file.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_then_heals_with_nothing_lost() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tmpfs = match Tmpfs::mount(db.dir.path(), "8m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: cannot mount a small filesystem for the database ({reason})");
            return;
        }
    };
    let receiver = Receiver::start().await;
    let server = TestServer::start(test_config(&db)).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let load = Load::start(server.grpc_url.clone(), "acme", Duration::from_millis(2));
    load.wait("some submits are accepted", Duration::from_secs(20), |t| {
        t.accepted.len() >= 50
    })
    .await;

    let ballast = tmpfs.0.join("ballast");
    fill(&ballast);
    let full_at = Instant::now();
    load.wait("submits are refused", Duration::from_secs(20), |t| {
        t.last_refused.is_some_and(|at| at > full_at)
    })
    .await;
    // Fill again whatever the refused writes freed (a rolled-back WAL), then ask the probe.
    fill(&tmpfs.0.join("ballast-2"));
    let mut ready = readyz(&server).await;
    for _ in 0..50 {
        if ready != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = readyz(&server).await;
    }
    assert_eq!(ready, 503, "/readyz while the disk is full");
    tokio::time::sleep(Duration::from_secs(1)).await; // an outage, not a blip

    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(tmpfs.0.join("ballast-2")).unwrap();
    let freed = Instant::now();
    let recovered = load.recovered_after(freed, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&server).await != 200 {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.wait("more submits are accepted", Duration::from_secs(20), |t| {
        t.last_accepted
            .is_some_and(|at| at > freed + Duration::from_millis(200))
    })
    .await;
    let tally = load.stop();
    no_internal_errors(&tally);
    let duplicates = all_delivered(&receiver, &tally.accepted).await;
    eprintln!(
        "FAULT disk full for 1 s+ (SQLite, 8 MiB tmpfs): callers saw {:?}; /readyz 503; recovered {:?} after space was freed; {} accepted, 0 lost, {duplicates} duplicates",
        tally.refused,
        recovered,
        tally.accepted.len()
    );
    server.stop().await.unwrap();
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_postgres_link_refuses_then_heals_with_nothing_lost() {
    let Some(admin) = common::postgres_url() else {
        eprintln!("skipped: DATABASE_URL is not set");
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let upstream = reqwest::Url::parse(&admin).unwrap();
    let upstream = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(5432)
    );
    let proxy = TcpProxy::start(upstream).await;
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    let receiver = Receiver::start().await;
    let mut cfg = test_config(&db);
    cfg.database_url = Some(url.to_string());
    let server = TestServer::start(cfg).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let load = Load::start(server.grpc_url.clone(), "acme", Duration::from_millis(2));
    load.wait("some submits are accepted", Duration::from_secs(20), |t| {
        t.accepted.len() >= 50
    })
    .await;

    proxy.cut();
    let cut_at = Instant::now();
    load.wait("submits are refused", Duration::from_secs(30), |t| {
        t.last_refused.is_some_and(|at| at > cut_at)
    })
    .await;
    assert_eq!(
        readyz(&server).await,
        503,
        "/readyz while the database is cut off"
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // an outage, not a blip
    proxy.restore();
    let restored = Instant::now();
    let recovered = load
        .recovered_after(restored, Duration::from_secs(30))
        .await;
    load.wait("more submits are accepted", Duration::from_secs(20), |t| {
        t.last_accepted
            .is_some_and(|at| at > restored + Duration::from_millis(200))
    })
    .await;
    let tally = load.stop();
    no_internal_errors(&tally);
    let duplicates = all_delivered(&receiver, &tally.accepted).await;
    eprintln!(
        "FAULT PostgreSQL link cut for 1 s+: callers saw {:?}; /readyz 503; recovered {:?} after the link was restored; {} accepted, 0 lost, {duplicates} duplicates",
        tally.refused,
        recovered,
        tally.accepted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_redis_refuses_then_heals_with_nothing_lost() {
    let Ok(redis_url) = std::env::var("REDIS_URL") else {
        eprintln!("skipped: REDIS_URL is not set");
        return;
    };
    let upstream = reqwest::Url::parse(&redis_url).unwrap();
    let upstream = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(6379)
    );
    let proxy = TcpProxy::start(upstream).await;
    let backend = match common::postgres_url() {
        Some(_) => Backend::Postgres,
        None => Backend::Sqlite,
    };
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let mut cfg = test_config(&db);
    cfg.redis_url = Some(format!("redis://{}", proxy.addr));
    cfg.redis_prefix = format!("fg-faults-{:08x}:", rand::random::<u32>());
    let server = TestServer::start(cfg).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let load = Load::start(server.grpc_url.clone(), "acme", Duration::from_millis(2));
    load.wait("some submits are accepted", Duration::from_secs(20), |t| {
        t.accepted.len() >= 50
    })
    .await;

    proxy.cut();
    let cut_at = Instant::now();
    load.wait("submits are refused", Duration::from_secs(30), |t| {
        t.last_refused.is_some_and(|at| at > cut_at)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let restored = Instant::now();
    let recovered = load
        .recovered_after(restored, Duration::from_secs(30))
        .await;
    load.wait("more submits are accepted", Duration::from_secs(20), |t| {
        t.last_accepted
            .is_some_and(|at| at > restored + Duration::from_millis(200))
    })
    .await;
    let tally = load.stop();
    no_internal_errors(&tally);
    let duplicates = all_delivered(&receiver, &tally.accepted).await;
    eprintln!(
        "FAULT Redis link cut for 1 s+ ({backend:?}): callers saw {:?}; recovered {:?} after the link was restored; {} accepted, 0 lost, {duplicates} duplicates",
        tally.refused,
        recovered,
        tally.accepted.len()
    );
}

/// A PostgreSQL cluster of the test's own on a small tmpfs, run as the `postgres` user (initdb
/// and postgres refuse to run as root); stopped (immediate mode) when dropped, even on failure.
struct OwnPostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    socket_dir: std::path::PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// The directory holding `initdb` and `pg_ctl`: from PATH, else `pg_config --bindir`.
    fn bin_dir() -> Option<std::path::PathBuf> {
        let on_path = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()));
        on_path.or_else(|| {
            let out = std::process::Command::new("pg_config")
                .arg("--bindir")
                .output()
                .ok()?;
            let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            dir.join("initdb").is_file().then_some(dir)
        })
    }

    /// A command from the PostgreSQL binaries, run as the `postgres` user.
    fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        command
    }

    /// Creates a cluster (trust auth) in `root`/data; its socket in `root`, its log in `log_dir`.
    fn init(
        bin: std::path::PathBuf,
        root: &std::path::Path,
        log_dir: &std::path::Path,
    ) -> Result<Self, String> {
        for dir in [root, log_dir] {
            let chown = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir)
                .status()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            if !chown.success() {
                return Err(format!("chown postgres {} failed: {chown}", dir.display()));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let cluster = Self {
            bin,
            data: root.join("data"),
            log: log_dir.join("postgres.log"),
            socket_dir: root.to_owned(),
            port,
        };
        let initdb = cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&cluster.data)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        Ok(cluster)
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.socket_dir.display()
        );
        let status = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .status()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        match status.success() {
            true => Ok(()),
            false => Err(format!("pg_ctl start failed: {status}")),
        }
    }

    /// Whether the postmaster is still running (`pg_ctl status`).
    fn running(&self) -> bool {
        self.command("pg_ctl")
            .args(["status", "-D"])
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server log's lines that say why writes failed and why the server stopped: the first
    /// "No space left" error, then every PANIC, FATAL and shutdown.
    fn log_excerpt(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let first_full = log.lines().find(|l| l.contains("No space left"));
        let stops = log.lines().filter(|l| {
            ["PANIC", "FATAL", "database system is shut down"]
                .iter()
                .any(|word| l.contains(word))
        });
        first_full
            .into_iter()
            .chain(stops)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_disk_full_then_freed_loses_nothing() {
    let Some(bin) = OwnPostgres::bin_dir() else {
        eprintln!("skipped: no PostgreSQL binaries (initdb on PATH or in `pg_config --bindir`)");
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await; // only its directory, for the log
    let mount = tempfile::tempdir().unwrap();
    let tmpfs = match Tmpfs::mount(mount.path(), "96m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: cannot mount a small filesystem for PostgreSQL ({reason})");
            return;
        }
    };
    let cluster = match OwnPostgres::init(bin, &tmpfs.0, db.dir.path()) {
        Ok(cluster) => cluster,
        Err(reason) => {
            eprintln!(
                "skipped: cannot create a PostgreSQL cluster as the `postgres` user ({reason})"
            );
            return;
        }
    };
    cluster.start().expect("PostgreSQL starts on the tmpfs");
    let receiver = Receiver::start().await;
    let mut cfg = test_config(&db);
    cfg.database_url = Some(cluster.url());
    let server = TestServer::start(cfg).await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let load = Load::start(server.grpc_url.clone(), "acme", Duration::from_millis(2));
    load.wait("some submits are accepted", Duration::from_secs(20), |t| {
        t.accepted.len() >= 50
    })
    .await;

    let ballast = tmpfs.0.join("ballast");
    fill(&ballast);
    let full_at = Instant::now();
    load.wait("submits are refused", Duration::from_secs(30), |t| {
        t.last_refused.is_some_and(|at| at > full_at)
    })
    .await;
    fill(&tmpfs.0.join("ballast-2"));
    let mut ready = readyz(&server).await;
    for _ in 0..250 {
        if ready != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = readyz(&server).await;
    }
    assert_eq!(ready, 503, "/readyz while the disk is full");
    let exhausted = load.refused("ResourceExhausted");
    assert!(
        exhausted > 0,
        "a failed table extension answers RESOURCE_EXHAUSTED"
    );

    // Stage 2: PostgreSQL needs a new WAL segment and cannot create one. It PANICs, and its
    // crash recovery cannot write WAL either, so the postmaster shuts down.
    let panicked_at = Instant::now();
    while cluster.running() {
        assert!(
            panicked_at.elapsed() < Duration::from_secs(30),
            "PostgreSQL kept running without room for WAL"
        );
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&cluster.url()).await {
            let _ = sqlx::query("SELECT pg_switch_wal()")
                .execute(&mut conn)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let down_at = Instant::now();
    load.wait(
        "submits are refused as unavailable",
        Duration::from_secs(30),
        |t| t.last_refused.is_some_and(|at| at > down_at) && t.refused.contains_key("Unavailable"),
    )
    .await;
    assert_eq!(
        readyz(&server).await,
        503,
        "/readyz while PostgreSQL is down"
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // an outage, not a blip
    let log = cluster.log_excerpt();
    eprintln!("PostgreSQL log on the full disk:\n{log}");
    assert!(log.contains("PANIC"), "PostgreSQL stopped without a PANIC");

    // The operator frees space and starts PostgreSQL; floodgate reconnects by itself.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(tmpfs.0.join("ballast-2")).unwrap();
    let freed = Instant::now();
    cluster
        .start()
        .expect("PostgreSQL starts once space is freed");
    let recovered = load.recovered_after(freed, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&server).await != 200 {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.wait("more submits are accepted", Duration::from_secs(20), |t| {
        t.last_accepted
            .is_some_and(|at| at > freed + Duration::from_millis(200))
    })
    .await;
    let tally = load.stop();
    no_internal_errors(&tally);
    let duplicates = all_delivered(&receiver, &tally.accepted).await;
    eprintln!(
        "FAULT disk full for 1 s+ (PostgreSQL, 96 MiB tmpfs): callers saw {:?} ({exhausted} RESOURCE_EXHAUSTED before the WAL PANIC); /readyz 503; recovered {:?} after space was freed and PostgreSQL restarted; {} accepted, 0 lost, {duplicates} duplicates",
        tally.refused,
        recovered,
        tally.accepted.len()
    );
    server.stop().await.unwrap();
    drop(cluster);
    drop(tmpfs);
}
