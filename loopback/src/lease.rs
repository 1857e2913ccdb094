//! Exclusive leases of 127.B.0.0/16 blocks, held with advisory file locks.
//!
//! A lease is a lock on the file `DIR/127.B.lock`. `flock` locks belong to the open file and
//! vanish when the process exits, however it exits, so a crashed holder frees its block.
//!
//! `DIR` must be safe ([`crate::dirs`]: no symbolic link, this user's or root's, writable by
//! nobody else); it is created 0755, and the lock files 0644, opened without following links.

use std::fs::{File, TryLockError};
use std::io;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Why no block could be leased.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lock directory could not be created or a lock file could not be opened.
    #[error("cannot use lock directory {dir}: {source}")]
    LockDir {
        /// The directory holding the lock files.
        dir: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The lock directory is not safe to use (see [`crate::dirs`]).
    #[error("cannot use lock directory: {0}")]
    Unsafe(#[source] crate::dirs::DirError),
    /// Every candidate block is held by another process.
    #[error(
        "every loopback block 127.{first}.0.0 to 127.{last}.0.0 is in use by other processes; \
         stop some of them and try again"
    )]
    Exhausted {
        /// The first candidate second octet.
        first: u8,
        /// The last candidate second octet.
        last: u8,
    },
}

/// An exclusive lease of the block 127.B.0.0/16, released when dropped.
#[derive(Debug)]
pub struct BlockLease {
    block: u8,
    path: PathBuf,
    // Holding the open file holds the lock.
    _file: File,
}

impl BlockLease {
    /// Leases the first free block among `candidates`, starting at `start` (wrapping), so that
    /// callers can spread themselves over the range (for example by process id).
    pub fn acquire(
        dir: &Path,
        candidates: RangeInclusive<u8>,
        start: u8,
    ) -> Result<BlockLease, LeaseError> {
        let lock_dir = |source| LeaseError::LockDir {
            dir: dir.to_path_buf(),
            source,
        };
        let trusted = crate::dirs::trusted_owners();
        crate::dirs::ensure_dir(dir, 0o755, &trusted).map_err(|e| match e {
            crate::dirs::DirError::Io { source, .. } => lock_dir(source),
            unsafe_dir => LeaseError::Unsafe(unsafe_dir),
        })?;
        let (first, last) = (*candidates.start(), *candidates.end());
        let count = u16::from(last) - u16::from(first) + 1;
        let offset = u16::from(start.saturating_sub(first)) % count;
        for i in 0..count {
            // Stays within first..=last, so it fits in a u8.
            let block = (u16::from(first) + (offset + i) % count) as u8;
            let path = dir.join(format!("127.{block}.lock"));
            let file = crate::dirs::open_or_create(&path, 0o644).map_err(lock_dir)?;
            match file.try_lock() {
                Ok(()) => {
                    return Ok(BlockLease {
                        block,
                        path,
                        _file: file,
                    })
                }
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(lock_dir(e)),
            }
        }
        Err(LeaseError::Exhausted { first, last })
    }

    /// The second octet B of the leased block 127.B.0.0/16.
    pub fn block(&self) -> u8 {
        self.block
    }

    /// The address 127.B.hi.lo inside the leased block.
    pub fn addr(&self, hi: u8, lo: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.block, hi, lo)
    }

    /// The lock file holding this lease.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopback-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn concurrent_leases_get_distinct_blocks_and_drop_frees() {
        let dir = temp_dir("distinct");
        let a = BlockLease::acquire(&dir, 200..=201, 200).unwrap();
        let b = BlockLease::acquire(&dir, 200..=201, 200).unwrap();
        assert_ne!(a.block(), b.block());
        assert!(matches!(
            BlockLease::acquire(&dir, 200..=201, 200),
            Err(LeaseError::Exhausted {
                first: 200,
                last: 201
            })
        ));
        let freed = a.block();
        drop(a);
        let c = BlockLease::acquire(&dir, 200..=201, 200).unwrap();
        assert_eq!(c.block(), freed);
        assert_eq!(c.addr(1, 2), Ipv4Addr::new(127, freed, 1, 2));
    }

    #[test]
    fn start_spreads_and_wraps() {
        let dir = temp_dir("wrap");
        let a = BlockLease::acquire(&dir, 10..=12, 12).unwrap();
        assert_eq!(a.block(), 12);
        let b = BlockLease::acquire(&dir, 10..=12, 12).unwrap();
        assert_eq!(b.block(), 10);
        let c = BlockLease::acquire(&dir, 10..=12, 250).unwrap();
        assert_eq!(c.block(), 11);
    }

    #[test]
    fn a_linked_or_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("unsafe");
        let target = temp_dir("unsafe-target");
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        let err = BlockLease::acquire(&dir, 20..=20, 20).unwrap_err();
        assert!(matches!(err, LeaseError::Unsafe(_)), "{err}");
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "nothing created"
        );
        std::fs::remove_file(&dir).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = BlockLease::acquire(&target, 20..=20, 20).unwrap_err();
        assert!(err.to_string().contains("mode 0777"), "{err}");
        std::fs::remove_dir_all(&target).unwrap();
        let made = BlockLease::acquire(&dir, 20..=20, 20).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(made.path()), 0o644);
    }
}
