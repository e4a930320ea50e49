//! The `idle-actors` scenario: what a customer's actor costs while it is alive but has nothing to
//! send. Many customers each get one notification (which starts their actor) and, once all have
//! arrived, the actors stay up (floodgate runs with a long `--idle-timeout`), so the RSS above the
//! idle baseline is their cost. `ListCustomerStats` confirms how many actors are running: a
//! customer without one reports `TIER_IDLE`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use serde::Serialize;
use tokio::time::Instant;

use super::{MemoryArgs, Rig, SETTLE, Submitted, submit_all, tier_name, with_receiver};
use crate::arrivals::Arrivals;
use crate::client;
use crate::process::{Floodgate, Memory};

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Summary {
    server: String,
    customers: usize,
    register_secs: f64,
    submitted: Submitted,
    /// From the first submit until the last notification arrived.
    deliver_secs: f64,
    /// RSS before anything was registered.
    rss_baseline_mib: f64,
    /// RSS with the customers registered but no actor started: the directory and store's share.
    rss_registered_mib: f64,
    /// RSS with every actor alive and idle.
    rss_with_actors_mib: f64,
    /// `VmHWM` at the end: the peak over the whole run.
    hwm_mib: f64,
    /// Customers whose tier is not `TIER_IDLE`: those with a running actor.
    actors_running: usize,
    /// Customers by tier.
    tiers: BTreeMap<String, usize>,
    /// (with actors − baseline) / actors running.
    kib_per_actor: f64,
    /// (with actors − registered) / actors running: without the customers' own registration.
    kib_per_actor_after_registration: f64,
}

/// Runs the scenario on a freshly started `floodgate` (one started with a long idle timeout).
pub(super) async fn run(args: &MemoryArgs, floodgate: &Floodgate) -> Result<Summary> {
    with_receiver(floodgate, None, async |rig| measure(args, rig).await).await
}

async fn measure(args: &MemoryArgs, rig: Rig<'_>) -> Result<Summary> {
    let baseline = rig.settled;
    let (floodgate, channel) = (rig.floodgate, rig.channel);
    let (receiver, arrivals) = (rig.receiver, rig.arrivals);
    let customers: Vec<String> = (0..args.customers).map(|i| format!("idle-{i}")).collect();
    eprintln!(
        "baseline: rss {:.1} MiB; registering {} customers",
        baseline.rss_mib(),
        customers.len()
    );
    let registering = Instant::now();
    client::register_customers(&channel, &customers, &[receiver.url()], false).await?;
    let register_secs = registering.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let registered = floodgate.memory()?;
    eprintln!(
        "registered in {register_secs:.1}s: rss {:.1} MiB; one notification each",
        registered.rss_mib()
    );

    let submitting = Instant::now();
    let total = customers.len() as u64;
    let submitted = submit_all(args, floodgate, customers, total).await?;
    wait_for_arrivals(
        floodgate,
        arrivals,
        submitted.accepted,
        args.deliver_timeout,
    )
    .await?;
    let deliver_secs = submitting.elapsed().as_secs_f64();
    // Outcomes are written and the actors have gone quiet; read memory before the stats call,
    // whose answer for thousands of customers is itself a burst of allocations.
    tokio::time::sleep(SETTLE).await;
    let with_actors = floodgate.memory()?;

    let answer = CustomersClient::new(channel.clone())
        .list_customer_stats(proto::ListCustomerStatsRequest {})
        .await
        .context("ListCustomerStats failed")?
        .into_inner();
    let mut tiers = BTreeMap::new();
    for stats in &answer.stats {
        *tiers.entry(tier_name(stats.tier)).or_default() += 1;
    }
    let actors_running = answer
        .stats
        .iter()
        .filter(|s| s.tier != proto::Tier::Idle as i32)
        .count();
    let per_actor = |from: Memory| {
        with_actors.rss_kib.saturating_sub(from.rss_kib) as f64 / actors_running.max(1) as f64
    };
    Ok(Summary {
        server: floodgate.describe(),
        customers: args.customers,
        register_secs,
        submitted,
        deliver_secs,
        rss_baseline_mib: baseline.rss_mib(),
        rss_registered_mib: registered.rss_mib(),
        rss_with_actors_mib: with_actors.rss_mib(),
        hwm_mib: with_actors.hwm_mib(),
        actors_running,
        tiers,
        kib_per_actor: per_actor(baseline),
        kib_per_actor_after_registration: per_actor(registered),
    })
}

/// Waits until `expected` notifications have arrived, printing progress every second.
async fn wait_for_arrivals(
    floodgate: &Floodgate,
    arrivals: &Arrivals,
    expected: u64,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut next_line = start + Duration::from_secs(1);
    while arrivals.unique() < expected {
        let now = Instant::now();
        if now - start >= timeout {
            bail!(
                "only {} of {expected} notifications arrived within {}s",
                arrivals.unique(),
                timeout.as_secs()
            );
        }
        if now >= next_line {
            eprintln!(
                "[{:>5.1}s] deliver arrived {:>7} / {expected}  rss {:>7.1} MiB",
                (now - start).as_secs_f64(),
                arrivals.unique(),
                floodgate.memory()?.rss_mib()
            );
            next_line += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Prints the summary to stdout.
pub(super) fn print(s: &Summary) {
    println!();
    println!("server:             {}", s.server);
    println!(
        "scenario:           idle actors: {} customers, one delivered notification each",
        s.customers
    );
    println!(
        "setup:              registered in {:.1}s; {} accepted ({} errors), all arrived {:.1}s after the first submit",
        s.register_secs, s.submitted.accepted, s.submitted.errors, s.deliver_secs
    );
    println!("rss baseline:       {:.1} MiB", s.rss_baseline_mib);
    println!("rss registered:     {:.1} MiB", s.rss_registered_mib);
    println!(
        "rss with actors:    {:.1} MiB (VmHWM {:.1} MiB)",
        s.rss_with_actors_mib, s.hwm_mib
    );
    let tiers: Vec<String> = s.tiers.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "actors running:     {} of {} ({})",
        s.actors_running,
        s.customers,
        tiers.join(", ")
    );
    println!(
        "per actor:          {:.1} KiB over the baseline, {:.1} KiB over the registered customers",
        s.kib_per_actor, s.kib_per_actor_after_registration
    );
}
