//! A latency window: an hdrhistogram of the recent past, rotated so quantiles describe the last
//! one or two periods rather than all time. Allocated on first use, so an idle customer's actor
//! carries none.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Highest latency recorded, in microseconds (anything slower is clamped to it).
const MAX_MICROS: u64 = 60_000_000;
/// Two significant figures keep a histogram near 10 KiB, fine for one per active customer.
const SIGNIFICANT_FIGURES: u8 = 2;

/// Quantiles over the current and the previous period.
#[derive(Debug)]
pub struct LatencyWindow {
    period: Duration,
    started: Option<Instant>,
    current: Option<Histogram<u32>>,
    previous: Option<Histogram<u32>>,
}

impl LatencyWindow {
    /// A window whose quantiles cover between one and two `period`s.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            started: None,
            current: None,
            previous: None,
        }
    }

    /// Records one latency observed at `now`.
    pub fn record(&mut self, now: Instant, latency: Duration) {
        self.rotate(now);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        if let Some(histogram) = self.current.as_mut() {
            histogram.saturating_record(micros);
            return;
        }
        if let Ok(mut histogram) = Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_FIGURES) {
            histogram.saturating_record(micros);
            self.current = Some(histogram);
        }
    }

    /// The `q` quantile (0 to 1) of the recent past, or `None` with no samples.
    pub fn quantile(&mut self, now: Instant, q: f64) -> Option<Duration> {
        self.rotate(now);
        let mut merged = self.current.clone().or_else(|| self.previous.clone())?;
        if let (Some(_), Some(previous)) = (&self.current, &self.previous) {
            merged.add(previous).ok()?;
        }
        (!merged.is_empty()).then(|| Duration::from_micros(merged.value_at_quantile(q)))
    }

    fn rotate(&mut self, now: Instant) {
        let started = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started);
        if elapsed < self.period {
            return;
        }
        // A long silence leaves nothing recent: drop both periods.
        self.previous = if elapsed < self.period * 2 {
            self.current.take()
        } else {
            None
        };
        self.current = None;
        self.started = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quantiles_cover_the_recent_past_only() {
        let t0 = Instant::now();
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        assert_eq!(window.quantile(t0, 0.5), None);
        for ms in 1..=100 {
            window.record(t0, Duration::from_millis(ms));
        }
        let p50 = window.quantile(t0, 0.5).unwrap();
        assert!((49..=51).contains(&p50.as_millis()), "{p50:?}");
        let p99 = window.quantile(t0 + Duration::from_secs(12), 0.99).unwrap();
        assert!(
            (98..=100).contains(&p99.as_millis()),
            "previous period still counts: {p99:?}"
        );
        assert_eq!(
            window.quantile(t0 + Duration::from_secs(45), 0.5),
            None,
            "old samples age out"
        );
    }
}
