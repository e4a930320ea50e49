//! What one policy's run measured: every customer accounted for, then summed per group (a
//! report of 1,000 customers has a row per group, not per customer).
//!
//! Accounting, done once customers are paused: every id floodgate accepted either arrived at its
//! system, or is still queued in floodgate's store, or failed for good, or is lost (see
//! [`super::whereabouts`]). Arrivals floodgate never acknowledged (a commit whose answer a crash
//! cut off and that was never resubmitted) are counted apart.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use floodgate::api::proto;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::load::Ledger;
use super::ownership::ClusterOutcome;
use super::spec::Scenario;
use super::system::{ResponseCounts, System};
use super::whereabouts::Whereabouts;
use crate::arrivals::Lane;
use crate::report::{self, Latency};

/// One customer's outcome.
pub(crate) struct Customer {
    group: usize,
    offered: u64,
    accepted: u64,
    /// Accepted ids that arrived.
    delivered: u64,
    /// Arrivals of ids floodgate never acknowledged.
    unacknowledged: u64,
    queued: u64,
    failed: u64,
    lost: u64,
    duplicates: u64,
    responses: ResponseCounts,
    /// First arrivals per second since the run's epoch.
    timeline: Vec<u32>,
    latency: [Histogram<u64>; 2],
    /// At the end of the load (before customers were paused).
    tier: String,
    limit: u32,
}

impl Customer {
    /// Accounts for customer `i` of the fleet.
    pub(crate) fn account(
        group: usize,
        system: &System,
        ledger: &Ledger,
        i: usize,
        at_load_end: Option<&proto::CustomerStats>,
        whereabouts: Whereabouts,
    ) -> Self {
        let arrivals = system.arrivals();
        // Every accepted id that had not arrived was sorted by `whereabouts`, some of them as
        // arrived after all: the rest arrived. One snapshot, so the four counts add up exactly.
        let arrived = arrivals.unique();
        let accepted: HashSet<Box<str>> = ledger.accepted(i).into_iter().collect();
        // Read after `arrived`: an arrival in between makes this undercount, never overcount.
        let unacknowledged = arrived
            .saturating_sub(accepted.iter().filter(|id| arrivals.contains(id)).count() as u64);
        let accepted = accepted.len() as u64;
        let delivered =
            accepted.saturating_sub(whereabouts.queued + whereabouts.failed + whereabouts.lost);
        Self {
            group,
            offered: ledger.offered(i),
            accepted,
            delivered,
            unacknowledged,
            queued: whereabouts.queued,
            failed: whereabouts.failed,
            lost: whereabouts.lost,
            duplicates: arrivals.duplicates(),
            responses: system.responses(),
            timeline: arrivals.timeline(),
            latency: [
                arrivals.lane_latency(Lane::Transactional),
                arrivals.lane_latency(Lane::Bulk),
            ],
            tier: at_load_end.map_or_else(|| "?".into(), tier_name),
            limit: at_load_end.map_or(0, |s| s.concurrency_limit),
        }
    }
}

fn tier_name(stats: &proto::CustomerStats) -> String {
    proto::Tier::try_from(stats.tier)
        .map_or("?", |tier| match tier {
            proto::Tier::Fast => "fast",
            proto::Tier::Medium => "medium",
            proto::Tier::Slow => "slow",
            proto::Tier::Paused => "paused",
            proto::Tier::CircuitOpen => "circuit-open",
            proto::Tier::Idle => "idle",
            proto::Tier::Unspecified => "?",
        })
        .into()
}

/// One group's outcome under one policy: the report's row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupOutcome {
    pub(crate) name: String,
    pub(crate) customers: usize,
    /// The group's capacity in deliveries/s, averaged over the measured window.
    pub(crate) capacity_per_sec: f64,
    /// The group's offered load in notifications/s over the load phase, campaigns included.
    pub(crate) offered_per_sec: f64,
    /// First arrivals per second over the measured window.
    pub(crate) goodput_per_sec: f64,
    /// `goodput_per_sec / capacity_per_sec`.
    pub(crate) goodput_share: f64,
    /// The lowest share of any one customer of the group.
    pub(crate) worst_customer_share: f64,
    /// Overload answers (503/429) plus requests given up on (timeouts), as a share of requests.
    pub(crate) overload_share: f64,
    pub(crate) responses: ResponseCounts,
    pub(crate) offered: u64,
    pub(crate) accepted: u64,
    pub(crate) delivered: u64,
    pub(crate) queued: u64,
    pub(crate) failed: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) unacknowledged: u64,
    /// End-to-end latency (submit to arrival) of notifications sent after the warmup.
    pub(crate) transactional: Latency,
    pub(crate) bulk: Latency,
    /// Tiers at the end of the load, with how many customers were in each.
    pub(crate) tiers: BTreeMap<String, usize>,
    /// The mean concurrency limit at the end of the load.
    pub(crate) mean_limit: f64,
    /// Deliveries per second of the load phase and drain, from the load's start.
    pub(crate) delivered_timeline: Vec<u32>,
    /// The group's capacity per second of the same span.
    pub(crate) capacity_timeline: Vec<f64>,
}

/// Everything one policy's run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PolicyRun {
    pub(crate) policy: String,
    pub(crate) server: String,
    pub(crate) groups: Vec<GroupOutcome>,
    /// Per item, from its scheduled time to floodgate's answer.
    pub(crate) submit_latency: Latency,
    pub(crate) submit_errors: BTreeMap<String, u64>,
    /// Calls that failed as a whole and were sent again (floodgate down).
    pub(crate) resent_calls: u64,
    /// Items such a resent call found already stored: answers a crash cut off.
    pub(crate) recovered: u64,
    /// Takeovers, joins and duplicates, on several nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<ClusterOutcome>,
}

impl PolicyRun {
    /// Sums `customers` per group. `offset` is the load's start after the arrivals' epoch.
    pub(crate) fn new(
        policy: &str,
        server: String,
        scenario: &Scenario,
        offset: Duration,
        ledger: &Ledger,
        customers: Vec<Customer>,
    ) -> Result<Self> {
        let groups = scenario
            .customers
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let members: Vec<&Customer> = customers.iter().filter(|c| c.group == g).collect();
                sum_group(scenario, group, offset, &members)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            policy: policy.to_owned(),
            server,
            groups,
            submit_latency: Latency::from_micros(&ledger.submit_latency()),
            submit_errors: ledger.errors(),
            resent_calls: ledger
                .resent_calls
                .load(std::sync::atomic::Ordering::Relaxed),
            recovered: ledger.recovered.load(std::sync::atomic::Ordering::Relaxed),
            cluster: None,
        })
    }
}

/// The measured window, in whole seconds of the load phase: after the warmup, until the load
/// ends.
fn window(scenario: &Scenario) -> std::ops::Range<usize> {
    let secs = |d: Duration| d.as_secs_f64().round() as usize;
    secs(scenario.warmup.0)..secs(scenario.duration.0).max(secs(scenario.warmup.0) + 1)
}

fn sum_group(
    scenario: &Scenario,
    group: &super::spec::Group,
    offset: Duration,
    members: &[&Customer],
) -> Result<GroupOutcome> {
    let window = window(scenario);
    let window_secs = window.len() as f64;
    let skip = offset.as_secs() as usize;
    let span = (scenario.duration.0 + scenario.drain.0).as_secs() as usize;
    let per_second = |c: &Customer, second: usize| -> u32 {
        c.timeline.get(skip + second).copied().unwrap_or(0)
    };
    let capacity_at = |second: usize| {
        group
            .capacity_at(Duration::from_secs(second as u64))
            .per_sec()
    };
    let capacity_one = window.clone().map(capacity_at).sum::<f64>() / window_secs;
    let goodput = |c: &Customer| -> f64 {
        window
            .clone()
            .map(|s| f64::from(per_second(c, s)))
            .sum::<f64>()
            / window_secs
    };
    let share = |goodput: f64, capacity: f64| {
        if capacity > 0.0 {
            goodput / capacity
        } else {
            0.0
        }
    };
    let mut responses = ResponseCounts::default();
    let mut latency = [report::new_histogram()?, report::new_histogram()?];
    let mut tiers = BTreeMap::new();
    for c in members {
        responses += c.responses;
        for (all, one) in latency.iter_mut().zip(&c.latency) {
            let _ = all.add(one);
        }
        *tiers.entry(c.tier.clone()).or_insert(0) += 1;
    }
    let sum = |f: fn(&Customer) -> u64| members.iter().map(|c| f(c)).sum::<u64>();
    let goodput_total: f64 = members.iter().map(|c| goodput(c)).sum();
    let capacity_total = capacity_one * members.len() as f64;
    let requests = responses.requests.max(1) as f64;
    Ok(GroupOutcome {
        name: group.name.clone(),
        customers: members.len(),
        capacity_per_sec: capacity_total,
        offered_per_sec: sum(|c| c.offered) as f64 / scenario.duration.0.as_secs_f64(),
        goodput_per_sec: goodput_total,
        goodput_share: share(goodput_total, capacity_total),
        worst_customer_share: members
            .iter()
            .map(|c| share(goodput(c), capacity_one))
            .fold(f64::INFINITY, f64::min),
        overload_share: (responses.overloaded + responses.abandoned) as f64 / requests,
        responses,
        offered: sum(|c| c.offered),
        accepted: sum(|c| c.accepted),
        delivered: sum(|c| c.delivered),
        queued: sum(|c| c.queued),
        failed: sum(|c| c.failed),
        lost: sum(|c| c.lost),
        duplicates: sum(|c| c.duplicates),
        unacknowledged: sum(|c| c.unacknowledged),
        transactional: Latency::from_micros(&latency[0]),
        bulk: Latency::from_micros(&latency[1]),
        tiers,
        mean_limit: members.iter().map(|c| f64::from(c.limit)).sum::<f64>()
            / members.len().max(1) as f64,
        delivered_timeline: (0..span)
            .map(|s| members.iter().map(|c| per_second(c, s)).sum())
            .collect(),
        capacity_timeline: (0..span)
            .map(|s| capacity_at(s) * members.len() as f64)
            .collect(),
    })
}
