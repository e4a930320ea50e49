//! The simulated customer systems of a scenario: groups of identical systems, each system's
//! capacity model and how it changes during the run, and the load offered to each.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde::Deserialize;

use super::Span;

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
    #[serde(default = "super::one")]
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

    /// Checks the group's name (not among `names`, the groups' before it, to which it is
    /// added), count, rates and every capacity it will have.
    pub(super) fn check<'a>(&'a self, names: &mut HashSet<&'a str>) -> Result<()> {
        let name = &self.name;
        ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "customer name {name:?} must be letters, digits and dashes"
        );
        ensure!(names.insert(name), "customer name {name:?} is used twice");
        ensure!(self.count >= 1, "{name}: count must be at least 1");
        for rate in [self.rate, self.bulk_rate] {
            ensure!(
                rate.is_finite() && rate >= 0.0,
                "{name}: rates must be numbers of at least 0"
            );
        }
        for (_, capacity) in self.schedule() {
            capacity
                .check()
                .with_context(|| format!("customer {name}"))?;
        }
        ensure!(
            self.changes.windows(2).all(|w| w[0].at <= w[1].at),
            "{name}: changes must be in time order"
        );
        Ok(())
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
