//! What SREs see: `/metrics` in valid Prometheus text whose per-customer counters follow real
//! deliveries, the dashboard's data endpoints, and the dashboard itself in headless Chromium.

mod common;

use std::time::Duration;

use common::{
    ADMIN_TOKEN, Backend, Receiver, SUBMIT_TOKEN, TestDb, TestServer, add_customer, prometheus,
    submit_many, test_config,
};
use floodgate::api::proto;

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", server.http_addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn metrics(server: &TestServer) -> Vec<prometheus::Sample> {
    let response = get(server, "/metrics", Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let page = response.text().await.unwrap();
    promtool_check(&page);
    prometheus::parse(&page)
}

/// `promtool check metrics` on the page, when promtool is installed (`.ci/run` installs it).
fn promtool_check(page: &str) {
    use std::io::Write as _;
    let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: checked with the built-in reader only");
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- page\n{page}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of the one sample with this name and these labels (0 if there is none).
fn value(samples: &[prometheus::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.value)
}

/// Polls a customer's dashboard view until it holds at least `count` samples (the sampler takes
/// one per running actor every two seconds); panics after 15 s.
async fn view_with_samples(server: &TestServer, customer: &str, count: usize) -> serde_json::Value {
    let path = format!("/dashboard/api/customers/{customer}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // 404 until the customer's first work has started its actor.
        let response = get(server, &path, Some(ADMIN_TOKEN)).await;
        let view = match response.status().as_u16() {
            404 => serde_json::Value::Null,
            _ => json(response).await,
        };
        if view["samples"].as_array().is_some_and(|s| s.len() >= count) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{customer}'s view never held {count} samples: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_follow_deliveries(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "acme", &receiver.url).await;
    let before = metrics(&server).await;
    let delivered = [
        ("customer", "acme"),
        ("lane", "bulk"),
        ("result", "delivered"),
    ];
    assert_eq!(
        value(&before, "floodgate_customer_attempts_total", &delivered),
        0.0
    );

    let mut client = server.dispatcher().await;
    submit_many(&mut client, "acme", proto::Lane::Bulk, "m", 20).await;
    receiver.wait_for(20, Duration::from_secs(20)).await;
    // A refused item: unknown customer.
    let refused = client
        .submit(common::submit_request("nobody", "k", "u"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    // Outcomes are written in batches just after the webhook answers: poll briefly.
    let mut after = metrics(&server).await;
    for _ in 0..50 {
        if value(&after, "floodgate_customer_attempts_total", &delivered) >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = metrics(&server).await;
    }
    assert_eq!(
        value(&after, "floodgate_customer_attempts_total", &delivered),
        20.0
    );
    assert_eq!(value(&after, "floodgate_intake_accepted_total", &[]), 20.0);
    assert_eq!(
        value(
            &after,
            "floodgate_intake_rejected_total",
            &[("code", "NOT_FOUND")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "floodgate_customer_rtt_seconds_count",
            &[("customer", "acme")]
        ),
        20.0
    );
    assert_eq!(
        value(
            &after,
            "floodgate_submit_duration_seconds_count",
            &[("rpc", "SubmitBatch")]
        ),
        1.0
    );
    assert!(value(&after, "floodgate_intake_commit_rows_count", &[]) >= 1.0);
    assert!(
        value(
            &after,
            "floodgate_store_query_duration_seconds_count",
            &[("op", "claim")]
        ) >= 1.0
    );
    // Every outcome above is written, so none waits in the queue.
    assert!(
        after.iter().any(|s| s.name == "floodgate_outcomes_queued"),
        "the outcome queue's gauge is exported"
    );
    assert_eq!(value(&after, "floodgate_outcomes_queued", &[]), 0.0);
    // Gauges of the running actor, and the (now empty) backlog.
    assert!(
        value(
            &after,
            "floodgate_customer_concurrency_limit",
            &[("customer", "acme")]
        ) >= 1.0
    );
    // 20 deliveries fill the first measurement window: the baseline is known.
    assert!(
        value(
            &after,
            "floodgate_customer_rtt_baseline_seconds",
            &[("customer", "acme")]
        ) > 0.0
    );
    let tiers: f64 = after
        .iter()
        .filter(|s| s.name == "floodgate_customer_tier" && s.labels["customer"] == "acme")
        .map(|s| s.value)
        .sum();
    assert_eq!(tiers, 1.0, "exactly one tier gauge is 1");
    server.stop().await.unwrap();
}
on_both_backends!(metrics_follow_deliveries);

#[tokio::test]
async fn metrics_and_dashboard_data_need_a_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    for path in ["/metrics", "/dashboard/api/overview"] {
        assert_eq!(get(&server, path, None).await.status(), 401, "{path}");
        assert_eq!(
            get(&server, path, Some("wrong")).await.status(),
            401,
            "{path}"
        );
        // The submit token belongs to services that submit; it reads no metrics.
        assert_eq!(
            get(&server, path, Some(SUBMIT_TOKEN)).await.status(),
            401,
            "{path}"
        );
        assert_eq!(
            get(&server, path, Some(ADMIN_TOKEN)).await.status(),
            200,
            "{path}"
        );
        let metrics_token = std::fs::read_to_string(db.dir.path().join("metrics-token")).unwrap();
        assert_eq!(
            get(&server, path, Some(metrics_token.trim()))
                .await
                .status(),
            200,
            "{path}"
        );
    }
    // Header only: a token in the query string is not looked at.
    let url = format!("http://{}/metrics?token={ADMIN_TOKEN}", server.http_addr);
    assert_eq!(reqwest::get(url).await.unwrap().status(), 401);
    // The page itself holds no data: it loads without a token and then asks for one.
    let page = get(&server, "/dashboard", None).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("id=\"login\""));
    // A customer's dashboard data: refused without a readable token; with one, the request gets
    // past the check to the lookup (no such customer here).
    let customer = "/dashboard/api/customers/acme";
    for token in [None, Some("wrong"), Some(SUBMIT_TOKEN)] {
        assert_eq!(
            get(&server, customer, token).await.status(),
            401,
            "{token:?}"
        );
    }
    assert_eq!(
        get(&server, customer, Some(ADMIN_TOKEN)).await.status(),
        404
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_data_lists_customers_with_their_backlog() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "busy", &receiver.url).await;
    add_customer(&server.grpc_url, "held", &receiver.url).await;
    server
        .customers()
        .await
        .pause_customer(proto::PauseCustomerRequest {
            customer_id: "held".into(),
        })
        .await
        .unwrap();
    let mut client = server.dispatcher().await;
    submit_many(&mut client, "busy", proto::Lane::Transactional, "b", 30).await;
    submit_many(&mut client, "held", proto::Lane::Bulk, "h", 7).await;
    receiver.wait_for(30, Duration::from_secs(20)).await;

    let overview = json(get(&server, "/dashboard/api/overview", Some(ADMIN_TOKEN)).await).await;
    let row = |id: &str| {
        overview["customers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {overview}"))
            .clone()
    };
    assert_eq!(row("held")["backlog_bulk"], 7, "{overview}");
    assert!(
        row("busy")["delivered_per_sec"].as_f64().is_some(),
        "{overview}"
    );
    // After a sampling round, the customer view has history, and the chart has the busiest
    // customer's series.
    view_with_samples(&server, "busy", 1).await;
    let overview = json(get(&server, "/dashboard/api/overview", Some(ADMIN_TOKEN)).await).await;
    assert!(
        overview["throughput"]["busy"]
            .as_array()
            .is_some_and(|points| !points.is_empty()),
        "{overview}"
    );
    let missing = get(
        &server,
        "/dashboard/api/customers/nobody",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(missing.status(), 404);
    server.stop().await.unwrap();
}

/// The Chromium binary, if installed (`.ci/run` installs Debian's `chromium`).
fn chromium() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|path| path.exists())
}

/// Runs headless Chromium on `url` with `args`, letting the page's timers run for a while.
fn headless(chromium: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=6000",
            "--window-size=1400,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser_shows_customers_and_draws_the_chart() {
    let Some(chromium) = chromium() else {
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    let customers = ["alpha", "bravo", "charlie"];
    for id in customers {
        add_customer(&server.grpc_url, id, &receiver.url).await;
    }
    // Traffic keeps flowing while the browser looks.
    let traffic = tokio::spawn({
        let mut client = server.dispatcher().await;
        async move {
            for round in 0.. {
                for id in customers {
                    submit_many(
                        &mut client,
                        id,
                        proto::Lane::Transactional,
                        &format!("{id}-{round}"),
                        20,
                    )
                    .await;
                }
                // Part of the scenario: traffic at a steady pace, not a flood.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    // Two sampling rounds, so the chart has history.
    view_with_samples(&server, "alpha", 2).await;
    let url = format!(
        "http://{}/dashboard#token={ADMIN_TOKEN}&customer=alpha",
        server.http_addr
    );
    let dom = {
        let (chromium, url) = (chromium.clone(), url.clone());
        tokio::task::spawn_blocking(move || headless(&chromium, &url, &["--dump-dom"]))
            .await
            .unwrap()
    };
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    for id in customers {
        let row_start = dom
            .find(&format!("<tr data-customer=\"{id}\""))
            .unwrap_or_else(|| panic!("no table row for {id} in the page:\n{dom}"));
        let row = &dom[row_start..];
        let row = &row[..row.find("</tr>").unwrap()];
        let delivered = row
            .split("<td class=\"delivered\">")
            .nth(1)
            .and_then(|cell| cell.split('<').next())
            .unwrap_or_else(|| panic!("no delivered/s cell in {row}"));
        let delivered: f64 = delivered.replace(',', "").parse().unwrap();
        assert!(delivered > 0.0, "{id} shows no throughput: {row}");
    }
    let chart_start = dom.find("id=\"throughput-chart\"").expect("no chart");
    let chart = &dom[chart_start..dom[chart_start..].find("</svg>").unwrap() + chart_start];
    assert!(
        chart.matches("class=\"series\"").count() >= 3,
        "the chart draws no line per customer:\n{chart}"
    );
    assert!(dom.contains("id=\"chart-limit\""), "no customer view");

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let arg = format!("--screenshot={}", screenshot.display());
    let shot = tokio::task::spawn_blocking(move || headless(&chromium, &url, &[&arg]))
        .await
        .unwrap();
    assert!(
        screenshot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());
    traffic.abort();
    server.stop().await.unwrap();
}

/// Every `floodgate_*` metric the deploy/ files query is one that `/metrics` declares, so the
/// Grafana dashboard and the alerts cannot drift from the code.
#[tokio::test]
async fn deploy_files_name_only_exported_metrics() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let page = get(&server, "/metrics", Some(ADMIN_TOKEN))
        .await
        .text()
        .await
        .unwrap();
    let families: std::collections::HashSet<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut checked = 0;
    for file in ["grafana/floodgate.json", "prometheus/floodgate-alerts.yml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
        for (at, _) in text.match_indices("floodgate_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains(base))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "{file} names {name}, which /metrics does not export"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} metric names found in deploy/");
    server.stop().await.unwrap();
}
