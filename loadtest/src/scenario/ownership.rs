//! What a run on several floodgate nodes measured besides the customers' figures: who owned the
//! buckets over time (the `bucket_leases` table, read every [`POLL`]), and from that how long the
//! survivors took to take a killed node's buckets, and how many buckets a joining node got and
//! when it had them all; with the duplicates and lost notifications of the whole run beside them.
//!
//! Sampling and accounting are apart: [`Sampler`] only records [`Sample`]s, and
//! [`ClusterOutcome::new`] derives every figure from them with no clock and no database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use floodgate::cluster::buckets::{BUCKETS, owner_of};
use serde::Serialize;
use sqlx::{Connection as _, PgConnection};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::outcome::GroupOutcome;

/// How often the lease table is read: the resolution of the takeover and join times.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Buckets per owning node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Since the load started, when the answer arrived (so a change is never seen early).
    pub(crate) at: Duration,
    pub(crate) owners: BTreeMap<String, u32>,
}

impl Sample {
    /// Buckets `node` owned (expired leases included: they are its until another node takes
    /// them).
    fn of(&self, node: &str) -> u32 {
        self.owners.get(node).copied().unwrap_or(0)
    }
}

/// A change to the running nodes, as the run made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeChange {
    /// `node` was SIGKILLed (the kill had returned) `at` since the load started.
    Killed { node: String, at: Duration },
    /// `node` was started `at` since the load started and answered calls `ready` later;
    /// `running` are the nodes running once it did, itself included.
    Added {
        node: String,
        at: Duration,
        ready: Duration,
        running: Vec<String>,
    },
}

/// Reads the lease table every [`POLL`] in a task of its own.
pub(crate) struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Connects to the cluster's database and samples from `start` (the load's start) on.
    pub(crate) async fn start(database_url: &str, start: Instant) -> Result<Self> {
        let mut connection = PgConnection::connect(database_url)
            .await
            .with_context(|| format!("cannot connect to {database_url} to read bucket_leases"))?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let recorded = samples.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(start, POLL);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                ticker.tick().await;
                match owners(&mut connection).await {
                    Ok(owners) => {
                        let at = Instant::now().saturating_duration_since(start);
                        recorded
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(Sample { at, owners });
                    }
                    Err(err) if !warned => {
                        warned = true;
                        eprintln!(
                            "warning: reading bucket_leases failed (gaps in the samples): {err:#}"
                        );
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(Self { samples, task })
    }

    /// Stops sampling and hands over what was recorded.
    pub(crate) fn finish(self) -> Vec<Sample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Buckets per owner now.
async fn owners(connection: &mut PgConnection) -> Result<BTreeMap<String, u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT owner, COUNT(*) FROM bucket_leases WHERE owner IS NOT NULL GROUP BY owner",
    )
    .fetch_all(connection)
    .await
    .context("cannot read bucket_leases")?;
    Ok(rows
        .into_iter()
        .map(|(owner, n)| (owner, u32::try_from(n).unwrap_or(u32::MAX)))
        .collect())
}

/// A killed node's buckets and how long they had no live owner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Takeover {
    pub(crate) node: String,
    /// When it was killed, seconds since the load started.
    pub(crate) killed_at_secs: f64,
    /// Buckets it owned when it was killed (the last sample before the kill).
    pub(crate) buckets: u32,
    /// From the kill until no bucket was owned by it any more; `None`: not within the run.
    pub(crate) takeover_secs: Option<f64>,
}

impl Takeover {
    fn measure(samples: &[Sample], node: &str, killed: Duration) -> Self {
        let buckets = samples
            .iter()
            .take_while(|s| s.at <= killed)
            .last()
            .map_or(0, |s| s.of(node));
        let takeover_secs = samples
            .iter()
            .find(|s| s.at >= killed && s.of(node) == 0)
            .map(|s| (s.at - killed).as_secs_f64());
        Self {
            node: node.to_owned(),
            killed_at_secs: killed.as_secs_f64(),
            buckets,
            takeover_secs,
        }
    }
}

/// A joining node's share of the buckets and how long it took to get it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Join {
    pub(crate) node: String,
    /// When it was started, seconds since the load started.
    pub(crate) started_at_secs: f64,
    /// From its start until it answered calls.
    pub(crate) ready_secs: f64,
    /// Buckets rendezvous hashing gives it among the nodes running once it was: what the
    /// others must hand over.
    pub(crate) expected: u32,
    /// Buckets it owned at the last sample.
    pub(crate) owned_at_end: u32,
    /// From its start until it owned `expected` buckets; `None`: not within the run.
    pub(crate) owned_secs: Option<f64>,
}

impl Join {
    fn measure(
        samples: &[Sample],
        node: &str,
        started: Duration,
        ready: Duration,
        running: &[String],
    ) -> Self {
        let expected = share(node, running);
        let owned_secs = samples
            .iter()
            .find(|s| s.at >= started && s.of(node) >= expected)
            .map(|s| (s.at - started).as_secs_f64());
        Self {
            node: node.to_owned(),
            started_at_secs: started.as_secs_f64(),
            ready_secs: ready.as_secs_f64(),
            expected,
            owned_at_end: samples.last().map_or(0, |s| s.of(node)),
            owned_secs,
        }
    }
}

/// Buckets `node` wins among `running` by floodgate's own rendezvous hashing.
fn share(node: &str, running: &[String]) -> u32 {
    let won = (0..BUCKETS)
        .filter(|bucket| owner_of(*bucket, running) == Some(node))
        .count();
    u32::try_from(won).unwrap_or(u32::MAX)
}

/// Everything a cluster run measured about the cluster itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ClusterOutcome {
    /// Nodes at the start.
    pub(crate) nodes: usize,
    pub(crate) takeovers: Vec<Takeover>,
    pub(crate) joins: Vec<Join>,
    /// Arrivals beyond the first of each notification, all customers: deliveries made twice
    /// (at-least-once after a kill; a planned handover should make none).
    pub(crate) duplicates: u64,
    /// Accepted notifications neither arrived, queued nor failed, all customers: must be 0.
    pub(crate) lost: u64,
    /// Buckets per owner at the last sample.
    pub(crate) owners_at_end: BTreeMap<String, u32>,
    /// Samples of the lease table taken.
    pub(crate) samples: usize,
}

impl ClusterOutcome {
    /// The figures of a run that started `nodes` nodes, made `changes` and sampled `samples`,
    /// whose customer groups' outcomes are `groups`.
    pub(crate) fn new(
        nodes: usize,
        changes: &[NodeChange],
        samples: &[Sample],
        groups: &[GroupOutcome],
    ) -> Self {
        let duplicates = groups.iter().map(|g| g.duplicates).sum();
        let lost = groups.iter().map(|g| g.lost).sum();
        Self::from_totals(nodes, changes, samples, duplicates, lost)
    }

    /// [`ClusterOutcome::new`] with the groups' duplicates and lost notifications summed.
    fn from_totals(
        nodes: usize,
        changes: &[NodeChange],
        samples: &[Sample],
        duplicates: u64,
        lost: u64,
    ) -> Self {
        let mut takeovers = Vec::new();
        let mut joins = Vec::new();
        for change in changes {
            match change {
                NodeChange::Killed { node, at } => {
                    takeovers.push(Takeover::measure(samples, node, *at));
                }
                NodeChange::Added {
                    node,
                    at,
                    ready,
                    running,
                } => joins.push(Join::measure(samples, node, *at, *ready, running)),
            }
        }
        Self {
            nodes,
            takeovers,
            joins,
            duplicates,
            lost,
            owners_at_end: samples.last().map(|s| s.owners.clone()).unwrap_or_default(),
            samples: samples.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample as the lease table gives it: a node owning nothing has no row.
    fn sample(at_ms: u64, owners: &[(&str, u32)]) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            owners: owners
                .iter()
                .filter(|(_, b)| *b > 0)
                .map(|(n, b)| ((*n).to_owned(), *b))
                .collect(),
        }
    }

    fn nodes(ids: &[usize]) -> Vec<String> {
        ids.iter().map(|i| crate::cluster::node_id(*i)).collect()
    }

    /// node-1 is killed at 2.05 s; its leases expire and the others take them at 12.3 s.
    fn killed_samples() -> Vec<Sample> {
        let mut samples = Vec::new();
        for tick in 0..150 {
            let at = tick * 100;
            let gone = at >= 12_300;
            let left = if gone { 0 } else { 340 };
            samples.push(sample(
                at,
                &[
                    ("node-0", 342 + (340 - left) / 2),
                    ("node-1", left),
                    ("node-2", 342 + (340 - left) / 2),
                ],
            ));
        }
        samples
    }

    #[test]
    fn takeover_counts_from_the_kill_until_the_dead_node_owns_nothing() {
        let samples = killed_samples();
        let kill = NodeChange::Killed {
            node: "node-1".into(),
            at: Duration::from_millis(2_050),
        };
        let outcome = ClusterOutcome::from_totals(3, &[kill], &samples, 0, 0);
        let takeover = &outcome.takeovers[0];
        assert_eq!(takeover.buckets, 340);
        // The first sample without node-1 is at 12.3 s: 10.25 s after the kill.
        let secs = takeover.takeover_secs.unwrap();
        assert!((secs - 10.25).abs() < 1e-9, "{secs}");
        assert_eq!(outcome.owners_at_end.get("node-1"), None);
        assert_eq!(outcome.samples, 150);
    }

    #[test]
    fn a_takeover_not_finished_within_the_run_has_no_time() {
        let samples: Vec<Sample> = (0..20)
            .map(|t| sample(t * 100, &[("node-0", 512), ("node-1", 512)]))
            .collect();
        let kill = NodeChange::Killed {
            node: "node-1".into(),
            at: Duration::from_millis(500),
        };
        let outcome = ClusterOutcome::from_totals(2, &[kill], &samples, 0, 0);
        assert_eq!(outcome.takeovers[0].buckets, 512);
        assert_eq!(outcome.takeovers[0].takeover_secs, None);
    }

    #[test]
    fn a_join_is_timed_until_the_joiner_owns_its_rendezvous_share() {
        let running = nodes(&[0, 2, 3]);
        let expected = share("node-3", &running);
        // About a third of 1,024 (see floodgate's bucket tests for the spread).
        assert!((250..=430).contains(&expected), "{expected}");
        let before = nodes(&[0, 2]);
        let mut samples = Vec::new();
        for tick in 0..100u32 {
            let at = u64::from(tick) * 100;
            // The joiner starts at 4 s and gets its buckets in two handovers, at 6 s and 7.5 s.
            let joiner = match at {
                0..6_000 => 0,
                6_000..7_500 => expected / 2,
                _ => expected,
            };
            let others = BUCKETS as u32 - joiner;
            samples.push(sample(
                at,
                &[
                    (before[0].as_str(), others / 2),
                    (before[1].as_str(), others - others / 2),
                    ("node-3", joiner),
                ],
            ));
        }
        let add = NodeChange::Added {
            node: "node-3".into(),
            at: Duration::from_secs(4),
            ready: Duration::from_millis(800),
            running,
        };
        let outcome = ClusterOutcome::from_totals(3, &[add], &samples, 0, 0);
        let join = &outcome.joins[0];
        assert_eq!(join.expected, expected);
        assert_eq!(join.owned_at_end, expected);
        assert!((join.owned_secs.unwrap() - 3.5).abs() < 1e-9, "{join:?}");
        assert!((join.ready_secs - 0.8).abs() < 1e-9);
    }

    #[test]
    fn a_join_that_never_gets_its_share_has_no_time() {
        let samples = vec![
            sample(0, &[("node-0", 1024)]),
            sample(100, &[("node-0", 1000), ("node-1", 24)]),
        ];
        let add = NodeChange::Added {
            node: "node-1".into(),
            at: Duration::ZERO,
            ready: Duration::ZERO,
            running: nodes(&[0, 1]),
        };
        let join = &ClusterOutcome::from_totals(1, &[add], &samples, 0, 0).joins[0];
        assert_eq!(join.owned_at_end, 24);
        assert_eq!(join.owned_secs, None);
    }

    #[test]
    fn duplicates_and_losses_are_the_whole_runs() {
        let outcome = ClusterOutcome::from_totals(3, &[], &[], 7, 0);
        assert_eq!((outcome.duplicates, outcome.lost), (7, 0));
        assert!(outcome.takeovers.is_empty() && outcome.joins.is_empty());
        assert!(outcome.owners_at_end.is_empty());
    }
}
