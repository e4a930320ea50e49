//! A scenario file (`loadtest/scenarios/*.toml`): the simulated customer systems, the load offered
//! to each, and the events of the run (bursts, a crash). Parsed strictly — an unknown key is an
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
//! Every key is documented on its field below.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde::Deserialize;

/// Longest a scenario's load phase plus drain may be: every scenario runs in about a minute.
const MAX_RUN: Duration = Duration::from_secs(60);

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
    /// When floodgate is killed with SIGKILL and started again, if at all.
    #[serde(default)]
    pub(crate) crash_at: Option<Span>,
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

/// A configured tier, as floodgate's `start_tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TierName {
    Fast,
    Medium,
    Slow,
}

/// What an overloaded system answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum Overload {
    /// `503 Service Unavailable`.
    #[default]
    #[serde(rename = "503")]
    Unavailable,
    /// `429 Too Many Requests` with `Retry-After` (`retry_after`).
    #[serde(rename = "429")]
    TooManyRequests,
}

/// `count` identical customer systems and the load offered to each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Group {
    /// The customer id, or the ids' prefix when `count` > 1; also the report's row name.
    pub(crate) name: String,
    /// How many such customers. Default 1.
    #[serde(default = "one")]
    pub(crate) count: usize,
    /// The configured tier: `static-tiers` sends at its rate; `adaptive` starts from it.
    /// Default: none (floodgate's default tier).
    #[serde(default)]
    pub(crate) tier: Option<TierName>,
    /// The system's capacity at the start: see [`Capacity`] for each key.
    pub(crate) workers: usize,
    pub(crate) service_time: Span,
    #[serde(default = "no_span")]
    pub(crate) jitter: Span,
    #[serde(default)]
    pub(crate) queue: Option<usize>,
    #[serde(default)]
    pub(crate) overload: Overload,
    #[serde(default = "one_second")]
    pub(crate) retry_after: Span,
    #[serde(default)]
    pub(crate) dead: bool,
    /// Capacity changes during the run, in time order.
    #[serde(default)]
    pub(crate) changes: Vec<Change>,
    /// Transactional notifications/s offered to each customer of the group. Default 0.
    #[serde(default)]
    pub(crate) rate: f64,
    /// Bulk notifications/s offered to each customer of the group. Default 0.
    #[serde(default)]
    pub(crate) bulk_rate: f64,
    /// A bulk campaign submitted all at once to each customer of the group.
    #[serde(default)]
    pub(crate) campaign: Option<Campaign>,
}

fn one() -> usize {
    1
}

/// A simulated system's capacity model: `workers` requests served at once, each taking
/// `service_time` ± `jitter`; up to `queue` more wait for a worker; beyond that it answers
/// `overload` at once. `dead`: it accepts connections and never answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Capacity {
    pub(crate) workers: usize,
    pub(crate) service_time: Span,
    /// Each request's service time is drawn uniformly from `service_time ± jitter`. Default 0.
    pub(crate) jitter: Span,
    /// Requests waiting for a worker. Default: as many as there are workers.
    pub(crate) queue: Option<usize>,
    /// `"503"` or `"429"`. Default `"503"`.
    pub(crate) overload: Overload,
    /// The `Retry-After` of a 429, rounded to whole seconds as HTTP says. Default 1s.
    pub(crate) retry_after: Span,
    /// Hangs every request. Default false.
    pub(crate) dead: bool,
}

fn no_span() -> Span {
    Span(Duration::ZERO)
}

fn one_second() -> Span {
    Span(Duration::from_secs(1))
}

impl Capacity {
    /// Requests per second it completes when saturated.
    pub(crate) fn per_sec(&self) -> f64 {
        if self.dead {
            0.0
        } else {
            self.workers as f64 / self.service_time.0.as_secs_f64()
        }
    }

    /// How many requests may wait for a worker.
    pub(crate) fn queue(&self) -> usize {
        self.queue.unwrap_or(self.workers)
    }

    /// This capacity with `change` applied.
    fn changed(&self, change: &Change) -> Self {
        Self {
            workers: change.workers.unwrap_or(self.workers),
            service_time: change.service_time.unwrap_or(self.service_time),
            jitter: change.jitter.unwrap_or(self.jitter),
            queue: change.queue.or(self.queue),
            dead: change.dead.unwrap_or(self.dead),
            ..self.clone()
        }
    }

    fn check(&self) -> Result<()> {
        ensure!(self.workers >= 1, "workers must be at least 1");
        ensure!(
            !self.service_time.0.is_zero(),
            "service_time must be above zero"
        );
        ensure!(
            self.jitter <= self.service_time,
            "jitter must not exceed service_time"
        );
        Ok(())
    }
}

/// From `at` on, the listed capacity settings change; the others stay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Change {
    pub(crate) at: Span,
    pub(crate) workers: Option<usize>,
    pub(crate) service_time: Option<Span>,
    pub(crate) jitter: Option<Span>,
    pub(crate) queue: Option<usize>,
    pub(crate) dead: Option<bool>,
}

/// `count` bulk notifications submitted as fast as floodgate takes them, from `at`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Campaign {
    pub(crate) at: Span,
    pub(crate) count: u64,
}

impl Group {
    /// The capacity at the start.
    pub(crate) fn capacity(&self) -> Capacity {
        Capacity {
            workers: self.workers,
            service_time: self.service_time,
            jitter: self.jitter,
            queue: self.queue,
            overload: self.overload,
            retry_after: self.retry_after,
            dead: self.dead,
        }
    }

    /// The capacity in force at `t` since the load started.
    pub(crate) fn capacity_at(&self, t: Duration) -> Capacity {
        self.schedule()
            .into_iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or_else(|| self.capacity(), |(_, capacity)| capacity)
    }

    /// The capacity from the start and after each change, with the time it takes effect.
    pub(crate) fn schedule(&self) -> Vec<(Duration, Capacity)> {
        let mut current = self.capacity();
        let mut schedule = vec![(Duration::ZERO, current.clone())];
        for change in &self.changes {
            current = current.changed(change);
            schedule.push((change.at.0, current.clone()));
        }
        schedule
    }

    /// The customer ids of this group.
    pub(crate) fn ids(&self, prefix: &str) -> Vec<String> {
        if self.count == 1 {
            vec![format!("{prefix}{}", self.name)]
        } else {
            (0..self.count)
                .map(|i| format!("{prefix}{}-{i:04}", self.name))
                .collect()
        }
    }
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
        }
        for burst in &self.bursts {
            ensure!(
                burst.factor.is_finite() && burst.factor >= 0.0,
                "a burst factor must be a number of at least 0"
            );
        }
        let mut names = std::collections::HashSet::new();
        for group in &self.customers {
            let name = &group.name;
            ensure!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "customer name {name:?} must be letters, digits and dashes"
            );
            ensure!(names.insert(name), "customer name {name:?} is used twice");
            ensure!(group.count >= 1, "{name}: count must be at least 1");
            for rate in [group.rate, group.bulk_rate] {
                ensure!(
                    rate.is_finite() && rate >= 0.0,
                    "{name}: rates must be numbers of at least 0"
                );
            }
            for (_, capacity) in group.schedule() {
                capacity
                    .check()
                    .with_context(|| format!("customer {name}"))?;
            }
            ensure!(
                group.changes.windows(2).all(|w| w[0].at <= w[1].at),
                "{name}: changes must be in time order"
            );
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
