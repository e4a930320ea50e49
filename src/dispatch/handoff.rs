//! Handing fresh notifications from intake straight to a running actor.
//!
//! Without this, a notification accepted for a customer whose actor has room would be written
//! pending, the actor woken, and the same row claimed and read back a moment later. Instead each
//! running actor keeps a [`Slot`] with *credits* per lane: how many more notifications it can take
//! into its window right now. Intake reserves a credit for a notification before its group commit,
//! stores it already claimed by this node (in flight, with a lease), and after the commit drops it
//! into the slot's inbox and nudges the actor. The store stays the truth: if the process dies
//! before the notification is sent, its lease returns it like any other claim.
//!
//! An actor only grants credits in a lane whose store backlog it has drained, so fresh
//! notifications never overtake older ones waiting in the store. A slot that is closed (its actor
//! stopped) refuses what is handed to it; intake then returns those notifications to pending and
//! wakes the customer, as it would have without a handoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use ractor::{ActorId, ActorRef};

use super::messages::{ActorKey, CustomerMsg};
use crate::model::{Channel, Claimed, Lane};

/// Every running actor's slot, by customer and channel.
#[derive(Debug, Default)]
pub(crate) struct Handoffs {
    // std RwLock: lookups are a hash probe, never held across an await.
    slots: RwLock<HashMap<String, HashMap<Channel, Arc<Slot>>>>,
}

/// One actor's credits and inbox.
#[derive(Debug)]
pub(crate) struct Slot {
    actor: ActorRef<CustomerMsg>,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// False once the actor stops: nothing more is taken.
    closed: bool,
    /// Per lane (indexed like [`Lane::index`]).
    lanes: [LaneCredit; 2],
    /// Handed over, not yet taken by the actor.
    inbox: Vec<Claimed>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LaneCredit {
    /// Notifications intake may still reserve.
    credits: usize,
    /// Reserved, but not yet in the inbox (their group commit is under way).
    reserved: usize,
}

impl Handoffs {
    /// Registers an actor's slot (replacing a stopped predecessor's).
    pub(super) fn register(&self, (customer_id, channel): &ActorKey, slot: Arc<Slot>) {
        write(&self.slots)
            .entry(customer_id.clone())
            .or_default()
            .insert(*channel, slot);
    }

    /// Removes actor `actor`'s slot, if it is still the registered one (a restarted actor may
    /// have registered its own), and closes it. Returns what was in its inbox, for the caller to
    /// hand back to the store.
    pub(super) fn unregister(
        &self,
        (customer_id, channel): &ActorKey,
        actor: ActorId,
    ) -> Vec<Claimed> {
        let mut slots = write(&self.slots);
        let Some(channels) = slots.get_mut(customer_id) else {
            return Vec::new();
        };
        if channels
            .get(channel)
            .is_none_or(|s| s.actor.get_id() != actor)
        {
            return Vec::new();
        }
        let slot = channels.remove(channel);
        if channels.is_empty() {
            slots.remove(customer_id);
        }
        drop(slots);
        slot.map(|slot| slot.close()).unwrap_or_default()
    }

    /// The slot of `customer_id`'s running actor on `channel`, if it has a credit left in `lane`
    /// — which this takes. Give it back with [`Slot::unreserve`] if the notification is not
    /// handed over after all.
    pub(crate) fn reserve(
        &self,
        customer_id: &str,
        channel: Channel,
        lane: Lane,
    ) -> Option<Arc<Slot>> {
        let slot = read(&self.slots).get(customer_id)?.get(&channel)?.clone();
        slot.take_credit(lane).then_some(slot)
    }
}

impl Slot {
    pub(super) fn new(actor: ActorRef<CustomerMsg>) -> Self {
        Self {
            actor,
            state: Mutex::new(SlotState::default()),
        }
    }

    fn take_credit(&self, lane: Lane) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let credit = &mut state.lanes[lane.index()];
        if credit.credits == 0 {
            return false;
        }
        credit.credits -= 1;
        credit.reserved += 1;
        true
    }

    /// Returns a reserved credit that was not used (the group commit failed, or the key was a
    /// duplicate).
    pub(crate) fn unreserve(&self, lane: Lane) {
        let mut state = self.lock();
        let credit = &mut state.lanes[lane.index()];
        credit.reserved = credit.reserved.saturating_sub(1);
        credit.credits += 1;
    }

    /// Hands over notifications reserved earlier and now committed as claimed, and nudges the
    /// actor. If the actor has stopped meanwhile, they come back to the caller.
    pub(crate) fn hand(&self, notifications: Vec<Claimed>) -> Result<(), Vec<Claimed>> {
        let mut state = self.lock();
        for n in &notifications {
            let credit = &mut state.lanes[n.lane.index()];
            credit.reserved = credit.reserved.saturating_sub(1);
        }
        if state.closed {
            return Err(notifications);
        }
        let was_empty = state.inbox.is_empty();
        state.inbox.extend(notifications);
        drop(state);
        // One nudge per batch: the actor takes the whole inbox when it runs. If the actor died
        // without closing the slot (a panic), its supervisor closes it and hands the inbox back.
        if was_empty {
            let _ = self.actor.send_message(CustomerMsg::Handed);
        }
        Ok(())
    }

    /// The actor takes what was handed over.
    pub(super) fn take(&self) -> Vec<Claimed> {
        std::mem::take(&mut self.lock().inbox)
    }

    /// The actor says how many more it can take in `lane` (`room`); notifications already
    /// reserved count against it.
    pub(super) fn grant(&self, lane: Lane, room: usize) {
        let mut state = self.lock();
        let credit = &mut state.lanes[lane.index()];
        credit.credits = room.saturating_sub(credit.reserved);
    }

    /// Reserved notifications still on their way into the inbox, over both lanes.
    pub(super) fn reserved(&self) -> usize {
        self.lock().lanes.iter().map(|l| l.reserved).sum()
    }

    /// Takes nothing more; returns the inbox.
    fn close(&self) -> Vec<Claimed> {
        let mut state = self.lock();
        state.closed = true;
        state.lanes = Default::default();
        std::mem::take(&mut state.inbox)
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // std Mutex: held for a few field updates, never across an await.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
