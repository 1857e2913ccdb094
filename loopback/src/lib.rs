//! Loopback addresses for czctl and its test cluster.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so every 127.x.y.z can be bound without setup.
//! Several programs on one machine carve addresses out of that space at once (concurrent czctl
//! sessions, test clusters), so the space is split into /16 blocks that a process leases with
//! an advisory file lock: the lock lives as long as the [`BlockLease`] value, and dies with the
//! process, so a crash never leaks a block.
//!
//! # Layout
//! - [`alloc`]: one stable 127.B.x.y address per key (`CONTEXT/NAMESPACE/SERVICE[/POD]`),
//!   derived from a hash of the key and kept collision-free between all czctl processes by a
//!   shared, flock-protected registry.
//! - [`lease`]: exclusive, crash-safe leases of 127.B.0.0/16 blocks shared by all processes.
//! - [`ranges`]: which blocks belong to whom (czctl's service addresses, kubesim's pods and
//!   cluster IPs), so the users never collide.
//! - [`dirs`]: directories only this user (or root) controls, and opens that never follow a
//!   symlink: where the registry and the leases live.

pub mod alloc;
pub mod dirs;
pub mod lease;
pub mod ranges;

pub use alloc::{preferred, AllocError, Entry, Registry};
pub use dirs::DirError;
pub use lease::{BlockLease, LeaseError};
