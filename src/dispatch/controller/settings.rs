//! The controller's one configurable part, [`ControllerSettings`], and the named constants that
//! nobody configures, each with the reason for its value. docs/controller.md lists them all.

use std::time::Duration;

/// What an operator may set (`--max-in-flight-per-customer`, `--tier-fast`, `--tier-medium`).
/// Everything else is a named constant below: measured values, not knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerSettings {
    /// Highest concurrency limit ever set. Default 1000: far above what one customer system
    /// should need, low enough that a bug cannot open thousands of connections.
    pub max_limit: f64,
    /// Lowest rate, deliveries/s, of the fast tier. Default 100.
    pub fast_threshold: f64,
    /// Lowest rate, deliveries/s, of the medium tier; below it is slow. Default 10.
    pub medium_threshold: f64,
}

impl ControllerSettings {
    /// The documented defaults.
    pub const fn defaults() -> Self {
        Self {
            max_limit: 1000.0,
            fast_threshold: 100.0,
            medium_threshold: 10.0,
        }
    }
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self::defaults()
    }
}

// ---- limits and rates -----------------------------------------------------------------------

/// Concurrency limit at start and after the circuit closes: a customer system we know nothing
/// about gets one attempt at a time, and slow start doubles from there in a few round trips.
pub(super) const INITIAL_LIMIT: f64 = 1.0;
/// Smallest limit ever held (a limit of 0 would never send again).
pub(super) const MIN_LIMIT: f64 = 1e-3;
/// Lowest pace, deliveries/s, congestion can push a live system down to: one attempt per 5 s
/// is slow enough for a system that answers 429 to nearly everything, fast enough to notice
/// its recovery.
pub(super) const MIN_RATE: f64 = 0.2;
/// RTT assumed until the first window is measured (a typical webhook round trip); used only to
/// turn rates into limits.
pub(super) const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Shortest RTT taken at face value, so ratios stay finite when an attempt reports zero time.
pub(super) const MIN_RTT_SECS: f64 = 1e-6;
/// Additive increase per clear window before any capacity is known (classic AIMD); scaled down
/// in proportion below a limit of 1.
pub(super) const INCREASE_STEP: f64 = 1.0;
/// Multiplicative decrease on a failure (CUBIC's β): deep enough to drain a queue that
/// overflowed, shallower than Reno's 0.5 so one failed pod does not halve a healthy system.
pub(super) const BACKOFF_RATIO: f64 = 0.7;
/// On rising RTT the limit drops to this share of the estimated queue-free limit: landing a
/// little under capacity drains the queue and re-measures the baseline each cycle (BBR's drain).
pub(super) const DRAIN: f64 = 0.9;
/// Deepest single decrease on rising RTT (Gradient2, Envoy): one noisy window cannot crash the
/// limit; a real capacity drop takes a few windows.
pub(super) const MIN_GRADIENT: f64 = 0.5;
/// A latency cut is tested for being spurious only if it took concurrency down by at least a
/// fifth: shallower cuts change the RTT too little to tell queueing from a slower system.
pub(super) const SPURIOUS_CUT_DEPTH: f64 = 0.8;
/// Consecutive congested windows after which the current RTT becomes the baseline: decreasing
/// did not bring it down, so the system itself got slower (a 2⁸-fold drop still resolves by
/// decreasing first).
pub(super) const REBASELINE_AFTER: u32 = 8;

// ---- probing above the break point --------------------------------------------------------

/// First probe step above the last measured capacity, as a share of it, per clear window: the
/// limit lingers near capacity (CUBIC's plateau) instead of cycling through it.
pub(super) const PROBE_STEP: f64 = 0.01;
/// Growth of the probe step per clear window above capacity (CUBIC's convex part): a system that
/// really gained capacity is found in tens of windows, not hundreds.
pub(super) const PROBE_ACCELERATION: f64 = 1.1;

// ---- measurement ------------------------------------------------------------------------------

/// A window is congested when its mean RTT exceeds the baseline by this share plus the noise
/// allowance: at capacity C, five percent of C waiting in the system's queue.
pub(super) const RTT_TOLERANCE: f64 = 0.05;
/// Extra tolerance for noise, in standard errors of the window's mean RTT: a window of few
/// samples needs a clear rise, a window of many a small one; false alarms stay rare.
pub(super) const RTT_NOISE_ALLOWANCE: f64 = 3.0;
/// Fewest attempts an RTT rise must imply waiting in the system's queue (Vegas's estimate) to
/// count as congestion: one waiting attempt, less some noise.
pub(super) const MIN_QUEUE: f64 = 0.75;
/// Weight of each success in the recent RTT and its variance (EWMAs).
pub(super) const RTT_EWMA_ALPHA: f64 = 0.05;
/// Weight of a queue-free window's mean RTT in the baseline: a few cycles to follow a change.
pub(super) const BASELINE_WEIGHT: f64 = 0.25;
/// Weight of any other clear window that is clearly faster than the baseline: a system that
/// got faster is noticed, but noise-low windows do not drag the baseline down.
pub(super) const BASELINE_FALL: f64 = 0.05;
/// Smallest cohort: fewer make the mean too noisy to judge. The early look happens at this
/// many successes. The first window, which only measures the baseline (there is nothing to judge
/// it against), takes half as many: it runs at the starting limit, often one attempt at a time,
/// where each sample costs a whole round trip. Below this many in flight, slow start doubles per
/// round trip rather than per window (`limit.rs`).
pub(super) const WINDOW_MIN_SAMPLES: u32 = 8;
/// Cohort size as a share of the limit: one round trip of sends.
pub(super) const WINDOW_FILL: f64 = 1.0;
/// Largest cohort, as a share of the limit, when noisy RTTs call for more samples.
pub(super) const WINDOW_MAX_FILL: f64 = 4.0;
/// A window's stragglers are waited for this many RTTs after its last send, then it is judged
/// without them (an attempt whose outcome is never reported must not stall the controller).
pub(super) const STRAGGLER_RTTS: f64 = 4.0;

// ---- pacing and pauses --------------------------------------------------------------------

/// Sends are spaced at up to this many times the rate (Linux TCP paces at 1.2 × cwnd/RTT), so
/// the limit, not the pacer, binds and the "limit reached" signal stays honest.
pub(super) const PACING_GAIN: f64 = 1.25;
/// Sending credit the pacer may save while idle: timers fire about once a millisecond, so
/// strict spacing would cap a fast system near 1000/s.
pub(super) const PACING_BURST: Duration = Duration::from_millis(10);
/// Longest `Retry-After` honoured (the retry policy's longest backoff): a mistaken header of a
/// day must not silence a customer system for a day.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How soon to re-ask when only the caller can end the wait (limit reached, probe in flight,
/// operator pause); callers also re-ask when an attempt completes.
pub(super) const RECHECK: Duration = Duration::from_millis(50);
/// Longest single wait the controller asks for; keeps `Instant` arithmetic far from overflow.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

// ---- circuit breaker ----------------------------------------------------------------------

/// Consecutive failures that open the circuit: fewer trips on a blip, more floods a dead system.
pub(super) const CIRCUIT_FAILURES: u32 = 5;
/// First cool-down of an open circuit; doubles after each failed probe.
pub(super) const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(5);
/// Longest cool-down: a dead system gets one probe every 5 minutes at most.
pub(super) const CIRCUIT_MAX_COOLDOWN: Duration = Duration::from_secs(300);
/// A probe whose outcome is not reported within this is presumed lost and another may go:
/// longer than any sane attempt timeout, so only a caller bug can trigger it.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

// ---- tiers ------------------------------------------------------------------------------------

/// Starting rate, deliveries/s, for a customer configured to start slow.
pub(super) const SLOW_TIER_START_RATE: f64 = 2.0;
/// Hysteresis band around each threshold, as a share of it: a rate must fall 10% below a
/// threshold to demote and rise 10% above it to promote.
pub(super) const TIER_HYSTERESIS: f64 = 0.1;
/// How long the rate must stay below the band to demote: quick, demotion is the safe direction.
pub(super) const DEMOTE_AFTER: Duration = Duration::from_secs(2);
/// How long the rate must stay above the band to promote: earned by a sustained good period, so
/// tiers do not flap on a noisy RTT (in slow start `DEMOTE_AFTER` suffices).
pub(super) const PROMOTE_AFTER: Duration = Duration::from_secs(60);
/// Tier changes kept between two `take_tier_changes` calls; the oldest is dropped beyond this.
pub(super) const MAX_PENDING_TIER_CHANGES: usize = 16;

// ---- memory of the break point --------------------------------------------------------------

/// First hold after a failure: no probe above the break point for this long. Ten seconds is
/// hundreds of round trips for a webhook, so a hard cap costs one probe per ten seconds at most.
pub(super) const BREAK_HOLD: Duration = Duration::from_secs(10);
/// Longest hold: after repeated failed probes, one probe every five minutes (the circuit's
/// longest cool-down) finds a system that gained capacity soon enough.
pub(super) const MAX_BREAK_HOLD: Duration = Duration::from_secs(300);
/// A `Retry-After` of R holds the limit below the break point for at least this many times R:
/// the system said how long to stay away, and asking again in R would buy another pause.
pub(super) const RETRY_AFTER_HOLD: u32 = 10;
/// Share of attempts that may be probes above the break point: 1%, so a thousand one-worker
/// systems cannot each spend several percent of their requests finding out what they know.
pub(super) const PROBE_SHARE: f64 = 0.01;
