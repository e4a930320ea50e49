//! The concurrency limit: slow start, growth towards and above the last measured capacity,
//! decreases on rising RTT and on failures, and undoing a cut the RTT did not answer.

use tokio::time::Instant;

use super::plateau::BreakPoint;
use super::settings::{
    BACKOFF_RATIO, CIRCUIT_COOLDOWN, CIRCUIT_FAILURES, DRAIN, INCREASE_STEP, INITIAL_LIMIT,
    INITIAL_RTT, MAX_WAIT, MIN_GRADIENT, MIN_LIMIT, MIN_RATE, MIN_RTT_SECS, PACING_GAIN,
    PROBE_ACCELERATION, PROBE_STEP, REBASELINE_AFTER, SLOW_TIER_START_RATE, SPURIOUS_CUT_DEPTH,
    WINDOW_MIN_SAMPLES,
};
use super::signal::{Failure, Signal};
use super::{Controller, Ticket, Tier};
use std::time::Duration;

/// The limit and what it remembers.
#[derive(Clone, Debug)]
pub(super) struct Limiter {
    /// Concurrency limit; fractional, and below 1 a duty cycle the pacer enforces.
    pub(super) limit: f64,
    /// Queue-free limit measured at the last congestion, if any.
    pub(super) capacity: Option<f64>,
    /// Current probe step above `capacity`.
    probe: f64,
    pub(super) slow_start: bool,
    /// When a send first found the limit reached since the limit last grew: the limit, not the
    /// traffic, bound. That attempt (or a later one) coming back ends slow start's round trip.
    pub(super) round_reached_at: Option<Instant>,
    /// Slow start ends at this rate (a configured start tier's upper edge, or half the rate
    /// before the circuit opened).
    slow_start_until: Option<f64>,
    /// A start tier was configured as a rate: keep that rate when the first RTT is measured.
    keep_rate_on_first_baseline: bool,
    /// The latest decrease; outcomes of attempts started before it do not decrease again.
    last_decrease: Instant,
    congested_windows: u32,
    /// The last cut for rising RTT, while the window after it is judged: undone if the RTT did
    /// not respond to it.
    last_cut: Option<LatencyCut>,
    /// Where the system last refused one more attempt (429/503), and the probing above it.
    pub(super) break_point: Option<BreakPoint>,
}

impl Limiter {
    pub(super) fn new(limit: f64, now: Instant) -> Self {
        Self {
            limit,
            capacity: None,
            probe: 0.0,
            slow_start: true,
            round_reached_at: None,
            slow_start_until: None,
            keep_rate_on_first_baseline: false,
            last_decrease: now,
            congested_windows: 0,
            last_cut: None,
            break_point: None,
        }
    }
}

/// A cut made for rising RTT, remembered for one window so that it can be undone.
#[derive(Clone, Copy, Debug)]
struct LatencyCut {
    /// Mean RTT and concurrency of the congested window.
    mean: f64,
    concurrency: f64,
    /// That window was itself measured after a cut. Only then is its mean a steady state: the
    /// first congested window of an episode may straddle the change that caused it.
    after_cut: bool,
    /// Limit and capacity before the episode's first cut, for the undo.
    limit_before: f64,
    capacity_before: Option<f64>,
}

impl Controller {
    /// A configured start tier: its rate, and slow start up to the next tier's threshold.
    pub(super) fn apply_start_tier(&mut self, now: Instant, start_tier: Option<Tier>) {
        let s = &self.settings;
        let (rate, until) = match start_tier {
            None => return,
            Some(Tier::Fast) => (s.fast_threshold, None),
            Some(Tier::Medium) => (s.medium_threshold, Some(s.fast_threshold)),
            Some(Tier::Slow) => (SLOW_TIER_START_RATE, Some(s.medium_threshold)),
            Some(Tier::Paused) => {
                self.operator_paused = true;
                self.tiers.current = Tier::Paused;
                return;
            }
            Some(Tier::CircuitOpen) => {
                self.breaker.open(now, CIRCUIT_COOLDOWN);
                self.tiers.current = Tier::CircuitOpen;
                return;
            }
        };
        let max_limit = self.settings.max_limit;
        self.limiter.limit = self.limit_for_rate(rate).clamp(MIN_LIMIT, max_limit);
        self.limiter.slow_start_until = until;
        self.limiter.keep_rate_on_first_baseline = true;
        self.tiers.current = start_tier.unwrap_or(Tier::Fast);
    }

    /// Slow start again from the start, stopping at `until` deliveries/s (after the circuit
    /// closes: half the rate before it opened, as TCP's ssthresh).
    pub(super) fn restart_slow_start(&mut self, now: Instant, until: f64) {
        let floor = self.floor();
        let l = &mut self.limiter;
        l.limit = INITIAL_LIMIT.max(floor);
        l.capacity = None;
        l.slow_start = true;
        l.round_reached_at = None;
        l.slow_start_until = Some(until);
        l.last_decrease = now;
        self.open_window();
    }

    /// The first window's mean is the baseline. A start tier's limit was set from the assumed
    /// RTT; it is rescaled to keep the tier's rate, and that window, measured at the old limit,
    /// grows nothing: a slow start (2/s) measured at 1 s per request becomes 2 in flight, where
    /// doubling on top made it 4 against a one-worker system with one waiting place.
    pub(super) fn first_baseline(&mut self, mean: f64) {
        if self.limiter.keep_rate_on_first_baseline {
            let assumed = INITIAL_RTT.as_secs_f64().max(MIN_RTT_SECS);
            let scaled = self.limiter.limit * mean / assumed;
            let l = &mut self.limiter;
            l.limit = scaled.clamp(MIN_LIMIT, self.settings.max_limit);
            l.round_reached_at = None;
            self.window.resized = true;
        }
        self.rtt.baseline = Some(mean);
    }

    pub(super) fn window_clear(&mut self, now: Instant, mean: f64, baseline: f64) {
        self.limiter.congested_windows = 0;
        self.limiter.last_cut = None;
        self.update_baseline(mean, baseline, false);
        let (limit, cohort) = (self.limiter.limit, f64::from(self.window.sent));
        let reached = self.window.reached;
        if let Some(point) = &mut self.limiter.break_point {
            // A probe that did not reach its limit tested nothing: it is simply over.
            point.probe_cleared(limit, cohort, reached);
        }
        // A window whose limit was already set anew (a slow-start round trip, the first
        // baseline) does not grow it again.
        if reached && !self.window.resized {
            self.grow(now);
        }
        self.open_window();
    }

    /// Below `WINDOW_MIN_SAMPLES` attempts in flight, slow start doubles the limit once per round
    /// trip, as TCP's does, instead of once per window. A window is at least `WINDOW_MIN_SAMPLES`
    /// long, eight round trips at a limit of 1: doubling per window took 14 round trips from 1 to
    /// 8 in flight, and a system under steady traffic piled up a backlog it then drained for
    /// seconds (at 80/s offered to a 100/s system only 20/s is spare).
    ///
    /// The round trip ends when the first attempt sent at the limit since it last grew (or a
    /// later one) comes back: only a limit that bound may grow (more limit cannot help a sender
    /// its traffic limits: RFC 7661's rule). It doubles only if that RTT shows no queue
    /// (HyStart's delay signal): within one sample's tolerance of the baseline, and meaning no
    /// attempt of ours waiting by Vegas's estimate (the tolerance alone widens with the variance
    /// a queue itself raises). A round that queued does not double; its window is judged as
    /// usual. Only once the baseline is measured (the first window, at the starting limit) and
    /// only from one attempt at a time up (below, the pacer's duty cycle is a configured slow
    /// start, kept slow).
    pub(super) fn slow_start_round(&mut self, now: Instant, sent_at: Instant, rtt: f64) {
        let l = &self.limiter;
        // At least one attempt at a time, as `limit()` rounds it.
        let small = l.limit >= 0.5 && l.limit < f64::from(WINDOW_MIN_SAMPLES);
        let unqueued = self.rtt.baseline.is_some_and(|baseline| {
            rtt <= baseline * (1.0 + self.tolerance(1)) && !self.queued(rtt, baseline)
        });
        let round_over = l.round_reached_at.is_some_and(|at| sent_at >= at);
        if l.slow_start && small && unqueued && round_over {
            self.window.resized = true;
            self.grow(now);
        }
    }

    pub(super) fn window_congested(&mut self, now: Instant, mean: f64, baseline: f64) {
        let l = &mut self.limiter;
        l.congested_windows = l.congested_windows.saturating_add(1);
        if self.cut_was_spurious(mean, baseline)
            || self.limiter.congested_windows >= REBASELINE_AFTER
        {
            self.rebaseline(mean);
            return;
        }
        self.update_baseline(mean, baseline, true);
        if let Some(point) = &mut self.limiter.break_point {
            point.probe_congested(now);
        }
        let concurrency = self.concurrency();
        let queue_free = (concurrency * baseline / mean).max(self.floor());
        let l = &mut self.limiter;
        let before = l.last_cut.map_or((l.limit, l.capacity), |cut| {
            (cut.limit_before, cut.capacity_before)
        });
        l.last_cut = Some(LatencyCut {
            mean,
            concurrency,
            after_cut: l.last_cut.is_some(),
            limit_before: before.0,
            capacity_before: before.1,
        });
        l.capacity = Some(queue_free);
        let target = (queue_free * DRAIN)
            .max(l.limit * MIN_GRADIENT)
            .min(l.limit);
        self.decrease_to(now, target);
    }

    /// Did the last cut leave the RTT where it was? Queueing in the customer system shrinks with
    /// our concurrency; an RTT that stays put after concurrency fell by a fifth or more (and no
    /// attempt failed, which would mean a full queue) is the system's own new speed. TCP undoes
    /// a window reduction that proves spurious in the same spirit (Eifel, F-RTO). Each cohort
    /// sent after a cut measures the steady state of its limit (it is sent only once our
    /// attempts in flight are below it), so two such windows are compared, never the episode's
    /// first.
    fn cut_was_spurious(&self, mean: f64, baseline: f64) -> bool {
        let Some(cut) = self.limiter.last_cut.filter(|cut| cut.after_cut) else {
            return false;
        };
        let deep = self.concurrency() <= cut.concurrency * SPURIOUS_CUT_DEPTH;
        // Queueing predicts the RTT falls with concurrency (to no less than the baseline); a
        // slower system predicts it stays. Which is the measured mean closer to?
        let queueing = (cut.mean * self.concurrency() / cut.concurrency).max(baseline);
        let unchanged = mean > (cut.mean + queueing) / 2.0;
        deep && unchanged && self.window.failures == 0
    }

    /// The RTT is the customer system's new normal: adopt it as the baseline and undo the cuts
    /// that were made for it.
    fn rebaseline(&mut self, mean: f64) {
        self.rtt.baseline = Some(mean);
        let l = &mut self.limiter;
        if let Some(cut) = l.last_cut.take() {
            l.limit = cut.limit_before;
            l.capacity = cut.capacity_before;
        }
        l.congested_windows = 0;
        self.open_window();
    }

    pub(super) fn on_failure(
        &mut self,
        now: Instant,
        ticket: Ticket,
        kind: Failure,
        signal: Signal,
    ) {
        let sent_at = ticket.sent_at;
        self.breaker.count_failure(now, sent_at, kind);
        if self.breaker.run_total() >= CIRCUIT_FAILURES {
            self.open_circuit(now);
            return;
        }
        // A failed probe goes back to the plateau it left; any other failure backs off.
        let probe_failed = self
            .limiter
            .break_point
            .as_ref()
            .is_some_and(|point| point.probing);
        if let Signal::Overload { retry_after } = signal {
            // The system said "no more": remember how many it took (one at a time at least).
            let last = self.limiter.break_point.take();
            let point = BreakPoint::on_failure(last, now, sent_at, ticket.in_flight, retry_after);
            self.limiter.break_point = Some(point);
        }
        // Once per window: attempts sent before the last decrease were sent at the old limit.
        if sent_at >= self.limiter.last_decrease {
            self.limiter.last_cut = None;
            let mut target = self.limiter.limit * BACKOFF_RATIO;
            if probe_failed {
                let plateau = self.limiter.break_point.as_ref().map(|p| p.plateau);
                target = target.max(plateau.unwrap_or(target));
            }
            self.limiter.capacity = Some(target.max(self.floor()));
            self.decrease_to(now, target);
        }
    }

    fn decrease_to(&mut self, now: Instant, target: f64) {
        let floor = self.floor();
        let l = &mut self.limiter;
        l.limit = target.max(floor).min(l.limit.max(floor));
        l.slow_start = false;
        l.probe = PROBE_STEP * l.capacity.unwrap_or(l.limit);
        l.last_decrease = now;
        self.open_window();
    }

    fn grow(&mut self, now: Instant) {
        let cap = self.growth_cap();
        if self.limiter.limit >= cap {
            return;
        }
        let next = if self.limiter.slow_start {
            self.slow_start_next()
        } else {
            self.additive_next()
        };
        let next = self.held_below_break(now, next);
        let l = &mut self.limiter;
        l.limit = next.min(cap).max(l.limit);
        // Whichever way the limit grew, slow start's next round trip starts afresh.
        l.round_reached_at = None;
    }

    /// Growth stops at the break point's plateau (slow start ends there), unless a probe may go
    /// now (see `plateau.rs`). A probe adds at least one attempt in flight, or it would test
    /// nothing; while held, the probe step does not grow, so the probe that finally goes is small.
    fn held_below_break(&mut self, now: Instant, next: f64) -> f64 {
        let cohort = f64::from(self.samples_needed());
        let l = &mut self.limiter;
        let Some(point) = &mut l.break_point else {
            return next;
        };
        if next <= point.plateau {
            return next;
        }
        if !l.slow_start && point.try_probe(now, cohort) {
            return next.max(point.plateau.floor() + 1.0);
        }
        l.slow_start = false;
        l.probe = PROBE_STEP * point.plateau;
        point.plateau.max(l.limit).min(next)
    }

    fn slow_start_next(&mut self) -> f64 {
        let doubled = self.limiter.limit * 2.0;
        match self.limiter.slow_start_until {
            Some(until) if self.rate_of(doubled) >= until => {
                self.limiter.slow_start = false;
                self.limit_for_rate(until).max(self.limiter.limit)
            }
            _ => doubled,
        }
    }

    /// Below the last measured capacity: at least half the gap to it per clear window; above it,
    /// a probe step that starts at `PROBE_STEP` of it and grows by `PROBE_ACCELERATION`.
    fn additive_next(&mut self) -> f64 {
        let l = &mut self.limiter;
        let step = INCREASE_STEP * l.limit.min(1.0);
        match l.capacity {
            Some(capacity) if l.limit < capacity => {
                (l.limit + step.max((capacity - l.limit) / 2.0)).min(capacity)
            }
            Some(capacity) => {
                let next = l.limit + l.probe.max(PROBE_STEP * capacity);
                l.probe *= PROBE_ACCELERATION;
                next
            }
            None => l.limit + step,
        }
    }

    /// The limit never grows past `max_limit`, nor past what the ceiling can use (with room for
    /// RTT jitter).
    fn growth_cap(&self) -> f64 {
        let by_ceiling = self.ceiling.map_or(f64::INFINITY, |ceiling| {
            let rtt = self.baseline().max(self.rtt.recent.unwrap_or(0.0));
            ceiling * rtt * PACING_GAIN
        });
        self.settings.max_limit.min(by_ceiling).max(self.floor())
    }

    /// The lowest limit: the one that paces at `MIN_RATE`.
    pub(super) fn floor(&self) -> f64 {
        self.limit_for_rate(MIN_RATE).max(MIN_LIMIT)
    }

    /// The RTT baseline in seconds, or the assumed RTT until one is measured.
    pub(super) fn baseline(&self) -> f64 {
        self.rtt
            .baseline
            .unwrap_or(INITIAL_RTT.as_secs_f64())
            .max(MIN_RTT_SECS)
    }

    fn limit_for_rate(&self, rate: f64) -> f64 {
        rate * self.baseline()
    }

    /// What `limit` attempts deliver per second at the baseline RTT, at least `MIN_RATE`, never
    /// above the ceiling.
    pub(super) fn rate_of(&self, limit: f64) -> f64 {
        let rate = (limit / self.baseline()).max(MIN_RATE);
        self.ceiling.map_or(rate, |ceiling| rate.min(ceiling))
    }

    /// Spacing between sends: `PACING_GAIN` × the rate, never above the ceiling.
    pub(super) fn pacing_interval(&self) -> Duration {
        let rate = (self.rate_of(self.limiter.limit) * PACING_GAIN)
            .min(self.ceiling.unwrap_or(f64::INFINITY));
        // A zero or non-number rate gives an error here, and the longest wait.
        Duration::try_from_secs_f64(1.0 / rate).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
    }
}
