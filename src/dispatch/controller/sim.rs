//! A discrete-event simulator for the controller's tests: a sender with an unlimited backlog, a
//! simulated customer system (workers, a wait queue, answers when full), seeded randomness and
//! simulated time, so every run is deterministic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::{Controller, ControllerSettings, Permit, Signal, Ticket};

pub(super) const MICROS: Duration = Duration::from_micros(1);
pub(super) const MS: Duration = Duration::from_millis(1);
pub(super) const SEC: Duration = Duration::from_secs(1);

/// xorshift64*: deterministic jitter for the simulated system.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn unit(&mut self) -> f64 {
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
/// (± `jitter`), a FIFO wait queue of `queue_cap`, and an immediate overload answer when that is
/// full (with `retry_after`, if set: a hard cap that says how long to stay away).
pub(super) struct System {
    pub(super) workers: usize,
    busy: usize,
    queue: VecDeque<(Duration, Ticket)>,
    pub(super) queue_cap: usize,
    pub(super) service: Duration,
    jitter: f64,
    /// Exponential service times (mean `service`) instead of uniform jitter: a heavy tail.
    pub(super) exponential: bool,
    /// Sent with every overload answer.
    pub(super) retry_after: Option<Duration>,
    rng: Rng,
}

impl System {
    pub(super) fn new(workers: usize, service: Duration, queue_cap: usize, jitter: f64) -> Self {
        Self {
            workers,
            busy: 0,
            queue: VecDeque::new(),
            queue_cap,
            service,
            jitter,
            exponential: false,
            retry_after: None,
            rng: Rng(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// The same system with its randomness drawn from `seed`.
    pub(super) fn seeded(mut self, seed: u64) -> Self {
        self.rng = Rng(seed | 1);
        self
    }

    /// The same system answering every overload with this `Retry-After` (a hard cap).
    pub(super) fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
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

/// One reply on its way back.
struct Reply {
    sent_at: Duration,
    /// Time it waited in the system's queue before a worker took it.
    queued: Duration,
    overload: bool,
    ticket: Ticket,
}

/// Per-second counts of what the sender saw.
#[derive(Clone, Copy, Default)]
pub(super) struct Second {
    pub(super) ok: u64,
    pub(super) overload: u64,
    /// Sum of the successes' time in the system's queue.
    pub(super) queued: Duration,
}

/// The discrete-event simulation: a sender with unlimited backlog asks `permit()` whenever it
/// could send (after every reply and at every `WaitUntil`) and sends to the system.
pub(super) struct Sim {
    pub(super) t0: Instant,
    pub(super) now: Duration,
    pub(super) system: System,
    pub(super) controller: Controller,
    in_flight: usize,
    /// (arrives at, sequence), earliest first; the rest of each reply is in `pending`.
    replies: BinaryHeap<Reverse<(Duration, u64)>>,
    pending: HashMap<u64, Reply>,
    seq: u64,
    wake: Duration,
    pub(super) seconds: Vec<Second>,
    /// (time, limit) every 100 ms.
    pub(super) limits: Vec<(Duration, usize)>,
    next_sample: Duration,
}

impl Sim {
    pub(super) fn new(system: System, settings: ControllerSettings, ceiling: Option<f64>) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: Duration::ZERO,
            system,
            controller: Controller::new(settings, t0, ceiling, None),
            in_flight: 0,
            replies: BinaryHeap::new(),
            pending: HashMap::new(),
            seq: 0,
            wake: Duration::ZERO,
            seconds: Vec::new(),
            limits: Vec::new(),
            next_sample: Duration::ZERO,
        }
    }

    pub(super) fn run_until(&mut self, end: Duration) {
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
                    let ticket = self.controller.on_send(now, self.in_flight);
                    self.in_flight += 1;
                    self.arrive(ticket);
                }
                Permit::WaitUntil(at) => {
                    assert!(at > now, "WaitUntil must lie in the future");
                    self.wake = at - self.t0;
                    return;
                }
            }
        }
    }

    fn schedule(&mut self, at: Duration, reply: Reply) {
        self.seq += 1;
        self.replies.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, reply);
    }

    fn arrive(&mut self, ticket: Ticket) {
        let now = self.now;
        if self.system.busy < self.system.workers {
            self.system.busy += 1;
            let done = now + self.system.service_time();
            let reply = Reply {
                sent_at: now,
                queued: Duration::ZERO,
                overload: false,
                ticket,
            };
            self.schedule(done, reply);
        } else if self.system.queue.len() < self.system.queue_cap {
            self.system.queue.push_back((now, ticket));
        } else {
            let reply = Reply {
                sent_at: now,
                queued: Duration::ZERO,
                overload: true,
                ticket,
            };
            self.schedule(now + MS, reply);
        }
    }

    fn deliver_reply(&mut self) {
        let Some(Reverse((at, seq))) = self.replies.pop() else {
            return;
        };
        let Some(reply) = self.pending.remove(&seq) else {
            return;
        };
        self.in_flight -= 1;
        if !reply.overload {
            self.system.busy -= 1;
            self.start_waiting();
        }
        let second = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
        if self.seconds.len() <= second {
            self.seconds.resize(second + 1, Second::default());
        }
        let signal = if reply.overload {
            self.seconds[second].overload += 1;
            Signal::Overload {
                retry_after: self.system.retry_after,
            }
        } else {
            self.seconds[second].ok += 1;
            self.seconds[second].queued += reply.queued;
            Signal::Success
        };
        let rtt = at - reply.sent_at;

        self.controller
            .observe(self.t0 + at, reply.ticket, Some(rtt), signal);
    }

    fn start_waiting(&mut self) {
        while self.system.busy < self.system.workers {
            let Some((sent_at, ticket)) = self.system.queue.pop_front() else {
                return;
            };
            self.system.busy += 1;
            let done = self.now + self.system.service_time();
            let reply = Reply {
                sent_at,
                queued: self.now - sent_at,
                overload: false,
                ticket,
            };
            self.schedule(done, reply);
        }
    }

    /// Successes per second and the share of overload answers over [from, to) seconds.
    pub(super) fn goodput(&self, from: usize, to: usize) -> (f64, f64) {
        let span = self.span(from, to);
        let ok: u64 = span.iter().map(|s| s.ok).sum();
        let overload: u64 = span.iter().map(|s| s.overload).sum();
        let total = (ok + overload).max(1);
        (
            ok as f64 / (to - from) as f64,
            overload as f64 / total as f64,
        )
    }

    /// Mean time a success waited in the system's queue over [from, to) seconds.
    pub(super) fn mean_queueing(&self, from: usize, to: usize) -> Duration {
        let span = self.span(from, to);
        let ok: u64 = span.iter().map(|s| s.ok).sum();
        let queued: Duration = span.iter().map(|s| s.queued).sum();
        queued / u32::try_from(ok.max(1)).unwrap_or(u32::MAX)
    }

    fn span(&self, from: usize, to: usize) -> &[Second] {
        &self.seconds[from.min(self.seconds.len())..to.min(self.seconds.len())]
    }

    /// Limit samples taken in [from, to).
    pub(super) fn limits_between(&self, from: Duration, to: Duration) -> Vec<usize> {
        self.limits
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, limit)| *limit)
            .collect()
    }
}

pub(super) fn share_within(samples: &[usize], low: f64, high: f64) -> f64 {
    let within = samples
        .iter()
        .filter(|l| (low..=high).contains(&(**l as f64)))
        .count();
    within as f64 / samples.len().max(1) as f64
}

pub(super) fn mean(samples: &[usize]) -> f64 {
    samples.iter().sum::<usize>() as f64 / samples.len().max(1) as f64
}

/// Reports an attempt the test made up (no `on_send`): sent `rtt` before `now`, in no window.
pub(super) trait Report {
    fn report(&mut self, now: Instant, rtt: Duration, signal: Signal);
}

impl Report for Controller {
    fn report(&mut self, now: Instant, rtt: Duration, signal: Signal) {
        let ticket = Ticket {
            sent_at: now.checked_sub(rtt).unwrap_or(now),
            window: None,
            in_flight: usize::MAX,
        };
        self.observe(now, ticket, Some(rtt), signal);
    }
}
