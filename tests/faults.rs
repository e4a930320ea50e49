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
