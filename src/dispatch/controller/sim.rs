//! A discrete-event simulator for the controller's tests: a sender with an unlimited backlog or
//! with work offered at a fixed rate (the load harness's open-loop arrivals), a simulated customer
//! system (workers, a wait queue, answers when full), seeded randomness and simulated time, so
//! every run is deterministic. The sender is the controller, or the `fixed` baseline to compare
//! it with; every success's latency, RTT and time in the system's queue is recorded.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::super::policy::FixedRate;
use super::{Controller, ControllerSettings, Permit, Signal, Ticket, Tier};

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
    queue: VecDeque<Request>,
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

/// One request: when its work arrived at the sender, when it was sent, and the controller's
/// ticket (`None` under the `fixed` baseline).
#[derive(Clone, Copy)]
struct Request {
    arrived: Duration,
    sent_at: Duration,
    ticket: Option<Ticket>,
}

/// One reply on its way back.
struct Reply {
    request: Request,
    /// Time it waited in the system's queue before a worker took it.
    queued: Duration,
    overload: bool,
}

/// One success, as the sender saw it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Served {
    /// When the reply came back.
    pub(super) at: Duration,
    /// From the work's arrival at the sender to the reply: what the load harness's latency
    /// percentiles measure (waiting at the sender, in the system's queue, and service).
    pub(super) latency: Duration,
    /// From the send to the reply.
    pub(super) rtt: Duration,
    /// Time in the system's queue before a worker took it.
    pub(super) queued: Duration,
}

/// Work offered at a fixed rate, one item every `every`: the load harness's open-loop
/// generator. What the sender has not sent yet waits in its backlog.
struct Offered {
    every: Duration,
    next: Duration,
    /// Arrival times of work not yet sent, oldest first.
    backlog: VecDeque<Duration>,
}

/// Per-second counts of what the sender saw.
#[derive(Clone, Copy, Default)]
pub(super) struct Second {
    pub(super) ok: u64,
    pub(super) overload: u64,
    /// Sum of the successes' time in the system's queue.
    pub(super) queued: Duration,
}

/// The discrete-event simulation: a sender asks `permit()` whenever it has work and could send
/// (after every arrival, after every reply and at every `WaitUntil`) and sends to the system.
/// Its work is an unlimited backlog unless [`Sim::offered`] sets an arrival rate.
pub(super) struct Sim {
    pub(super) t0: Instant,
    pub(super) now: Duration,
    pub(super) system: System,
    pub(super) controller: Controller,
    /// The `fixed` baseline sends instead of the controller.
    fixed: Option<FixedRate>,
    offered: Option<Offered>,
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
    /// Every success, in the order the replies came back.
    pub(super) served: Vec<Served>,
}

impl Sim {
    pub(super) fn new(system: System, settings: ControllerSettings, ceiling: Option<f64>) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: Duration::ZERO,
            system,
            controller: Controller::new(settings, t0, ceiling, None),
            fixed: None,
            offered: None,
            in_flight: 0,
            replies: BinaryHeap::new(),
            pending: HashMap::new(),
            seq: 0,
            wake: Duration::ZERO,
            seconds: Vec::new(),
            limits: Vec::new(),
            next_sample: Duration::ZERO,
            served: Vec::new(),
        }
    }

    /// The same simulation with work offered at `per_sec` items a second, evenly spaced from
    /// time zero, instead of an unlimited backlog.
    pub(super) fn offered(mut self, per_sec: f64) -> Self {
        self.offered = Some(Offered {
            every: Duration::from_secs_f64(1.0 / per_sec),
            next: Duration::ZERO,
            backlog: VecDeque::new(),
        });
        self
    }

    /// The same simulation with the `fixed` baseline sending instead of the controller: one pace
    /// of `per_sec`, in flight unlimited (the load harness's default of 1000), deaf to answers.
    pub(super) fn fixed(mut self, per_sec: f64) -> Self {
        self.fixed = Some(FixedRate::new(per_sec, Tier::Fast, 1000, None));
        self
    }

    pub(super) fn run_until(&mut self, end: Duration) {
        loop {
            self.pump();
            let reply_at = self.replies.peek().map_or(Duration::MAX, |r| r.0.0);
            let arrival_at = self.offered.as_ref().map_or(Duration::MAX, |o| o.next);
            let next = reply_at
                .min(self.wake)
                .min(self.next_sample)
                .min(arrival_at);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            if next == self.next_sample {
                self.limits.push((next, self.controller.limit()));
                self.next_sample += 100 * MS;
            }
            if next == arrival_at
                && let Some(offered) = &mut self.offered
            {
                offered.backlog.push_back(next);
                offered.next += offered.every;
            }
            if next == reply_at {
                self.deliver_reply();
            }
        }
    }

    fn pump(&mut self) {
        loop {
            // With offered work and none waiting, there is nothing to ask for until it arrives.
            let Some(arrived) = self
                .offered
                .as_ref()
                .map_or(Some(self.now), |o| o.backlog.front().copied())
            else {
                self.wake = Duration::MAX;
                return;
            };
            let now = self.t0 + self.now;
            let permit = match &self.fixed {
                Some(fixed) => fixed.permit(now, self.in_flight),
                None => self.controller.permit(now, self.in_flight),
            };
            match permit {
                Permit::Send => {
                    let ticket = match &mut self.fixed {
                        Some(fixed) => {
                            fixed.on_send(now);
                            None
                        }
                        None => Some(self.controller.on_send(now, self.in_flight)),
                    };
                    if let Some(offered) = &mut self.offered {
                        offered.backlog.pop_front();
                    }
                    self.in_flight += 1;
                    self.arrive(Request {
                        arrived,
                        sent_at: self.now,
                        ticket,
                    });
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

    fn arrive(&mut self, request: Request) {
        let now = self.now;
        if self.system.busy < self.system.workers {
            self.system.busy += 1;
            let done = now + self.system.service_time();
            let reply = Reply {
                request,
                queued: Duration::ZERO,
                overload: false,
            };
            self.schedule(done, reply);
        } else if self.system.queue.len() < self.system.queue_cap {
            self.system.queue.push_back(request);
        } else {
            let reply = Reply {
                request,
                queued: Duration::ZERO,
                overload: true,
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
        let request = reply.request;
        let rtt = at - request.sent_at;
        if !reply.overload {
            self.served.push(Served {
                at,
                latency: at - request.arrived,
                rtt,
                queued: reply.queued,
            });
        }
        if let Some(ticket) = request.ticket {
            self.controller
                .observe(self.t0 + at, ticket, Some(rtt), signal);
        }
    }

    fn start_waiting(&mut self) {
        while self.system.busy < self.system.workers {
            let Some(request) = self.system.queue.pop_front() else {
                return;
            };
            self.system.busy += 1;
            let done = self.now + self.system.service_time();
            let reply = Reply {
                request,
                queued: self.now - request.sent_at,
                overload: false,
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

    /// The `q` quantile (0..=1) of `field` over the successes whose replies came back in
    /// [from, to) seconds; zero if there were none.
    pub(super) fn quantile(
        &self,
        from: usize,
        to: usize,
        q: f64,
        field: fn(&Served) -> Duration,
    ) -> Duration {
        let span = Duration::from_secs(from as u64)..Duration::from_secs(to as u64);
        let mut values: Vec<Duration> = self
            .served
            .iter()
            .filter(|s| span.contains(&s.at))
            .map(field)
            .collect();
        values.sort_unstable();
        let Some(last) = values.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        // `as` saturates; the rank lies in 0..=last.
        values[((last as f64) * q).round() as usize]
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
