//! How the controller probes above the point where a system last broke: hard caps that answer
//! 429 with `Retry-After`, one-worker systems with a one-slot queue, and a system that queues
//! internally without ever refusing, whose queueing delay is measured. Seeded randomness and
//! simulated time: every run is the same run, so the shares asserted here are exact figures of
//! the simulation, not timings.

use super::settings::{BREAK_HOLD, MAX_BREAK_HOLD};
use super::sim::{MS, SEC, Sim, System};
use super::*;

/// Seeds for the runs of each case (the system's service-time jitter).
const SEEDS: [u64; 3] = [
    0x9E37_79B9_7F4A_7C15,
    0xD1B5_4A32_D192_ED03,
    0x8CB9_2BA7_2F3D_8DD7,
];

/// Goodput as a share of capacity and the share of overload answers over [from, to) seconds.
fn run(system: System, capacity_per_sec: f64, until: usize, from: usize) -> (f64, f64, Sim) {
    let mut sim = Sim::new(system, ControllerSettings::default(), None);
    sim.run_until(until as u32 * SEC);
    let (goodput, overload) = sim.goodput(from, until);
    (goodput / capacity_per_sec, overload, sim)
}

/// A hard cap of `workers`, no queue, 429 with `Retry-After: 1` beyond it.
fn hard_cap(workers: usize) {
    let service = 100 * MS;
    for seed in SEEDS {
        let system = System::new(workers, service, 0, 0.2)
            .seeded(seed)
            .with_retry_after(SEC);
        let capacity = workers as f64 / service.as_secs_f64();
        let (share, overload, sim) = run(system, capacity, 120, 20);
        eprintln!(
            "hard cap {workers}, seed {seed:x}: goodput {:.1}% of capacity, {:.2}% answered 429, \
             limit {}",
            share * 100.0,
            overload * 100.0,
            sim.controller.limit()
        );
        assert!(share >= 0.9, "goodput below 90% of capacity");
        assert!(overload <= 0.01, "more than 1% answered 429");
    }
}

#[test]
fn hard_cap_of_2_with_retry_after() {
    hard_cap(2);
}

#[test]
fn hard_cap_of_5_with_retry_after() {
    hard_cap(5);
}

#[test]
fn hard_cap_of_20_with_retry_after() {
    hard_cap(20);
}

/// One worker and a one-slot queue, 503 beyond it (as the many-customers scenario's small
/// systems): probing costs at most 1% of requests.
#[test]
fn one_worker_one_slot_systems_see_at_most_one_percent_overload() {
    for service in [100 * MS, SEC] {
        for seed in SEEDS {
            let system = System::new(1, service, 1, 0.2).seeded(seed);
            let capacity = 1.0 / service.as_secs_f64();
            let (share, overload, _) = run(system, capacity, 300, 10);
            eprintln!(
                "1 worker of {service:?}, 1-slot queue, seed {seed:x}: goodput {:.1}% of \
                 capacity, {:.2}% answered 503",
                share * 100.0,
                overload * 100.0
            );
            assert!(share >= 0.9, "goodput below 90% of capacity");
            assert!(overload <= 0.01, "more than 1% answered 503");
        }
    }
}

/// A system that never refuses: 10 workers and a queue too long to fill. Only the RTT shows
/// that we send too much, so the controller must keep the queue short by itself.
#[test]
fn an_internally_queueing_system_keeps_its_queue_short() {
    let service = 100 * MS;
    for seed in SEEDS {
        let system = System::new(10, service, 10_000, 0.2).seeded(seed);
        let (share, overload, sim) = run(system, 100.0, 120, 20);
        let queueing = sim.mean_queueing(20, 120);
        eprintln!(
            "10 workers, unbounded queue, seed {seed:x}: goodput {:.1}% of capacity, mean \
             queueing {queueing:?} ({:.1}% of the service time)",
            share * 100.0,
            queueing.as_secs_f64() / service.as_secs_f64() * 100.0
        );
        assert_eq!(overload, 0.0);
        assert!(share >= 0.9, "goodput below 90% of capacity");
        assert!(
            queueing <= service / 10,
            "requests wait too long in the system's queue"
        );
    }
}

/// Against a hard cap that never changes, every probe fails: each comes no sooner than the hold
/// after the last failure, and the hold doubles, so over ten minutes only a handful of seconds
/// see a 429 at all.
#[test]
fn failed_probes_are_spaced_ever_further_apart() {
    let system = System::new(5, 100 * MS, 0, 0.2).with_retry_after(SEC);
    let mut sim = Sim::new(system, ControllerSettings::default(), None);
    sim.run_until(600 * SEC);
    let refused: Vec<usize> = (0..sim.seconds.len())
        .filter(|second| sim.seconds[*second].overload > 0)
        .collect();
    // The first episode (slow start overshooting the cap) may span a few seconds.
    let episodes: Vec<usize> = refused
        .iter()
        .enumerate()
        .filter(|(i, second)| *i == 0 || refused[i - 1] + 2 < **second)
        .map(|(_, second)| *second)
        .collect();
    let gaps: Vec<usize> = episodes.windows(2).map(|w| w[1] - w[0]).collect();
    let (_, overload) = sim.goodput(0, 600);
    eprintln!(
        "hard cap 5 for 10 min: 429s in seconds {refused:?}, episodes {episodes:?}, gaps \
         {gaps:?}, {:.3}% answered 429",
        overload * 100.0
    );
    // The hold after the n-th failure is BREAK_HOLD × 2ⁿ (up to MAX_BREAK_HOLD): no probe
    // comes sooner. The probe budget may space them further.
    for (n, gap) in gaps.iter().enumerate() {
        let hold = BREAK_HOLD.saturating_mul(1 << n).min(MAX_BREAK_HOLD);
        assert!(
            *gap as u64 >= hold.as_secs(),
            "probe {n} came {gap} s after the last"
        );
    }
    assert!(episodes.len() <= 8, "{} probing episodes", episodes.len());
    assert!(overload <= 0.001);
}

/// A system configured slow (starting at 2/s and slow-starting to 10/s) with one worker and a
/// one-slot queue, as in the many-customers scenario: its start must not overshoot into 503s.
#[test]
fn one_worker_one_slot_system_started_slow() {
    for seed in SEEDS {
        let system = System::new(1, SEC, 1, 0.1).seeded(seed);
        let mut sim = Sim::new(system, ControllerSettings::default(), None);
        sim.controller = Controller::new(
            ControllerSettings::default(),
            sim.t0,
            None,
            Some(Tier::Slow),
        );
        sim.run_until(300 * SEC);
        let (goodput, overload) = sim.goodput(10, 300);
        eprintln!(
            "1 worker of 1 s, 1-slot queue, started slow, seed {seed:x}: goodput {goodput:.2}/s, \
             {:.2}% answered 503",
            overload * 100.0
        );
        assert!(goodput >= 0.9);
        assert!(overload <= 0.01, "more than 1% answered 503");
    }
}
