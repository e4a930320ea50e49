//! What a run prints: a progress line every second (stderr, so stdout holds only the summary),
//! the final summary as text, and the same summary as JSON for scripts and plots.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds from 1 µs to 60 s with 3 significant digits: exact
/// enough for sub-millisecond calls, and wide enough for a stalled server.
pub(crate) fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("invalid histogram bounds")
}

/// Call latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    /// Reads the percentiles out of a histogram of microseconds.
    pub(crate) fn from_micros(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            samples: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Everything a run measured, and the settings that produced it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// `submit` or `batch`.
    pub(crate) mode: &'static str,
    /// Which server was measured (in-process and its database, or the target URL).
    pub(crate) server: String,
    pub(crate) concurrency: usize,
    pub(crate) channels: usize,
    /// Notifications per call (1 in submit mode).
    pub(crate) batch_size: usize,
    pub(crate) customers: usize,
    pub(crate) payload_bytes: usize,
    /// Whether customers were unpaused and delivered to while intake was measured.
    pub(crate) deliver: bool,
    /// The open-loop schedule in calls/s (`--rate`), or `None` for closed loop.
    pub(crate) offered_calls_per_sec: Option<f64>,
    pub(crate) warmup_secs: f64,
    pub(crate) duration_secs: f64,
    /// Calls that completed inside the measured window (errors included).
    pub(crate) calls: u64,
    /// Notifications newly accepted inside the measured window.
    pub(crate) accepted: u64,
    pub(crate) accepted_per_sec: f64,
    pub(crate) calls_per_sec: f64,
    /// Latency of the successful calls (for `--rate`: from the scheduled send time).
    pub(crate) latency: Latency,
    /// Errors by kind: a gRPC code for failed calls, `item <code>` for rejected batch items.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Webhooks the receiver got inside the measured window (`--deliver` only).
    pub(crate) delivered: Option<u64>,
}

/// What one progress line shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Since the callers started.
    pub(crate) elapsed: Duration,
    pub(crate) warming_up: bool,
    /// Notifications accepted so far, warmup included.
    pub(crate) accepted: u64,
    /// Notifications accepted per second since the previous line.
    pub(crate) rate: f64,
    /// The slowest call since the previous line.
    pub(crate) max_latency: Duration,
    /// Errors so far, warmup included.
    pub(crate) errors: u64,
}

/// Prints one progress line to stderr.
pub(crate) fn progress(p: Progress) {
    eprintln!(
        "[{:>5.1}s]{} accepted {:>10}  {:>8.0}/s  max {:>7.1} ms  errors {}",
        p.elapsed.as_secs_f64(),
        if p.warming_up { " (warmup)" } else { "" },
        p.accepted,
        p.rate,
        p.max_latency.as_secs_f64() * 1000.0,
        p.errors
    );
}

/// Prints the summary to stdout.
pub(crate) fn print(summary: &Summary) {
    let s = summary;
    println!();
    println!("server:        {}", s.server);
    println!(
        "mode:          {} (concurrency {}, channels {}, batch size {}, {} customers, {}-byte payloads{})",
        s.mode,
        s.concurrency,
        s.channels,
        s.batch_size,
        s.customers,
        s.payload_bytes,
        if s.deliver { ", delivering" } else { "" }
    );
    match s.offered_calls_per_sec {
        Some(rate) => println!("load:          open loop, {rate:.0} calls/s offered"),
        None => println!("load:          closed loop"),
    }
    println!(
        "duration:      {:.1}s measured after {:.1}s warmup",
        s.duration_secs, s.warmup_secs
    );
    println!("accepted:      {} notifications", s.accepted);
    println!("accepted/s:    {:.0}", s.accepted_per_sec);
    println!("calls/s:       {:.0} ({} calls)", s.calls_per_sec, s.calls);
    let l = &s.latency;
    println!(
        "latency (ms):  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}  ({} calls)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, l.samples
    );
    if s.errors.is_empty() {
        println!("errors:        none");
    } else {
        let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("errors:        {}", errors.join(", "));
    }
    if let Some(delivered) = s.delivered {
        println!(
            "delivered:     {delivered} ({:.0}/s)",
            delivered as f64 / s.duration_secs
        );
    }
}

/// Writes a summary (any experiment's) as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, summary: &impl Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(summary).context("cannot encode the summary")?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
}
