//! Pacing policies: how a customer actor decides when it may send.
//!
//! `adaptive` is floodgate's controller. `fixed` and `static-tiers` are the two baselines of the
//! incident reports that motivated floodgate: one rate for every customer, and a fixed rate per configured tier.
//! They exist so the load harness can run the same scenario under all three side by side; a
//! production server runs `adaptive`.

use std::time::Duration;

use clap::ValueEnum;
use tokio::time::Instant;

use super::controller::{
    Checkpoint, Circuit, Controller, ControllerSettings, Permit, Signal, Snapshot, Ticket, Tier,
    TierChange,
};
use crate::model::StartTier;

/// Which pacing policy every customer actor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    /// Measure each customer system and move its limit and rate with the AIMD controller.
    Adaptive,
    /// Send every customer at one global rate (`--fixed-rate`), whatever it answers.
    Fixed,
    /// Send each customer at its configured tier's fixed rate (`--tier-rates`).
    StaticTiers,
}

/// Settings of the baseline policies.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    pub policy: Policy,
    /// `fixed`: deliveries/s per customer. Default 100.
    pub fixed_rate: f64,
    /// `static-tiers`: deliveries/s for the fast, medium and slow tiers. Default 1000, 100, 10.
    pub tier_rates: TierRates,
    /// Baselines: most deliveries in flight per customer (they do not adapt it). Default 1000.
    pub max_in_flight: usize,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            policy: Policy::Adaptive,
            fixed_rate: 100.0,
            tier_rates: TierRates {
                fast: 1000.0,
                medium: 100.0,
                slow: 10.0,
            },
            max_in_flight: 1000,
        }
    }
}

/// The `static-tiers` baseline's rate for each configured tier, deliveries/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierRates {
    pub fast: f64,
    pub medium: f64,
    pub slow: f64,
}

impl TierRates {
    /// The rate of `tier`; the tiers the controller alone moves to (paused, circuit open) get
    /// the fast rate, as a customer without a configured tier does.
    pub fn of(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Medium => self.medium,
            Tier::Slow => self.slow,
            _ => self.fast,
        }
    }
}

/// A customer actor's pacing: the controller, or a fixed-rate baseline.
#[derive(Debug)]
pub(super) enum Pacing {
    Adaptive(Box<Controller>),
    Fixed(FixedRate),
}

impl Pacing {
    /// The pacing `settings.policy` asks for, for a customer with this ceiling and start tier.
    pub(super) fn new(
        settings: &PolicySettings,
        controller: &ControllerSettings,
        now: Instant,
        ceiling: Option<f64>,
        start_tier: Option<StartTier>,
    ) -> Self {
        let tier = start_tier.map(|tier| match tier {
            StartTier::Fast => Tier::Fast,
            StartTier::Medium => Tier::Medium,
            StartTier::Slow => Tier::Slow,
        });
        match settings.policy {
            Policy::Adaptive => Pacing::Adaptive(Box::new(Controller::new(
                controller.clone(),
                now,
                ceiling,
                tier,
            ))),
            Policy::Fixed => Pacing::Fixed(FixedRate::new(
                settings.fixed_rate,
                Tier::Fast,
                settings.max_in_flight,
                ceiling,
            )),
            Policy::StaticTiers => {
                let tier = tier.unwrap_or(Tier::Fast);
                let rate = settings.tier_rates.of(tier);
                Pacing::Fixed(FixedRate::new(rate, tier, settings.max_in_flight, ceiling))
            }
        }
    }

    pub(super) fn permit(&self, now: Instant, in_flight: usize) -> Permit {
        match self {
            Pacing::Adaptive(c) => c.permit(now, in_flight),
            Pacing::Fixed(f) => f.permit(now, in_flight),
        }
    }

    /// Records that an attempt started. The controller's ticket goes back to [`Self::observe`]
    /// with the outcome; the baselines keep no record of their sends (`None`).
    pub(super) fn on_send(&mut self, now: Instant, in_flight: usize) -> Option<Ticket> {
        match self {
            Pacing::Adaptive(c) => Some(c.on_send(now, in_flight)),
            Pacing::Fixed(f) => {
                f.on_send(now);
                None
            }
        }
    }

    /// Feeds an attempt's outcome to the controller (`rtt`: `None` when nothing reached the
    /// customer system); the baselines ignore it (that is the point).
    pub(super) fn observe(
        &mut self,
        now: Instant,
        ticket: Option<Ticket>,
        rtt: Option<Duration>,
        signal: Signal,
    ) {
        if let (Pacing::Adaptive(c), Some(ticket)) = (self, ticket) {
            c.observe(now, ticket, rtt, signal);
        }
    }

    pub(super) fn limit(&self) -> usize {
        match self {
            Pacing::Adaptive(c) => c.limit(),
            Pacing::Fixed(f) => f.max_in_flight,
        }
    }

    pub(super) fn paused_until(&self) -> Option<Instant> {
        match self {
            Pacing::Adaptive(c) => c.paused_until(),
            Pacing::Fixed(_) => None,
        }
    }

    pub(super) fn set_ceiling(&mut self, ceiling: Option<f64>) {
        match self {
            Pacing::Adaptive(c) => c.set_ceiling(ceiling),
            Pacing::Fixed(f) => f.ceiling = ceiling,
        }
    }

    pub(super) fn set_paused(&mut self, paused: bool, now: Instant) {
        match self {
            Pacing::Adaptive(c) => c.set_paused(paused, now),
            Pacing::Fixed(f) => f.paused = paused,
        }
    }

    pub(super) fn take_tier_changes(&mut self) -> Vec<TierChange> {
        match self {
            Pacing::Adaptive(c) => c.take_tier_changes(),
            Pacing::Fixed(_) => Vec::new(),
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        match self {
            Pacing::Adaptive(c) => c.snapshot(),
            Pacing::Fixed(f) => f.snapshot(),
        }
    }

    /// The controller's learned state; a fixed pace learns nothing.
    pub(super) fn checkpoint(&self, now: Instant) -> Option<Checkpoint> {
        match self {
            Pacing::Adaptive(c) => Some(c.checkpoint(now)),
            Pacing::Fixed(_) => None,
        }
    }

    /// Resumes the controller from a checkpoint (a fixed pace ignores it).
    pub(super) fn resume(&mut self, now: Instant, checkpoint: &Checkpoint) {
        if let Pacing::Adaptive(c) = self {
            c.resume(now, checkpoint);
        }
    }
}

/// Sends at one fixed rate with a fixed in-flight cap, deaf to what the customer system answers.
#[derive(Debug)]
pub(super) struct FixedRate {
    rate: f64,
    tier: Tier,
    max_in_flight: usize,
    ceiling: Option<f64>,
    paused: bool,
    next_send: Option<Instant>,
}

impl FixedRate {
    /// `pub(super)` so the controller's simulator can run the `fixed` baseline beside it.
    pub(super) fn new(rate: f64, tier: Tier, max_in_flight: usize, ceiling: Option<f64>) -> Self {
        Self {
            rate,
            tier,
            max_in_flight: max_in_flight.max(1),
            ceiling,
            paused: false,
            next_send: None,
        }
    }

    fn effective_rate(&self) -> f64 {
        self.ceiling
            .map_or(self.rate, |c| self.rate.min(c))
            .max(f64::MIN_POSITIVE)
    }

    pub(super) fn permit(&self, now: Instant, in_flight: usize) -> Permit {
        if self.paused || in_flight >= self.max_in_flight {
            return Permit::WaitUntil(now + Duration::from_millis(50));
        }
        match self.next_send {
            Some(at) if at > now => Permit::WaitUntil(at),
            _ => Permit::Send,
        }
    }

    pub(super) fn on_send(&mut self, now: Instant) {
        let interval = Duration::from_secs_f64((1.0 / self.effective_rate()).min(3600.0));
        // Keep the schedule (no drift), but never bank more than one interval of credit.
        let base = self.next_send.map_or(now, |at| at.max(now - interval));
        self.next_send = Some(base + interval);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            limit: self.max_in_flight,
            rate: self.effective_rate(),
            rtt_baseline: None,
            rtt_recent: None,
            tier: if self.paused { Tier::Paused } else { self.tier },
            circuit: Circuit::Closed,
            paused_until: None,
            last_tier_change: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fixed_rate_ignores_overload_and_keeps_its_pace() {
        let settings = PolicySettings {
            policy: Policy::Fixed,
            fixed_rate: 10.0,
            ..PolicySettings::default()
        };
        let t0 = Instant::now();
        let mut pacing = Pacing::new(&settings, &ControllerSettings::default(), t0, None, None);
        let mut sent = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(10) {
            match pacing.permit(now, 0) {
                Permit::Send => {
                    let ticket = pacing.on_send(now, 0);
                    pacing.observe(
                        now,
                        ticket,
                        Some(Duration::from_millis(5)),
                        Signal::Overload { retry_after: None },
                    );
                    sent += 1;
                }
                Permit::WaitUntil(at) => now = at,
            }
        }
        assert_eq!(sent, 100, "10/s for 10 s, overload or not");
    }

    #[test]
    fn static_tiers_pick_the_configured_tier_rate() {
        let settings = PolicySettings {
            policy: Policy::StaticTiers,
            ..PolicySettings::default()
        };
        let now = Instant::now();
        let slow = Pacing::new(
            &settings,
            &ControllerSettings::default(),
            now,
            None,
            Some(StartTier::Slow),
        );
        assert_eq!(slow.snapshot().rate, 10.0);
        assert_eq!(slow.snapshot().tier, Tier::Slow);
        let capped = Pacing::new(
            &settings,
            &ControllerSettings::default(),
            now,
            Some(5.0),
            Some(StartTier::Fast),
        );
        assert_eq!(
            capped.snapshot().rate,
            5.0,
            "the customer's ceiling still applies"
        );
    }
}
