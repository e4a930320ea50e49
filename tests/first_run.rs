//! The first minute of a newcomer: `floodgate serve` (the real binary) says where it listens,
//! where the dashboard and the admin token are; `/` leads to the dashboard; a taken port names
//! the flag that moves it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// `floodgate serve` on the given addresses in a fresh data directory.
fn serve(data_dir: &std::path::Path, http_addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_floodgate"));
    command
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            http_addr,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .env_remove("FLOODGATE_DATABASE_URL")
        .env_remove("FLOODGATE_ADMIN_TOKEN");
    command
}

/// Stops the server this test started, by its own handle, even when an assertion fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_its_addresses_and_the_root_leads_to_the_dashboard() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = serve(dir.path(), "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("floodgate starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    // Read the banner, then keep draining stdout: a closed pipe would fail the server's next
    // line of output.
    let (banner_tx, banner_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut banner_tx = Some(banner_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if banner_tx.is_some() {
                let last = line.trim_start().starts_with("admin token");
                lines.push(line);
                if last && let Some(tx) = banner_tx.take() {
                    let _ = tx.send(std::mem::take(&mut lines));
                }
            }
        }
    });
    let banner = banner_rx.await.expect("the banner is printed");
    let text = banner.join("\n");
    let field = |name: &str| {
        banner
            .iter()
            .find_map(|line| line.trim_start().strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{text}"))
    };
    let grpc = field("gRPC API");
    assert!(
        grpc.starts_with("127.0.0.1:") && !grpc.ends_with(":0"),
        "{text}"
    );
    assert!(text.contains(&format!("--server {grpc}")), "{text}");
    let dashboard = field("dashboard");
    assert!(dashboard.ends_with("/dashboard"), "{text}");
    let token_file = dir.path().join("admin-token");
    assert_eq!(field("admin token"), token_file.display().to_string());

    let root = dashboard.trim_end_matches("dashboard");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let answer = client
        .get(format!("{root}?token=abc"))
        .send()
        .await
        .expect("the HTTP port answers");
    assert!(answer.status().is_redirection(), "{}", answer.status());
    assert_eq!(
        answer.headers()["location"].to_str().unwrap(),
        "/dashboard",
        "a token in the query is not passed on"
    );
    let page = reqwest::get(root).await.expect("the redirect is followed");
    assert_eq!(page.status(), 200);
    assert_eq!(page.url().path(), "/dashboard");
    drop(server);
}

#[tokio::test]
async fn a_taken_http_port_names_the_flag_that_moves_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let addr = taken.local_addr().expect("its address").to_string();
    let output = tokio::task::spawn_blocking(move || {
        serve(dir.path(), &addr).output().expect("floodgate runs")
    })
    .await
    .expect("the blocking task finishes");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("--http-addr HOST:PORT"), "{stderr}");
    assert!(error[0].contains("FLOODGATE_HTTP_ADDR"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    drop(taken);
}
