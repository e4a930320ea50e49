//! Buckets and rendezvous hashing: which node owns which customer system.
//!
//! A customer id hashes into one of [`BUCKETS`] buckets; a bucket's owner is the live node with
//! the highest weight `hash(node, bucket)` (rendezvous, or highest-random-weight, hashing). Every
//! node computes the same answer from the same live set with no coordination, and the answer
//! moves as little as possible: when a node joins, only the buckets it now wins move (about
//! 1/(N+1) of them); when one leaves, only its own buckets move.
//!
//! The hashes are FNV-1a followed by SplitMix64's finaliser: stable across processes, versions
//! and platforms (unlike `std`'s randomly keyed hasher), which every node of a cluster needs.

/// Buckets customers hash into. Fixed: changing it would move every customer at once.
pub const BUCKETS: u16 = 1024;

/// The bucket a customer system belongs to.
pub fn bucket_of(customer_id: &str) -> u16 {
    // The remainder is below BUCKETS, so the cast cannot truncate.
    (mix(fnv1a(customer_id.as_bytes())) % u64::from(BUCKETS)) as u16
}

/// The owner of `bucket` among `nodes` (the live set), or `None` when there is no live node.
pub fn owner_of(bucket: u16, nodes: &[String]) -> Option<&str> {
    nodes
        .iter()
        .max_by_key(|node| (weight(node, bucket), node.as_str()))
        .map(String::as_str)
}

/// The rendezvous weight of `node` for `bucket`.
fn weight(node: &str, bucket: u16) -> u64 {
    mix(fnv1a(node.as_bytes()) ^ mix(u64::from(bucket).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// A hash that is the same in every process, version and platform.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(bytes))
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn owners(nodes: &[String]) -> Vec<String> {
        (0..BUCKETS)
            .map(|b| owner_of(b, nodes).unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Pinned: every node of every version must compute the same bucket.
        assert_eq!(bucket_of("acme"), bucket_of("acme"));
        let mut counts = vec![0u32; usize::from(BUCKETS)];
        for i in 0..102_400 {
            counts[usize::from(bucket_of(&format!("customer-{i}")))] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min >= Some(&50) && max <= Some(&160), "{min:?}..{max:?}");
    }

    #[test]
    fn each_node_gets_a_fair_share() {
        let three = nodes(3);
        let owners = owners(&three);
        for node in &three {
            let share = owners.iter().filter(|o| *o == node).count();
            assert!((280..=400).contains(&share), "{node}: {share}");
        }
    }

    #[test]
    fn a_join_moves_about_one_in_n_plus_one_and_only_to_the_newcomer() {
        let before = owners(&nodes(3));
        let after = owners(&nodes(4));
        let moved: Vec<_> = (0..usize::from(BUCKETS))
            .filter(|b| before[*b] != after[*b])
            .collect();
        assert!(moved.iter().all(|b| after[*b] == "node-3"));
        // A quarter of 1,024 is 256.
        assert!((200..=310).contains(&moved.len()), "{}", moved.len());
    }

    #[test]
    fn a_leave_moves_only_the_leavers_buckets() {
        let four = nodes(4);
        let before = owners(&four);
        let three: Vec<String> = four.iter().filter(|n| *n != "node-1").cloned().collect();
        let after = owners(&three);
        for b in 0..usize::from(BUCKETS) {
            if before[b] != "node-1" {
                assert_eq!(before[b], after[b], "bucket {b} moved");
            }
        }
    }

    #[test]
    fn no_live_node_owns_nothing() {
        assert_eq!(owner_of(7, &[]), None);
    }
}
