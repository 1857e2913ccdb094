//! The split of 127.0.0.0/8 between the users of loopback addresses.
//!
//! - 127.0.0.0/16 is left alone: 127.0.0.1 and 127.0.1.1 are used by every distribution.
//! - 127.1.0.0 – 127.191.255.255: czctl's service addresses.
//! - 127.192.0.0 – 127.254.255.255: simulated clusters (kubesim), one /16 block per instance.

use std::ops::RangeInclusive;

/// Second octets of the /16 blocks czctl allocates service addresses from.
pub const CZCTL_BLOCKS: RangeInclusive<u8> = 1..=191;

/// Second octets of the /16 blocks a simulated cluster leases one of.
pub const SIMULATOR_BLOCKS: RangeInclusive<u8> = 192..=254;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_and_avoid_the_system_block() {
        assert!(!CZCTL_BLOCKS.contains(&0));
        assert!(!SIMULATOR_BLOCKS.contains(&0));
        assert!(CZCTL_BLOCKS.end() < SIMULATOR_BLOCKS.start());
        assert!(*SIMULATOR_BLOCKS.end() < 255);
    }
}
