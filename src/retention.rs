//! The retention job: keeps the live table to the inbox window and the archive to its own.
//!
//! Every `interval` it moves finished notifications older than the inbox retention into the
//! archive, then purges the archive of what is older than the archive retention — in batches
//! of `batch` rows with a `pause` between them, so intake (which shares SQLite's one writer)
//! never waits behind more than one small batch.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{EpochMillis, now_millis};
use crate::store::{self, Store};
use crate::telemetry::metrics::Metrics;

/// How long notifications are kept, and how the job paces itself.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// `ListNotifications` serves this window; older finished notifications are archived.
    pub inbox: Duration,
    /// Archived notifications are purged once this old (counted from creation).
    pub archive: Duration,
    /// Time between passes; zero turns the job off.
    pub interval: Duration,
    /// Rows per transaction.
    pub batch: usize,
    /// Rest between batches.
    pub pause: Duration,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    pub archived: u64,
    pub purged: u64,
}

/// Runs passes every `settings.interval` (the first one interval after start) until `stop`.
pub(crate) async fn run(
    store: Store,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    if settings.interval.is_zero() {
        tracing::info!("retention job off (--retention-interval 0)");
        return;
    }
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.interval,
        settings.interval,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        metrics.retention().started();
        let started = tokio::time::Instant::now();
        let result = pass(&store, &settings, &metrics, &stop).await;
        metrics.retention().finished();
        match result {
            Ok(done) => tracing::info!(
                archived = done.archived,
                purged = done.purged,
                took_ms = started.elapsed().as_millis(),
                "retention pass finished"
            ),
            // The next pass starts where this one stopped; nothing is half-moved.
            Err(err) => tracing::warn!(error = %err, "retention pass failed"),
        }
    }
}

/// One pass: archive, then purge, each in batches, stopping early at shutdown.
pub(crate) async fn pass(
    store: &Store,
    settings: &RetentionSettings,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<Pass, store::Error> {
    let now = now_millis();
    let mut done = Pass::default();
    let inbox_cutoff = cutoff(now, settings.inbox);
    while !stop.is_cancelled() {
        let moved = store.archive_finished(inbox_cutoff, settings.batch).await?;
        metrics.retention().archived(moved);
        done.archived += moved;
        if moved < settings.batch as u64 {
            break;
        }
        rest(settings.pause, stop).await;
    }
    let archive_cutoff = cutoff(now, settings.archive);
    while !stop.is_cancelled() {
        let purged = store.purge_archive(archive_cutoff, settings.batch).await?;
        metrics.retention().purged(purged);
        done.purged += purged;
        if purged < settings.batch as u64 {
            break;
        }
        rest(settings.pause, stop).await;
    }
    Ok(done)
}

/// The creation time before which a notification is older than `age`.
fn cutoff(now: EpochMillis, age: Duration) -> EpochMillis {
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

async fn rest(pause: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}
