//! A customer actor's recent delivery figures: per-second counts over the last ten seconds and
//! the RTT window, for `GetCustomerStats`, `floodgate top` and (later) metrics.

use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::latency::LatencyWindow;

/// Seconds the rates are averaged over.
const WINDOW_SECS: usize = 10;

#[derive(Debug, Default, Clone, Copy)]
struct Second {
    delivered: u32,
    attempts: u32,
    errors: u32,
}

/// Counters for the last [`WINDOW_SECS`] seconds plus an RTT window. Fixed size.
#[derive(Debug)]
pub(super) struct DeliveryStats {
    origin: Instant,
    /// Ring of per-second counters, indexed by second since `origin`.
    seconds: [Second; WINDOW_SECS],
    /// The second each ring slot currently holds.
    slot_second: [u64; WINDOW_SECS],
    rtt: LatencyWindow,
    /// Totals since the actor started.
    pub(super) delivered_total: u64,
    pub(super) failed_total: u64,
    pub(super) tier_changes_total: u64,
}

impl DeliveryStats {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            origin: now,
            seconds: [Second::default(); WINDOW_SECS],
            slot_second: [u64::MAX; WINDOW_SECS],
            rtt: LatencyWindow::new(Duration::from_secs(WINDOW_SECS as u64)),
            delivered_total: 0,
            failed_total: 0,
            tier_changes_total: 0,
        }
    }

    /// Records one finished attempt (`rtt` is `None` when nothing was sent).
    pub(super) fn record(
        &mut self,
        now: Instant,
        rtt: Option<Duration>,
        delivered: bool,
        error: bool,
    ) {
        if let Some(rtt) = rtt {
            self.rtt.record(now, rtt);
        }
        let second = self.slot(now);
        second.attempts += 1;
        second.delivered += u32::from(delivered);
        second.errors += u32::from(error);
        self.delivered_total += u64::from(delivered);
    }

    /// Records a notification that ended FAILED.
    pub(super) fn record_failed(&mut self) {
        self.failed_total += 1;
    }

    /// Deliveries per second over the last ten whole seconds.
    pub(super) fn delivered_per_sec(&self, now: Instant) -> f64 {
        f64::from(self.sum(now, |s| s.delivered)) / WINDOW_SECS as f64
    }

    /// Share of attempts in the last ten seconds that failed with a congestion or server error.
    pub(super) fn error_rate(&self, now: Instant) -> f64 {
        let attempts = self.sum(now, |s| s.attempts);
        if attempts == 0 {
            0.0
        } else {
            f64::from(self.sum(now, |s| s.errors)) / f64::from(attempts)
        }
    }

    /// RTT quantile over the recent past.
    pub(super) fn rtt_quantile(&mut self, now: Instant, q: f64) -> Option<Duration> {
        self.rtt.quantile(now, q)
    }

    fn second_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn slot(&mut self, now: Instant) -> &mut Second {
        let second = self.second_of(now);
        let index = (second % WINDOW_SECS as u64) as usize;
        if self.slot_second[index] != second {
            self.slot_second[index] = second;
            self.seconds[index] = Second::default();
        }
        &mut self.seconds[index]
    }

    /// Sums a field over the ten whole seconds before the current one.
    fn sum(&self, now: Instant, field: impl Fn(&Second) -> u32) -> u32 {
        let current = self.second_of(now);
        (1..=WINDOW_SECS as u64)
            .filter_map(|back| current.checked_sub(back))
            .map(|second| {
                let index = (second % WINDOW_SECS as u64) as usize;
                if self.slot_second[index] == second {
                    field(&self.seconds[index])
                } else {
                    0
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rates_cover_the_last_ten_seconds() {
        let t0 = Instant::now();
        let mut stats = DeliveryStats::new(t0);
        for tenth in 0..200u64 {
            let now = t0 + Duration::from_millis(tenth * 100); // 10 attempts per second for 20 s
            stats.record(
                now,
                Some(Duration::from_millis(20)),
                tenth % 5 != 0,
                tenth % 5 == 0,
            );
        }
        let now = t0 + Duration::from_secs(20);
        assert!((stats.delivered_per_sec(now) - 8.0).abs() < 1e-9);
        assert!((stats.error_rate(now) - 0.2).abs() < 1e-9);
        assert_eq!(stats.delivered_per_sec(now + Duration::from_secs(30)), 0.0);
        assert_eq!(stats.delivered_total, 160);
    }
}
