//! The retention job's counters on the `/metrics` page.

use std::sync::atomic::{AtomicU64, Ordering};

use super::exposition::{Exposition, Kind};

/// What the retention job did: rows archived and purged, passes, and whether one is running
/// (so a load test or an SRE can line latency up with it).
#[derive(Debug, Default)]
pub struct RetentionCounters {
    archived: AtomicU64,
    purged: AtomicU64,
    passes: AtomicU64,
    running: AtomicU64,
}

impl RetentionCounters {
    pub fn started(&self) {
        self.running.store(1, Ordering::Relaxed);
    }

    pub fn finished(&self) {
        self.running.store(0, Ordering::Relaxed);
        self.passes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn archived(&self, rows: u64) {
        self.archived.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn purged(&self, rows: u64) {
        self.purged.fetch_add(rows, Ordering::Relaxed);
    }

    pub(super) fn render(&self, page: &mut Exposition) {
        let families = [
            (
                "floodgate_retention_archived_total",
                Kind::Counter,
                "Finished notifications moved from the live table to the archive.",
                &self.archived,
            ),
            (
                "floodgate_retention_purged_total",
                Kind::Counter,
                "Archived notifications deleted (or dropped with their partition) after the archive retention.",
                &self.purged,
            ),
            (
                "floodgate_retention_passes_total",
                Kind::Counter,
                "Retention passes completed (successful or not).",
                &self.passes,
            ),
            (
                "floodgate_retention_running",
                Kind::Gauge,
                "1 while a retention pass runs.",
                &self.running,
            ),
        ];
        for (name, kind, help, value) in families {
            page.family(name, kind, help);
            page.sample(name, &[], value.load(Ordering::Relaxed) as f64);
        }
    }
}
