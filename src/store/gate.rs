//! The turn-taking in front of SQLite's one write connection: intake goes first.
//!
//! SQLite allows one writer at a time, so every write — a caller's group commit, a batch of
//! claims, a batch of outcomes, a retention step — queues for the same connection. A plain FIFO
//! queue lets a Submit wait behind any number of dispatch transactions, and a flood of submits
//! starve deliveries. The gate has three classes instead:
//!
//! - [`Priority::Express`]: a commit of a few notifications whose callers wait on nothing else
//!   (unary Submits), kept apart from the group commits so they do not wait for a big batch;
//! - [`Priority::Caller`]: other writes a caller is waiting on (intake's group commits, API
//!   writes);
//! - [`Priority::Background`]: dispatch and housekeeping (claims, outcomes, lease recovery,
//!   retention).
//!
//! When the connection comes free, a waiting express commit goes first, unless the last turn
//! was an express one too: then a waiting group commit or background write goes before the next.
//! Between group commits and background work, the class that did *not* have the last of their
//! turns goes next. So an express commit waits for at most the transaction under way (and, in a
//! flood of them, one more); a group commit waits behind at most one background transaction
//! (which the dispatch code keeps short) and an express one; and background work behind at most
//! one group commit (which takes everything queued, up to a few hundred rows) and an express one. Every class
//! always makes progress, and with only one class waiting it goes at once.
//!
//! One exception: while SQLite's checkpointer prepares a WAL restart it makes the gate express
//! only ([`WriteGate::express_only`]) for a passive checkpoint or two, so that unary Submits go
//! on while group commits and background writes wait.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Which queue a write waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    /// A small commit its callers are waiting on alone.
    Express,
    /// A caller is waiting for this write.
    Caller,
    /// Dispatch and housekeeping.
    Background,
}

/// The gate; shared by every clone of the store.
#[derive(Debug, Default)]
pub(super) struct WriteGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Someone holds the turn.
    busy: bool,
    /// The class of the last (or current) holder.
    last: Option<Priority>,
    /// Of group commits and background writes, the class that had the last turn.
    last_of_two: Option<Priority>,
    /// Waiters per class, oldest first: [express, caller, background].
    waiting: [VecDeque<oneshot::Sender<Turn>>; 3],
    /// A holder that lent its turn to an express commit (see [`WriteGate::lend_to_express`]),
    /// with its class: it gets the turn back before anyone else.
    lender: Option<(Priority, oneshot::Sender<Turn>)>,
    /// Only express commits get the turn (see [`WriteGate::express_only`]).
    express_only: bool,
}

/// The right to use the write connection; the next waiter gets it when this is dropped.
#[derive(Debug)]
pub(super) struct Turn {
    gate: Option<Arc<WriteGate>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            WriteGate::pass_on(&gate);
        }
    }
}

impl WriteGate {
    /// Waits for this class's turn at the write connection.
    pub(super) async fn turn(self: &Arc<Self>, priority: Priority) -> Turn {
        let waiting = {
            let mut state = self.lock();
            if !state.busy && state.may_go(priority) {
                state.busy = true;
                state.took(priority);
                return Turn {
                    gate: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            state.waiting[index(priority)].push_back(tx);
            rx
        };
        // The sender is only dropped after a `Turn` was sent, or with the gate itself.
        waiting.await.unwrap_or(Turn { gate: None })
    }

    /// Holds back group commits and background writes until the guard is dropped: only express
    /// commits get the turn meanwhile, and a write already under way finishes. SQLite's
    /// checkpointer uses it to copy the WAL into the database file with only unary Submits
    /// writing, so that the WAL restart after it has almost nothing left to copy and holds the
    /// connection for milliseconds (see `store::wal`). One guard at a time: the checkpointer is
    /// its only user, and the first guard dropped ends the mode.
    pub(super) fn express_only(self: &Arc<Self>) -> ExpressOnly {
        self.lock().express_only = true;
        ExpressOnly { gate: self.clone() }
    }

    /// Whether an express commit is waiting for the turn.
    pub(super) fn express_waiting(&self) -> bool {
        !self.lock().waiting[index(Priority::Express)].is_empty()
    }

    /// How many writes of this class wait for the turn (tests set up a queue with it).
    #[cfg(test)]
    pub(super) fn queued(&self, priority: Priority) -> usize {
        self.lock().waiting[index(priority)].len()
    }

    /// Lends `turn`, held in class `class`, to the oldest waiting express commit, and waits for
    /// it back, which comes before any other waiter. A background batch of several statements
    /// calls this between two of them: an express commit then waits for one statement, not the
    /// whole batch, and the batch keeps its place in the alternation (it is still one turn).
    /// With no express commit waiting, `turn` comes straight back.
    pub(super) async fn lend_to_express(self: &Arc<Self>, mut turn: Turn, class: Priority) -> Turn {
        let back = {
            let mut state = self.lock();
            loop {
                let Some(waiter) = state.waiting[index(Priority::Express)].pop_front() else {
                    return turn;
                };
                let lent = Turn {
                    gate: turn.gate.take(),
                };
                match waiter.send(lent) {
                    Ok(()) => break,
                    // That waiter gave up: take the turn back and try the next one.
                    Err(mut unused) => turn.gate = unused.gate.take(),
                }
            }
            state.last = Some(Priority::Express);
            let (tx, rx) = oneshot::channel();
            state.lender = Some((class, tx));
            rx
        };
        // The sender is only dropped after a `Turn` was sent, or with the gate itself.
        back.await.unwrap_or(Turn { gate: None })
    }

    /// Hands the turn back to a lender, if one waits for it, else to the next waiter in the
    /// order [`GateState::order`] gives.
    fn pass_on(gate: &Arc<WriteGate>) {
        let mut state = gate.lock();
        if let Some((class, lender)) = state.lender.take() {
            state.took(class);
            if Self::hand(gate, lender) {
                return;
            }
            // The lender gave up (its future was dropped): on to the waiters.
        }
        loop {
            let next = state
                .order()
                .into_iter()
                .find(|p| state.may_go(*p) && !state.waiting[index(*p)].is_empty());
            let Some(priority) = next else {
                state.busy = false;
                return;
            };
            let Some(waiter) = state.waiting[index(priority)].pop_front() else {
                continue;
            };
            state.took(priority);
            if Self::hand(gate, waiter) {
                return;
            }
        }
    }

    /// Sends the turn to `waiter`; false if it gave up waiting (its future was dropped). The
    /// turn it never took must not recurse into `pass_on` while the lock is held, so it is
    /// disarmed, and the caller tries the next waiter.
    fn hand(gate: &Arc<WriteGate>, waiter: oneshot::Sender<Turn>) -> bool {
        let turn = Turn {
            gate: Some(gate.clone()),
        };
        match waiter.send(turn) {
            Ok(()) => true,
            Err(mut unused) => {
                unused.gate = None;
                false
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // std Mutex: held only for a few pointer moves, never across an await.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Group commits and background writes are held back while this lives (see
/// [`WriteGate::express_only`]).
#[derive(Debug)]
pub(super) struct ExpressOnly {
    gate: Arc<WriteGate>,
}

impl Drop for ExpressOnly {
    fn drop(&mut self) {
        let idle = {
            let mut state = self.gate.lock();
            state.express_only = false;
            // Whoever holds the turn passes it on to the writes held back. If nobody does, take
            // the turn here to pass it on.
            let idle = !state.busy;
            state.busy = true;
            idle
        };
        if idle {
            WriteGate::pass_on(&self.gate);
        }
    }
}

impl GateState {
    /// Whether `priority` may have the turn now: every class, unless the gate is express only.
    fn may_go(&self, priority: Priority) -> bool {
        !self.express_only || priority == Priority::Express
    }

    /// Records who has the turn now.
    fn took(&mut self, priority: Priority) {
        self.last = Some(priority);
        if priority != Priority::Express {
            self.last_of_two = Some(priority);
        }
    }

    /// The classes in the order the next turn tries them (see the module docs).
    fn order(&self) -> [Priority; 3] {
        use Priority::{Background, Caller, Express};
        let [first, second] = match self.last_of_two {
            Some(Caller) => [Background, Caller],
            _ => [Caller, Background],
        };
        match self.last {
            Some(Express) => [first, second, Express],
            _ => [Express, first, second],
        }
    }
}

fn index(priority: Priority) -> usize {
    match priority {
        Priority::Express => 0,
        Priority::Caller => 1,
        Priority::Background => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Report = tokio::sync::mpsc::UnboundedSender<Priority>;

    /// Queues a task per class in `waiters`, in order; each reports its class on `report` when
    /// it gets the turn.
    async fn queue(
        gate: &Arc<WriteGate>,
        waiters: &[Priority],
        report: &Report,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for &p in waiters {
            let (gate, report) = (gate.clone(), report.clone());
            tasks.push(tokio::spawn(async move {
                let turn = gate.turn(p).await;
                report.send(p).unwrap();
                // Hold it a moment, as a real write would.
                tokio::task::yield_now().await;
                drop(turn);
            }));
            // Let each waiter queue before the next.
            tokio::task::yield_now().await;
        }
        tasks
    }

    /// Waits for `tasks`, then gives the classes in the order they were reported.
    async fn reported(
        tasks: Vec<tokio::task::JoinHandle<()>>,
        report: Report,
        mut reports: tokio::sync::mpsc::UnboundedReceiver<Priority>,
    ) -> Vec<Priority> {
        for task in tasks {
            task.await.unwrap();
        }
        drop(report);
        let mut seen = Vec::new();
        while let Some(p) = reports.recv().await {
            seen.push(p);
        }
        seen
    }

    /// Who got each turn, in order, when `waiters` queue behind a held turn.
    async fn order(first: Priority, waiters: &[Priority]) -> Vec<Priority> {
        let gate = Arc::new(WriteGate::default());
        let held = gate.turn(first).await;
        let (report, reports) = tokio::sync::mpsc::unbounded_channel();
        let tasks = queue(&gate, waiters, &report).await;
        drop(held);
        reported(tasks, report, reports).await
    }

    #[tokio::test]
    async fn a_caller_waits_behind_at_most_one_background_write() {
        use Priority::{Background as B, Caller as C};
        // Three background writes queued before two callers: after the held background turn,
        // callers and background alternate.
        assert_eq!(order(B, &[B, B, B, C, C]).await, [C, B, C, B, B]);
        // After a caller's turn, a waiting background write goes before the next caller.
        assert_eq!(order(C, &[C, B, C]).await, [B, C, C]);
        // One class alone goes in arrival order.
        assert_eq!(order(B, &[B, B]).await, [B, B]);
    }

    #[tokio::test]
    async fn an_express_commit_waits_only_for_the_write_under_way() {
        use Priority::{Background as B, Caller as C, Express as E};
        // Queued last, behind group commits and background writes, it still goes next.
        assert_eq!(order(B, &[C, B, C, E]).await, [E, C, B, C]);
        assert_eq!(order(C, &[B, C, E]).await, [E, B, C]);
        // A flood of express commits alternates with the rest, so nothing starves; between the
        // express turns, group commits and background writes keep alternating too.
        assert_eq!(order(E, &[E, E, C, B, C]).await, [C, E, B, E, C]);
        // Alone, express commits go in arrival order.
        assert_eq!(order(E, &[E, E]).await, [E, E]);
    }

    #[tokio::test]
    async fn a_lent_turn_comes_back_before_anyone_else() {
        use Priority::{Background as B, Caller as C, Express as E};
        let gate = Arc::new(WriteGate::default());
        let held = gate.turn(B).await;
        // Nothing to lend to: the turn comes straight back.
        let held = gate.lend_to_express(held, B).await;
        let (report, reports) = tokio::sync::mpsc::unbounded_channel();
        let tasks = queue(&gate, &[C, E, E], &report).await;
        assert!(gate.express_waiting());
        // The first express commit goes, then the lender, before the caller and the second one.
        let held = gate.lend_to_express(held, B).await;
        report.send(B).unwrap();
        drop(held);
        let seen = reported(tasks, report, reports).await;
        // After the lender's (background) turn: the waiting express commit, then the caller.
        assert_eq!(seen, [E, B, E, C]);
    }

    #[tokio::test]
    async fn express_only_holds_back_the_rest_until_dropped() {
        use Priority::{Background as B, Caller as C, Express as E};
        let gate = Arc::new(WriteGate::default());
        let held = gate.turn(B).await;
        let only = gate.express_only();
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let tasks = queue(&gate, &[C, B, E, E], &report).await;
        // The write under way ends: the express commits go, the others wait.
        drop(held);
        assert_eq!(reports.recv().await, Some(E));
        assert_eq!(reports.recv().await, Some(E));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!((gate.queued(C), gate.queued(B)), (1, 1));
        // The gate is idle now; dropping the guard hands the turn on, callers first (the last
        // of the two classes to go was background).
        drop(only);
        assert_eq!(reported(tasks, report, reports).await, [C, B]);
    }

    #[tokio::test]
    async fn an_idle_express_only_gate_still_makes_the_rest_wait() {
        let gate = Arc::new(WriteGate::default());
        let only = gate.express_only();
        let (report, reports) = tokio::sync::mpsc::unbounded_channel();
        let tasks = queue(&gate, &[Priority::Caller], &report).await;
        tokio::task::yield_now().await;
        assert_eq!(gate.queued(Priority::Caller), 1);
        // An express commit still goes at once.
        drop(gate.turn(Priority::Express).await);
        assert_eq!(gate.queued(Priority::Caller), 1);
        drop(only);
        assert_eq!(reported(tasks, report, reports).await, [Priority::Caller]);
    }

    #[tokio::test]
    async fn an_abandoned_wait_passes_the_turn_on() {
        let gate = Arc::new(WriteGate::default());
        let held = gate.turn(Priority::Caller).await;
        let abandoned = tokio::spawn({
            let gate = gate.clone();
            async move { gate.turn(Priority::Background).await }
        });
        tokio::task::yield_now().await;
        abandoned.abort();
        let _ = abandoned.await;
        let next = tokio::spawn({
            let gate = gate.clone();
            async move { drop(gate.turn(Priority::Caller).await) }
        });
        tokio::task::yield_now().await;
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("the turn was lost")
            .unwrap();
    }
}
