//! The per-customer controller: how many deliveries may be in flight to one customer system, and
//! how fast to send, decided from what the system's answers show, not from configuration.
//!
//! It is a pure state machine: no I/O, no clock, no randomness. The caller passes `now` to every
//! call, so tests drive it through simulated time (see the simulator in the tests). One
//! controller is a few hundred bytes of fixed-size state; no field grows with traffic.
//!
//! # Using it
//! Ask [`Controller::permit`] whenever an attempt could start; on [`Permit::Send`] start it and
//! call [`Controller::on_send`]; when it ends, report it with [`Controller::observe`]. Ask again
//! after every outcome (room usually appears then) and at the instant a `WaitUntil` names.
//!
//! # The algorithm
//! The goal is to sit just under what the system can take right now, with almost no errors.
//! The signal is queueing: when we send more than the system serves, attempts wait in its queue
//! and the RTT rises above the system's own queue-free RTT (its *baseline*). So:
//!
//! 1. **Measure in cohorts.** A window is the first N attempts sent after it opens, judged when
//!    all N are back (BBR counts round trips the same way). Judging "the first N to come back"
//!    instead keeps the quick ones and drops the stragglers, which biases every mean low when RTTs
//!    are heavy-tailed; vector counts every response for the same reason, at the cost of judging a
//!    limit on attempts sent under the previous one. N is one round trip of sends (the limit), at
//!    least 8, and up to four round trips when RTTs are noisy: enough samples for the noise
//!    allowance to shrink to the tolerance, `(z·cv/tolerance)²`. One early look at 8 successes
//!    catches a collapse without waiting for a large cohort.
//! 2. **Congested** means the cohort's mean RTT exceeds `baseline × (1 + tolerance + z · standard
//!    error)`, with the standard error measured (an EWMA of the RTT's variance), and the rise
//!    implies at least ~one attempt waiting by Vegas's queue estimate `limit × (1 − baseline/rtt)`.
//!    Vector compares an EWMA against its own past plus 2.5 deviations and Netflix's Gradient2
//!    allows 50%; a test in standard errors is tight when samples are many (C = 200) and safe when
//!    they are few, and the Vegas term keeps noise from passing for a queue at small limits.
//! 3. **The baseline** is the mean RTT of *queue-free* windows: those run at or below `drain` × the
//!    measured capacity, at one attempt at a time, or in slow start before any congestion. Min-RTT
//!    (Envoy, Vegas) is biased low by jitter; an EWMA of all windows (vector, Gradient2) creeps up
//!    with a slowly growing queue. Every decrease lands a little under capacity (`drain` 0.9), so
//!    each cycle re-measures the baseline for free: Envoy's periodic minRTT probe and BBR's
//!    ProbeRTT without their dips. Queue-free windows always count, their mean capped at the
//!    congestion threshold, so noise-high windows are not censored (which would bias it low).
//! 4. **Decrease on rising RTT by the gradient**: the capacity estimate is `K = concurrency ×
//!    baseline / rtt` (Gradient2, Envoy), and the limit drops to `drain × K`, at most halving in
//!    one window. Landing at capacity rather than at `0.9 × limit` keeps throughput up (goodput
//!    98% in the simulator) and the queue short.
//! 5. **Decrease on failure** (overload, timeout, connection or server error) multiplicatively by
//!    `backoff_ratio` 0.7, at once, and at most once per window: an attempt sent before the last
//!    decrease was sent at the old limit and cannot decrease again (TCP NewReno's rule).
//! 6. **Increase only when the limit was reached** (the window's cohort found the limit full) and
//!    the window was clear. Slow start doubles until the first congestion (TCP); a configured start
//!    tier caps it at the next tier, and after the circuit closes it stops at half the old rate
//!    (TCP's ssthresh). After that, growth is CUBIC-shaped around the measured capacity K: back to
//!    K within a few windows, a plateau there, then probing above it from 1% of K, growing 10% per
//!    clear window. This is what keeps small limits honest: at C = 2 a +1 probe is +50% queueing,
//!    so probes come rarely; at C = 200 the probe soon reaches several attempts per window, and a
//!    system that gained capacity is found in seconds.
//! 7. **A slower system is not a queue.** If a cut of a fifth or more leaves the RTT where it was
//!    (closer to "unchanged" than to what queueing predicts, and nothing failed), the RTT is the
//!    system's new normal: it becomes the baseline and the cuts are undone, as TCP undoes a
//!    spurious window reduction (Eifel, F-RTO). Without this a system that merely got slower would
//!    be throttled to a trickle; vector and Gradient2 instead let the baseline drift with the queue.
//! 8. **Pacing.** `rate = limit / baseline` (what `limit` attempts deliver per second), never above
//!    the ceiling; sends are spaced at 1.25 × that (Linux TCP paces at 1.2 × cwnd/RTT), so the
//!    limit, not the pacer, binds, and bursts after a limit increase are smoothed. A limit below 1
//!    is a duty cycle: one attempt at a time, paced down to `min_rate`. Up to 10 ms of unused
//!    sending credit is kept, because timers fire about once a millisecond.
//! 9. **Retry-After** pauses every send until it has passed (capped at `max_retry_after`).
//! 10. **Circuit breaker.** A run of failures opens it; a failure extends the run only if its
//!     attempt was sent after the run's first failure was seen, so a burst of 503s from one
//!     queue overflow is one event, while a dead system (everything sent after the first failure
//!     fails too) trips at once. Open: nothing is sent for the cool-down. Then one probe at a
//!     time (half-open): success closes the circuit and slow start restarts from
//!     `initial_limit`; failure reopens it for twice as long, up to 5 minutes. A dead system
//!     gets a trickle.
//! 11. **Tiers** (fast ≥ 100/s, medium ≥ 10/s, slow; plus paused and circuit-open) label the
//!     rate with hysteresis: a rate must leave a ±10% band around a threshold, for 2 s to demote
//!     and for 60 s to promote, so a noisy RTT does not make tiers flap. Each change carries a
//!     reason.
//!
//! Measured in the simulator (C workers of 50 ms ± 20%, a queue of C, 503 when it is full): the
//! limit settles within ±20% of C for C = 2, 20 and 200 within 2 s, at 98-99% of capacity with no
//! 503s; it follows a drop from 50 to 10 workers within a second.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Longest single wait the controller asks for; keeps `Instant` arithmetic far from overflow.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Shortest RTT taken at face value, so ratios stay finite when an attempt reports zero time.
const MIN_RTT_SECS: f64 = 1e-6;
/// Smallest limit ever held, whatever the settings say (a limit of 0 would never send again).
const MIN_LIMIT: f64 = 1e-3;
/// Tier changes kept for [`Controller::take_tier_changes`]; the oldest is dropped beyond this.
const MAX_PENDING_TIER_CHANGES: usize = 16;
/// A window's stragglers are waited for this many RTTs after its last send, then it is judged
/// without them (an attempt whose outcome is never reported must not stall the controller).
const STRAGGLER_RTTS: f64 = 4.0;
/// Share of the baseline RTT by which an outcome's computed start (`now − rtt`) may trail its
/// `on_send` instant (the caller's own delays) and still count in the window's cohort.
const START_SLACK: f64 = 0.1;
/// A latency cut is tested for being spurious only if it took concurrency down by at least a
/// fifth: shallower cuts change the RTT too little to tell queueing from a slower system.
const SPURIOUS_CUT_DEPTH: f64 = 0.8;

/// How one delivery attempt ended, as the controller needs to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// 2xx: delivered.
    Success,
    /// 429 or 503: the customer system says it is overloaded; `retry_after` if it said how long.
    Overload {
        /// The customer system's `Retry-After`, if given: nothing is sent before it has passed.
        retry_after: Option<Duration>,
    },
    /// The attempt timed out (a 408 counts as this too).
    Timeout,
    /// Connection refused or reset, DNS failure.
    ConnectionError,
    /// Any other 5xx: counts toward the circuit breaker and the error rate, and as congestion.
    ServerError,
    /// Any other 4xx or a payload error: the notification's fault, not the system's load. Neutral:
    /// it never moves the limit, the rate or the circuit.
    Rejected,
}

impl Signal {
    fn failure(self) -> Option<Failure> {
        match self {
            Self::Overload { .. } => Some(Failure::Overload),
            Self::Timeout => Some(Failure::Timeout),
            Self::ConnectionError => Some(Failure::ConnectionError),
            Self::ServerError => Some(Failure::ServerError),
            Self::Success | Self::Rejected => None,
        }
    }
}

/// The failures that count toward the circuit breaker, the error rate and congestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Overload,
    Timeout,
    ConnectionError,
    ServerError,
}

impl Failure {
    const ALL: [Self; 4] = [
        Self::Overload,
        Self::Timeout,
        Self::ConnectionError,
        Self::ServerError,
    ];

    const fn index(self) -> usize {
        match self {
            Self::Overload => 0,
            Self::Timeout => 1,
            Self::ConnectionError => 2,
            Self::ServerError => 3,
        }
    }

    const fn name(self, plural: bool) -> &'static str {
        match (self, plural) {
            (Self::Overload, false) => "overload answer",
            (Self::Overload, true) => "overload answers",
            (Self::Timeout, false) => "timeout",
            (Self::Timeout, true) => "timeouts",
            (Self::ConnectionError, false) => "connection error",
            (Self::ConnectionError, true) => "connection errors",
            (Self::ServerError, false) => "server error",
            (Self::ServerError, true) => "server errors",
        }
    }
}

/// The controller's tunables. Every field has a documented default (see [`Self::defaults`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerSettings {
    /// Concurrency limit at start and after the circuit closes. Default 1: a customer system we
    /// know nothing about gets one attempt at a time, and slow start doubles from there in a
    /// few round trips (vector starts at 1 too).
    pub initial_limit: f64,
    /// Highest concurrency limit ever set. Default 1000: far above what one customer system
    /// should need, low enough that a bug cannot open thousands of connections.
    pub max_limit: f64,
    /// Lowest pace, deliveries/s, that congestion can push a live customer system down to.
    /// Default 0.2 (one attempt per 5 s): slow enough for a system that answers 429 to nearly
    /// everything, fast enough to notice its recovery. Below about one attempt per RTT the limit
    /// is fractional: one attempt at a time, spaced out by the pacer.
    pub min_rate: f64,
    /// RTT assumed until the first window is measured, used only to turn rates into limits.
    /// Default 100 ms, a typical webhook round trip.
    pub initial_rtt: Duration,
    /// Sends are spaced at up to this many times `rate()`, never above the ceiling. Default 1.25
    /// (Linux TCP paces at 1.2× cwnd/RTT): pacing only smooths bursts, so that the concurrency
    /// limit, not the pacer, is what binds and the "limit reached" signal stays honest.
    pub pacing_gain: f64,
    /// Sending credit a pacer may save while idle. Default 10 ms of sends: timers fire about
    /// once a millisecond, so strict spacing would cap a fast system near 1000/s.
    pub pacing_burst: Duration,
    /// Additive increase per clear window: below the last measured capacity at least half the gap
    /// to it (back to capacity in a few windows), and before any capacity is known. Default 1
    /// (classic AIMD); scaled down in proportion below a limit of 1.
    pub increase_step: f64,
    /// First probe step above the last measured capacity, as a share of it, per clear window.
    /// Default 0.01: the limit lingers near capacity instead of cycling through it (CUBIC's
    /// plateau); at a capacity of 2 or 3, where one more attempt in flight is +33-50%, a probe
    /// comes only every dozen windows.
    pub probe_step: f64,
    /// Growth of the probe step per clear window above capacity. Default 1.1: a system that
    /// really gained capacity is found in tens of windows, not hundreds (CUBIC's convex part).
    pub probe_acceleration: f64,
    /// Multiplicative decrease on overload, timeouts, connection and server errors. Default 0.7
    /// (CUBIC's β): deep enough to drain a queue that overflowed, shallower than Reno's 0.5 so a
    /// single failed pod does not halve a healthy system's throughput.
    pub backoff_ratio: f64,
    /// On rising RTT the limit drops to this share of the estimated queue-free limit. Default 0.9:
    /// landing a little under capacity lets the queue drain and re-measures the baseline each
    /// cycle, as BBR's drain does; this keeps the baseline from creeping up.
    pub drain: f64,
    /// Deepest single decrease on rising RTT. Default 0.5 (Netflix Gradient2, Envoy): one noisy
    /// window cannot crash the limit; a real capacity drop takes a few windows.
    pub min_gradient: f64,
    /// A window is congested when its mean RTT exceeds the baseline by this share plus the noise
    /// allowance. Default 0.05: at capacity C, five percent of C waiting in the system's queue.
    /// It also sets how precise a window must be (see `window_max_fill`).
    pub rtt_tolerance: f64,
    /// Extra tolerance for noise, in standard errors of the window's mean RTT (one RTT's standard
    /// deviation, measured, divided by √samples). Default 3: a window of few samples needs a
    /// clear rise, a window of many a small one; false alarms stay rare even with heavy tails.
    pub rtt_noise_allowance: f64,
    /// Fewest attempts an RTT rise must imply waiting in the customer system's queue to count
    /// as congestion (Vegas's estimate). Default 0.75: one waiting attempt, less some noise; at a
    /// limit of 2 a rise below ~60% is noise, at 200 the RTT tolerance decides.
    pub min_queue: f64,
    /// Weight of each successful attempt in the recent RTT and its variance (EWMAs). Default 0.05.
    pub rtt_ewma_alpha: f64,
    /// Weight of a queue-free window's mean RTT in the baseline (an EWMA). Queue-free windows are
    /// those run at or below `drain` × the measured capacity (the trough after every decrease),
    /// at one attempt at a time, and in slow start before the first congestion. Default 0.25: a
    /// few cycles to follow a change.
    pub baseline_weight: f64,
    /// Weight of any other clear window whose mean RTT is clearly below the baseline (by the same
    /// tolerance and noise allowance as congestion). Default 0.05: a system that got faster is
    /// noticed, but noise-low windows do not drag the baseline down.
    /// Clear windows with higher RTT near capacity never raise it: that is how a baseline creeps
    /// up with a slowly growing queue.
    pub baseline_fall: f64,
    /// Consecutive congested windows after which the current RTT becomes the baseline: decreasing
    /// did not bring it down, so the system itself got slower. Default 8 (a 2⁸-fold capacity drop
    /// still resolves by decreasing first). A slowdown is usually recognised sooner, when one cut
    /// of a fifth or more leaves the RTT unchanged (and the cut is then undone).
    pub rebaseline_after: u32,
    /// Smallest cohort: the attempts sent after a window opens whose outcomes decide it. Default
    /// 8: fewer make the mean too noisy to judge. One early look at the RTT is taken once this
    /// many have succeeded.
    pub window_min_samples: u32,
    /// Cohort size as a share of the limit. Default 1.0: one round trip of sends, so a window
    /// lasts about two round trips (sending the cohort, then its return).
    pub window_fill: f64,
    /// Largest cohort, as a share of the limit, when noisy RTTs call for more samples. Default 4:
    /// heavy-tailed RTTs are judged on four round trips of sends rather than on noise.
    pub window_max_fill: f64,
    /// Consecutive failures (overload, timeout, connection or server error) that open the circuit.
    /// Default 5: fewer trips on a blip, more floods a dead system. A failure extends the run
    /// only if its attempt was sent after the run's first failure came back, so one overflowed
    /// queue answering a burst of 503s does not open the circuit.
    pub circuit_failures: u32,
    /// First cool-down of an open circuit; doubles after each failed probe. Default 5 s.
    pub circuit_cooldown: Duration,
    /// Longest cool-down. Default 5 min: a dead system gets one probe every 5 minutes at most.
    pub circuit_max_cooldown: Duration,
    /// A probe whose outcome is not reported within this is presumed lost and another may go.
    /// Default 2 min: longer than any sane attempt timeout; only a caller bug can trigger it.
    pub probe_timeout: Duration,
    /// Longest `Retry-After` honoured. Default 10 min (the retry policy's longest backoff): a
    /// mistaken header of a day must not silence a customer system for a day.
    pub max_retry_after: Duration,
    /// How soon to re-ask when only the caller can end the wait (limit reached, probe in
    /// flight, operator pause). Default 50 ms; callers also re-ask when an attempt completes.
    pub recheck: Duration,
    /// Lowest rate, deliveries/s, of the fast tier. Default 100.
    pub fast_threshold: f64,
    /// Lowest rate, deliveries/s, of the medium tier; below it is slow. Default 10.
    pub medium_threshold: f64,
    /// Starting rate for a customer configured to start slow. Default 2/s.
    pub slow_tier_start_rate: f64,
    /// Hysteresis band around each threshold, as a share of it. Default 0.1: a rate must fall
    /// 10% below a threshold to demote and rise 10% above it to promote.
    pub tier_hysteresis: f64,
    /// How long the rate must stay below the band to demote. Default 2 s: quick, as demotion is
    /// the safe direction.
    pub demote_after: Duration,
    /// How long the rate must stay above the band to promote. Default 60 s: promotions are earned
    /// by a sustained good period, so tiers do not flap on a noisy RTT. During slow start (the
    /// controller is still measuring, and the rate climbs by design) there are no demotions and
    /// promotions need only `demote_after`.
    pub promote_after: Duration,
    /// Span of the error rate in snapshots. Default 10 s.
    pub error_window: Duration,
}

impl ControllerSettings {
    /// The documented defaults.
    pub const fn defaults() -> Self {
        Self {
            initial_limit: 1.0,
            max_limit: 1000.0,
            min_rate: 0.2,
            initial_rtt: Duration::from_millis(100),
            pacing_gain: 1.25,
            pacing_burst: Duration::from_millis(10),
            increase_step: 1.0,
            probe_step: 0.01,
            probe_acceleration: 1.1,
            backoff_ratio: 0.7,
            drain: 0.9,
            min_gradient: 0.5,
            rtt_tolerance: 0.05,
            rtt_noise_allowance: 3.0,
            min_queue: 0.75,
            rtt_ewma_alpha: 0.05,
            baseline_weight: 0.25,
            baseline_fall: 0.05,
            rebaseline_after: 8,
            window_min_samples: 8,
            window_fill: 1.0,
            window_max_fill: 4.0,
            circuit_failures: 5,
            circuit_cooldown: Duration::from_secs(5),
            circuit_max_cooldown: Duration::from_secs(300),
            probe_timeout: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(600),
            recheck: Duration::from_millis(50),
            fast_threshold: 100.0,
            medium_threshold: 10.0,
            slow_tier_start_rate: 2.0,
            tier_hysteresis: 0.1,
            demote_after: Duration::from_secs(2),
            promote_after: Duration::from_secs(60),
            error_window: Duration::from_secs(10),
        }
    }
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self::defaults()
    }
}

/// A customer system's speed class: a label for people and dashboards, derived from the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Rate at or above the fast threshold.
    Fast,
    /// Rate at or above the medium threshold.
    Medium,
    /// Rate below the medium threshold.
    Slow,
    /// Paused by an operator: nothing is sent.
    Paused,
    /// The circuit is open (or half-open, probing): nothing but probes is sent.
    CircuitOpen,
}

impl Tier {
    /// Every tier, for metrics that list them all.
    pub const ALL: [Tier; 5] = [
        Self::Fast,
        Self::Medium,
        Self::Slow,
        Self::Paused,
        Self::CircuitOpen,
    ];

    /// The tier's name in logs, metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Medium => "medium",
            Self::Slow => "slow",
            Self::Paused => "paused",
            Self::CircuitOpen => "circuit_open",
        }
    }

    /// Speed order of the rate tiers (slow 0, medium 1, fast 2); other tiers have none.
    const fn rank(self) -> Option<u8> {
        match self {
            Self::Slow => Some(0),
            Self::Medium => Some(1),
            Self::Fast => Some(2),
            Self::Paused | Self::CircuitOpen => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    /// Normal sending.
    Closed,
    /// Nothing is sent until the cool-down has passed; then one probe may go.
    Open,
    /// One probe is (or may be) in flight; its outcome closes or reopens the circuit.
    HalfOpen,
}

/// What the caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Start one attempt now (and call [`Controller::on_send`]).
    Send,
    /// Ask again at this instant, or earlier when an attempt completes.
    WaitUntil(Instant),
}

/// One tier change, for the caller to log and count.
#[derive(Clone, Debug, PartialEq)]
pub struct TierChange {
    /// When it happened.
    pub at: Instant,
    /// The tier before.
    pub from: Tier,
    /// The tier after.
    pub to: Tier,
    /// Why, for people: "rate 4.2/s below medium threshold 10/s".
    pub reason: String,
}

/// The controller's state at a glance, for stats and dashboards.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Concurrency limit.
    pub limit: usize,
    /// Pace, deliveries/s (see [`Controller::rate`]).
    pub rate: f64,
    /// The customer system's own queue-free RTT, once measured.
    pub rtt_baseline: Option<Duration>,
    /// Recent RTT of successful attempts (EWMA), once measured.
    pub rtt_recent: Option<Duration>,
    /// Current tier.
    pub tier: Tier,
    /// Circuit breaker state.
    pub circuit: Circuit,
    /// End of the latest `Retry-After` pause (see [`Controller::paused_until`]).
    pub paused_until: Option<Instant>,
    /// The latest tier change.
    pub last_tier_change: Option<TierChange>,
    /// Share of recent attempts (about the last `error_window`) that failed; `Rejected` excluded.
    pub error_rate: f64,
}

/// One customer system's controller. See the module docs for the algorithm.
#[derive(Clone, Debug)]
pub struct Controller {
    settings: ControllerSettings,
    /// The customer's hard ceiling, deliveries/s.
    ceiling: Option<f64>,
    /// Concurrency limit; fractional, and below 1 a duty cycle the pacer enforces.
    limit: f64,
    /// Queue-free limit measured at the last congestion, if any.
    capacity: Option<f64>,
    /// Current probe step above `capacity`.
    probe: f64,
    slow_start: bool,
    /// Slow start ends at this rate (a configured start tier's upper edge, or half the rate
    /// before the circuit opened).
    slow_start_until: Option<f64>,
    /// A start tier was configured as a rate: keep that rate when the first RTT is measured.
    keep_rate_on_first_baseline: bool,
    rtt: RttStats,
    window: Window,
    /// The latest decrease; outcomes of attempts started before it do not decrease again.
    last_decrease: Instant,
    congested_windows: u32,
    /// The last cut for rising RTT, while the window after it is judged: undone if the RTT did
    /// not respond to it.
    last_cut: Option<LatencyCut>,
    /// Earliest instant the pacer lets the next attempt go.
    pace_next: Instant,
    operator_paused: bool,
    retry_until: Option<Instant>,
    breaker: Breaker,
    errors: ErrorWindow,
    tiers: TierTrack,
}

/// RTT figures, in seconds.
#[derive(Clone, Debug, Default)]
struct RttStats {
    /// The customer system's queue-free RTT.
    baseline: Option<f64>,
    /// EWMA of successful attempts' RTT.
    recent: Option<f64>,
    /// EWMA of (rtt − recent)²: the RTT's variance.
    variance: f64,
}

impl RttStats {
    fn record(&mut self, rtt: f64, alpha: f64) {
        let Some(recent) = self.recent else {
            self.recent = Some(rtt);
            return;
        };
        let deviation = rtt - recent;
        self.variance += alpha * (deviation * deviation - self.variance);
        self.recent = Some(recent + alpha * deviation);
    }

    /// Standard deviation of one RTT relative to the recent RTT (coefficient of variation).
    fn variation(&self) -> f64 {
        self.recent
            .filter(|recent| *recent > 0.0)
            .map_or(0.0, |recent| self.variance.sqrt() / recent)
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

/// The measurement window: a cohort, the first attempts sent after the window opened, judged
/// once they have all come back.
#[derive(Clone, Debug)]
struct Window {
    start: Instant,
    /// Attempts sent into the cohort.
    sent: u32,
    /// When the cohort's last attempt was sent; later sends belong to no window.
    closed_at: Option<Instant>,
    /// Cohort attempts that have come back, whatever their outcome.
    returned: u32,
    /// Cohort attempts that failed (overload, timeout, connection or server error).
    failures: u32,
    /// Cohort successes and the sum of their RTTs (seconds).
    samples: u32,
    rtt_sum: f64,
    /// In-flight attempts reached the limit while the cohort was sent.
    reached: bool,
}

impl Window {
    const fn new(start: Instant) -> Self {
        Self {
            start,
            sent: 0,
            closed_at: None,
            returned: 0,
            failures: 0,
            samples: 0,
            rtt_sum: 0.0,
            reached: false,
        }
    }

    fn mean(&self) -> f64 {
        self.rtt_sum / f64::from(self.samples.max(1))
    }
}

/// Circuit breaker state.
#[derive(Clone, Debug)]
struct Breaker {
    state: Circuit,
    /// Consecutive failures by kind, while closed.
    run: [u32; 4],
    /// When the run's first failure was seen. Later failures extend the run only if their
    /// attempt was sent after that: a burst of failures for attempts already in flight (a queue
    /// that overflowed once) is one event, not a dead system.
    run_since: Option<Instant>,
    opened_at: Instant,
    open_until: Instant,
    /// Cool-down after the next failed probe.
    next_cooldown: Duration,
    probe_in_flight: bool,
    probe_sent_at: Instant,
    /// Rate before opening: slow start after closing stops at half of it.
    rate_before_open: f64,
}

impl Breaker {
    /// Counts a failure toward the run, if it extends it (see `run_since`).
    fn count_failure(&mut self, now: Instant, started: Option<Instant>, kind: Failure) {
        let extends = match self.run_since {
            None => true,
            Some(since) => started.is_some_and(|at| at >= since),
        };
        if extends {
            self.run_since.get_or_insert(now);
            let slot = &mut self.run[kind.index()];
            *slot = slot.saturating_add(1);
        }
    }

    fn reset_run(&mut self) {
        self.run = [0; 4];
        self.run_since = None;
    }

    fn run_total(&self) -> u32 {
        self.run.iter().fold(0, |sum, n| sum.saturating_add(*n))
    }

    /// "5 consecutive connection errors" or "5 consecutive failures (3 timeouts, 2 server errors)".
    fn describe_run(&self) -> String {
        let total = self.run_total();
        let kinds: Vec<(Failure, u32)> = Failure::ALL
            .iter()
            .map(|kind| (*kind, self.run[kind.index()]))
            .filter(|(_, n)| *n > 0)
            .collect();
        if let [(kind, _)] = kinds.as_slice() {
            return format!("{total} consecutive {}", kind.name(total != 1));
        }
        let parts: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| format!("{n} {}", kind.name(*n != 1)))
            .collect();
        format!("{total} consecutive failures ({})", parts.join(", "))
    }
}

/// Attempts and failures in two half-windows: constant memory, about `error_window` of history.
#[derive(Clone, Debug)]
struct ErrorWindow {
    start: Instant,
    current: [u32; 2],
    previous: [u32; 2],
}

impl ErrorWindow {
    fn record(&mut self, now: Instant, span: Duration, failed: bool) {
        let half = span / 2;
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= half.saturating_mul(2) {
            self.previous = [0; 2];
            self.current = [0; 2];
            self.start = now;
        } else if elapsed >= half {
            self.previous = self.current;
            self.current = [0; 2];
            self.start = later(self.start, half);
        }
        self.current[0] = self.current[0].saturating_add(1);
        self.current[1] = self.current[1].saturating_add(u32::from(failed));
    }

    fn rate(&self) -> f64 {
        let attempts = self.current[0].saturating_add(self.previous[0]);
        let failures = self.current[1].saturating_add(self.previous[1]);
        if attempts == 0 {
            return 0.0;
        }
        f64::from(failures) / f64::from(attempts)
    }
}

/// Which way a pending tier move goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    Promote,
    Demote,
}

/// The tier and its hysteresis.
#[derive(Clone, Debug)]
struct TierTrack {
    current: Tier,
    /// A pending rate-tier move, and since when the rate has been beyond the band for it.
    pending: Option<(Move, Instant)>,
    last: Option<TierChange>,
    changes: Vec<TierChange>,
}

impl Controller {
    /// A controller for one customer system. `ceiling`: its max deliveries/s (`None`, or a value
    /// that is not a positive number, means no ceiling). `start_tier`: a configured starting tier;
    /// `None` starts fast, in slow start from `initial_limit`. A rate tier starts at that tier's
    /// lowest rate (slow: `slow_tier_start_rate`) and slow-starts up to the next tier's threshold;
    /// `Paused` starts operator-paused; `CircuitOpen` starts with the circuit open for one cool-down.
    pub fn new(
        settings: ControllerSettings,
        now: Instant,
        ceiling: Option<f64>,
        start_tier: Option<Tier>,
    ) -> Self {
        let limit = settings.initial_limit.max(MIN_LIMIT);
        let mut controller = Self {
            ceiling: sanitize_ceiling(ceiling),
            limit,
            capacity: None,
            probe: 0.0,
            slow_start: true,
            slow_start_until: None,
            keep_rate_on_first_baseline: false,
            rtt: RttStats::default(),
            window: Window::new(now),
            last_decrease: now,
            congested_windows: 0,
            last_cut: None,
            pace_next: now,
            operator_paused: false,
            retry_until: None,
            breaker: Breaker {
                state: Circuit::Closed,
                run: [0; 4],
                run_since: None,
                opened_at: now,
                open_until: now,
                next_cooldown: settings.circuit_cooldown,
                probe_in_flight: false,
                probe_sent_at: now,
                rate_before_open: 0.0,
            },
            errors: ErrorWindow {
                start: now,
                current: [0; 2],
                previous: [0; 2],
            },
            tiers: TierTrack {
                current: Tier::Fast,
                pending: None,
                last: None,
                changes: Vec::new(),
            },
            settings,
        };
        controller.apply_start_tier(now, start_tier);
        controller
    }

    fn apply_start_tier(&mut self, now: Instant, start_tier: Option<Tier>) {
        let s = &self.settings;
        let (rate, until) = match start_tier {
            None => return,
            Some(Tier::Fast) => (s.fast_threshold, None),
            Some(Tier::Medium) => (s.medium_threshold, Some(s.fast_threshold)),
            Some(Tier::Slow) => (s.slow_tier_start_rate, Some(s.medium_threshold)),
            Some(Tier::Paused) => {
                self.operator_paused = true;
                self.tiers.current = Tier::Paused;
                return;
            }
            Some(Tier::CircuitOpen) => {
                self.open_breaker(now, self.settings.circuit_cooldown);
                self.tiers.current = Tier::CircuitOpen;
                return;
            }
        };
        self.limit = self.limit_for_rate(rate).clamp(MIN_LIMIT, s.max_limit);
        self.slow_start_until = until;
        self.keep_rate_on_first_baseline = true;
        self.tiers.current = start_tier.unwrap_or(Tier::Fast);
    }

    /// Changes the customer's ceiling, deliveries/s (`None` or a non-positive value: none).
    pub fn set_ceiling(&mut self, ceiling: Option<f64>) {
        self.ceiling = sanitize_ceiling(ceiling);
    }

    /// Operator pause: while paused the tier is `Paused` and [`Self::permit`] never says `Send`.
    /// Outcomes of attempts already under way are still observed.
    pub fn set_paused(&mut self, paused: bool, now: Instant) {
        if paused == self.operator_paused {
            return;
        }
        self.operator_paused = paused;
        if paused {
            self.set_tier(now, Tier::Paused, "paused by operator".to_owned());
        } else if self.breaker.state == Circuit::Closed {
            let tier = self.rate_tier(self.rate());
            self.set_tier(
                now,
                tier,
                format!("resumed by operator at {:.1}/s", self.rate()),
            );
        } else {
            self.set_tier(
                now,
                Tier::CircuitOpen,
                "resumed by operator; circuit still open".to_owned(),
            );
        }
        self.pace_next = self.pace_next.max(now);
    }

    /// May one more attempt start now, with `in_flight` attempts under way? `Send` only when
    /// not paused, no `Retry-After` pause is active, the circuit allows it (open: no; half-open:
    /// one probe at a time), `in_flight < limit()` and the pacing interval has passed. Otherwise
    /// `WaitUntil` the earliest instant worth asking again. When the wait is for an attempt to
    /// complete (limit reached, probe in flight) or for the operator, that instant is only
    /// `now + recheck`: the caller should also ask again whenever an attempt completes.
    pub fn permit(&self, now: Instant, in_flight: usize) -> Permit {
        if self.operator_paused {
            return Permit::WaitUntil(later(now, self.settings.recheck));
        }
        let mut blocked_until = self.retry_until.filter(|until| *until > now);
        match self.breaker.state {
            Circuit::Open if self.breaker.open_until > now => {
                blocked_until = blocked_until.max(Some(self.breaker.open_until));
            }
            Circuit::Open | Circuit::HalfOpen => return self.probe_permit(now, blocked_until),
            Circuit::Closed => {}
        }
        if let Some(until) = blocked_until {
            return Permit::WaitUntil(until);
        }
        if in_flight >= self.limit() {
            return Permit::WaitUntil(later(now, self.settings.recheck));
        }
        if self.pace_next > now {
            return Permit::WaitUntil(self.pace_next);
        }
        Permit::Send
    }

    /// The permit once the cool-down has passed: one probe at a time, whatever the limit.
    fn probe_permit(&self, now: Instant, blocked_until: Option<Instant>) -> Permit {
        let probe_lost = later(self.breaker.probe_sent_at, self.settings.probe_timeout);
        if let Some(until) = blocked_until {
            Permit::WaitUntil(until)
        } else if self.breaker.probe_in_flight && now < probe_lost {
            Permit::WaitUntil(later(now, self.settings.recheck).min(probe_lost))
        } else {
            Permit::Send
        }
    }

    /// Records that an attempt started; call it right after [`Permit::Send`], with the same
    /// `in_flight` passed to [`Self::permit`] (not counting this attempt).
    pub fn on_send(&mut self, now: Instant, in_flight: usize) {
        self.expire_retry_pause(now);
        match self.breaker.state {
            Circuit::Open if now < self.breaker.open_until => {}
            Circuit::Open | Circuit::HalfOpen => {
                self.breaker.state = Circuit::HalfOpen;
                self.breaker.probe_in_flight = true;
                self.breaker.probe_sent_at = now;
            }
            Circuit::Closed => {
                self.count_send(now, in_flight);
                self.advance_pacer(now);
            }
        }
    }

    /// Counts a send into the window's cohort until the cohort is complete.
    fn count_send(&mut self, now: Instant, in_flight: usize) {
        if self.window.closed_at.is_some() {
            return;
        }
        self.window.sent = self.window.sent.saturating_add(1);
        if in_flight.saturating_add(1) >= self.limit() {
            self.window.reached = true;
        }
        if self.window.sent >= self.samples_needed() {
            self.window.closed_at = Some(now);
        }
    }

    /// Moves the pacer one interval on, keeping at most `pacing_burst` of unused credit.
    fn advance_pacer(&mut self, now: Instant) {
        let credit_floor = now.checked_sub(self.settings.pacing_burst).unwrap_or(now);
        self.pace_next = later(self.pace_next.max(credit_floor), self.pacing_interval());
    }

    /// Records one finished attempt: its round-trip time and how it ended. Every attempt counts,
    /// retries included. `Rejected` moves nothing: it only marks the attempt as back (a window
    /// waits for its attempts; a half-open circuit may send its next probe).
    pub fn observe(&mut self, now: Instant, rtt: Duration, signal: Signal) {
        let started = now.checked_sub(rtt);
        let failure = signal.failure();
        let in_cohort = self.note_return(started, failure.is_some());
        if signal == Signal::Rejected {
            return;
        }
        self.expire_retry_pause(now);
        self.errors
            .record(now, self.settings.error_window, failure.is_some());
        if let Signal::Overload {
            retry_after: Some(wait),
        } = signal
        {
            self.pause_for(now, wait);
        }
        match (self.breaker.state, failure) {
            (Circuit::Closed, None) => self.on_success(now, in_cohort, rtt),
            (Circuit::Closed, Some(kind)) => {
                self.on_failure(now, started, kind);
                if self.breaker.state == Circuit::Closed {
                    self.judge_window(now);
                }
            }
            (Circuit::HalfOpen, outcome) => self.on_probe(now, started, outcome),
            // An attempt sent before the circuit opened: the circuit has already reacted.
            (Circuit::Open, _) => {}
        }
        self.update_rate_tier(now);
    }

    /// Current concurrency limit (at least 1).
    pub fn limit(&self) -> usize {
        // `as` saturates; the limit is finite and at most `max_limit`.
        self.limit.round().max(1.0) as usize
    }

    /// Current pace, deliveries/s: the limit divided by the RTT baseline (what `limit` attempts
    /// deliver per second when each takes the baseline RTT), at least `min_rate`, never above the
    /// ceiling. The pacer spaces sends at up to `pacing_gain` times this, never above the ceiling.
    pub fn rate(&self) -> f64 {
        self.rate_of(self.limit)
    }

    /// Current tier.
    pub fn tier(&self) -> Tier {
        self.tiers.current
    }

    /// Circuit breaker state. It stays `Open` through the cool-down until the probe is sent.
    pub fn circuit(&self) -> Circuit {
        self.breaker.state
    }

    /// End of the active `Retry-After` pause. Cleared when the controller next sees a later time
    /// (a send or an outcome), so it may name an instant just past.
    pub fn paused_until(&self) -> Option<Instant> {
        self.retry_until
    }

    /// Tier changes since the last call, oldest first (at most 16 are kept between calls).
    pub fn take_tier_changes(&mut self) -> Vec<TierChange> {
        std::mem::take(&mut self.tiers.changes)
    }

    /// The controller's state at a glance.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            limit: self.limit(),
            rate: self.rate(),
            rtt_baseline: self.rtt.baseline.and_then(duration),
            rtt_recent: self.rtt.recent.and_then(duration),
            tier: self.tier(),
            circuit: self.circuit(),
            paused_until: self.paused_until(),
            last_tier_change: self.tiers.last.clone(),
            error_rate: self.errors.rate(),
        }
    }

    // ---- measurement ----------------------------------------------------------------------

    /// Notes that an attempt is back, whatever its outcome: in the window's cohort, or as the
    /// half-open circuit's probe. Returns whether it belongs to the cohort.
    fn note_return(&mut self, started: Option<Instant>, failed: bool) -> bool {
        match self.breaker.state {
            Circuit::Closed if self.in_cohort(started) => {
                let w = &mut self.window;
                w.returned = w.returned.saturating_add(1);
                w.failures = w.failures.saturating_add(u32::from(failed));
                true
            }
            Circuit::HalfOpen if self.is_probe(started) => {
                self.breaker.probe_in_flight = false;
                false
            }
            Circuit::Closed | Circuit::Open | Circuit::HalfOpen => false,
        }
    }

    fn on_success(&mut self, now: Instant, in_cohort: bool, rtt: Duration) {
        self.breaker.reset_run();
        let secs = rtt.as_secs_f64().max(MIN_RTT_SECS);
        self.rtt.record(secs, self.settings.rtt_ewma_alpha);
        if in_cohort {
            self.window.samples = self.window.samples.saturating_add(1);
            self.window.rtt_sum += secs;
            if self.window.samples == self.settings.window_min_samples {
                self.early_look(now);
            }
        }
        self.judge_window(now);
    }

    /// Was an attempt that started at `started` sent into the current window's cohort? Its start
    /// is computed from `now − rtt`, which can trail the `on_send` instant by the caller's own
    /// delays; `START_SLACK` of the baseline RTT is allowed for that.
    fn in_cohort(&self, started: Option<Instant>) -> bool {
        let Some(started) = started else { return false };
        let slack = Duration::try_from_secs_f64(self.baseline() * START_SLACK).unwrap_or_default();
        started >= self.window.start
            && self
                .window
                .closed_at
                .is_none_or(|closed| started <= later(closed, slack))
    }

    /// One look before the cohort is back, once `window_min_samples` successes are in: a large
    /// limit over a system that just lost most of its capacity is cut after a few round trips
    /// rather than after hundreds of slow attempts. The noise allowance for so few samples is
    /// wide, and these are the cohort's quickest attempts, so only a clear rise qualifies.
    fn early_look(&mut self, now: Instant) {
        let Some(baseline) = self.rtt.baseline else {
            return;
        };
        let (mean, samples) = (self.window.mean(), self.window.samples);
        if self.window.sent > samples && self.congested(mean, baseline, samples) {
            self.window_congested(now, mean, baseline);
        }
    }

    /// Judges the window once its cohort is back (or its stragglers are overdue: an attempt
    /// that is never reported must not stall the controller).
    fn judge_window(&mut self, now: Instant) {
        let Some(closed_at) = self.window.closed_at else {
            return;
        };
        let overdue = later(
            closed_at,
            Duration::try_from_secs_f64(self.straggler_wait()).unwrap_or(MAX_WAIT),
        );
        if self.window.returned < self.window.sent && now < overdue {
            return;
        }
        let samples = self.window.samples;
        if samples < self.settings.window_min_samples.div_ceil(2).max(1) {
            // Mostly failures or rejections: nothing to learn about the RTT.
            self.window = Window::new(now);
            return;
        }
        let mean = self.window.mean();
        let Some(baseline) = self.rtt.baseline else {
            self.first_baseline(mean);
            self.window_clear(now, mean, mean);
            return;
        };
        if self.congested(mean, baseline, samples) {
            self.window_congested(now, mean, baseline);
        } else {
            self.window_clear(now, mean, baseline);
        }
    }

    /// How long after the cohort's last send its stragglers are waited for, in seconds.
    fn straggler_wait(&self) -> f64 {
        STRAGGLER_RTTS * self.baseline().max(self.rtt.recent.unwrap_or(0.0))
    }

    /// Cohort size: one round trip of sends (`window_fill` × limit), at least
    /// `window_min_samples`, and more when RTTs are noisy: enough for the noise allowance to
    /// shrink to the RTT tolerance, `(z · cv / tolerance)²` samples, up to `window_max_fill` ×
    /// limit. A noisy system is judged less often but not on noise.
    fn samples_needed(&self) -> u32 {
        let s = &self.settings;
        let fill = self.limit * s.window_fill;
        let precise = (s.rtt_noise_allowance * self.rtt.variation() / s.rtt_tolerance).powi(2);
        let wanted = fill.max(precise.min(self.limit * s.window_max_fill));
        // `as` saturates; `wanted` is finite (limit ≤ max_limit) and non-negative.
        (wanted.ceil() as u32).max(s.window_min_samples).max(1)
    }

    /// Congested: the window's mean RTT is clearly above the baseline (beyond the tolerance and
    /// the noise allowance) and the rise means at least `min_queue` attempts waiting (Vegas's
    /// queue estimate `limit × (1 − baseline / rtt)`), so noise at low limits is not congestion.
    fn congested(&self, mean: f64, baseline: f64, samples: u32) -> bool {
        let queue = self.concurrency().max(1.0) * (1.0 - baseline / mean);
        mean > baseline * (1.0 + self.tolerance(samples)) && queue >= self.settings.min_queue
    }

    fn tolerance(&self, samples: u32) -> f64 {
        self.settings.rtt_tolerance
            + self.settings.rtt_noise_allowance * self.standard_error(samples)
    }

    /// Standard error of a mean of `samples` RTTs, relative to the RTT.
    fn standard_error(&self, samples: u32) -> f64 {
        self.rtt.variation() / f64::from(samples.max(1)).sqrt()
    }

    fn first_baseline(&mut self, mean: f64) {
        if self.keep_rate_on_first_baseline {
            let assumed = self.settings.initial_rtt.as_secs_f64().max(MIN_RTT_SECS);
            self.limit = (self.limit * mean / assumed).clamp(MIN_LIMIT, self.settings.max_limit);
        }
        self.rtt.baseline = Some(mean);
    }

    fn window_clear(&mut self, now: Instant, mean: f64, baseline: f64) {
        self.congested_windows = 0;
        self.last_cut = None;
        self.update_baseline(mean, baseline, false);
        if self.window.reached {
            self.grow();
        }
        self.window = Window::new(now);
    }

    /// Moves the baseline toward a judged window's mean RTT. A queue-free window always counts,
    /// whatever its verdict, its mean capped at the congestion threshold: leaving out the ones
    /// that came out high would bias the baseline low, and a low baseline breeds false alarms.
    /// The cap bounds how far one window at a real capacity drop can push the baseline up.
    /// Other windows only lower it, and only when clearly faster.
    fn update_baseline(&mut self, mean: f64, baseline: f64, congested: bool) {
        let threshold = 1.0 + self.tolerance(self.window.samples);
        let (weight, target) = if self.queue_free() {
            (
                self.settings.baseline_weight,
                mean.min(baseline * threshold),
            )
        } else if !congested && mean < baseline * (2.0 - threshold) {
            (self.settings.baseline_fall, mean)
        } else {
            return;
        };
        self.rtt.baseline = Some(baseline + weight * (target - baseline));
    }

    /// Attempts in flight at the limit: the rounded limit, or below 1 the paced share of one.
    fn concurrency(&self) -> f64 {
        if self.limit >= 1.0 {
            self.limit.round()
        } else {
            self.limit
        }
    }

    /// The current limit is one the customer system takes without queueing: slow start before
    /// any congestion, at most `drain` × the measured capacity, or one attempt at a time.
    fn queue_free(&self) -> bool {
        self.concurrency() <= 1.0
            || self
                .capacity
                .is_none_or(|capacity| self.limit <= capacity * self.settings.drain * 1.001)
    }

    fn window_congested(&mut self, now: Instant, mean: f64, baseline: f64) {
        self.congested_windows = self.congested_windows.saturating_add(1);
        if self.cut_was_spurious(mean, baseline)
            || self.congested_windows >= self.settings.rebaseline_after
        {
            self.rebaseline(now, mean);
            return;
        }
        self.update_baseline(mean, baseline, true);
        let queue_free = (self.concurrency() * baseline / mean).max(self.floor());
        let before = self.last_cut.map_or((self.limit, self.capacity), |cut| {
            (cut.limit_before, cut.capacity_before)
        });
        self.last_cut = Some(LatencyCut {
            mean,
            concurrency: self.concurrency(),
            after_cut: self.last_cut.is_some(),
            limit_before: before.0,
            capacity_before: before.1,
        });
        self.capacity = Some(queue_free);
        let target = (queue_free * self.settings.drain)
            .max(self.limit * self.settings.min_gradient)
            .min(self.limit);
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
        let Some(cut) = self.last_cut.filter(|cut| cut.after_cut) else {
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
    fn rebaseline(&mut self, now: Instant, mean: f64) {
        self.rtt.baseline = Some(mean);
        if let Some(cut) = self.last_cut.take() {
            self.limit = cut.limit_before;
            self.capacity = cut.capacity_before;
        }
        self.congested_windows = 0;
        self.window = Window::new(now);
    }

    // ---- limit ----------------------------------------------------------------------------

    fn on_failure(&mut self, now: Instant, started: Option<Instant>, kind: Failure) {
        self.breaker.count_failure(now, started, kind);
        if self.breaker.run_total() >= self.settings.circuit_failures {
            self.open_circuit(now);
            return;
        }
        // Once per window: attempts sent before the last decrease were sent at the old limit.
        if started.is_some_and(|at| at >= self.last_decrease) {
            self.last_cut = None;
            let target = self.limit * self.settings.backoff_ratio;
            self.capacity = Some(target.max(self.floor()));
            self.decrease_to(now, target);
        }
    }

    fn decrease_to(&mut self, now: Instant, target: f64) {
        self.limit = target.max(self.floor()).min(self.limit.max(self.floor()));
        self.slow_start = false;
        self.probe = self.settings.probe_step * self.capacity.unwrap_or(self.limit);
        self.last_decrease = now;
        self.window = Window::new(now);
    }

    fn grow(&mut self) {
        let cap = self.growth_cap();
        if self.limit >= cap {
            return;
        }
        let next = if self.slow_start {
            self.slow_start_next()
        } else {
            self.additive_next()
        };
        self.limit = next.min(cap).max(self.limit);
    }

    fn slow_start_next(&mut self) -> f64 {
        let doubled = self.limit * 2.0;
        match self.slow_start_until {
            Some(until) if self.rate_of(doubled) >= until => {
                self.slow_start = false;
                self.limit_for_rate(until).max(self.limit)
            }
            _ => doubled,
        }
    }

    fn additive_next(&mut self) -> f64 {
        let step = self.settings.increase_step * self.limit.min(1.0);
        match self.capacity {
            Some(capacity) if self.limit < capacity => {
                (self.limit + step.max((capacity - self.limit) / 2.0)).min(capacity)
            }
            Some(capacity) => {
                let next = self.limit + self.probe.max(self.settings.probe_step * capacity);
                self.probe *= self.settings.probe_acceleration;
                next
            }
            None => self.limit + step,
        }
    }

    /// The limit never grows past `max_limit`, nor past what the ceiling can use (with room for
    /// RTT jitter).
    fn growth_cap(&self) -> f64 {
        let by_ceiling = self.ceiling.map_or(f64::INFINITY, |ceiling| {
            let rtt = self.baseline().max(self.rtt.recent.unwrap_or(0.0));
            ceiling * rtt * self.settings.pacing_gain
        });
        self.settings.max_limit.min(by_ceiling).max(self.floor())
    }

    /// The lowest limit: the one that paces at `min_rate`.
    fn floor(&self) -> f64 {
        self.limit_for_rate(self.settings.min_rate).max(MIN_LIMIT)
    }

    fn baseline(&self) -> f64 {
        self.rtt
            .baseline
            .unwrap_or(self.settings.initial_rtt.as_secs_f64())
            .max(MIN_RTT_SECS)
    }

    fn limit_for_rate(&self, rate: f64) -> f64 {
        rate * self.baseline()
    }

    fn rate_of(&self, limit: f64) -> f64 {
        let rate = (limit / self.baseline()).max(self.settings.min_rate);
        self.ceiling.map_or(rate, |ceiling| rate.min(ceiling))
    }

    /// Spacing between sends: `pacing_gain` × the rate, never above the ceiling.
    fn pacing_interval(&self) -> Duration {
        let rate = (self.rate_of(self.limit) * self.settings.pacing_gain)
            .min(self.ceiling.unwrap_or(f64::INFINITY));
        // A zero or non-number rate gives an error here, and the longest wait.
        Duration::try_from_secs_f64(1.0 / rate).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
    }

    // ---- pauses and the circuit -----------------------------------------------------------

    fn pause_for(&mut self, now: Instant, wait: Duration) {
        let until = later(now, wait.min(self.settings.max_retry_after));
        self.retry_until = self.retry_until.max(Some(until));
    }

    fn expire_retry_pause(&mut self, now: Instant) {
        if self.retry_until.is_some_and(|until| until <= now) {
            self.retry_until = None;
        }
    }

    fn open_circuit(&mut self, now: Instant) {
        let reason = format!("circuit opened after {}", self.breaker.describe_run());
        self.breaker.rate_before_open = self.rate();
        self.open_breaker(now, self.settings.circuit_cooldown);
        if !self.operator_paused {
            self.set_tier(now, Tier::CircuitOpen, reason);
        }
    }

    fn open_breaker(&mut self, now: Instant, cooldown: Duration) {
        let b = &mut self.breaker;
        b.state = Circuit::Open;
        b.reset_run();
        b.opened_at = now;
        b.open_until = later(now, cooldown);
        b.next_cooldown = cooldown
            .saturating_mul(2)
            .min(self.settings.circuit_max_cooldown);
        b.probe_in_flight = false;
    }

    /// Is an outcome the half-open circuit's probe? Only the probe can have been sent since the
    /// circuit opened; anything older was already in flight then.
    fn is_probe(&self, started: Option<Instant>) -> bool {
        self.breaker.probe_in_flight && started.is_some_and(|at| at >= self.breaker.opened_at)
    }

    /// The probe's outcome (`note_return` has already freed its slot): success closes the
    /// circuit, failure reopens it for a longer cool-down.
    fn on_probe(&mut self, now: Instant, started: Option<Instant>, outcome: Option<Failure>) {
        if started.is_none_or(|at| at < self.breaker.opened_at) {
            return;
        }
        match outcome {
            None => self.close_circuit(now),
            Some(_) => self.open_breaker(now, self.breaker.next_cooldown),
        }
    }

    fn close_circuit(&mut self, now: Instant) {
        self.breaker.state = Circuit::Closed;
        self.breaker.reset_run();
        self.breaker.probe_in_flight = false;
        self.breaker.next_cooldown = self.settings.circuit_cooldown;
        self.limit = self.settings.initial_limit.max(self.floor());
        self.capacity = None;
        self.slow_start = true;
        self.slow_start_until = Some(self.breaker.rate_before_open / 2.0);
        self.window = Window::new(now);
        self.last_decrease = now;
        self.pace_next = now;
        if !self.operator_paused {
            let tier = self.rate_tier(self.rate());
            let reason = format!(
                "circuit closed after a successful probe; restarting at {:.1}/s",
                self.rate()
            );
            self.set_tier(now, tier, reason);
        }
    }

    // ---- tiers ----------------------------------------------------------------------------

    fn rate_tier(&self, rate: f64) -> Tier {
        if rate >= self.settings.fast_threshold {
            Tier::Fast
        } else if rate >= self.settings.medium_threshold {
            Tier::Medium
        } else {
            Tier::Slow
        }
    }

    /// Lowest rate of a rate tier.
    fn threshold(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Fast => self.settings.fast_threshold,
            Tier::Medium => self.settings.medium_threshold,
            Tier::Slow | Tier::Paused | Tier::CircuitOpen => 0.0,
        }
    }

    /// Moves between rate tiers with hysteresis: a tier the rate is clearly in (beyond the band)
    /// for long enough (`demote_after` down, `promote_after` up).
    fn update_rate_tier(&mut self, now: Instant) {
        let current = self.tiers.current;
        let Some(rank) = current.rank() else { return };
        let rate = self.rate();
        let h = self.settings.tier_hysteresis;
        let down = self.rate_tier(rate / (1.0 - h).max(f64::MIN_POSITIVE));
        let up = self.rate_tier(rate / (1.0 + h));
        let target = if down.rank() < Some(rank) {
            down
        } else if up.rank() > Some(rank) {
            up
        } else {
            self.tiers.pending = None;
            return;
        };
        let direction = if target.rank() > Some(rank) {
            Move::Promote
        } else {
            Move::Demote
        };
        if direction == Move::Demote && self.slow_start {
            // Slow start begins low by design: a rate still climbing is not a drop.
            self.tiers.pending = None;
            return;
        }
        let since = match self.tiers.pending {
            Some((pending, since)) if pending == direction => since,
            _ => {
                self.tiers.pending = Some((direction, now));
                now
            }
        };
        let dwell = if direction == Move::Promote && !self.slow_start {
            self.settings.promote_after
        } else {
            self.settings.demote_after
        };
        if now.saturating_duration_since(since) >= dwell {
            let reason = self.tier_reason(current, target, rate, dwell);
            self.set_tier(now, target, reason);
        }
    }

    fn tier_reason(&self, from: Tier, to: Tier, rate: f64, dwell: Duration) -> String {
        if to.rank() < from.rank() {
            format!(
                "rate {rate:.1}/s below {from} threshold {}/s",
                self.threshold(from)
            )
        } else {
            format!(
                "rate {rate:.1}/s above {to} threshold {}/s for {}s",
                self.threshold(to),
                dwell.as_secs()
            )
        }
    }

    fn set_tier(&mut self, now: Instant, to: Tier, reason: String) {
        let from = self.tiers.current;
        self.tiers.pending = None;
        if from == to {
            return;
        }
        let change = TierChange {
            at: now,
            from,
            to,
            reason,
        };
        self.tiers.current = to;
        if self.tiers.changes.len() >= MAX_PENDING_TIER_CHANGES {
            self.tiers.changes.remove(0);
        }
        self.tiers.changes.push(change.clone());
        self.tiers.last = Some(change);
    }
}

/// `t + d`, with `d` capped so that the sum cannot overflow.
fn later(t: Instant, d: Duration) -> Instant {
    // Falls back to `t` only if an Instant a day later is unrepresentable, which it never is.
    t.checked_add(d.min(MAX_WAIT)).unwrap_or(t)
}

fn duration(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

fn sanitize_ceiling(ceiling: Option<f64>) -> Option<f64> {
    ceiling.filter(|c| c.is_finite() && *c > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};

    const MICROS: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    /// xorshift64*: deterministic jitter for the simulated system.
    struct Rng(u64);

    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (x >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in [1 − spread, 1 + spread].
        fn around_one(&mut self, spread: f64) -> f64 {
            1.0 + spread * (2.0 * self.unit() - 1.0)
        }
    }

    /// A simulated customer system: `workers` concurrent workers, each attempt taking `service`
    /// (± `jitter`), a FIFO wait queue of `queue_cap`, and an immediate 503 when that is full.
    struct System {
        workers: usize,
        busy: usize,
        queue: VecDeque<Duration>,
        queue_cap: usize,
        service: Duration,
        jitter: f64,
        /// Exponential service times (mean `service`) instead of uniform jitter: a heavy tail.
        exponential: bool,
        rng: Rng,
    }

    impl System {
        fn new(workers: usize, service: Duration, queue_cap: usize, jitter: f64) -> Self {
            Self {
                workers,
                busy: 0,
                queue: VecDeque::new(),
                queue_cap,
                service,
                jitter,
                exponential: false,
                rng: Rng(0x9E37_79B9_7F4A_7C15),
            }
        }

        fn service_time(&mut self) -> Duration {
            let factor = if self.exponential {
                -(1.0 - self.rng.unit()).ln()
            } else {
                self.rng.around_one(self.jitter)
            };
            self.service.mul_f64(factor)
        }
    }

    /// One reply on its way back: (arrives at, sequence, sent at, overload?).
    type Reply = Reverse<(Duration, u64, Duration, bool)>;

    /// Per-second counts of what the sender saw.
    #[derive(Clone, Copy, Default)]
    struct Second {
        ok: u64,
        overload: u64,
    }

    /// The discrete-event simulation: a sender with unlimited backlog asks `permit()` whenever it
    /// could send (after every reply and at every `WaitUntil`) and sends to the system.
    struct Sim {
        t0: Instant,
        now: Duration,
        system: System,
        controller: Controller,
        in_flight: usize,
        replies: BinaryHeap<Reply>,
        seq: u64,
        wake: Duration,
        seconds: Vec<Second>,
        /// (time, limit) every 100 ms.
        limits: Vec<(Duration, usize)>,
        next_sample: Duration,
    }

    impl Sim {
        fn new(system: System, settings: ControllerSettings, ceiling: Option<f64>) -> Self {
            let t0 = Instant::now();
            Self {
                t0,
                now: Duration::ZERO,
                system,
                controller: Controller::new(settings, t0, ceiling, None),
                in_flight: 0,
                replies: BinaryHeap::new(),
                seq: 0,
                wake: Duration::ZERO,
                seconds: Vec::new(),
                limits: Vec::new(),
                next_sample: Duration::ZERO,
            }
        }

        fn run_until(&mut self, end: Duration) {
            loop {
                self.pump();
                let reply_at = self.replies.peek().map_or(Duration::MAX, |r| r.0.0);
                let next = reply_at.min(self.wake).min(self.next_sample);
                if next > end {
                    self.now = end;
                    return;
                }
                self.now = next;
                if next == self.next_sample {
                    self.limits.push((next, self.controller.limit()));
                    self.next_sample += 100 * MS;
                }
                if next == reply_at {
                    self.deliver_reply();
                }
            }
        }

        fn pump(&mut self) {
            loop {
                let now = self.t0 + self.now;
                match self.controller.permit(now, self.in_flight) {
                    Permit::Send => {
                        self.controller.on_send(now, self.in_flight);
                        self.in_flight += 1;
                        self.arrive();
                    }
                    Permit::WaitUntil(at) => {
                        assert!(at > now, "WaitUntil must lie in the future");
                        self.wake = at - self.t0;
                        return;
                    }
                }
            }
        }

        fn schedule(&mut self, at: Duration, sent_at: Duration, overload: bool) {
            self.seq += 1;
            self.replies
                .push(Reverse((at, self.seq, sent_at, overload)));
        }

        fn arrive(&mut self) {
            let now = self.now;
            if self.system.busy < self.system.workers {
                self.system.busy += 1;
                let done = now + self.system.service_time();
                self.schedule(done, now, false);
            } else if self.system.queue.len() < self.system.queue_cap {
                self.system.queue.push_back(now);
            } else {
                self.schedule(now + MS, now, true);
            }
        }

        fn deliver_reply(&mut self) {
            let Some(Reverse((at, _, sent_at, overload))) = self.replies.pop() else {
                return;
            };
            self.in_flight -= 1;
            if !overload {
                self.system.busy -= 1;
                self.start_waiting();
            }
            let second = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
            if self.seconds.len() <= second {
                self.seconds.resize(second + 1, Second::default());
            }
            let signal = if overload {
                self.seconds[second].overload += 1;
                Signal::Overload { retry_after: None }
            } else {
                self.seconds[second].ok += 1;
                Signal::Success
            };
            self.controller.observe(self.t0 + at, at - sent_at, signal);
        }

        fn start_waiting(&mut self) {
            while self.system.busy < self.system.workers {
                let Some(sent_at) = self.system.queue.pop_front() else {
                    return;
                };
                self.system.busy += 1;
                let done = self.now + self.system.service_time();
                self.schedule(done, sent_at, false);
            }
        }

        /// Successes per second and the share of overload answers over [from, to) seconds.
        fn goodput(&self, from: usize, to: usize) -> (f64, f64) {
            let span = &self.seconds[from.min(self.seconds.len())..to.min(self.seconds.len())];
            let ok: u64 = span.iter().map(|s| s.ok).sum();
            let overload: u64 = span.iter().map(|s| s.overload).sum();
            let total = (ok + overload).max(1);
            (
                ok as f64 / (to - from) as f64,
                overload as f64 / total as f64,
            )
        }

        /// Limit samples taken in [from, to).
        fn limits_between(&self, from: Duration, to: Duration) -> Vec<usize> {
            self.limits
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|(_, limit)| *limit)
                .collect()
        }
    }

    fn share_within(samples: &[usize], low: f64, high: f64) -> f64 {
        let within = samples
            .iter()
            .filter(|l| (low..=high).contains(&(**l as f64)))
            .count();
        within as f64 / samples.len().max(1) as f64
    }

    fn mean(samples: &[usize]) -> f64 {
        samples.iter().sum::<usize>() as f64 / samples.len().max(1) as f64
    }

    /// Runs C workers, S = 50 ms ± 20%, Q = C for 60 s and checks the limit from 30 s on.
    fn converges_to(workers: usize) {
        let service = 50 * MS;
        let system = System::new(workers, service, workers, 0.2);
        let mut sim = Sim::new(system, ControllerSettings::default(), None);
        sim.run_until(60 * SEC);
        let settled = sim.limits_between(30 * SEC, 60 * SEC);
        let c = workers as f64;
        let within = share_within(&settled, 0.8 * c, 1.2 * c);
        let (goodput, overload) = sim.goodput(30, 60);
        let capacity = c / service.as_secs_f64();
        let (_, overload_all) = sim.goodput(0, 60);
        eprintln!(
            "C={workers}: limit mean {:.1} (min {}, max {}), {:.1}% of samples within ±20% of C; \
             goodput {goodput:.1}/s = {:.1}% of capacity {capacity:.0}/s; overload answers {:.2}% \
             after convergence, {:.2}% over the whole run; rate {:.1}/s, baseline {:?}",
            mean(&settled),
            settled.iter().min().copied().unwrap_or(0),
            settled.iter().max().copied().unwrap_or(0),
            within * 100.0,
            goodput / capacity * 100.0,
            overload * 100.0,
            overload_all * 100.0,
            sim.controller.rate(),
            sim.controller.snapshot().rtt_baseline,
        );
        assert!(within >= 0.9, "limit outside ±20% of {workers} too often");
        assert!((mean(&settled) - c).abs() <= 0.2 * c);
        assert!(goodput >= 0.9 * capacity, "goodput below 90% of capacity");
        assert!(overload <= 0.01, "more than 1% overload answers");
    }

    #[test]
    fn limit_settles_near_capacity_2() {
        converges_to(2);
    }

    #[test]
    fn limit_settles_near_capacity_20() {
        converges_to(20);
    }

    #[test]
    fn limit_settles_near_capacity_200() {
        converges_to(200);
    }

    #[test]
    fn heavy_tailed_service_times_still_converge() {
        let service = 50 * MS;
        let mut system = System::new(20, service, 20, 0.0);
        system.exponential = true;
        let mut sim = Sim::new(system, ControllerSettings::default(), None);
        sim.run_until(60 * SEC);
        let settled = sim.limits_between(30 * SEC, 60 * SEC);
        let (goodput, overload) = sim.goodput(30, 60);
        let capacity = 20.0 / service.as_secs_f64();
        eprintln!(
            "C=20, exponential service: limit mean {:.1} (min {}, max {}); goodput {:.1}% of \
             capacity; overload answers {:.2}%",
            mean(&settled),
            settled.iter().min().copied().unwrap_or(0),
            settled.iter().max().copied().unwrap_or(0),
            goodput / capacity * 100.0,
            overload * 100.0
        );
        assert!(goodput >= 0.85 * capacity);
        assert!(overload <= 0.01);
    }

    #[test]
    fn limit_follows_a_capacity_drop() {
        let service = 50 * MS;
        let mut sim = Sim::new(
            System::new(50, service, 50, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.run_until(30 * SEC);
        let before = mean(&sim.limits_between(20 * SEC, 30 * SEC));
        // Half the system's pods die: 10 workers and a queue of 10 remain.
        sim.system.workers = 10;
        sim.system.queue_cap = 10;
        sim.run_until(60 * SEC);
        let followed_at = sim
            .limits
            .iter()
            .find(|(at, limit)| *at >= 30 * SEC && *limit <= 12)
            .map(|(at, _)| *at - 30 * SEC);
        let after = sim.limits_between(40 * SEC, 60 * SEC);
        let (goodput, overload) = sim.goodput(40, 60);
        let (_, overload_drop) = sim.goodput(30, 40);
        eprintln!(
            "C 50→10: limit {before:.1} before; within ±20% of 10 after {followed_at:?}; then \
             mean {:.1} (max {}), {:.0}% of samples within ±20%; goodput {:.1}% of capacity; overload answers \
             {:.2}% in the 10 s after the drop, {:.2}% after",
            mean(&after),
            after.iter().max().copied().unwrap_or(0),
            share_within(&after, 8.0, 12.0) * 100.0,
            goodput / (10.0 / service.as_secs_f64()) * 100.0,
            overload_drop * 100.0,
            overload * 100.0,
        );
        assert!(followed_at.is_some_and(|at| at <= 10 * SEC));
        assert!(share_within(&after, 8.0, 12.0) >= 0.9);
        assert!((mean(&after) - 10.0).abs() <= 2.0);
    }

    #[test]
    fn retry_after_pauses_exactly_that_long() {
        let t0 = Instant::now();
        let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
        assert_eq!(c.permit(t0, 0), Permit::Send);
        c.on_send(t0, 0);
        let t = t0 + 100 * MS;
        c.observe(
            t,
            100 * MS,
            Signal::Overload {
                retry_after: Some(7 * SEC),
            },
        );
        assert_eq!(c.paused_until(), Some(t + 7 * SEC));
        for offset in [Duration::ZERO, SEC, 6 * SEC, 7 * SEC - MS] {
            assert_eq!(c.permit(t + offset, 0), Permit::WaitUntil(t + 7 * SEC));
        }
        // A shorter Retry-After later does not shorten the pause.
        c.observe(
            t + SEC,
            10 * MS,
            Signal::Overload {
                retry_after: Some(SEC),
            },
        );
        assert_eq!(c.permit(t + 2 * SEC, 0), Permit::WaitUntil(t + 7 * SEC));
        assert_eq!(c.permit(t + 7 * SEC, 0), Permit::Send);
        c.on_send(t + 7 * SEC, 0);
        assert_eq!(c.paused_until(), None);
    }

    #[test]
    fn circuit_opens_probes_one_at_a_time_and_backs_off() {
        let t0 = Instant::now();
        let settings = ControllerSettings::default();
        let mut c = Controller::new(settings.clone(), t0, None, None);
        let mut t = t0;
        for _ in 0..settings.circuit_failures {
            t += 10 * MS;
            c.observe(t, 5 * MS, Signal::ConnectionError);
        }
        assert_eq!(c.circuit(), Circuit::Open);
        assert_eq!(c.tier(), Tier::CircuitOpen);
        let changes = c.take_tier_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].reason,
            "circuit opened after 5 consecutive connection errors"
        );

        // Cool-down: nothing, whatever the limit.
        let reopen = t + settings.circuit_cooldown;
        for offset in [Duration::ZERO, SEC, settings.circuit_cooldown - MS] {
            assert_eq!(c.permit(t + offset, 0), Permit::WaitUntil(reopen));
        }
        // A late outcome of an attempt sent before the circuit opened changes nothing.
        c.observe(t + SEC, 2 * SEC, Signal::Success);
        assert_eq!(c.circuit(), Circuit::Open);

        // One probe, and only one while it is in flight.
        assert_eq!(c.permit(reopen, 0), Permit::Send);
        c.on_send(reopen, 0);
        assert_eq!(c.circuit(), Circuit::HalfOpen);
        assert!(matches!(c.permit(reopen + MS, 1), Permit::WaitUntil(_)));
        assert!(matches!(c.permit(reopen + MS, 0), Permit::WaitUntil(_)));

        // The probe fails: open again, for twice as long.
        let failed = reopen + 100 * MS;
        c.observe(failed, 100 * MS, Signal::ConnectionError);
        assert_eq!(c.circuit(), Circuit::Open);
        let reopen = failed + 2 * settings.circuit_cooldown;
        assert_eq!(c.permit(failed + 9 * SEC, 0), Permit::WaitUntil(reopen));

        // The next probe succeeds: closed, restarting small.
        assert_eq!(c.permit(reopen, 0), Permit::Send);
        c.on_send(reopen, 0);
        c.observe(reopen + 50 * MS, 50 * MS, Signal::Success);
        assert_eq!(c.circuit(), Circuit::Closed);
        assert_eq!(c.limit(), 1);
        assert_ne!(c.tier(), Tier::CircuitOpen);
        let changes = c.take_tier_changes();
        assert!(
            changes[0]
                .reason
                .starts_with("circuit closed after a successful probe")
        );
        assert_eq!(c.permit(reopen + 50 * MS, 0), Permit::Send);
    }

    #[test]
    fn circuit_cool_down_doubles_up_to_the_cap() {
        let t0 = Instant::now();
        let settings = ControllerSettings::default();
        let mut c = Controller::new(settings.clone(), t0, None, None);
        let mut t = t0;
        for _ in 0..settings.circuit_failures {
            t += MS;
            c.observe(t, MS, Signal::Timeout);
        }
        let mut cooldowns = Vec::new();
        let mut opened = t;
        for _ in 0..8 {
            let Permit::WaitUntil(until) = c.permit(opened, 0) else {
                panic!("an open circuit permitted a send");
            };
            cooldowns.push((until - opened).as_secs());
            c.on_send(until, 0);
            opened = until + MS;
            c.observe(opened, MS, Signal::ServerError);
        }
        assert_eq!(cooldowns, [5, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn mixed_failures_are_named_in_the_reason() {
        let t0 = Instant::now();
        let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
        let signals = [
            Signal::Timeout,
            Signal::ServerError,
            Signal::Timeout,
            Signal::Overload { retry_after: None },
            Signal::Timeout,
        ];
        for (i, signal) in signals.into_iter().enumerate() {
            c.observe(t0 + (i as u32 + 1) * MS, MS, signal);
        }
        let changes = c.take_tier_changes();
        assert_eq!(
            changes[0].reason,
            "circuit opened after 5 consecutive failures (1 overload answer, 3 timeouts, 1 server error)"
        );
    }

    #[test]
    fn success_resets_the_failure_run() {
        let t0 = Instant::now();
        let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
        for i in 0..20u32 {
            let signal = if i % 4 == 3 {
                Signal::Success
            } else {
                Signal::ConnectionError
            };
            c.observe(t0 + (i + 1) * MS, MS, signal);
        }
        assert_eq!(c.circuit(), Circuit::Closed);
    }

    /// C = 10 workers of 100 ms ± 30%: the controller's rate sits around 100/s, the fast threshold.
    fn noisy_system_near_fast_threshold(workers: usize) -> System {
        System::new(workers, 100 * MS, workers, 0.3)
    }

    #[test]
    fn tiers_do_not_flap_on_a_noisy_rtt() {
        let mut sim = Sim::new(
            noisy_system_near_fast_threshold(10),
            ControllerSettings::default(),
            None,
        );
        let mut rates = (f64::MAX, 0.0_f64);
        let mut t = Duration::ZERO;
        while t < 300 * SEC {
            t += 100 * MS;
            sim.run_until(t);
            if t >= 10 * SEC {
                let rate = sim.controller.rate();
                rates = (rates.0.min(rate), rates.1.max(rate));
            }
        }
        let changes = sim.controller.take_tier_changes();
        eprintln!(
            "noisy RTT near the fast threshold for 5 min: rate {:.1}..{:.1}/s, {} tier changes: {:?}",
            rates.0,
            rates.1,
            changes.len(),
            changes
                .iter()
                .map(|c| (c.at - sim.t0, c.to, c.reason.as_str()))
                .collect::<Vec<_>>()
        );
        assert!(
            rates.0 < 100.0 && rates.1 > 100.0,
            "the rate should straddle the threshold"
        );
        assert!(changes.len() <= 2, "tiers flapped");
    }

    #[test]
    fn sustained_drop_demotes_quickly_and_promotion_waits() {
        let settings = ControllerSettings::default();
        let mut sim = Sim::new(noisy_system_near_fast_threshold(30), settings.clone(), None);
        sim.run_until(60 * SEC);
        assert_eq!(sim.controller.tier(), Tier::Fast);
        sim.controller.take_tier_changes();

        // A sustained drop to about 30/s: medium within a few seconds.
        sim.system.workers = 3;
        sim.run_until(120 * SEC);
        let changes = sim.controller.take_tier_changes();
        let demoted = changes
            .first()
            .map(|c| (c.at - sim.t0, c.to, c.reason.clone()));
        eprintln!("drop to 30/s at 60 s: {demoted:?}");
        let (at, to, reason) = demoted.unwrap_or((Duration::MAX, Tier::Fast, String::new()));
        assert_eq!(to, Tier::Medium);
        assert!(at <= 65 * SEC, "demotion took {at:?}");
        assert!(reason.contains("below fast threshold 100/s"), "{reason}");
        assert_eq!(changes.len(), 1);

        // Capacity comes back: fast again only after the rate has stayed above the band (110/s)
        // for the whole sustained good period.
        sim.system.workers = 30;
        let band = settings.fast_threshold * (1.0 + settings.tier_hysteresis);
        let mut above_since = None;
        let mut t = 120 * SEC;
        while sim.controller.tier() != Tier::Fast && t < 300 * SEC {
            t += 100 * MS;
            sim.run_until(t);
            if sim.controller.rate() < band {
                above_since = None;
            } else if above_since.is_none() {
                above_since = Some(t);
            }
        }
        let changes = sim.controller.take_tier_changes();
        let promoted = changes
            .first()
            .map(|c| (c.at - sim.t0, c.to, c.reason.clone()));
        eprintln!(
            "capacity back to 300/s at 120 s: rate above {band}/s since {above_since:?}; {promoted:?}"
        );
        let (at, to, _) = promoted.unwrap_or((Duration::MAX, Tier::Medium, String::new()));
        let above_since = above_since.unwrap_or(Duration::MAX);
        assert_eq!(to, Tier::Fast);
        assert!(
            at >= above_since + settings.promote_after - 100 * MS,
            "promoted too early"
        );
        assert!(at <= above_since + settings.promote_after + 100 * MS);
        assert!(
            above_since <= 140 * SEC,
            "the rate took {above_since:?} to recover"
        );
    }

    #[test]
    fn rejected_never_moves_anything() {
        let mut sim = Sim::new(
            System::new(20, 50 * MS, 20, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.run_until(10 * SEC);
        let now = sim.t0 + 10 * SEC;
        let c = &mut sim.controller;
        // Three failures short of opening the circuit...
        for i in 1..c.settings.circuit_failures {
            c.observe(now + i * 10 * MS, MS, Signal::ConnectionError);
        }
        let before = (
            c.limit,
            c.rate(),
            c.circuit(),
            c.tier(),
            c.snapshot().error_rate,
        );
        for i in 0..1000u32 {
            c.observe(now + SEC + i * MS, (i % 7 + 1) * 100 * MS, Signal::Rejected);
        }
        let after = (
            c.limit,
            c.rate(),
            c.circuit(),
            c.tier(),
            c.snapshot().error_rate,
        );
        assert_eq!(before, after);
        // ...and Rejected did not reset the run either: one more failure opens it.
        c.observe(now + 3 * SEC, MS, Signal::ConnectionError);
        assert_eq!(c.circuit(), Circuit::Open);
    }

    #[test]
    fn rejected_probe_frees_the_probe_slot_but_keeps_the_circuit_half_open() {
        let t0 = Instant::now();
        let mut c = Controller::new(
            ControllerSettings::default(),
            t0,
            None,
            Some(Tier::CircuitOpen),
        );
        assert_eq!(c.circuit(), Circuit::Open);
        let reopen = t0 + c.settings.circuit_cooldown;
        assert_eq!(c.permit(reopen, 0), Permit::Send);
        c.on_send(reopen, 0);
        c.observe(reopen + MS, MS, Signal::Rejected);
        assert_eq!(c.circuit(), Circuit::HalfOpen);
        // The rejected probe is back: the next probe may go, and its success closes the circuit.
        assert_eq!(c.permit(reopen + MS, 0), Permit::Send);
        c.on_send(reopen + MS, 0);
        assert!(matches!(c.permit(reopen + 2 * MS, 1), Permit::WaitUntil(_)));
        c.observe(reopen + 10 * MS, 9 * MS, Signal::Success);
        assert_eq!(c.circuit(), Circuit::Closed);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let t0 = Instant::now();
        let settings = ControllerSettings::default();
        let mut c = Controller::new(settings.clone(), t0, None, Some(Tier::CircuitOpen));
        let reopen = t0 + settings.circuit_cooldown;
        c.on_send(reopen, 0);
        let lost = reopen + settings.probe_timeout;
        assert_eq!(c.permit(lost - MS, 1), Permit::WaitUntil(lost));
        assert_eq!(c.permit(lost, 1), Permit::Send);
    }

    #[test]
    fn ceiling_is_respected() {
        let ceiling = 500.0;
        let mut sim = Sim::new(
            System::new(200, 50 * MS, 200, 0.2),
            ControllerSettings::default(),
            Some(ceiling),
        );
        let mut max_rate = 0.0_f64;
        let mut max_limit = 0;
        let mut t = Duration::ZERO;
        while t < 30 * SEC {
            t += 100 * MS;
            sim.run_until(t);
            max_rate = max_rate.max(sim.controller.rate());
            max_limit = max_limit.max(sim.controller.limit());
        }
        let sent: u64 = sim.seconds[10..30].iter().map(|s| s.ok + s.overload).sum();
        eprintln!(
            "ceiling 500/s on a 4000/s system: rate at most {max_rate:.1}/s, limit at most \
             {max_limit}, {:.1} replies/s",
            sent as f64 / 20.0
        );
        assert!(max_rate <= ceiling);
        assert!(sent as f64 / 20.0 <= ceiling * 1.001);
        // 500/s × 50 ms is 25 in flight: the limit need not grow much past that.
        assert!(max_limit <= 40, "limit grew to {max_limit}");

        // Lowering the ceiling takes effect at once.
        sim.controller.set_ceiling(Some(50.0));
        assert!(sim.controller.rate() <= 50.0);
        sim.run_until(40 * SEC);
        let sent: u64 = sim.seconds[32..40].iter().map(|s| s.ok + s.overload).sum();
        assert!(sent as f64 / 8.0 <= 50.0 * 1.001);
    }

    #[test]
    fn slow_start_doubles_until_the_first_congestion() {
        let mut sim = Sim::new(
            System::new(200, 50 * MS, 200, 0.0),
            ControllerSettings::default(),
            None,
        );
        let mut seen = vec![sim.controller.limit()];
        while sim.controller.slow_start {
            let t = sim.now + 10 * MS;
            sim.run_until(t);
            if seen.last() != Some(&sim.controller.limit()) {
                seen.push(sim.controller.limit());
            }
        }
        eprintln!("slow start: {seen:?} by {:?}", sim.now);
        assert_eq!(seen[..8], [1, 2, 4, 8, 16, 32, 64, 128]);
        assert!(sim.now <= 3 * SEC);
    }

    #[test]
    fn start_tier_sets_the_starting_rate() {
        let t0 = Instant::now();
        let s = ControllerSettings::default();
        let rate = |tier| Controller::new(s.clone(), t0, None, Some(tier)).rate();
        assert!((rate(Tier::Fast) - s.fast_threshold).abs() < 1e-9);
        assert!((rate(Tier::Medium) - s.medium_threshold).abs() < 1e-9);
        assert!((rate(Tier::Slow) - s.slow_tier_start_rate).abs() < 1e-9);
        let slow = Controller::new(s.clone(), t0, None, Some(Tier::Slow));
        assert_eq!(slow.tier(), Tier::Slow);
        assert_eq!(slow.limit(), 1);
        let paused = Controller::new(s.clone(), t0, None, Some(Tier::Paused));
        assert_eq!(paused.tier(), Tier::Paused);
        assert!(matches!(
            paused.permit(t0 + 3600 * SEC, 0),
            Permit::WaitUntil(_)
        ));
        let none = Controller::new(s, t0, None, None);
        assert_eq!((none.tier(), none.limit()), (Tier::Fast, 1));
    }

    #[test]
    fn slow_start_tier_keeps_its_pace_and_climbs() {
        // Configured slow (2/s) on a system that takes 20 × 50 ms = 400/s.
        let mut sim = Sim::new(
            System::new(20, 50 * MS, 20, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.controller = Controller::new(
            ControllerSettings::default(),
            sim.t0,
            None,
            Some(Tier::Slow),
        );
        sim.run_until(2 * SEC);
        let early: u64 = sim.seconds.iter().map(|s| s.ok).sum();
        sim.run_until(120 * SEC);
        eprintln!(
            "start slow: {early} deliveries in the first 2 s; after 2 min limit {} rate {:.1}/s tier {}",
            sim.controller.limit(),
            sim.controller.rate(),
            sim.controller.tier()
        );
        assert!(early <= 6, "a slow start tier must start slow");
        assert_eq!(sim.controller.tier(), Tier::Fast);
    }

    #[test]
    fn operator_pause_stops_sending() {
        let t0 = Instant::now();
        let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
        c.set_paused(true, t0);
        assert_eq!(c.tier(), Tier::Paused);
        assert!(matches!(c.permit(t0 + SEC, 0), Permit::WaitUntil(_)));
        c.set_paused(false, t0 + 2 * SEC);
        assert_ne!(c.tier(), Tier::Paused);
        assert_eq!(c.permit(t0 + 2 * SEC, 0), Permit::Send);
        let reasons: Vec<String> = c
            .take_tier_changes()
            .into_iter()
            .map(|c| c.reason)
            .collect();
        assert_eq!(reasons[0], "paused by operator");
        assert!(reasons[1].starts_with("resumed by operator"));
    }

    #[test]
    fn memory_is_small_and_constant() {
        let size = std::mem::size_of::<Controller>();
        eprintln!("size_of::<Controller>() = {size} bytes");
        assert!(size <= 1024);
        let t0 = Instant::now();
        let mut c = Controller::new(ControllerSettings::default(), t0, None, None);
        for i in 0..10_000u32 {
            c.set_paused(i % 2 == 0, t0 + i * MS);
        }
        assert_eq!(c.take_tier_changes().len(), MAX_PENDING_TIER_CHANGES);
    }

    #[test]
    fn tier_names() {
        let names = [
            Tier::Fast,
            Tier::Medium,
            Tier::Slow,
            Tier::Paused,
            Tier::CircuitOpen,
        ]
        .map(Tier::as_str);
        assert_eq!(names, ["fast", "medium", "slow", "paused", "circuit_open"]);
    }

    #[test]
    fn baseline_follows_a_slower_or_faster_system() {
        for (factor, label) in [(2.0, "slower"), (0.5, "faster")] {
            let mut sim = Sim::new(
                System::new(20, 50 * MS, 20, 0.2),
                ControllerSettings::default(),
                None,
            );
            sim.run_until(30 * SEC);
            sim.system.service = sim.system.service.mul_f64(factor);
            let mut trace = Vec::new();
            for step in 1..=12 {
                sim.run_until(30 * SEC + step * 5 * SEC);
                trace.push((
                    sim.controller.limit(),
                    sim.controller
                        .snapshot()
                        .rtt_baseline
                        .map(|b| b.as_millis()),
                ));
            }
            let after = sim.limits_between(70 * SEC, 90 * SEC);
            let (goodput, overload) = sim.goodput(70, 90);
            let capacity = 20.0 / (0.05 * factor);
            eprintln!(
                "system {label} (service ×{factor}) at 30 s: every 5 s (limit, baseline ms) {trace:?}; \
                 from 70 s limit mean {:.1}, goodput {:.1}% of capacity, overload {:.2}%",
                mean(&after),
                goodput / capacity * 100.0,
                overload * 100.0
            );
            assert!((mean(&after) - 20.0).abs() <= 4.0);
            assert!(goodput >= 0.9 * capacity);
        }
    }

    #[test]
    fn limit_follows_a_capacity_rise() {
        let service = 50 * MS;
        let mut sim = Sim::new(
            System::new(10, service, 40, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.run_until(30 * SEC);
        sim.system.workers = 40;
        sim.run_until(60 * SEC);
        let reached_at = sim
            .limits
            .iter()
            .find(|(at, limit)| *at >= 30 * SEC && *limit >= 32)
            .map(|(at, _)| *at - 30 * SEC);
        let after = sim.limits_between(45 * SEC, 60 * SEC);
        let (goodput, overload) = sim.goodput(45, 60);
        eprintln!(
            "C 10→40: within ±20% of 40 after {reached_at:?}; from 15 s later mean {:.1}, {:.0}% \
             of samples within ±20%, goodput {:.1}% of capacity, overload answers {:.2}%",
            mean(&after),
            share_within(&after, 32.0, 48.0) * 100.0,
            goodput / (40.0 / service.as_secs_f64()) * 100.0,
            overload * 100.0
        );
        assert!(reached_at.is_some_and(|at| at <= 15 * SEC));
        assert!(share_within(&after, 32.0, 48.0) >= 0.9);
    }

    #[test]
    fn failures_decrease_the_limit_once_per_window() {
        let mut sim = Sim::new(
            System::new(20, 50 * MS, 20, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.run_until(10 * SEC);
        let now = sim.t0 + 10 * SEC;
        let c = &mut sim.controller;
        let (before, ratio) = (c.limit, c.settings.backoff_ratio);
        c.observe(now, 50 * MS, Signal::ServerError);
        assert!((c.limit - before * ratio).abs() < 1e-9);
        // Attempts sent before that decrease were sent at the old limit: no further decrease.
        c.observe(now + MS, 60 * MS, Signal::Timeout);
        c.observe(
            now + 2 * MS,
            70 * MS,
            Signal::Overload { retry_after: None },
        );
        assert!((c.limit - before * ratio).abs() < 1e-9);
        // An attempt sent after it fails too: decrease again.
        c.observe(now + 100 * MS, 50 * MS, Signal::ConnectionError);
        assert!((c.limit - before * ratio * ratio).abs() < 1e-9);
        assert_eq!(c.circuit(), Circuit::Closed);
    }

    #[test]
    fn a_burst_of_failures_already_in_flight_does_not_open_the_circuit() {
        let mut sim = Sim::new(
            System::new(20, 50 * MS, 20, 0.2),
            ControllerSettings::default(),
            None,
        );
        sim.run_until(10 * SEC);
        let now = sim.t0 + 10 * SEC;
        let c = &mut sim.controller;
        // A queue overflowed once: twenty 503s for attempts all sent before the first came back.
        for i in 0..20u32 {
            c.observe(
                now + i * 100 * MICROS,
                2 * MS,
                Signal::Overload { retry_after: None },
            );
        }
        assert_eq!(c.circuit(), Circuit::Closed);
        // Failures that keep coming for attempts sent after that do open it.
        for i in 1..c.settings.circuit_failures {
            c.observe(
                now + i * 10 * MS,
                MS,
                Signal::Overload { retry_after: None },
            );
        }
        assert_eq!(c.circuit(), Circuit::Open);
    }
}
