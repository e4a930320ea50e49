//! The controller against simulated customer systems: convergence, capacity changes, noisy and
//! heavy-tailed RTTs, the ceiling, slow start and tiers. Deterministic: seeded randomness and
//! simulated time.

use std::time::Duration;

use super::settings::*;
use super::sim::{MS, SEC, Sim, System, mean, share_within};
use super::*;

/// Runs C workers, S = 50 ms ± 20%, Q = C for 60 s and checks the limit from 30 s on.
fn converges_to(workers: usize) {
    let service = 50 * MS;
    let system = System::new(workers, service, workers, 0.2);
    let mut sim = Sim::new(system, ControllerSettings::default(), None);
    sim.run_until(60 * SEC);
    let settled = sim.limits_between(30 * SEC, 60 * SEC);
    let c = workers as f64;
    let within = share_within(&settled, 0.8 * c, 1.2 * c);
    let (goodput, overload) = sim.goodput(30, 60);
    let capacity = c / service.as_secs_f64();
    let (_, overload_all) = sim.goodput(0, 60);
    eprintln!(
        "C={workers}: limit mean {:.1} (min {}, max {}), {:.1}% of samples within ±20% of C; \
         goodput {goodput:.1}/s = {:.1}% of capacity {capacity:.0}/s; overload answers {:.2}% \
         after convergence, {:.2}% over the whole run; mean queueing {:?}; rate {:.1}/s, \
         baseline {:?}",
        mean(&settled),
        settled.iter().min().copied().unwrap_or(0),
        settled.iter().max().copied().unwrap_or(0),
        within * 100.0,
        goodput / capacity * 100.0,
        overload * 100.0,
        overload_all * 100.0,
        sim.mean_queueing(30, 60),
        sim.controller.rate(),
        sim.controller.snapshot().rtt_baseline,
    );
    assert!(within >= 0.9, "limit outside ±20% of {workers} too often");
    assert!((mean(&settled) - c).abs() <= 0.2 * c);
    assert!(goodput >= 0.9 * capacity, "goodput below 90% of capacity");
    assert!(overload <= 0.01, "more than 1% overload answers");
}

#[test]
fn limit_settles_near_capacity_2() {
    converges_to(2);
}

#[test]
fn limit_settles_near_capacity_20() {
    converges_to(20);
}

#[test]
fn limit_settles_near_capacity_200() {
    converges_to(200);
}

#[test]
fn heavy_tailed_service_times_still_converge() {
    let service = 50 * MS;
    let mut system = System::new(20, service, 20, 0.0);
    system.exponential = true;
    let mut sim = Sim::new(system, ControllerSettings::default(), None);
    sim.run_until(60 * SEC);
    let settled = sim.limits_between(30 * SEC, 60 * SEC);
    let (goodput, overload) = sim.goodput(30, 60);
    let capacity = 20.0 / service.as_secs_f64();
    eprintln!(
        "C=20, exponential service: limit mean {:.1} (min {}, max {}); goodput {:.1}% of \
         capacity; overload answers {:.2}%",
        mean(&settled),
        settled.iter().min().copied().unwrap_or(0),
        settled.iter().max().copied().unwrap_or(0),
        goodput / capacity * 100.0,
        overload * 100.0
    );
    assert!(goodput >= 0.85 * capacity);
    assert!(overload <= 0.01);
}

#[test]
fn limit_follows_a_capacity_drop() {
    let service = 50 * MS;
    let mut sim = Sim::new(
        System::new(50, service, 50, 0.2),
        ControllerSettings::default(),
        None,
    );
    sim.run_until(30 * SEC);
    let before = mean(&sim.limits_between(20 * SEC, 30 * SEC));
    // Half the system's pods die: 10 workers and a queue of 10 remain.
    sim.system.workers = 10;
    sim.system.queue_cap = 10;
    sim.run_until(60 * SEC);
    let followed_at = sim
        .limits
        .iter()
        .find(|(at, limit)| *at >= 30 * SEC && *limit <= 12)
        .map(|(at, _)| *at - 30 * SEC);
    let after = sim.limits_between(40 * SEC, 60 * SEC);
    let (goodput, overload) = sim.goodput(40, 60);
    let (_, overload_drop) = sim.goodput(30, 40);
    eprintln!(
        "C 50→10: limit {before:.1} before; within ±20% of 10 after {followed_at:?}; then \
         mean {:.1} (max {}), {:.0}% of samples within ±20%; goodput {:.1}% of capacity; overload answers \
         {:.2}% in the 10 s after the drop, {:.2}% after",
        mean(&after),
        after.iter().max().copied().unwrap_or(0),
        share_within(&after, 8.0, 12.0) * 100.0,
        goodput / (10.0 / service.as_secs_f64()) * 100.0,
        overload_drop * 100.0,
        overload * 100.0,
    );
    assert!(followed_at.is_some_and(|at| at <= 10 * SEC));
    assert!(share_within(&after, 8.0, 12.0) >= 0.9);
    assert!((mean(&after) - 10.0).abs() <= 2.0);
}

/// C = 10 workers of 100 ms ± 30%: the controller's rate sits around 100/s, the fast threshold.
fn noisy_system_near_fast_threshold(workers: usize) -> System {
    System::new(workers, 100 * MS, workers, 0.3)
}

#[test]
fn tiers_do_not_flap_on_a_noisy_rtt() {
    let mut sim = Sim::new(
        noisy_system_near_fast_threshold(10),
        ControllerSettings::default(),
        None,
    );
    let mut rates = (f64::MAX, 0.0_f64);
    let mut t = Duration::ZERO;
    while t < 300 * SEC {
        t += 100 * MS;
        sim.run_until(t);
        if t >= 10 * SEC {
            let rate = sim.controller.rate();
            rates = (rates.0.min(rate), rates.1.max(rate));
        }
    }
    let changes = sim.controller.take_tier_changes();
    eprintln!(
        "noisy RTT near the fast threshold for 5 min: rate {:.1}..{:.1}/s, {} tier changes: {:?}",
        rates.0,
        rates.1,
        changes.len(),
        changes
            .iter()
            .map(|c| (c.at - sim.t0, c.to, c.reason.as_str()))
            .collect::<Vec<_>>()
    );
    assert!(
        rates.0 < 100.0 && rates.1 > 100.0,
        "the rate should straddle the threshold"
    );
    assert!(changes.len() <= 2, "tiers flapped");
}

#[test]
fn sustained_drop_demotes_quickly_and_promotion_waits() {
    let settings = ControllerSettings::default();
    let mut sim = Sim::new(noisy_system_near_fast_threshold(30), settings.clone(), None);
    sim.run_until(60 * SEC);
    assert_eq!(sim.controller.tier(), Tier::Fast);
    sim.controller.take_tier_changes();

    // A sustained drop to about 30/s: medium within a few seconds.
    sim.system.workers = 3;
    sim.run_until(120 * SEC);
    let changes = sim.controller.take_tier_changes();
    let demoted = changes
        .first()
        .map(|c| (c.at - sim.t0, c.to, c.reason.clone()));
    eprintln!("drop to 30/s at 60 s: {demoted:?}");
    let (at, to, reason) = demoted.unwrap_or((Duration::MAX, Tier::Fast, String::new()));
    assert_eq!(to, Tier::Medium);
    assert!(at <= 65 * SEC, "demotion took {at:?}");
    assert!(reason.contains("below fast threshold 100/s"), "{reason}");
    assert_eq!(changes.len(), 1);

    // Capacity comes back: fast again only after the rate has stayed above the band (110/s)
    // for the whole sustained good period.
    sim.system.workers = 30;
    let band = settings.fast_threshold * (1.0 + TIER_HYSTERESIS);
    let mut above_since = None;
    let mut t = 120 * SEC;
    while sim.controller.tier() != Tier::Fast && t < 300 * SEC {
        t += 100 * MS;
        sim.run_until(t);
        if sim.controller.rate() < band {
            above_since = None;
        } else if above_since.is_none() {
            above_since = Some(t);
        }
    }
    let changes = sim.controller.take_tier_changes();
    let promoted = changes
        .first()
        .map(|c| (c.at - sim.t0, c.to, c.reason.clone()));
    eprintln!(
        "capacity back to 300/s at 120 s: rate above {band}/s since {above_since:?}; {promoted:?}"
    );
    let (at, to, _) = promoted.unwrap_or((Duration::MAX, Tier::Medium, String::new()));
    let above_since = above_since.unwrap_or(Duration::MAX);
    assert_eq!(to, Tier::Fast);
    assert!(
        at >= above_since + PROMOTE_AFTER - 100 * MS,
        "promoted too early"
    );
    assert!(at <= above_since + PROMOTE_AFTER + 100 * MS);
    assert!(
        above_since <= 140 * SEC,
        "the rate took {above_since:?} to recover"
    );
}

#[test]
fn ceiling_is_respected() {
    let ceiling = 500.0;
    let mut sim = Sim::new(
        System::new(200, 50 * MS, 200, 0.2),
        ControllerSettings::default(),
        Some(ceiling),
    );
    let mut max_rate = 0.0_f64;
    let mut max_limit = 0;
    let mut t = Duration::ZERO;
    while t < 30 * SEC {
        t += 100 * MS;
        sim.run_until(t);
        max_rate = max_rate.max(sim.controller.rate());
        max_limit = max_limit.max(sim.controller.limit());
    }
    let sent: u64 = sim.seconds[10..30].iter().map(|s| s.ok + s.overload).sum();
    eprintln!(
        "ceiling 500/s on a 4000/s system: rate at most {max_rate:.1}/s, limit at most \
         {max_limit}, {:.1} replies/s",
        sent as f64 / 20.0
    );
    assert!(max_rate <= ceiling);
    assert!(sent as f64 / 20.0 <= ceiling * 1.001);
    // 500/s × 50 ms is 25 in flight: the limit need not grow much past that.
    assert!(max_limit <= 40, "limit grew to {max_limit}");

    // Lowering the ceiling takes effect at once.
    sim.controller.set_ceiling(Some(50.0));
    assert!(sim.controller.rate() <= 50.0);
    sim.run_until(40 * SEC);
    let sent: u64 = sim.seconds[32..40].iter().map(|s| s.ok + s.overload).sum();
    assert!(sent as f64 / 8.0 <= 50.0 * 1.001);
}

#[test]
fn slow_start_doubles_until_the_first_congestion() {
    let mut sim = Sim::new(
        System::new(200, 50 * MS, 200, 0.0),
        ControllerSettings::default(),
        None,
    );
    let mut seen = vec![sim.controller.limit()];
    while sim.controller.limiter.slow_start {
        let t = sim.now + 10 * MS;
        sim.run_until(t);
        if seen.last() != Some(&sim.controller.limit()) {
            seen.push(sim.controller.limit());
        }
    }
    eprintln!("slow start: {seen:?} by {:?}", sim.now);
    assert_eq!(seen[..8], [1, 2, 4, 8, 16, 32, 64, 128]);
    assert!(sim.now <= 3 * SEC);
}

#[test]
fn slow_start_tier_keeps_its_pace_and_climbs() {
    // Configured slow (2/s) on a system that takes 20 × 50 ms = 400/s.
    let mut sim = Sim::new(
        System::new(20, 50 * MS, 20, 0.2),
        ControllerSettings::default(),
        None,
    );
    sim.controller = Controller::new(
        ControllerSettings::default(),
        sim.t0,
        None,
        Some(Tier::Slow),
    );
    sim.run_until(2 * SEC);
    let early: u64 = sim.seconds.iter().map(|s| s.ok).sum();
    sim.run_until(120 * SEC);
    eprintln!(
        "start slow: {early} deliveries in the first 2 s; after 2 min limit {} rate {:.1}/s tier {}",
        sim.controller.limit(),
        sim.controller.rate(),
        sim.controller.tier()
    );
    assert!(early <= 6, "a slow start tier must start slow");
    assert_eq!(sim.controller.tier(), Tier::Fast);
}

#[test]
fn baseline_follows_a_slower_or_faster_system() {
    for (factor, label) in [(2.0, "slower"), (0.5, "faster")] {
        let mut sim = Sim::new(
            System::new(20, 50 * MS, 20, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.run_until(30 * SEC);
        sim.system.service = sim.system.service.mul_f64(factor);
        let mut trace = Vec::new();
        for step in 1..=12 {
            sim.run_until(30 * SEC + step * 5 * SEC);
            trace.push((
                sim.controller.limit(),
                sim.controller
                    .snapshot()
                    .rtt_baseline
                    .map(|b| b.as_millis()),
            ));
        }
        let after = sim.limits_between(70 * SEC, 90 * SEC);
        let (goodput, overload) = sim.goodput(70, 90);
        let capacity = 20.0 / (0.05 * factor);
        eprintln!(
            "system {label} (service ×{factor}) at 30 s: every 5 s (limit, baseline ms) {trace:?}; \
             from 70 s limit mean {:.1}, goodput {:.1}% of capacity, overload {:.2}%",
            mean(&after),
            goodput / capacity * 100.0,
            overload * 100.0
        );
        assert!((mean(&after) - 20.0).abs() <= 4.0);
        assert!(goodput >= 0.9 * capacity);
    }
}

#[test]
fn limit_follows_a_capacity_rise() {
    let service = 50 * MS;
    let mut sim = Sim::new(
        System::new(10, service, 40, 0.2),
        ControllerSettings::default(),
        None,
    );
    sim.run_until(30 * SEC);
    sim.system.workers = 40;
    sim.run_until(60 * SEC);
    let reached_at = sim
        .limits
        .iter()
        .find(|(at, limit)| *at >= 30 * SEC && *limit >= 32)
        .map(|(at, _)| *at - 30 * SEC);
    let after = sim.limits_between(45 * SEC, 60 * SEC);
    let (goodput, overload) = sim.goodput(45, 60);
    eprintln!(
        "C 10→40: within ±20% of 40 after {reached_at:?}; from 15 s later mean {:.1}, {:.0}% \
         of samples within ±20%, goodput {:.1}% of capacity, overload answers {:.2}%",
        mean(&after),
        share_within(&after, 32.0, 48.0) * 100.0,
        goodput / (40.0 / service.as_secs_f64()) * 100.0,
        overload * 100.0
    );
    assert!(reached_at.is_some_and(|at| at <= 15 * SEC));
    assert!(share_within(&after, 32.0, 48.0) >= 0.9);
}
