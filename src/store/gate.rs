//! The turn-taking in front of SQLite's one write connection: intake goes first.
//!
//! SQLite allows one writer at a time, so every write — a caller's group commit, a batch of
//! claims, a batch of outcomes, a retention step — queues for the same connection. A plain FIFO
//! queue lets a Submit wait behind any number of dispatch transactions, and a flood of submits
//! starve deliveries. The gate has two classes instead:
//!
//! - [`Priority::Caller`]: writes a caller is waiting on (intake's group commit, API writes);
//! - [`Priority::Background`]: dispatch and housekeeping (claims, outcomes, lease recovery,
//!   retention).
//!
//! When the connection comes free and both classes wait, the class that did *not* have the last
//! turn goes next. So a caller's commit waits behind at most one background transaction (which
//! the dispatch code keeps short), and background work behind at most one group commit (which
//! takes everything queued at once): both always make progress. With only one class waiting, it
//! goes at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Which queue a write waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
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
    /// Waiters per class, oldest first: [caller, background].
    waiting: [VecDeque<oneshot::Sender<Turn>>; 2],
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
            if !state.busy {
                state.busy = true;
                state.last = Some(priority);
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

    /// Hands the turn to the next waiter, alternating classes when both wait.
    fn pass_on(gate: &Arc<WriteGate>) {
        let mut state = gate.lock();
        loop {
            let next = match state.last {
                Some(Priority::Caller) => [Priority::Background, Priority::Caller],
                _ => [Priority::Caller, Priority::Background],
            }
            .into_iter()
            .find(|p| !state.waiting[index(*p)].is_empty());
            let Some(priority) = next else {
                state.busy = false;
                return;
            };
            let Some(waiter) = state.waiting[index(priority)].pop_front() else {
                continue;
            };
            state.last = Some(priority);
            let turn = Turn {
                gate: Some(gate.clone()),
            };
            match waiter.send(turn) {
                Ok(()) => return,
                // The waiter gave up (its future was dropped). Its returned turn must not
                // recurse into `pass_on` while the lock is held: disarm it and try the next one.
                Err(mut unused) => unused.gate = None,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // std Mutex: held only for a few pointer moves, never across an await.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn index(priority: Priority) -> usize {
    match priority {
        Priority::Caller => 0,
        Priority::Background => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who got each turn, in order, when `waiters` queue behind a held turn.
    async fn order(first: Priority, waiters: &[Priority]) -> Vec<Priority> {
        let gate = Arc::new(WriteGate::default());
        let held = gate.turn(first).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for &p in waiters {
            let (gate, tx) = (gate.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let turn = gate.turn(p).await;
                tx.send(p).unwrap();
                // Hold it a moment, as a real write would.
                tokio::task::yield_now().await;
                drop(turn);
            }));
            // Let each waiter queue before the next.
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(p) = rx.recv().await {
            seen.push(p);
        }
        seen
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
