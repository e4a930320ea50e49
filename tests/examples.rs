//! The Python and Node examples (examples/python, examples/node) against the real server: each
//! registers a customer whose webhook it receives itself, submits, polls until DELIVERED and
//! verifies the signature. The test checks their exit status and output, and reads the
//! notification back from the server, so neither example can rot unnoticed.
//!
//! Their dependencies are installed by `.ci/run` (a venv in examples/python/.venv, `npm ci` in
//! examples/node). Without them a test prints that it was skipped, unless
//! `FLOODGATE_EXAMPLES_REQUIRED` is set (as CI does), where a missing dependency fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, Backend, TestDb, TestServer, test_config};
use floodgate::api::proto;
use tokio::process::Command;

/// The repository root (where `examples/` is).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Reports a missing dependency: a skip on a developer's machine, a failure in CI.
fn skip(reason: &str) {
    assert!(
        std::env::var_os("FLOODGATE_EXAMPLES_REQUIRED").is_none(),
        "FLOODGATE_EXAMPLES_REQUIRED is set but {reason}"
    );
    eprintln!("skipped: {reason}");
}

/// The Python that has the example's packages: `FLOODGATE_EXAMPLES_PYTHON`, else the venv
/// `.ci/run` makes, else `python3` from PATH.
async fn python() -> Option<PathBuf> {
    let venv = root().join("examples/python/.venv/bin/python3");
    let python = std::env::var_os("FLOODGATE_EXAMPLES_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if venv.exists() {
                venv
            } else {
                PathBuf::from("python3")
            }
        });
    let imports = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools, standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    matches!(imports, Ok(status) if status.success()).then_some(python)
}

/// What one run of an example printed.
struct Run {
    stdout: String,
    stderr: String,
    success: bool,
}

/// Runs an example to its end (at most a minute) with the server's address and a token.
async fn run(mut command: Command, grpc_url: &str, token: &str) -> Run {
    command
        .current_dir(root())
        .env("FLOODGATE_ADDR", grpc_url.trim_start_matches("http://"))
        .env("FLOODGATE_TOKEN", token)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the example finishes within a minute")
        .expect("the example starts");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        success: output.status.success(),
    }
}

/// The id after `prefix` on the line of `output` that starts with it.
fn id_after<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.split([' ', ':']).next())
}

/// Starts a server, runs `command` against it, and checks what it printed against the
/// server's own record of the notification.
async fn runs_and_delivers(command: impl Fn() -> Command, customer: &str) {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await; // wait until it serves

    // A wrong token: the example fails, exit status non-zero, and says what floodgate answered.
    let refused = run(command(), &server.grpc_url, "not-the-token").await;
    assert!(!refused.success, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("UNAUTHENTICATED"),
        "stderr: {}",
        refused.stderr
    );

    // Twice: the first run registers the customer and takes the secret from that answer; the
    // second finds it registered (reads never show the secret) and rotates to a new one.
    for _ in 0..2 {
        let ran = run(command(), &server.grpc_url, ADMIN_TOKEN).await;
        assert!(
            ran.success,
            "the example failed\nstdout:\n{}\nstderr:\n{}",
            ran.stdout, ran.stderr
        );
        let submitted = id_after(&ran.stdout, "submitted ").expect("a submitted line");
        assert_eq!(id_after(&ran.stdout, "delivered "), Some(submitted));
        assert_eq!(
            id_after(&ran.stdout, "signature verified for "),
            Some(submitted),
            "stdout: {}",
            ran.stdout
        );

        // The server agrees: that notification, of that customer, is DELIVERED, in one attempt.
        let stored = server
            .dispatcher()
            .await
            .get_notification(proto::GetNotificationRequest {
                notification_id: submitted.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored.state(), proto::State::Delivered);
        assert_eq!(stored.customer_id, customer);
        assert_eq!(stored.attempts, 1);
    }
    server.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_submits_and_verifies_the_webhook() {
    let Some(python) = python().await else {
        skip(
            "the Python example's packages are missing \
             (python3 -m venv examples/python/.venv && \
             examples/python/.venv/bin/pip install -r examples/python/requirements.txt)",
        );
        return;
    };
    let script = root().join("examples/python/notify.py");
    runs_and_delivers(
        || {
            let mut command = Command::new(&python);
            command.arg(&script);
            command
        },
        "example-python",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_submits_and_verifies_the_webhook() {
    let node_modules = root().join("examples/node/node_modules");
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .await;
    if !matches!(node, Ok(status) if status.success()) || !node_modules.exists() {
        skip("node or the Node example's packages are missing (cd examples/node && npm ci)");
        return;
    }
    let script = root().join("examples/node/notify.mjs");
    runs_and_delivers(
        || {
            let mut command = Command::new("node");
            command.arg(&script);
            command
        },
        "example-node",
    )
    .await;
}

/// Checks a webhook with the Python `standardwebhooks` package and `secret`; true if it verifies.
async fn standard_webhooks_verifies(
    python: &Path,
    secret: &str,
    delivery: &common::Delivery,
) -> bool {
    let script = "import sys\n\
from standardwebhooks.webhooks import Webhook\n\
secret, msg_id, ts, sig = sys.argv[1:5]\n\
body = sys.stdin.buffer.read()\n\
Webhook(secret).verify(body, {'webhook-id': msg_id, 'webhook-timestamp': ts, 'webhook-signature': sig})\n";
    let mut child = Command::new(python)
        .args(["-c", script, secret, &delivery.webhook_id])
        .arg(delivery.timestamp.to_string())
        .arg(&delivery.signature)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&delivery.body)
        .await
        .expect("write the body");
    drop(stdin);
    child.wait().await.expect("python runs").success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_secrets_verify_with_a_standard_webhooks_library() {
    let Some(python) = python().await else {
        skip("the Python example's packages (standardwebhooks) are missing");
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = common::Receiver::start().await;
    let old = common::add_customer(&server.grpc_url, "rotating", &receiver.url)
        .await
        .signing_secret;
    let new = server
        .customers()
        .await
        .rotate_signing_secret(proto::RotateSigningSecretRequest {
            customer_id: "rotating".into(),
            overlap_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    server
        .dispatcher()
        .await
        .submit(common::submit_request("rotating", "k-1", "u"))
        .await
        .unwrap();
    let delivery = receiver.wait_for(1, Duration::from_secs(10)).await[0].clone();
    assert!(
        standard_webhooks_verifies(&python, &old, &delivery).await,
        "old secret"
    );
    assert!(
        standard_webhooks_verifies(&python, &new, &delivery).await,
        "new secret"
    );
    let stranger = floodgate::sink::signature::generate_secret();
    assert!(
        !standard_webhooks_verifies(&python, &stranger, &delivery).await,
        "any secret verifies: the check is broken"
    );
    server.stop().await.expect("a clean stop");
}
