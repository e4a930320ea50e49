//! The `floodgate` binary's client subcommands, run as a person would run them: against a real
//! server (or none), with `RUST_BACKTRACE=1` set, asserting on what they print and their exit
//! codes (2 usage, 3 connection, 4 server-side).

mod common;

use std::process::Output;

use common::{ADMIN_TOKEN, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, test_config};

/// Runs `floodgate ARGS` in an empty directory (so no saved admin token is found) with
/// `RUST_BACKTRACE=1`, the setting that used to turn every error into a backtrace.
async fn floodgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args(&args)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .env_remove("FLOODGATE_TOKEN")
            .env_remove("FLOODGATE_SERVER")
            .env_remove("FLOODGATE_DATA_DIR")
            .output()
            .expect("the floodgate binary runs")
    })
    .await
    .expect("the blocking task finishes")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts the command failed with `code` in one or two lines, without a backtrace or a
/// repeated cause, and returns its stderr.
fn failed_with(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    let lines = stderr.lines().count();
    assert!((1..=2).contains(&lines), "{lines} lines: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for noise in ["backtrace", "Caused by", "panicked"] {
        assert!(!stderr.contains(noise), "{noise:?} in: {stderr}");
    }
    stderr
}

fn stdout(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}: {}{text}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// A server address nothing listens on: a port held bound but not listening for as long as the
/// returned socket lives, so every connection is refused and no other process can take it.
fn closed_port() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("a free port");
    let addr = socket.local_addr().expect("its address");
    (socket, addr.to_string())
}

#[tokio::test]
async fn no_server_is_a_connection_error_that_says_what_to_do() {
    let (_held, server) = closed_port();
    let output = floodgate(args(&["status", "1", "--token", "t", "--server", &server])).await;
    let stderr = failed_with(&output, 3);
    assert!(
        stderr.contains(&format!("is `floodgate serve` running at {server}?")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_command_at_its_timeout() {
    // Listening, so the kernel completes every connection, but never read or answered: what a
    // TLS listener spoken to in plain text, or a hung proxy, looks like to the client.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let server = silent.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(["customer", "list", "--token", "t", "--server", &server])
        .args(["--timeout", "1s"])
        .current_dir(dir.path())
        .env_remove("FLOODGATE_TIMEOUT")
        .kill_on_drop(true)
        .output();
    // Far beyond the 1 s asked for: only a command that ignores its timeout gets here.
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command)
        .await
        .expect("the command ends at its timeout instead of hanging")
        .expect("the floodgate binary runs");
    let stderr = failed_with(&output, 3);
    assert!(stderr.contains("cannot reach floodgate"), "{stderr}");
    assert!(stderr.contains("Timeout expired"), "{stderr}");
    drop(silent);
}

#[tokio::test]
async fn a_bad_server_address_or_missing_argument_is_a_usage_error() {
    for server in ["ftp://127.0.0.1:50051", "http://", "http://a b:1"] {
        let output = floodgate(args(&["status", "1", "--token", "t", "--server", server])).await;
        let stderr = failed_with(&output, 2);
        assert!(stderr.contains("--server"), "{stderr}");
    }
    // No --token and no saved admin token in the (empty) working directory.
    let (_held, server) = closed_port();
    let output = floodgate(args(&["customer", "list", "--server", &server])).await;
    let stderr = failed_with(&output, 2);
    assert!(stderr.contains("--token"), "{stderr}");
    // clap's own usage errors keep its exit code 2.
    let output = floodgate(args(&["send", "--recipient", "r"])).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_errors_name_the_problem_and_exit_4() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await; // wait until it serves
    let host_port = server.grpc_url.trim_start_matches("http://").to_owned();
    let receiver = Receiver::start().await;

    // --server takes host:port as well as the URL.
    for address in [host_port.as_str(), server.grpc_url.as_str()] {
        let output = floodgate(args(&[
            "customer",
            "add",
            "acme",
            "--webhook-url",
            &receiver.url,
            "--server",
            address,
            "--token",
            ADMIN_TOKEN,
        ]))
        .await;
        assert!(stdout(&output).starts_with("customer acme -> "));
    }

    let unknown = floodgate(args(&[
        "send",
        "--customer",
        "nobody",
        "--recipient",
        "user-1",
        "--server",
        &host_port,
        "--token",
        SUBMIT_TOKEN,
    ]))
    .await;
    let stderr = failed_with(&unknown, 4);
    assert!(stderr.contains("nobody"), "{stderr}");
    assert!(stderr.contains("NotFound"), "{stderr}");

    let wrong_token = floodgate(args(&[
        "customer",
        "list",
        "--server",
        &host_port,
        "--token",
        "not-the-token",
    ]))
    .await;
    let stderr = failed_with(&wrong_token, 4);
    assert!(
        stderr.contains("hint:") && stderr.contains("--token"),
        "{stderr}"
    );

    let submit_token_for_admin_call = floodgate(args(&[
        "customer",
        "list",
        "--server",
        &host_port,
        "--token",
        SUBMIT_TOKEN,
    ]))
    .await;
    let stderr = failed_with(&submit_token_for_admin_call, 4);
    assert!(stderr.contains("admin token"), "{stderr}");
    server.stop().await.expect("a clean stop");
}

/// Runs a client subcommand against `server` with `token` and returns its stdout (it must succeed).
async fn ok(server: &str, token: &str, list: &[&str]) -> String {
    let mut all = args(list);
    all.extend(args(&["--server", server, "--token", token]));
    stdout(&floodgate(all).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_works_against_a_real_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await;
    let at = server.grpc_url.trim_start_matches("http://").to_owned();
    let at = at.as_str();
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    ok(
        at,
        ADMIN_TOKEN,
        &["customer", "add", "acme", "--webhook-url", &url],
    )
    .await;

    // Preferences, and `send` saying when an opt-out suppressed the notification.
    let set = ok(
        at,
        SUBMIT_TOKEN,
        &[
            "pref",
            "set",
            "--customer",
            "acme",
            "--recipient",
            "u1",
            "--lane",
            "bulk",
        ],
    )
    .await;
    assert!(set.contains("bulk") && set.contains("opted out"), "{set}");
    let got = ok(
        at,
        SUBMIT_TOKEN,
        &["pref", "get", "--customer", "acme", "--recipient", "u1"],
    )
    .await;
    assert!(
        got.lines()
            .any(|l| l.starts_with("webhook") && l.contains("bulk") && l.ends_with("opted out")),
        "{got}"
    );
    let suppressed = ok(
        at,
        SUBMIT_TOKEN,
        &["send", "--customer", "acme", "--recipient", "u1", "--bulk"],
    )
    .await;
    assert!(suppressed.contains("SUPPRESSED"), "{suppressed}");

    // A delivery, then `status` with every field that has a value.
    let id = ok(
        at,
        SUBMIT_TOKEN,
        &[
            "send",
            "--customer",
            "acme",
            "--recipient",
            "u2",
            "--key",
            "k-1",
        ],
    )
    .await;
    let id = id.trim().to_owned();
    receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    let mut status = String::new();
    for _ in 0..50 {
        status = ok(at, SUBMIT_TOKEN, &["status", &id]).await;
        if status.contains("DELIVERED") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for field in [
        "state:     DELIVERED",
        "key:       k-1",
        "lane:      transactional",
        "channel:   webhook",
        "created:",
        "delivered:",
    ] {
        assert!(status.contains(field), "{field:?} missing in:\n{status}");
    }

    // Pause, show, cancel a scheduled notification, resume.
    let paused = ok(at, ADMIN_TOKEN, &["customer", "pause", "acme"]).await;
    assert!(paused.contains("paused"), "{paused}");
    let shown = ok(at, ADMIN_TOKEN, &["customer", "get", "acme"]).await;
    assert!(
        shown.contains("paused:     true") && shown.contains(&url),
        "{shown}"
    );
    assert!(
        shown.contains("CUSTOMER") && shown.contains("acme"),
        "{shown}"
    );
    let later = ok(
        at,
        SUBMIT_TOKEN,
        &[
            "send",
            "--customer",
            "acme",
            "--recipient",
            "u2",
            "--send-in",
            "1h",
        ],
    )
    .await;
    let cancelled = ok(at, SUBMIT_TOKEN, &["cancel", later.trim()]).await;
    assert!(cancelled.contains("state:     CANCELLED"), "{cancelled}");
    let resumed = ok(at, ADMIN_TOKEN, &["customer", "resume", "acme"]).await;
    assert!(resumed.contains("resumed"), "{resumed}");

    // Rotate the signing secret: the new one is printed (that once only: `get` does not show it)
    // and the old one's end is shown.
    let rotated = ok(
        at,
        ADMIN_TOKEN,
        &["customer", "rotate-secret", "acme", "--overlap", "2h"],
    )
    .await;
    let new_secret = rotated
        .split_whitespace()
        .find(|word| word.starts_with("whsec_"))
        .unwrap_or_else(|| panic!("no secret in {rotated}"));
    assert!(rotated.contains("keeps signing until"), "{rotated}");
    assert!(rotated.contains("shown only now"), "{rotated}");
    let shown = ok(at, ADMIN_TOKEN, &["customer", "get", "acme"]).await;
    assert!(!shown.contains(new_secret), "{shown}");
    assert!(!shown.contains("whsec_"), "{shown}");
    assert!(shown.contains("secret:     set"), "{shown}");

    // The inbox lists both of u2's notifications; the archive is empty so far.
    let inbox = ok(
        at,
        SUBMIT_TOKEN,
        &["inbox", "--customer", "acme", "--recipient", "u2"],
    )
    .await;
    assert!(
        inbox
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("DELIVERED")),
        "{inbox}"
    );
    assert!(inbox.contains("CANCELLED"), "{inbox}");
    let archive = ok(
        at,
        ADMIN_TOKEN,
        &["archive", "--customer", "acme", "--recipient", "u2"],
    )
    .await;
    assert_eq!(archive.lines().count(), 1, "only the header: {archive}");

    // One SQLite node is the whole cluster.
    let cluster = ok(at, ADMIN_TOKEN, &["cluster", "status"]).await;
    assert!(
        cluster.contains("single node (SQLite)") && cluster.contains("1024 buckets"),
        "{cluster}"
    );
    server.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn completions_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&floodgate(args(&["completions", shell])).await);
        for subcommand in ["serve", "send", "inbox", "pref", "customer"] {
            assert!(script.contains(subcommand), "{shell}: no {subcommand}");
        }
    }
    let output = floodgate(args(&["completions", "no-such-shell"])).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn the_man_page_is_roff_and_lists_the_subcommands() {
    for name in ["man", "manpage"] {
        let page = stdout(&floodgate(args(&[name])).await);
        assert!(
            page.lines().any(|line| line.starts_with(".TH floodgate 1")),
            "no .TH header:\n{page}"
        );
        assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
        for subcommand in ["serve", "send", "customer", "completions", "man"] {
            assert!(
                page.contains(&format!("floodgate\\-{subcommand}(1)")),
                "no {subcommand}:\n{page}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_channels_set_configures_a_channel_through_the_api() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await;
    let at = server.grpc_url.trim_start_matches("http://").to_owned();
    let at = at.as_str();
    let receiver = Receiver::start().await;
    ok(
        at,
        ADMIN_TOKEN,
        &["customer", "add", "acme", "--webhook-url", &receiver.url],
    )
    .await;
    let email = [
        "customer",
        "channels",
        "set",
        "acme",
        "email",
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        "2525",
        "--from",
        "Acme <no-reply@acme.example>",
        "--tls",
        "none",
    ];
    let set = ok(at, ADMIN_TOKEN, &email).await;
    assert_eq!(set.trim(), "customer acme: email channel set");
    let sms = [
        "customer",
        "channels",
        "set",
        "acme",
        "sms",
        "--account-sid",
        "AC123",
        "--auth-token",
        "tok-write-only",
        "--from",
        "+14155550100",
    ];
    let set = ok(at, ADMIN_TOKEN, &sms).await;
    assert_eq!(set.trim(), "customer acme: sms channel set");
    let shown = ok(at, ADMIN_TOKEN, &["customer", "get", "acme"]).await;
    assert!(shown.contains("channels:   webhook email sms"), "{shown}");
    // The webhook is kept, and the write-only auth token never comes back.
    assert!(shown.contains(&receiver.url), "{shown}");
    assert!(!shown.contains("tok-write-only"), "{shown}");
    // An email channel, now accepted at Submit.
    let id = ok(
        at,
        SUBMIT_TOKEN,
        &[
            "send",
            "--customer",
            "acme",
            "--recipient",
            "u@example.com",
            "--channel",
            "email",
            "--payload",
            r#"{"body": "hi"}"#,
        ],
    )
    .await;
    assert!(!id.trim().is_empty());

    // An unknown customer: the server's NOT_FOUND, exit 4.
    let mut unknown = args(&email);
    unknown[3] = "nobody".to_owned();
    unknown.extend(args(&["--server", at, "--token", ADMIN_TOKEN]));
    let stderr = failed_with(&floodgate(unknown).await, 4);
    assert!(
        stderr.contains("nobody") && stderr.contains("NotFound"),
        "{stderr}"
    );
    // Settings the server refuses: INVALID_ARGUMENT naming the field, exit 4.
    let mut bad = args(&email);
    bad[10] = "not a mailbox".to_owned();
    bad.extend(args(&["--server", at, "--token", ADMIN_TOKEN]));
    let stderr = failed_with(&floodgate(bad).await, 4);
    assert!(stderr.contains("customer.email.from"), "{stderr}");
    // A secret file that cannot be read: a usage error, exit 2.
    let missing = floodgate(args(&[
        "customer",
        "channels",
        "set",
        "acme",
        "fcm",
        "--service-account",
        "no-such-file.json",
        "--server",
        at,
        "--token",
        ADMIN_TOKEN,
    ]))
    .await;
    let stderr = failed_with(&missing, 2);
    assert!(stderr.contains("--service-account"), "{stderr}");
    server.stop().await.expect("a clean stop");
}

/// `floodgate token create|list|revoke`: the token is printed once at creation and works for its
/// customer only; the list never shows it; once revoked, it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_subcommands_create_list_and_revoke_scoped_tokens() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    common::connect(&server.grpc_url, Some(ADMIN_TOKEN)).await;
    let at = server.grpc_url.trim_start_matches("http://").to_owned();
    let at = at.as_str();
    let receiver = Receiver::start().await;
    for customer in ["acme", "globex"] {
        ok(
            at,
            ADMIN_TOKEN,
            &["customer", "add", customer, "--webhook-url", &receiver.url],
        )
        .await;
    }

    let created = ok(
        at,
        ADMIN_TOKEN,
        &["token", "create", "acme-svc", "--customer", "acme"],
    )
    .await;
    let token = created
        .lines()
        .find(|line| line.starts_with("fgt_"))
        .unwrap_or_else(|| panic!("no token in {created}"))
        .to_owned();
    assert!(created.contains("only time"), "{created}");
    let listed = ok(at, ADMIN_TOKEN, &["token", "list"]).await;
    let row = listed
        .lines()
        .find(|line| line.starts_with("acme-svc "))
        .unwrap_or_else(|| panic!("no acme-svc in {listed}"));
    assert!(row.contains("never") && row.ends_with("acme"), "{row}");
    assert!(!listed.contains(&token[4..]), "{listed}");

    // The printed token submits for its customer, and another customer is NOT_FOUND.
    let id = ok(
        at,
        &token,
        &["send", "--customer", "acme", "--recipient", "u1"],
    )
    .await;
    let foreign = floodgate(args(&[
        "send",
        "--customer",
        "globex",
        "--recipient",
        "u1",
        "--server",
        at,
        "--token",
        &token,
    ]))
    .await;
    let stderr = failed_with(&foreign, 4);
    assert!(
        stderr.contains("NotFound") && stderr.contains("globex"),
        "{stderr}"
    );
    // Only the admin token manages tokens.
    let scoped_lists = floodgate(args(&["token", "list", "--server", at, "--token", &token])).await;
    let stderr = failed_with(&scoped_lists, 4);
    assert!(stderr.contains("admin token"), "{stderr}");

    let revoked = ok(at, ADMIN_TOKEN, &["token", "revoke", "acme-svc"]).await;
    assert!(revoked.contains("acme-svc revoked"), "{revoked}");
    let refused = floodgate(args(&[
        "status",
        id.trim(),
        "--server",
        at,
        "--token",
        &token,
    ]))
    .await;
    let stderr = failed_with(&refused, 4);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let listed = ok(at, ADMIN_TOKEN, &["token", "list"]).await;
    assert!(!listed.contains("acme-svc"), "{listed}");
    server.stop().await.expect("a clean stop");
}
