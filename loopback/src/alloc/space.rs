//! The candidate addresses and the per-key probe order over them.

use std::net::Ipv4Addr;

use crate::ranges::CZCTL_BLOCKS;

pub(super) const FIRST_BLOCK: u8 = *CZCTL_BLOCKS.start();
pub(super) const LAST_BLOCK: u8 = *CZCTL_BLOCKS.end();
/// Usable last octets: 1..=254.
pub(super) const LAST_OCTETS: u64 = 254;
pub(super) const PER_BLOCK: u64 = 256 * LAST_OCTETS;
/// Number of candidate addresses.
pub(super) const SPACE: u64 = (LAST_BLOCK as u64 - FIRST_BLOCK as u64 + 1) * PER_BLOCK;

/// Every candidate address of `key`, each once, most preferred first.
pub(super) fn candidates(key: &str) -> impl Iterator<Item = Ipv4Addr> {
    let (start, step) = start_and_step(key);
    // k * step < SPACE² < 2^48: no overflow.
    (0..SPACE).map(move |k| address((start + k * step) % SPACE))
}

/// Index of the preferred address of `key` and its probe step, coprime with [`SPACE`].
pub(super) fn start_and_step(key: &str) -> (u64, u64) {
    let hash = fnv1a64(key.as_bytes());
    let mut step = 1 + mix(hash) % (SPACE - 1);
    while gcd(step, SPACE) != 1 {
        step += 1;
    }
    (hash % SPACE, step)
}

/// The candidate address with index `index` < [`SPACE`].
pub(super) fn address(index: u64) -> Ipv4Addr {
    let (block, rest) = (index / PER_BLOCK, index % PER_BLOCK);
    // block < 191, rest / 254 < 256 and rest % 254 + 1 <= 254: every cast is lossless.
    Ipv4Addr::new(
        127,
        FIRST_BLOCK + block as u8,
        (rest / LAST_OCTETS) as u8,
        (rest % LAST_OCTETS + 1) as u8,
    )
}

/// The index of `addr` among the candidates, or `None` if it is not one.
pub(super) fn index_of(addr: Ipv4Addr) -> Option<u64> {
    let [a, b, c, d] = addr.octets();
    let candidate = a == 127 && CZCTL_BLOCKS.contains(&b) && (1..=254).contains(&d);
    candidate.then(|| {
        u64::from(b - FIRST_BLOCK) * PER_BLOCK + u64::from(c) * LAST_OCTETS + u64::from(d) - 1
    })
}

/// FNV-1a, 64-bit: <http://www.isthe.com/chongo/tech/comp/fnv/>.
pub(super) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The SplitMix64 finalizer: derives the probe step from the hash with independent bits.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Greatest common divisor (Euclid).
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
