//! A customer actor's window of claimed notifications, one queue per lane, and the choice of
//! which lane sends next.
//!
//! Transactional goes first; bulk keeps a guaranteed minimum share of the sends while both lanes
//! have work (a credit scheme: every transactional send earns bulk `share / (1 - share)` of a
//! send; a whole credit buys one bulk send). So a 100,000-notification campaign can't delay a
//! customer's transactional notifications beyond that share, and the campaign still progresses.

use std::collections::VecDeque;

use crate::model::{Claimed, Lane};

/// Claimed notifications waiting for a send slot, per lane.
#[derive(Debug)]
pub(super) struct LaneWindow {
    transactional: VecDeque<Claimed>,
    bulk: VecDeque<Claimed>,
    /// Bulk sends owed (capped at one, so bulk never bursts after a long transactional run).
    bulk_credit: f64,
    /// Credit a transactional send earns bulk.
    credit_per_send: f64,
}

impl LaneWindow {
    /// An empty window giving bulk at least `bulk_share` (0 to 1) of the sends when both lanes
    /// have work.
    pub(super) fn new(bulk_share: f64) -> Self {
        let share = bulk_share.clamp(0.0, 0.99);
        Self {
            transactional: VecDeque::new(),
            bulk: VecDeque::new(),
            bulk_credit: 0.0,
            credit_per_send: share / (1.0 - share),
        }
    }

    /// Notifications waiting in `lane`.
    pub(super) fn len(&self, lane: Lane) -> usize {
        match lane {
            Lane::Transactional => self.transactional.len(),
            Lane::Bulk => self.bulk.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.transactional.is_empty() && self.bulk.is_empty()
    }

    /// Adds freshly claimed notifications to their lanes.
    pub(super) fn extend(&mut self, claimed: Vec<Claimed>) {
        for notification in claimed {
            match notification.lane {
                Lane::Transactional => self.transactional.push_back(notification),
                Lane::Bulk => self.bulk.push_back(notification),
            }
        }
    }

    /// The notification to send next, if any.
    pub(super) fn next(&mut self) -> Option<Claimed> {
        match (self.transactional.is_empty(), self.bulk.is_empty()) {
            (true, true) => None,
            (false, true) => self.transactional.pop_front(),
            (true, false) => self.bulk.pop_front(),
            (false, false) if self.bulk_credit >= 1.0 => {
                self.bulk_credit -= 1.0;
                self.bulk.pop_front()
            }
            (false, false) => {
                self.bulk_credit = (self.bulk_credit + self.credit_per_send).min(1.0);
                self.transactional.pop_front()
            }
        }
    }

    /// Everything still waiting, for handing back to the store when the actor stops.
    pub(super) fn drain(&mut self) -> Vec<Claimed> {
        self.transactional
            .drain(..)
            .chain(self.bulk.drain(..))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NotificationId;

    fn claimed(id: i64, lane: Lane) -> Claimed {
        Claimed {
            id: NotificationId(id),
            claim: crate::model::ClaimToken::FIRST,
            attempts: 1,
            customer_id: crate::model::CustomerId::parse("c").unwrap(),
            recipient: "r".into(),
            lane,
            channel: crate::model::Channel::Webhook,
            payload: Vec::new(),
            created_at: 0,
            expires_at: None,
            template: None,
        }
    }

    fn fill(window: &mut LaneWindow, lane: Lane, count: i64, offset: i64) {
        window.extend((0..count).map(|i| claimed(offset + i, lane)).collect());
    }

    #[test]
    fn bulk_gets_its_share_when_both_lanes_are_busy() {
        let mut window = LaneWindow::new(0.1);
        fill(&mut window, Lane::Transactional, 1000, 0);
        fill(&mut window, Lane::Bulk, 1000, 10_000);
        let bulk = (0..100)
            .filter(|_| window.next().unwrap().lane == Lane::Bulk)
            .count();
        assert_eq!(bulk, 10, "one send in ten is bulk");
    }

    #[test]
    fn transactional_goes_first_and_a_lone_lane_gets_everything() {
        let mut window = LaneWindow::new(0.1);
        fill(&mut window, Lane::Bulk, 5, 100);
        fill(&mut window, Lane::Transactional, 2, 0);
        assert_eq!(window.next().unwrap().lane, Lane::Transactional);
        assert_eq!(window.next().unwrap().lane, Lane::Transactional);
        let rest: Vec<_> = std::iter::from_fn(|| window.next())
            .map(|n| n.lane)
            .collect();
        assert_eq!(rest, vec![Lane::Bulk; 5]);
        assert!(window.is_empty());
    }

    #[test]
    fn credit_does_not_pile_up_into_a_bulk_burst() {
        let mut window = LaneWindow::new(0.5);
        fill(&mut window, Lane::Transactional, 50, 0);
        fill(&mut window, Lane::Bulk, 1, 100);
        // Bulk took its turn early; with bulk empty again, transactional runs alone.
        let lanes: Vec<_> = std::iter::from_fn(|| window.next())
            .take(4)
            .map(|n| n.lane)
            .collect();
        assert_eq!(lanes.iter().filter(|l| **l == Lane::Bulk).count(), 1);
        fill(&mut window, Lane::Bulk, 10, 200);
        let next_two: Vec<_> = (0..2).map(|_| window.next().unwrap().lane).collect();
        assert!(
            next_two.contains(&Lane::Transactional),
            "no burst of owed bulk sends: {next_two:?}"
        );
    }
}
