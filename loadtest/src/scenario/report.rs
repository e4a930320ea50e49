//! The side-by-side report of a scenario's runs: a table on stdout (one row per policy and
//! customer group), `report.json` with everything measured, and `report.svg` (see [`chart`]).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::outcome::{GroupOutcome, PolicyRun};
use super::ownership::ClusterOutcome;
use super::spec::{NodeEvent, Scenario};
use crate::cluster::node_id;
use crate::report::{self, Latency};

mod chart;

/// A scenario's runs, one per policy, and the settings that produced them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) description: String,
    pub(crate) customers: usize,
    pub(crate) duration_secs: f64,
    pub(crate) warmup_secs: f64,
    pub(crate) drain_secs: f64,
    pub(crate) crash_at_secs: Option<f64>,
    /// floodgate nodes at the start.
    pub(crate) nodes: usize,
    /// Nodes killed and added, in time order.
    pub(crate) node_events: Vec<ScheduledNodeEvent>,
    /// Whether the scenario's campaigns were left out (`--without-campaigns`).
    pub(crate) without_campaigns: bool,
    pub(crate) runs: Vec<PolicyRun>,
}

impl Report {
    pub(crate) fn new(
        name: &str,
        scenario: &Scenario,
        without_campaigns: bool,
        runs: Vec<PolicyRun>,
    ) -> Self {
        Self {
            scenario: name.to_owned(),
            description: scenario.description.clone(),
            customers: scenario.customer_count(),
            duration_secs: scenario.duration.0.as_secs_f64(),
            warmup_secs: scenario.warmup.0.as_secs_f64(),
            drain_secs: scenario.drain.0.as_secs_f64(),
            crash_at_secs: scenario.crash_at.map(|at| at.0.as_secs_f64()),
            nodes: scenario.nodes,
            node_events: scenario
                .node_events()
                .into_iter()
                .map(|(at, event)| {
                    let (node, killed) = match event {
                        NodeEvent::Kill(node) => (node, true),
                        NodeEvent::Add(node) => (node, false),
                    };
                    ScheduledNodeEvent {
                        at_secs: at.as_secs_f64(),
                        node: node_id(node),
                        killed,
                    }
                })
                .collect(),
            without_campaigns,
            runs,
        }
    }

    /// Prints the table to stdout.
    pub(crate) fn print(&self) {
        print!("{}", self.table());
    }

    /// Writes `report.json` and `report.svg` into `dir` (created if missing).
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        report::write_json(&dir.join("report.json"), self)?;
        let svg = dir.join("report.svg");
        std::fs::write(&svg, chart::svg(self))
            .with_context(|| format!("cannot write {}", svg.display()))
    }

    /// The table, as printed.
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nscenario {}: {}{}",
            self.scenario,
            self.description,
            if self.without_campaigns {
                " (campaigns left out)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{} customers; {:.0}s load, goodput and latency measured after {:.0}s warmup; \
             up to {:.0}s drain{}",
            self.customers,
            self.duration_secs,
            self.warmup_secs,
            self.drain_secs,
            self.crash_at_secs
                .map(|at| format!("; floodgate SIGKILLed at {at:.0}s"))
                .unwrap_or_default()
        );
        if self.nodes > 1 || !self.node_events.is_empty() {
            let _ = writeln!(
                out,
                "floodgate nodes on one PostgreSQL database, {} at the start, load spread over the running ones{}",
                self.nodes,
                self.node_events
                    .iter()
                    .map(|event| format!(
                        "; {} {} at {:.0}s",
                        event.node,
                        if event.killed { "SIGKILLed" } else { "added" },
                        event.at_secs
                    ))
                    .collect::<String>()
            );
        }
        let _ = writeln!(
            out,
            "\n{:<13} {:<12} {:>5} {:>8} {:>9} {:>9} {:>6} {:>6} {:>8} {:>7} {:>7} {:>6} {:>4} {:>6}  {:<18} {:<18} {:<14} {:>6}",
            "policy",
            "customers",
            "n",
            "cap/s",
            "offered/s",
            "goodput/s",
            "good%",
            "worst%",
            "overload",
            "accepted",
            "queued",
            "failed",
            "lost",
            "dup",
            "trans p50/p99/p999",
            "bulk p50/p99/p999",
            "tier",
            "limit"
        );
        for run in &self.runs {
            for group in &run.groups {
                let _ = writeln!(out, "{}", row(&run.policy, group));
            }
        }
        let _ = writeln!(
            out,
            "\nlatencies are end to end (submit to arrival), in ms; overload counts 503/429 answers and timed-out requests as a share of requests"
        );
        for run in &self.runs {
            let errors = if run.submit_errors.is_empty() {
                "none".to_owned()
            } else {
                run.submit_errors
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "{:<13} {}; submit p50 {:.1} ms, p99 {:.1} ms; submit errors: {errors}; calls resent {}, answers recovered {}",
                run.policy,
                run.server,
                run.submit_latency.p50_ms,
                run.submit_latency.p99_ms,
                run.resent_calls,
                run.recovered
            );
            if let Some(cluster) = &run.cluster {
                let _ = writeln!(out, "{:<13} {}", "", cluster_line(cluster));
            }
        }
        out
    }
}

/// A node the scenario kills or adds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScheduledNodeEvent {
    /// Seconds since the load started.
    pub(crate) at_secs: f64,
    pub(crate) node: String,
    /// SIGKILLed; otherwise started.
    pub(crate) killed: bool,
}

/// A cluster run's own figures: each takeover and join, duplicates and losses.
fn cluster_line(cluster: &ClusterOutcome) -> String {
    let secs = |secs: Option<f64>| {
        secs.map_or_else(|| "not within the run".into(), |s| format!("{s:.1}s"))
    };
    let mut parts: Vec<String> = Vec::new();
    for t in &cluster.takeovers {
        parts.push(format!(
            "{} killed at {:.1}s: its {} buckets taken over in {}",
            t.node,
            t.killed_at_secs,
            t.buckets,
            secs(t.takeover_secs)
        ));
    }
    for j in &cluster.joins {
        parts.push(format!(
            "{} started at {:.1}s (serving after {:.1}s): owned its {} buckets after {} ({} at the end)",
            j.node,
            j.started_at_secs,
            j.ready_secs,
            j.expected,
            secs(j.owned_secs),
            j.owned_at_end
        ));
    }
    let owners = cluster
        .owners_at_end
        .iter()
        .map(|(node, buckets)| format!("{node} {buckets}"))
        .collect::<Vec<_>>()
        .join(", ");
    parts.push(format!(
        "duplicates {}, lost {}; buckets at the end: {owners}",
        cluster.duplicates, cluster.lost
    ));
    format!("cluster: {}", parts.join("; "))
}

/// One table row.
fn row(policy: &str, g: &GroupOutcome) -> String {
    let tiers = g
        .tiers
        .iter()
        .map(|(tier, n)| {
            if g.customers == 1 {
                tier.clone()
            } else {
                format!("{tier}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{:<13} {:<12} {:>5} {:>8.0} {:>9.1} {:>9.1} {:>5.0}% {:>5.0}% {:>7.2}% {:>8} {:>7} {:>6} {:>4} {:>6}  {:<18} {:<18} {:<14} {:>6.0}",
        policy,
        g.name,
        g.customers,
        g.capacity_per_sec,
        g.offered_per_sec,
        g.goodput_per_sec,
        g.goodput_share * 100.0,
        g.worst_customer_share * 100.0,
        g.overload_share * 100.0,
        g.accepted,
        g.queued,
        g.failed,
        g.lost,
        g.duplicates,
        percentiles(&g.transactional),
        percentiles(&g.bulk),
        tiers,
        g.mean_limit
    )
}

/// `p50/p99/p999` in ms, or `-` with no samples.
fn percentiles(latency: &Latency) -> String {
    if latency.samples == 0 {
        return "-".into();
    }
    let ms = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    format!(
        "{}/{}/{}",
        ms(latency.p50_ms),
        ms(latency.p99_ms),
        ms(latency.p999_ms)
    )
}
