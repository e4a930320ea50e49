//! Runs the bundled `tiny` scenario through the real harness binary — floodgate started as its
//! child, simulated systems, open-loop load, accounting, report — so the harness cannot rot.
//! On PostgreSQL too when `DATABASE_URL` is set, and then also `tiny-cluster`: two nodes, one
//! killed and one joining.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

/// Runs `tiny.toml` with `policy` and returns the parsed report.json.
fn run_tiny(policy: &str, database_url: Option<&str>) -> Value {
    run_scenario("tiny", policy, database_url)
}

/// One harness run at a time: each starts floodgate processes of its own, and runs side by side
/// on a small machine starve each other enough to change what adaptive delivers within a run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the bundled scenario `name` with `policy` and returns the parsed report.json.
fn run_scenario(name: &str, policy: &str, database_url: Option<&str>) -> Value {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/{name}.toml"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_floodgate-loadtest"));
    command
        .arg("run")
        .arg(&scenario)
        .args(["--policy", policy])
        .arg("--out")
        .arg(out.path());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the harness failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("goodput/s"), "no table in:\n{stdout}");
    let svg = std::fs::read_to_string(out.path().join("report.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let json = std::fs::read(out.path().join("report.json")).unwrap();
    serde_json::from_slice(&json).unwrap()
}

fn group<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["runs"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {report}"))
}

fn count(group: &Value, field: &str) -> u64 {
    group[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {group}"))
}

/// Every accepted notification is accounted for, and each system saw what its model implies.
fn check(report: &Value) {
    let adaptive = report["runs"][0]["policy"] == "adaptive";
    for name in ["fast", "slow", "dead"] {
        let g = group(report, name);
        assert!(count(g, "accepted") > 0, "{name}: nothing accepted: {g}");
        assert_eq!(count(g, "lost"), 0, "{name}: lost notifications: {g}");
        assert_eq!(
            count(g, "delivered") + count(g, "queued") + count(g, "failed"),
            count(g, "accepted"),
            "{name}: not every accepted id is accounted for: {g}"
        );
        assert_eq!(g["responses"]["bad_signature"], 0, "{name}: {g}");
    }
    let fast = group(report, "fast");
    if adaptive {
        // The fast system has 4x the capacity it is offered: adaptive delivers nearly all of it
        // within the run (the baselines pace it at a fixed rate below what it is offered).
        assert!(
            count(fast, "delivered") * 10 >= count(fast, "accepted") * 9,
            "{fast}"
        );
    }
    assert!(
        fast["transactional"]["samples"].as_u64().unwrap() > 0,
        "{fast}"
    );
    assert!(fast["bulk"]["samples"].as_u64().unwrap() > 0, "{fast}");
    assert!(count(group(report, "slow"), "delivered") > 0);
    let dead = group(report, "dead");
    assert_eq!(
        count(dead, "delivered"),
        0,
        "a dead system received: {dead}"
    );
}

#[test]
fn tiny_scenario_runs_adaptive_and_fixed_on_sqlite() {
    for policy in ["adaptive", "fixed"] {
        let report = run_tiny(policy, None);
        assert_eq!(report["runs"][0]["policy"], policy);
        check(&report);
    }
}

#[test]
fn tiny_scenario_runs_on_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL is not set");
        return;
    };
    let report = run_tiny("static-tiers", Some(&url));
    check(&report);
}

#[test]
fn tiny_cluster_scenario_takes_over_and_joins_without_losing_anything() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL is not set");
        return;
    };
    let report = run_scenario("tiny-cluster", "adaptive", Some(&url));
    for name in ["fast", "slow"] {
        let g = group(&report, name);
        assert!(count(g, "accepted") > 0, "{name}: nothing accepted: {g}");
        assert_eq!(count(g, "lost"), 0, "{name}: lost notifications: {g}");
        assert_eq!(
            count(g, "delivered") + count(g, "queued") + count(g, "failed"),
            count(g, "accepted"),
            "{name}: not every accepted id is accounted for: {g}"
        );
    }
    let cluster = &report["runs"][0]["cluster"];
    assert_eq!(cluster["nodes"], 2, "{cluster}");
    assert_eq!(cluster["lost"], 0, "{cluster}");
    let takeover = &cluster["takeovers"][0];
    assert_eq!(takeover["node"], "node-1", "{cluster}");
    assert!(takeover["buckets"].as_u64().unwrap() > 0, "{cluster}");
    // Its leases expire 3 s after its last renewal; the run lasts 14 s more.
    assert!(
        takeover["takeover_secs"].as_f64().is_some(),
        "never taken over: {cluster}"
    );
    let join = &cluster["joins"][0];
    assert_eq!(join["node"], "node-2", "{cluster}");
    assert!(join["expected"].as_u64().unwrap() > 0, "{cluster}");
    assert!(
        join["owned_secs"].as_f64().is_some(),
        "the joiner never got its share: {cluster}"
    );
    // Everything is owned by the two running nodes at the end.
    let owners = cluster["owners_at_end"].as_object().unwrap();
    assert!(!owners.contains_key("node-1"), "{cluster}");
    assert_eq!(
        owners.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        1024,
        "{cluster}"
    );
}
