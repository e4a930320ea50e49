//! Unit tests of the controller's rules: Retry-After, the circuit breaker, rejections, start
//! tiers, the operator pause and its memory bound.

use std::time::Duration;

use tokio::time::Instant;

use super::settings::*;
use super::sim::{MICROS, MS, Report, SEC, Sim, System};
use super::*;

#[test]
fn retry_after_pauses_exactly_that_long() {
    let t0 = Instant::now();
    let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
    assert_eq!(c.permit(t0, 0), Permit::Send);
    let _ = c.on_send(t0, 0);
    let t = t0 + 100 * MS;
    c.report(
        t,
        100 * MS,
        Signal::Overload {
            retry_after: Some(7 * SEC),
        },
    );
    assert_eq!(c.paused_until(), Some(t + 7 * SEC));
    for offset in [Duration::ZERO, SEC, 6 * SEC, 7 * SEC - MS] {
        assert_eq!(c.permit(t + offset, 0), Permit::WaitUntil(t + 7 * SEC));
    }
    // A shorter Retry-After later does not shorten the pause.
    c.report(
        t + SEC,
        10 * MS,
        Signal::Overload {
            retry_after: Some(SEC),
        },
    );
    assert_eq!(c.permit(t + 2 * SEC, 0), Permit::WaitUntil(t + 7 * SEC));
    assert_eq!(c.permit(t + 7 * SEC, 0), Permit::Send);
    let _ = c.on_send(t + 7 * SEC, 0);
    assert_eq!(c.paused_until(), None);
}

#[test]
fn circuit_opens_probes_one_at_a_time_and_backs_off() {
    let t0 = Instant::now();
    let settings = ControllerSettings::default();
    let mut c = Controller::new(settings.clone(), t0, None, None);
    let mut t = t0;
    for _ in 0..CIRCUIT_FAILURES {
        t += 10 * MS;
        c.report(t, 5 * MS, Signal::ConnectionError);
    }
    assert_eq!(c.circuit(), Circuit::Open);
    assert_eq!(c.tier(), Tier::CircuitOpen);
    let changes = c.take_tier_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].reason,
        "circuit opened after 5 consecutive connection errors"
    );

    // Cool-down: nothing, whatever the limit.
    let reopen = t + CIRCUIT_COOLDOWN;
    for offset in [Duration::ZERO, SEC, CIRCUIT_COOLDOWN - MS] {
        assert_eq!(c.permit(t + offset, 0), Permit::WaitUntil(reopen));
    }
    // A late outcome of an attempt sent before the circuit opened changes nothing.
    c.report(t + SEC, 2 * SEC, Signal::Success);
    assert_eq!(c.circuit(), Circuit::Open);

    // One probe, and only one while it is in flight.
    assert_eq!(c.permit(reopen, 0), Permit::Send);
    let _ = c.on_send(reopen, 0);
    assert_eq!(c.circuit(), Circuit::HalfOpen);
    assert!(matches!(c.permit(reopen + MS, 1), Permit::WaitUntil(_)));
    assert!(matches!(c.permit(reopen + MS, 0), Permit::WaitUntil(_)));

    // The probe fails: open again, for twice as long.
    let failed = reopen + 100 * MS;
    c.report(failed, 100 * MS, Signal::ConnectionError);
    assert_eq!(c.circuit(), Circuit::Open);
    let reopen = failed + 2 * CIRCUIT_COOLDOWN;
    assert_eq!(c.permit(failed + 9 * SEC, 0), Permit::WaitUntil(reopen));

    // The next probe succeeds: closed, restarting small.
    assert_eq!(c.permit(reopen, 0), Permit::Send);
    let _ = c.on_send(reopen, 0);
    c.report(reopen + 50 * MS, 50 * MS, Signal::Success);
    assert_eq!(c.circuit(), Circuit::Closed);
    assert_eq!(c.limit(), 1);
    assert_ne!(c.tier(), Tier::CircuitOpen);
    let changes = c.take_tier_changes();
    assert!(
        changes[0]
            .reason
            .starts_with("circuit closed after a successful probe")
    );
    assert_eq!(c.permit(reopen + 50 * MS, 0), Permit::Send);
}

#[test]
fn circuit_cool_down_doubles_up_to_the_cap() {
    let t0 = Instant::now();
    let settings = ControllerSettings::default();
    let mut c = Controller::new(settings.clone(), t0, None, None);
    let mut t = t0;
    for _ in 0..CIRCUIT_FAILURES {
        t += MS;
        c.report(t, MS, Signal::Timeout);
    }
    let mut cooldowns = Vec::new();
    let mut opened = t;
    for _ in 0..8 {
        let Permit::WaitUntil(until) = c.permit(opened, 0) else {
            panic!("an open circuit permitted a send");
        };
        cooldowns.push((until - opened).as_secs());
        let _ = c.on_send(until, 0);
        opened = until + MS;
        c.report(opened, MS, Signal::ServerError);
    }
    assert_eq!(cooldowns, [5, 10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn mixed_failures_are_named_in_the_reason() {
    let t0 = Instant::now();
    let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
    let signals = [
        Signal::Timeout,
        Signal::ServerError,
        Signal::Timeout,
        Signal::Overload { retry_after: None },
        Signal::Timeout,
    ];
    for (i, signal) in signals.into_iter().enumerate() {
        c.report(t0 + (i as u32 + 1) * MS, MS, signal);
    }
    let changes = c.take_tier_changes();
    assert_eq!(
        changes[0].reason,
        "circuit opened after 5 consecutive failures (1 overload answer, 3 timeouts, 1 server error)"
    );
}

#[test]
fn success_resets_the_failure_run() {
    let t0 = Instant::now();
    let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
    for i in 0..20u32 {
        let signal = if i % 4 == 3 {
            Signal::Success
        } else {
            Signal::ConnectionError
        };
        c.report(t0 + (i + 1) * MS, MS, signal);
    }
    assert_eq!(c.circuit(), Circuit::Closed);
}

#[test]
fn rejected_never_moves_anything() {
    let (mut sim, now) = settled();
    let c = &mut sim.controller;
    // Three failures short of opening the circuit...
    for i in 1..CIRCUIT_FAILURES {
        c.report(now + i * 10 * MS, MS, Signal::ConnectionError);
    }
    let before = (c.limiter.limit, c.rate(), c.circuit(), c.tier());
    for i in 0..1000u32 {
        c.report(now + SEC + i * MS, (i % 7 + 1) * 100 * MS, Signal::Rejected);
    }
    let after = (c.limiter.limit, c.rate(), c.circuit(), c.tier());
    assert_eq!(before, after);
    // ...and Rejected did not reset the run either: one more failure opens it.
    c.report(now + 3 * SEC, MS, Signal::ConnectionError);
    assert_eq!(c.circuit(), Circuit::Open);
}

#[test]
fn rejected_probe_frees_the_probe_slot_but_keeps_the_circuit_half_open() {
    let t0 = Instant::now();
    let mut c = Controller::new(
        ControllerSettings::default(),
        t0,
        None,
        Some(Tier::CircuitOpen),
    );
    assert_eq!(c.circuit(), Circuit::Open);
    let reopen = t0 + CIRCUIT_COOLDOWN;
    assert_eq!(c.permit(reopen, 0), Permit::Send);
    let _ = c.on_send(reopen, 0);
    c.report(reopen + MS, MS, Signal::Rejected);
    assert_eq!(c.circuit(), Circuit::HalfOpen);
    // The rejected probe is back: the next probe may go, and its success closes the circuit.
    assert_eq!(c.permit(reopen + MS, 0), Permit::Send);
    let _ = c.on_send(reopen + MS, 0);
    assert!(matches!(c.permit(reopen + 2 * MS, 1), Permit::WaitUntil(_)));
    c.report(reopen + 10 * MS, 9 * MS, Signal::Success);
    assert_eq!(c.circuit(), Circuit::Closed);
}

#[test]
fn a_lost_probe_is_replaced_after_the_probe_timeout() {
    let t0 = Instant::now();
    let settings = ControllerSettings::default();
    let mut c = Controller::new(settings.clone(), t0, None, Some(Tier::CircuitOpen));
    let reopen = t0 + CIRCUIT_COOLDOWN;
    let _ = c.on_send(reopen, 0);
    let lost = reopen + PROBE_TIMEOUT;
    assert_eq!(c.permit(lost - MS, 1), Permit::WaitUntil(lost));
    assert_eq!(c.permit(lost, 1), Permit::Send);
}

#[test]
fn start_tier_sets_the_starting_rate() {
    let t0 = Instant::now();
    let s = ControllerSettings::default();
    let rate = |tier| Controller::new(s.clone(), t0, None, Some(tier)).rate();
    assert!((rate(Tier::Fast) - s.fast_threshold).abs() < 1e-9);
    assert!((rate(Tier::Medium) - s.medium_threshold).abs() < 1e-9);
    assert!((rate(Tier::Slow) - SLOW_TIER_START_RATE).abs() < 1e-9);
    let slow = Controller::new(s.clone(), t0, None, Some(Tier::Slow));
    assert_eq!(slow.tier(), Tier::Slow);
    assert_eq!(slow.limit(), 1);
    let paused = Controller::new(s.clone(), t0, None, Some(Tier::Paused));
    assert_eq!(paused.tier(), Tier::Paused);
    assert!(matches!(
        paused.permit(t0 + 3600 * SEC, 0),
        Permit::WaitUntil(_)
    ));
    let none = Controller::new(s, t0, None, None);
    assert_eq!((none.tier(), none.limit()), (Tier::Fast, 1));
}

#[test]
fn operator_pause_stops_sending() {
    let t0 = Instant::now();
    let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
    c.set_paused(true, t0);
    assert_eq!(c.tier(), Tier::Paused);
    assert!(matches!(c.permit(t0 + SEC, 0), Permit::WaitUntil(_)));
    c.set_paused(false, t0 + 2 * SEC);
    assert_ne!(c.tier(), Tier::Paused);
    assert_eq!(c.permit(t0 + 2 * SEC, 0), Permit::Send);
    let reasons: Vec<String> = c
        .take_tier_changes()
        .into_iter()
        .map(|c| c.reason)
        .collect();
    assert_eq!(reasons[0], "paused by operator");
    assert!(reasons[1].starts_with("resumed by operator"));
}

#[test]
fn memory_is_small_and_constant() {
    let size = std::mem::size_of::<Controller>();
    eprintln!("size_of::<Controller>() = {size} bytes");
    assert!(size <= 1024);
    let t0 = Instant::now();
    let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
    for i in 0..10_000u32 {
        c.set_paused(i % 2 == 0, t0 + i * MS);
    }
    assert_eq!(c.take_tier_changes().len(), MAX_PENDING_TIER_CHANGES);
}

#[test]
fn tier_names() {
    let names = [
        Tier::Fast,
        Tier::Medium,
        Tier::Slow,
        Tier::Paused,
        Tier::CircuitOpen,
    ]
    .map(Tier::as_str);
    assert_eq!(names, ["fast", "medium", "slow", "paused", "circuit_open"]);
}

#[test]
fn failures_decrease_the_limit_once_per_window() {
    let (mut sim, now) = settled();
    let c = &mut sim.controller;
    let (before, ratio) = (c.limiter.limit, BACKOFF_RATIO);
    c.report(now, 50 * MS, Signal::ServerError);
    assert!((c.limiter.limit - before * ratio).abs() < 1e-9);
    // Attempts sent before that decrease were sent at the old limit: no further decrease.
    c.report(now + MS, 60 * MS, Signal::Timeout);
    c.report(
        now + 2 * MS,
        70 * MS,
        Signal::Overload { retry_after: None },
    );
    assert!((c.limiter.limit - before * ratio).abs() < 1e-9);
    // An attempt sent after it fails too: decrease again.
    c.report(now + 100 * MS, 50 * MS, Signal::ConnectionError);
    assert!((c.limiter.limit - before * ratio * ratio).abs() < 1e-9);
    assert_eq!(c.circuit(), Circuit::Closed);
}

#[test]
fn a_burst_of_failures_already_in_flight_does_not_open_the_circuit() {
    let (mut sim, now) = settled();
    let c = &mut sim.controller;
    // A queue overflowed once: twenty 503s for attempts all sent before the first came back.
    for i in 0..20u32 {
        c.report(
            now + i * 100 * MICROS,
            2 * MS,
            Signal::Overload { retry_after: None },
        );
    }
    assert_eq!(c.circuit(), Circuit::Closed);
    // Failures that keep coming for attempts sent after that do open it.
    for i in 1..CIRCUIT_FAILURES {
        c.report(
            now + i * 10 * MS,
            MS,
            Signal::Overload { retry_after: None },
        );
    }
    assert_eq!(c.circuit(), Circuit::Open);
}

/// A controller that has run 10 s against a system of 20 workers × 50 ms (400/s), so it has a
/// baseline and a settled limit; and that moment.
fn settled() -> (Sim, Instant) {
    let mut sim = Sim::new(
        System::new(20, 50 * MS, 20, 0.2),
        ControllerSettings::default(),
        None,
    );
    sim.run_until(10 * SEC);
    let now = sim.t0 + 10 * SEC;
    (sim, now)
}
