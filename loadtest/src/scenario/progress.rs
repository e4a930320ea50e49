//! The progress line a run prints once a second.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::load;
use super::spec::Scenario;
use crate::arrivals::Arrivals;

/// The progress line, once a second while the load runs and drains.
pub(super) struct Progress {
    label: String,
    start: Instant,
    load_end: Instant,
    warmup_end: Instant,
    ledger: Arc<load::Ledger>,
    arrivals: Vec<Arc<Arrivals>>,
}

impl Progress {
    pub(super) fn new(
        label: &str,
        start: Instant,
        scenario: &Scenario,
        ledger: Arc<load::Ledger>,
        arrivals: Vec<Arc<Arrivals>>,
    ) -> Self {
        Self {
            label: label.to_owned(),
            start,
            load_end: start + scenario.duration.0,
            warmup_end: start + scenario.warmup.0,
            ledger,
            arrivals,
        }
    }

    pub(super) async fn run(self) {
        let mut ticker =
            tokio::time::interval_at(self.start + Duration::from_secs(1), Duration::from_secs(1));
        let mut before = 0;
        loop {
            let now = ticker.tick().await;
            let delivered: u64 = self.arrivals.iter().map(|a| a.unique()).sum();
            let phase = if now <= self.warmup_end {
                "warmup"
            } else if now <= self.load_end {
                "load"
            } else {
                "drain"
            };
            eprintln!(
                "[{:>4.0}s] {} {phase:<6} offered {:>8}  accepted {:>8}  delivered {:>8} ({:>6}/s)  submit errors {}",
                (now - self.start).as_secs_f64(),
                self.label,
                self.ledger.offered_total(),
                self.ledger.accepted_total(),
                delivered,
                delivered - before,
                self.ledger.error_total()
            );
            before = delivered;
        }
    }
}
