//! The `backlog` scenario: one slow customer with a huge backlog. A dispatcher that loaded the
//! backlog into memory would grow with it; floodgate should keep only a bounded window per
//! customer and leave the rest in the store. Reports RSS idle, after submitting, and while the
//! slow customer is delivered to, with the customer's own figures (limit, in flight, backlog)
//! from `GetCustomerStats`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use serde::Serialize;
use tokio::time::Instant;

use super::{MemoryArgs, Rig, Submitted, submit_all, tier_name, with_receiver};
use crate::client::{self, AuthedChannel};
use crate::process::Floodgate;

/// The slow customer's id.
const CUSTOMER: &str = "slow-0";

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Summary {
    server: String,
    /// The slow receiver's time per request, one at a time.
    slow_delay_ms: f64,
    submitted: Submitted,
    /// RSS before anything was registered or submitted.
    rss_idle_mib: f64,
    rss_after_submit_mib: f64,
    /// The highest and the last RSS sampled while observing.
    rss_peak_observed_mib: f64,
    rss_final_mib: f64,
    /// `VmHWM` at the end: the peak over the whole run, submitting included.
    hwm_mib: f64,
    observe_secs: f64,
    /// Webhooks answered by the slow receiver while observing (each id once).
    delivered_observed: u64,
    delivered_per_sec: f64,
    /// The largest concurrency limit and in-flight count seen while observing.
    max_concurrency_limit: u32,
    max_in_flight: u32,
    /// `GetCustomerStats` at the end of the observation.
    last: Stats,
    /// One sample a second while observing.
    samples: Vec<Sample>,
}

/// The figures of `GetCustomerStats` this scenario is about.
#[derive(Debug, Clone, Serialize)]
struct Stats {
    tier: String,
    concurrency_limit: u32,
    in_flight: u32,
    backlog_transactional: u64,
    pacing_rate: f64,
}

impl From<proto::CustomerStats> for Stats {
    fn from(s: proto::CustomerStats) -> Self {
        Self {
            tier: tier_name(s.tier),
            concurrency_limit: s.concurrency_limit,
            in_flight: s.in_flight,
            backlog_transactional: s.backlog_transactional,
            pacing_rate: s.pacing_rate,
        }
    }
}

/// One second of the observation.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    secs: f64,
    rss_mib: f64,
    /// Arrived since the observation began.
    delivered: u64,
    stats: Stats,
}

/// Runs the scenario on a freshly started `floodgate`.
pub(super) async fn run(args: &MemoryArgs, floodgate: &Floodgate) -> Result<Summary> {
    with_receiver(floodgate, Some(args.slow_delay), async |rig| {
        measure(args, rig).await
    })
    .await
}

async fn measure(args: &MemoryArgs, rig: Rig<'_>) -> Result<Summary> {
    let Rig {
        floodgate,
        channel,
        receiver,
        arrivals,
        settled: idle,
    } = rig;
    client::register_customers(&channel, &[CUSTOMER.to_owned()], &[receiver.url()], false).await?;
    eprintln!(
        "idle: rss {:.1} MiB; submitting {} notifications for {CUSTOMER} (served one at a time, {} ms each)",
        idle.rss_mib(),
        args.backlog,
        args.slow_delay.as_millis()
    );
    let submitted = submit_all(args, floodgate, vec![CUSTOMER.to_owned()], args.backlog).await?;
    let after_submit = floodgate.memory()?;

    let start = Instant::now();
    let end = start + args.observe;
    let before = arrivals.unique();
    let mut samples = Vec::new();
    let mut at = start;
    while at < end {
        at = (at + Duration::from_secs(1)).min(end);
        tokio::time::sleep_until(at).await;
        let rss = floodgate.memory()?.rss_mib();
        let stats = Stats::from(stats_of(&channel).await?);
        let sample = Sample {
            secs: (at - start).as_secs_f64(),
            rss_mib: rss,
            delivered: arrivals.unique() - before,
            stats,
        };
        eprintln!(
            "[{:>5.1}s] observe rss {:>7.1} MiB  delivered {:>5}  {} limit {}  in flight {}  backlog {}",
            sample.secs,
            sample.rss_mib,
            sample.delivered,
            sample.stats.tier,
            sample.stats.concurrency_limit,
            sample.stats.in_flight,
            sample.stats.backlog_transactional
        );
        samples.push(sample);
    }
    let end_memory = floodgate.memory()?;
    let delivered = arrivals.unique() - before;
    let last = Stats::from(stats_of(&channel).await?);
    let observe_secs = args.observe.as_secs_f64();
    Ok(Summary {
        server: floodgate.describe(),
        slow_delay_ms: args.slow_delay.as_secs_f64() * 1000.0,
        submitted,
        rss_idle_mib: idle.rss_mib(),
        rss_after_submit_mib: after_submit.rss_mib(),
        rss_peak_observed_mib: samples
            .iter()
            .map(|s| s.rss_mib)
            .fold(end_memory.rss_mib(), f64::max),
        rss_final_mib: end_memory.rss_mib(),
        hwm_mib: end_memory.hwm_mib(),
        observe_secs,
        delivered_observed: delivered,
        delivered_per_sec: if observe_secs > 0.0 {
            delivered as f64 / observe_secs
        } else {
            0.0
        },
        max_concurrency_limit: samples
            .iter()
            .map(|s| s.stats.concurrency_limit)
            .fold(last.concurrency_limit, u32::max),
        max_in_flight: samples
            .iter()
            .map(|s| s.stats.in_flight)
            .fold(last.in_flight, u32::max),
        last,
        samples,
    })
}

async fn stats_of(channel: &AuthedChannel) -> Result<proto::CustomerStats> {
    let answer = CustomersClient::new(channel.clone())
        .get_customer_stats(proto::GetCustomerStatsRequest {
            customer_id: CUSTOMER.to_owned(),
        })
        .await
        .context("GetCustomerStats failed")?;
    Ok(answer.into_inner())
}

/// Prints the summary to stdout.
pub(super) fn print(s: &Summary) {
    println!();
    println!("server:           {}", s.server);
    println!(
        "scenario:         backlog: one customer served one request at a time, {:.0} ms each",
        s.slow_delay_ms
    );
    println!(
        "submitted:        {} accepted in {:.1}s ({:.0}/s, {} errors)",
        s.submitted.accepted,
        s.submitted.secs,
        s.submitted.accepted as f64 / s.submitted.secs.max(f64::MIN_POSITIVE),
        s.submitted.errors
    );
    println!("rss idle:         {:.1} MiB", s.rss_idle_mib);
    println!("rss after submit: {:.1} MiB", s.rss_after_submit_mib);
    println!(
        "rss delivering:   peak {:.1} MiB, final {:.1} MiB over {:.0}s (VmHWM {:.1} MiB)",
        s.rss_peak_observed_mib, s.rss_final_mib, s.observe_secs, s.hwm_mib
    );
    println!(
        "delivered:        {} while observing ({:.1}/s)",
        s.delivered_observed, s.delivered_per_sec
    );
    println!(
        "customer stats:   {} concurrency_limit {} in_flight {} backlog_transactional {} pacing {:.1}/s",
        s.last.tier,
        s.last.concurrency_limit,
        s.last.in_flight,
        s.last.backlog_transactional,
        s.last.pacing_rate
    );
    println!(
        "while observing:  concurrency_limit at most {}, in_flight at most {}",
        s.max_concurrency_limit, s.max_in_flight
    );
}
