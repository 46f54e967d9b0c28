//! Hash maps for the core, usable without `std`.
//!
//! The maps are `hashbrown` tables (the implementation behind std's
//! `HashMap`). Some keys come from the network (peer addresses of UDP
//! flows), so the hasher is keyed with secret random keys:
//!
//! * with the `std` feature, std's `RandomState` (SipHash-1-3, keys from the
//!   operating system);
//! * without it (a unikernel has no entropy source the core could call),
//!   [`KeyedState`]: SipHash-2-4 keyed from the seed the platform passes to
//!   [`set_seed`] once at start, before any map is created, mixed with a
//!   per-map counter so no two maps share keys. Without a call to
//!   [`set_seed`] the keys are fixed and the maps are not HashDoS-resistant.

use core::hash::BuildHasher;
use core::sync::atomic::{AtomicU64, Ordering};

/// The hasher builder the core's maps use (see the module docs).
#[cfg(feature = "std")]
pub(crate) type State = std::hash::RandomState;
/// The hasher builder the core's maps use (see the module docs).
#[cfg(not(feature = "std"))]
pub(crate) type State = KeyedState;

/// A hash map keyed with [`State`].
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V, State>;
/// A hash set keyed with [`State`].
pub(crate) type HashSet<T> = hashbrown::HashSet<T, State>;

static SEED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static MAPS: AtomicU64 = AtomicU64::new(0);

/// Sets the secret seed of [`KeyedState`] (the maps of a `no_std` build).
/// Call once at start with entropy, before creating an executor; maps
/// created earlier keep their keys.
pub fn set_seed(k0: u64, k1: u64) {
    SEED[0].store(k0, Ordering::Relaxed);
    SEED[1].store(k1, Ordering::Relaxed);
}

/// SipHash-2-4 keys for one map: the global seed mixed with a per-map
/// counter. Used as the maps' hasher builder without `std`.
#[derive(Clone, Debug)]
pub struct KeyedState {
    k0: u64,
    k1: u64,
}

impl Default for KeyedState {
    fn default() -> Self {
        let n = MAPS.fetch_add(1, Ordering::Relaxed);
        KeyedState {
            k0: SEED[0].load(Ordering::Relaxed) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            k1: SEED[1].load(Ordering::Relaxed),
        }
    }
}

impl BuildHasher for KeyedState {
    // `SipHasher` is deprecated only in favour of std's hasher, which a
    // `no_std` crate cannot name; it is stable and keyed, as needed here.
    #[allow(deprecated)]
    type Hasher = core::hash::SipHasher;

    #[allow(deprecated)]
    fn build_hasher(&self) -> Self::Hasher {
        core::hash::SipHasher::new_with_keys(self.k0, self.k1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_get_distinct_keys_and_follow_the_seed() {
        let a = KeyedState::default();
        let b = KeyedState::default();
        assert_ne!(a.hash_one(42u32), b.hash_one(42u32));
        assert_eq!(a.hash_one(42u32), a.hash_one(42u32));
        set_seed(1, 2);
        let c = KeyedState::default();
        assert_eq!(c.k1, 2);
        let mut m: hashbrown::HashMap<u32, u32, KeyedState> = hashbrown::HashMap::default();
        m.insert(7, 8);
        assert_eq!(m.get(&7), Some(&8));
    }
}
