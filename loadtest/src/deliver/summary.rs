//! What a `deliver` run prints: a progress line every second (stderr, so stdout holds only the
//! summary), the final summary as text, and the same summary as JSON.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::caller::Live;
use crate::ceiling::Ceiling;
use crate::receiver_process::Counts;
use crate::report::Latency;

/// What happened inside the measured window.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowTotals {
    /// Notifications that first arrived.
    pub(super) delivered: u64,
    /// CPU time floodgate used.
    pub(super) server_cpu: Duration,
    /// CPU time the receiver process used.
    pub(super) receiver_cpu: Duration,
}

/// Everything a run measured, and the settings that produced it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Summary {
    /// The floodgate processes and their database.
    pub(super) server: String,
    /// `--nodes`: floodgate nodes of one cluster the callers are spread over.
    pub(super) nodes: usize,
    pub(super) customers: usize,
    pub(super) receivers: usize,
    pub(super) callers: usize,
    pub(super) batch_size: usize,
    pub(super) payload_bytes: usize,
    /// `--rate`: notifications/s on the schedule; `None` with `--closed-loop`.
    pub(super) offered_per_sec: Option<f64>,
    pub(super) warmup_secs: f64,
    pub(super) duration_secs: f64,
    /// SubmitBatch calls completed inside the measured window (errors included).
    pub(super) calls: u64,
    /// Notifications newly accepted by calls completed inside the window.
    pub(super) accepted: u64,
    pub(super) accepted_per_sec: f64,
    /// Notifications that first arrived at a receiver inside the window.
    pub(super) delivered: u64,
    pub(super) delivered_per_sec: f64,
    /// SubmitBatch latency from each call's scheduled time, inside the window.
    pub(super) submit_latency: Latency,
    /// `--probe-rate`: unary Submit calls/s beside the batches.
    pub(super) probe_rate: f64,
    /// Unary Submit latency from each call's scheduled time, inside the window.
    pub(super) probe_latency: Latency,
    /// floodgate's CPU time inside the window per notification delivered in it.
    pub(super) server_cpu_us_per_delivered: f64,
    /// floodgate's CPU time (all nodes) inside the window per second of it: cores busy (of the
    /// machine's 2).
    pub(super) server_cores: f64,
    /// The receiver process's CPU time per notification delivered.
    pub(super) receiver_cpu_us_per_delivered: f64,
    /// The bare HTTP ceiling measured at the start of the run (`--ceiling`).
    pub(super) ceiling: Option<Ceiling>,
    /// From the send time stamped in the payload to the first arrival, for notifications sent
    /// after the warmup that had arrived by the end (after the drain, with `--drain`).
    pub(super) end_to_end: Latency,
    /// Notifications the schedule called for, warmup included.
    pub(super) offered_total: u64,
    /// Notifications handed to calls, warmup included: below `offered_total` when the callers
    /// fell behind the schedule.
    pub(super) sent_total: u64,
    /// Notifications accepted, warmup included.
    pub(super) accepted_total: u64,
    /// Notifications arrived when the offering stopped (each once).
    pub(super) delivered_total: u64,
    /// Accepted but not arrived when the offering stopped.
    pub(super) backlog_at_end: u64,
    /// Arrivals of a webhook id that had already arrived (by the end of the run).
    pub(super) duplicates: u64,
    /// Arrivals without a `webhook-id`, which cannot be counted once (should be 0).
    pub(super) without_id: u64,
    /// Submit errors by kind: a gRPC code for failed calls, `item <code>` for rejected items.
    pub(super) errors: BTreeMap<String, u64>,
    /// `--drain` only.
    pub(super) drain: Option<Drain>,
}

/// How the drain went.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Drain {
    /// Everything accepted arrived before --drain-timeout.
    pub(super) drained: bool,
    /// From the end of the offering until the last arrival (or the timeout).
    pub(super) secs: f64,
    /// Accepted but not arrived when the drain ended.
    pub(super) backlog_left: u64,
}

/// What one progress line shows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    elapsed: Duration,
    /// `warmup`, `drain`, or empty while measuring.
    phase: &'static str,
    /// Notifications the schedule called for so far.
    offered: u64,
    accepted: u64,
    delivered: u64,
    /// First arrivals per second since the previous line.
    delivered_rate: f64,
    duplicates: u64,
    errors: u64,
}

impl Progress {
    /// A line from the live counters and the receivers' counts; `elapsed` is since the callers
    /// started.
    pub(super) fn new(
        offered: u64,
        accepted: u64,
        live: &Live,
        counts: &Counts,
        elapsed: Duration,
        phase: &'static str,
        delivered_rate: f64,
    ) -> Self {
        Self {
            elapsed,
            phase,
            offered,
            accepted,
            delivered: counts.unique,
            delivered_rate,
            duplicates: counts.duplicates,
            errors: live.errors.load(Ordering::Relaxed),
        }
    }

    /// Prints the line to stderr.
    pub(super) fn print(&self) {
        eprintln!(
            "[{:>5.1}s] {:<6} offered {:>9}  accepted {:>9}  delivered {:>9} {:>8.0}/s  backlog {:>8}  dup {}  errors {}",
            self.elapsed.as_secs_f64(),
            self.phase,
            self.offered,
            self.accepted,
            self.delivered,
            self.delivered_rate,
            self.accepted.saturating_sub(self.delivered),
            self.duplicates,
            self.errors
        );
    }
}

/// Prints the summary to stdout.
pub(super) fn print(s: &Summary) {
    println!();
    println!("server:        {}", s.server);
    println!(
        "setup:         {} customers on {} always-200 receivers; {} callers, SubmitBatch of {}, {}-byte payloads",
        s.customers, s.receivers, s.callers, s.batch_size, s.payload_bytes
    );
    match s.offered_per_sec {
        Some(rate) => println!("load:          open loop, {rate:.0} notifications/s offered"),
        None => println!(
            "load:          closed loop, each caller's next batch as soon as the last is answered"
        ),
    }
    println!(
        "duration:      {:.1}s measured after {:.1}s warmup",
        s.duration_secs, s.warmup_secs
    );
    println!(
        "accepted/s:    {:.0} ({} notifications, {} calls)",
        s.accepted_per_sec, s.accepted, s.calls
    );
    println!(
        "delivered/s:   {:.0} ({} first arrivals)",
        s.delivered_per_sec, s.delivered
    );
    print_latency("submit batch:", &s.submit_latency, "calls");
    if s.probe_rate > 0.0 {
        print_latency("submit probe:", &s.probe_latency, "unary calls");
    }
    print_latency("end-to-end:", &s.end_to_end, "notifications");
    println!(
        "floodgate CPU: {:.1} µs per delivered notification ({:.2} cores busy); receivers {:.1} µs",
        s.server_cpu_us_per_delivered, s.server_cores, s.receiver_cpu_us_per_delivered
    );
    if let Some(ceiling) = &s.ceiling {
        println!("ceiling:       {}", ceiling.describe());
        println!(
            "of ceiling:    delivered/s is {:.1}% of the bare HTTP ceiling",
            100.0 * s.delivered_per_sec / ceiling.requests_per_sec
        );
    }
    println!(
        "offering end:  {} offered, {} sent, {} accepted, {} arrived, backlog {}",
        s.offered_total, s.sent_total, s.accepted_total, s.delivered_total, s.backlog_at_end
    );
    match &s.drain {
        Some(d) if d.drained => println!("drain:         everything arrived in {:.2}s", d.secs),
        Some(d) => println!(
            "drain:         timed out after {:.1}s with {} not arrived",
            d.secs, d.backlog_left
        ),
        None if s.backlog_at_end > 0 => println!(
            "drain:         not waited for (--drain); end-to-end omits the {} still on their way",
            s.backlog_at_end
        ),
        None => {}
    }
    println!(
        "duplicates:    {}{}",
        s.duplicates,
        if s.without_id > 0 {
            format!(" ({} arrivals without a webhook-id)", s.without_id)
        } else {
            String::new()
        }
    );
    if s.errors.is_empty() {
        println!("errors:        none");
    } else {
        let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("errors:        {}", errors.join(", "));
    }
}

fn print_latency(label: &str, l: &Latency, what: &str) {
    if l.samples == 0 {
        println!("{label:<14} no {what} to time");
        return;
    }
    println!(
        "{label:<14} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2} ms  ({} {what})",
        l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, l.samples
    );
}
