//! Lanes: the two queues inside a customer, and sets of them.

/// Which queue inside a customer a notification waits in. The discriminants are the proto numbers
/// and the values stored in the database, so ordering by lane puts transactional first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Lane {
    /// The customer's own notifications (bills, one-time codes): always go first.
    Transactional = 1,
    /// Our own campaigns: guaranteed a minimum share, never ahead of transactional.
    Bulk = 2,
}

impl Lane {
    /// The value stored in the `lane` column.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Reads a stored `lane` column; `None` for a value no version of floodgate writes (the
    /// store reports such a row as corrupt rather than guess its lane).
    pub fn from_code(code: i64) -> Option<Self> {
        [Lane::Transactional, Lane::Bulk]
            .into_iter()
            .find(|lane| lane.code() == code)
    }

    /// The lane's position in per-lane arrays (transactional 0, bulk 1).
    pub fn index(self) -> usize {
        match self {
            Lane::Transactional => 0,
            Lane::Bulk => 1,
        }
    }

    /// The lane's name in webhook bodies, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Transactional => "transactional",
            Lane::Bulk => "bulk",
        }
    }
}

/// A set of lanes: which lanes a wake concerns, or which an actor has drained. Waking only the
/// lanes that got work saves a claim on an empty lane per wake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LaneSet {
    transactional: bool,
    bulk: bool,
}

impl LaneSet {
    /// No lane.
    pub const NONE: LaneSet = LaneSet {
        transactional: false,
        bulk: false,
    };

    /// Every lane: for wakes that don't know which (the sweep, settings changes, new actors).
    pub const ALL: LaneSet = LaneSet {
        transactional: true,
        bulk: true,
    };

    /// Just `lane`.
    pub fn only(lane: Lane) -> Self {
        let mut set = Self::NONE;
        set.set(lane, true);
        set
    }

    /// Whether `lane` is in the set.
    pub fn contains(self, lane: Lane) -> bool {
        match lane {
            Lane::Transactional => self.transactional,
            Lane::Bulk => self.bulk,
        }
    }

    /// Adds `lane` to the set (`true`) or takes it out (`false`).
    pub fn set(&mut self, lane: Lane, member: bool) {
        match lane {
            Lane::Transactional => self.transactional = member,
            Lane::Bulk => self.bulk = member,
        }
    }

    /// The lanes of `self` that are not in `other`.
    pub fn without(self, other: LaneSet) -> Self {
        LaneSet {
            transactional: self.transactional && !other.transactional,
            bulk: self.bulk && !other.bulk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_read_back_only_what_was_written() {
        for lane in [Lane::Transactional, Lane::Bulk] {
            assert_eq!(Lane::from_code(lane.code()), Some(lane));
        }
        assert_eq!(Lane::from_code(7), None, "not silently transactional");
    }

    #[test]
    fn lane_sets_hold_what_was_put_in() {
        let bulk = LaneSet::only(Lane::Bulk);
        assert!(bulk.contains(Lane::Bulk) && !bulk.contains(Lane::Transactional));
        assert_eq!(
            LaneSet::ALL.without(bulk),
            LaneSet::only(Lane::Transactional)
        );
        assert_eq!(bulk.without(LaneSet::ALL), LaneSet::NONE);
        let mut set = LaneSet::NONE;
        set.set(Lane::Transactional, true);
        set.set(Lane::Bulk, true);
        assert_eq!(set, LaneSet::ALL);
    }
}
