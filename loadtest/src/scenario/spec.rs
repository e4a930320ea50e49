//! A scenario file (`loadtest/scenarios/*.toml`): the simulated customer systems, the load offered
//! to each, the floodgate nodes, and the events of the run (bursts, a crash, nodes killed and
//! added). Parsed strictly — an unknown key is an
//! error, not a silently ignored typo — and checked before anything starts.
//!
//! ```toml
//! description = "what it shows"
//! duration = "40s"     # load phase
//! warmup = "10s"       # start of the load phase left out of goodput and latency
//! drain = "10s"        # longest wait after the load for accepted notifications to arrive
//!
//! [[customers]]
//! name = "small"       # customer id (with `count` > 1: small-0000, small-0001, ...)
//! tier = "slow"        # configured tier: static-tiers' rate, adaptive's starting point
//! workers = 2          # the capacity model: C workers ...
//! service_time = "200ms"   # ... each request taking this long (± jitter): C / S per second
//! queue = 2            # requests waiting for a worker before the system answers overload
//! rate = 15            # transactional notifications/s offered, per customer
//! ```
//!
//! Every key is documented on its field below; the customer systems' keys in [`customers`], the
//! nodes' in [`nodes`].

mod customers;
mod nodes;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde::Deserialize;

pub(crate) use customers::{Capacity, Group, Overload, TierName};
pub(crate) use nodes::{AddNode, ClusterTiming, KillNode, NodeEvent};

/// Longest a scenario's load phase plus drain may be: every scenario runs in about a minute (a
/// cluster's kill, takeover and join in a little more).
const MAX_RUN: Duration = Duration::from_secs(90);

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    /// One line saying what the scenario shows; printed with the report.
    pub(crate) description: String,
    /// How long load is offered.
    pub(crate) duration: Span,
    /// The first part of the load phase, left out of goodput and latency (the controller's
    /// start-up is not its steady state). Default 5s.
    #[serde(default = "default_warmup")]
    pub(crate) warmup: Span,
    /// After the load, the longest wait for accepted notifications to arrive. Default 10s.
    #[serde(default = "default_drain")]
    pub(crate) drain: Span,
    /// How the load reaches floodgate. Default `batch`.
    #[serde(default)]
    pub(crate) submit: SubmitWith,
    /// Concurrent submitting callers. Default 8.
    #[serde(default = "default_callers")]
    pub(crate) callers: usize,
    /// Most notifications per SubmitBatch call (batch mode). Default 100.
    #[serde(default = "default_batch")]
    pub(crate) batch_size: usize,
    /// Settings of the baseline policies.
    #[serde(default)]
    pub(crate) baselines: Baselines,
    /// Times when the whole offered load is multiplied.
    #[serde(default)]
    pub(crate) bursts: Vec<Burst>,
    /// When floodgate is killed with SIGKILL and started again, if at all (one node only).
    #[serde(default)]
    pub(crate) crash_at: Option<Span>,
    /// floodgate nodes on one PostgreSQL database at the start. Default 1.
    #[serde(default = "one")]
    pub(crate) nodes: usize,
    /// Nodes SIGKILLed for good (the others take their buckets over).
    #[serde(default)]
    pub(crate) kill_node: Vec<KillNode>,
    /// Nodes started during the run (they take their share of the buckets by handover).
    #[serde(default)]
    pub(crate) add_node: Vec<AddNode>,
    /// The cluster's timing, passed to every node.
    #[serde(default)]
    pub(crate) cluster: ClusterTiming,
    /// The simulated customer systems, in groups of identical ones.
    pub(crate) customers: Vec<Group>,
}

/// A duration written the human way (`"250ms"`, `"20s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span(pub(crate) Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(Span)
            .map_err(|err| serde::de::Error::custom(format!("{text:?}: {err}")))
    }
}

fn default_warmup() -> Span {
    Span(Duration::from_secs(5))
}

fn default_drain() -> Span {
    Span(Duration::from_secs(10))
}

fn default_callers() -> usize {
    8
}

fn default_batch() -> usize {
    100
}

fn one() -> usize {
    1
}

/// Which RPC carries the load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SubmitWith {
    /// Callers send whatever has arrived, up to `batch_size` per SubmitBatch call, without
    /// waiting to fill a batch.
    #[default]
    Batch,
    /// One Submit call per notification.
    Submit,
}

/// The baselines' settings, passed to floodgate as `--fixed-rate` and `--tier-rates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Baselines {
    /// `fixed`: deliveries/s for every customer. Default 100.
    #[serde(default = "default_fixed_rate")]
    pub(crate) fixed_rate: f64,
    /// `static-tiers`: deliveries/s of the fast, medium and slow tiers. Default [1000, 100, 10].
    #[serde(default = "default_tier_rates")]
    pub(crate) tier_rates: [f64; 3],
}

impl Default for Baselines {
    fn default() -> Self {
        Self {
            fixed_rate: default_fixed_rate(),
            tier_rates: default_tier_rates(),
        }
    }
}

fn default_fixed_rate() -> f64 {
    100.0
}

fn default_tier_rates() -> [f64; 3] {
    [1000.0, 100.0, 10.0]
}

/// A spike: from `at`, for `length`, every rate is multiplied by `factor`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Burst {
    pub(crate) at: Span,
    pub(crate) length: Span,
    pub(crate) factor: f64,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the scenario {}", path.display()))?;
        let scenario: Scenario = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid scenario", path.display()))?;
        scenario
            .check()
            .with_context(|| format!("{} is not a valid scenario", path.display()))?;
        Ok(scenario)
    }

    fn check(&self) -> Result<()> {
        let (duration, warmup, drain) = (self.duration.0, self.warmup.0, self.drain.0);
        ensure!(!duration.is_zero(), "duration must be above zero");
        ensure!(warmup < duration, "warmup must be shorter than duration");
        ensure!(
            duration + drain <= MAX_RUN,
            "duration + drain must be at most {}s",
            MAX_RUN.as_secs()
        );
        ensure!(self.callers >= 1, "callers must be at least 1");
        ensure!(
            (1..=1000).contains(&self.batch_size),
            "batch_size must be 1 to 1000"
        );
        ensure!(!self.customers.is_empty(), "no [[customers]]");
        if let Some(crash) = self.crash_at {
            ensure!(crash.0 < duration, "crash_at must be inside the load phase");
            ensure!(
                self.nodes == 1 && self.node_events().is_empty(),
                "crash_at restarts the only node; with several nodes use kill_node"
            );
        }
        self.check_nodes()?;
        for burst in &self.bursts {
            ensure!(
                burst.factor.is_finite() && burst.factor >= 0.0,
                "a burst factor must be a number of at least 0"
            );
        }
        let mut names = std::collections::HashSet::new();
        for group in &self.customers {
            group.check(&mut names)?;
        }
        Ok(())
    }

    /// Every customer in the scenario, in group order.
    pub(crate) fn customer_count(&self) -> usize {
        self.customers.iter().map(|g| g.count).sum()
    }

    /// The factor on every rate at `t` since the load started.
    pub(crate) fn burst_factor(&self, t: Duration) -> f64 {
        self.bursts
            .iter()
            .filter(|b| b.at.0 <= t && t < b.at.0 + b.length.0)
            .map(|b| b.factor)
            .product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        description = "two systems"
        duration = "30s"
        warmup = "5s"
        bursts = [{ at = "10s", length = "5s", factor = 10 }]

        [[customers]]
        name = "slow"
        tier = "slow"
        workers = 2
        service_time = "200ms"
        rate = 15
        changes = [{ at = "20s", workers = 1 }, { at = "25s", dead = true }]

        [[customers]]
        name = "many"
        count = 3
        workers = 10
        service_time = "10ms"
        overload = "429"
        bulk_rate = 5
    "#;

    fn example() -> Scenario {
        let scenario: Scenario = toml::from_str(EXAMPLE).unwrap();
        scenario.check().unwrap();
        scenario
    }

    #[test]
    fn reads_groups_capacities_and_changes() {
        let scenario = example();
        assert_eq!(scenario.customer_count(), 4);
        let slow = &scenario.customers[0];
        assert_eq!(slow.capacity().per_sec(), 10.0);
        assert_eq!(slow.capacity_at(Duration::from_secs(19)).per_sec(), 10.0);
        assert_eq!(slow.capacity_at(Duration::from_secs(20)).per_sec(), 5.0);
        assert_eq!(slow.capacity_at(Duration::from_secs(26)).per_sec(), 0.0);
        let many = &scenario.customers[1];
        assert_eq!(many.overload, Overload::TooManyRequests);
        assert_eq!(many.capacity().queue(), 10);
        assert_eq!(
            many.ids("r-"),
            ["r-many-0000", "r-many-0001", "r-many-0002"]
        );
    }

    #[test]
    fn bursts_multiply_the_rate_only_while_they_last() {
        let scenario = example();
        assert_eq!(scenario.burst_factor(Duration::from_secs(9)), 1.0);
        assert_eq!(scenario.burst_factor(Duration::from_secs(12)), 10.0);
        assert_eq!(scenario.burst_factor(Duration::from_secs(15)), 1.0);
    }

    #[test]
    fn typos_and_impossible_settings_are_errors() {
        let typo = EXAMPLE.replace("bulk_rate", "bulk_rat");
        assert!(toml::from_str::<Scenario>(&typo).is_err());
        let long: Scenario = toml::from_str(&EXAMPLE.replace("\"30s\"", "\"90s\"")).unwrap();
        assert!(long.check().is_err());
        let jitter = EXAMPLE.replace(
            "service_time = \"10ms\"",
            "service_time = \"10ms\"\njitter = \"20ms\"",
        );
        let jitter: Scenario = toml::from_str(&jitter).unwrap();
        assert!(jitter.check().is_err());
    }

    const CLUSTER: &str = r#"
        description = "nodes"
        duration = "60s"
        nodes = 3
        kill_node = [{ at = "20s", node = 1 }, { at = "45s", node = 3 }]
        add_node = [{ at = "40s" }, { at = "30s" }]

        [cluster]
        lease_ttl = "10s"
        heartbeat = "500ms"
        webhook_timeout = "5s"

        [[customers]]
        name = "a"
        workers = 1
        service_time = "10ms"
    "#;

    fn cluster(text: &str) -> Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.check()?;
        Ok(scenario)
    }

    #[test]
    fn reads_nodes_their_kills_and_joins_in_time_order() {
        let scenario = cluster(CLUSTER).unwrap();
        assert!(scenario.is_cluster());
        assert_eq!(scenario.nodes_started(), 5);
        let secs = Duration::from_secs;
        // Joins are numbered in time order after the first three nodes, whatever the file's
        // order: the join at 30s is node 3, so the kill at 45s kills a joiner.
        assert_eq!(
            scenario.node_events(),
            [
                (secs(20), NodeEvent::Kill(1)),
                (secs(30), NodeEvent::Add(3)),
                (secs(40), NodeEvent::Add(4)),
                (secs(45), NodeEvent::Kill(3)),
            ]
        );
        assert_eq!(
            scenario.cluster.flags(),
            [
                "--cluster-lease-ttl",
                "10s",
                "--cluster-heartbeat",
                "500ms",
                "--webhook-timeout",
                "5s"
            ]
        );
    }

    #[test]
    fn one_node_is_the_default_and_needs_no_cluster() {
        let scenario = example();
        assert_eq!(scenario.nodes, 1);
        assert!(!scenario.is_cluster());
        assert!(scenario.node_events().is_empty());
        assert!(scenario.cluster.flags().is_empty());
        // A join alone makes a cluster of two.
        let joined =
            cluster(&EXAMPLE.replace("bursts =", "add_node = [{ at = \"10s\" }]\nbursts ="))
                .unwrap();
        assert!(joined.is_cluster());
        assert_eq!(
            joined.node_events(),
            [(Duration::from_secs(10), NodeEvent::Add(1))]
        );
    }

    #[test]
    fn impossible_node_events_are_errors() {
        let error = |from: &str, to: &str| {
            let text = CLUSTER.replace(from, to);
            assert_ne!(text, CLUSTER, "{from:?} is not in the example");
            format!("{:#}", cluster(&text).unwrap_err())
        };
        // A node that never started, or one already killed.
        assert!(error("node = 3 }", "node = 7 }").contains("node 7 is not running"));
        assert!(error("node = 3 }", "node = 1 }").contains("node 1 is not running"));
        // A join numbered 3 does not exist yet at 25s.
        assert!(error("at = \"45s\"", "at = \"25s\"").contains("node 3 is not running"));
        // Killing every node.
        let alone = CLUSTER.replace("nodes = 3", "nodes = 1").replace(
            "kill_node = [{ at = \"20s\", node = 1 }, { at = \"45s\", node = 3 }]",
            "kill_node = [{ at = \"20s\", node = 0 }]",
        );
        let alone = format!("{:#}", cluster(&alone).unwrap_err());
        assert!(alone.contains("no node would be left"), "{alone}");
        // Outside the load phase, a typo, too many nodes.
        assert!(error("at = \"40s\"", "at = \"60s\"").contains("inside the load phase"));
        assert!(
            error("{ at = \"20s\", node = 1 }", "{ at = \"20s\", nod = 1 }")
                .contains("unknown field")
        );
        assert!(error("nodes = 3", "nodes = 7").contains("at most 8 nodes"));
        assert!(error("nodes = 3", "nodes = 0").contains("at least 1"));
        // A crash restarts the only node.
        assert!(error("nodes = 3", "nodes = 3\ncrash_at = \"10s\"").contains("crash_at"));
    }

    #[test]
    fn cluster_timing_is_checked_as_floodgate_checks_it() {
        let short = CLUSTER.replace("lease_ttl = \"10s\"", "lease_ttl = \"6s\"");
        let short = format!("{:#}", cluster(&short).unwrap_err());
        assert!(short.contains("--cluster-lease-ttl"), "{short}");
        // floodgate's default heartbeat (1s) with a 5s webhook timeout needs at least 8s.
        let defaults = CLUSTER.replace("heartbeat = \"500ms\"\n", "");
        assert!(cluster(&defaults).is_ok());
        let tight = defaults.replace("\"10s\"", "\"7s\"");
        assert!(cluster(&tight).is_err());
    }

    #[test]
    fn every_bundled_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} scenarios in {}", dir.display());
    }
}
