//! Stable, collision-free loopback addresses per key, shared by all czctl processes.
//!
//! A key names what gets an address: `CONTEXT/NAMESPACE/SERVICE`, or
//! `CONTEXT/NAMESPACE/SERVICE/POD` for per-pod names. Addresses are 127.B.x.y with B in
//! [`CZCTL_BLOCKS`](crate::ranges::CZCTL_BLOCKS) and y in 1..=254 (never .0 or .255, which
//! tools may take for a network or broadcast address): 191 × 256 × 254 ≈ 12.4 million
//! candidates.
//!
//! # Stability
//! The first candidate of a key, [`preferred`], depends on the key alone: the FNV-1a 64 hash
//! of its bytes (stable by definition, unlike std's `DefaultHasher`) mapped onto the candidate
//! space. When it is taken, the next candidates follow a probe sequence that is also derived
//! from the key (double hashing: a per-key step coprime with the space size, so the sequence
//! visits every address once and keys with neighbouring preferred addresses do not chase each
//! other). A key therefore gets the same address on every run and every machine unless that
//! address is taken. Changing the hash or the space moves every key: don't.
//!
//! # Sharing
//! A [`Registry`] is a directory shared by the czctl processes of one user:
//! - `lock`: exclusively `flock`ed around every change. The lock dies with its holder, so a
//!   crash never blocks the others.
//! - `registry`: one line per address, `ADDRESS PID KEY`, rewritten atomically (temporary file
//!   and rename) under the lock, so lock-free readers see a whole file.
//!
//! Entries whose owner pid no longer runs are stale and are reclaimed by the next change. A
//! reused pid keeps a stale entry until that process exits: that costs one address, never a
//! collision.
//!
//! The directory must be safe ([`crate::dirs`]): a real directory, not a symbolic link,
//! belonging to this user or root, that no one else may write; it is created 0700 and its
//! files 0600 (whatever the umask), opened without following links. Anything else is refused
//! with [`AllocError::Unsafe`], never used. So another user can neither read nor redirect
//! what a run writes there (the registry of a root run used to be a world-writable directory
//! in `/tmp` that anyone could replace by a symbolic link).
//!
//! [`Registry::default_dir`] is per user: root runs (sudo included) share `/run/czctl-loopback`,
//! a user's runs `$XDG_RUNTIME_DIR/czctl-loopback` or `$TMPDIR/czctl-loopback-UID`. Runs of
//! different users therefore do not see each other's entries. That costs nothing in
//! correctness: the registry is advisory, and the caller's predicate (binding the listeners)
//! is the real check, so an address another user's run holds is refused by the bind and the
//! key takes its next candidate; only the promise "same key, same address" weakens, for a key
//! two users teleport at once. A tampered registry likewise can cost addresses but cannot make
//! czctl use a taken one.

mod space;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs::{File, TryLockError};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::dirs::{self, DirError};
use space::{candidates, FIRST_BLOCK, LAST_BLOCK};
use store::Record;

/// Candidates the caller's predicate may refuse for one key before allocation gives up: so many
/// refusals in a row mean something systematic (e.g. binding is not permitted at all), and
/// probing the whole space would take hours of failed binds.
pub const MAX_REFUSALS: u32 = 64;
/// How long to wait for another process to release the registry lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an allocation, release or listing failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// A key cannot be stored in the registry.
    #[error(
        "invalid loopback address key {key:?}: a key must be non-empty and free of control \
         characters (CONTEXT/NAMESPACE/SERVICE[/POD])"
    )]
    InvalidKey {
        /// The rejected key.
        key: String,
    },
    /// The registry directory or one of its files could not be created, read or written.
    #[error(
        "cannot {action} the loopback address registry in {dir}: {source}; czctl must be able \
         to write there: remove it so that czctl recreates it, or choose another directory \
         (CZCTL_REGISTRY_DIR)"
    )]
    Io {
        /// What was being done, e.g. "lock" or "write".
        action: &'static str,
        /// The registry directory.
        dir: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The registry directory is not safe to use (a symbolic link, someone else's, or writable
    /// by others); see [`crate::dirs`].
    #[error(
        "the loopback address registry cannot be used: {0} (CZCTL_REGISTRY_DIR chooses another \
         directory)"
    )]
    Unsafe(#[source] DirError),
    /// Another process held the registry lock too long.
    #[error(
        "the loopback address registry {lock} has been locked by another process for {secs}s; \
         a czctl process may be stuck (suspended with Ctrl-Z?): resume or stop it and try again",
        secs = waited.as_secs()
    )]
    LockTimeout {
        /// The lock file.
        lock: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },
    /// The caller's predicate refused [`MAX_REFUSALS`] unregistered candidates for one key.
    #[error(
        "no usable loopback address for {key}: {refused} free candidates in a row (the last \
         {last}) were refused as in use; check which programs listen on 127.x.y.z addresses \
         (`ss -ltnp`) and whether this user may bind them"
    )]
    Refused {
        /// The key that got no address.
        key: String,
        /// How many candidates were refused.
        refused: u32,
        /// The last refused candidate.
        last: Ipv4Addr,
    },
    /// Every candidate address is registered to a running process.
    #[error(
        "every loopback address from 127.{FIRST_BLOCK}.0.1 to 127.{LAST_BLOCK}.255.254 is \
         registered to a running czctl process; stop other czctl sessions and try again"
    )]
    Exhausted,
}

/// One registered address, as listed by [`Registry::entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The address.
    pub address: Ipv4Addr,
    /// The key it belongs to.
    pub key: String,
    /// The process that holds it.
    pub pid: u32,
    /// Whether that process still runs; a dead owner's entry is reclaimed by the next change.
    pub alive: bool,
}

/// The registry of loopback addresses shared by all czctl processes on the machine; see the
/// [module documentation](self) for the files and guarantees.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    /// Who may own the directory ([`dirs::trusted_owners`]).
    trusted: Vec<u32>,
}

impl Registry {
    /// A registry kept in `dir`, which is created (mode 0700) on first use.
    pub fn new(dir: impl Into<PathBuf>) -> Registry {
        Registry {
            dir: dir.into(),
            trusted: dirs::trusted_owners(),
        }
    }

    /// The default directory of this user's runs: `/run/czctl-loopback` for root (sudo
    /// included), else `$XDG_RUNTIME_DIR/czctl-loopback` when that is a directory of this
    /// user, else `czctl-loopback-UID` in `$TMPDIR` (or `/tmp`). Empty or relative variables
    /// count as unset. Processes share addresses only if they agree on the directory; see
    /// the [module documentation](self) for why users do not share one.
    pub fn default_dir() -> PathBuf {
        default_dir_for(dirs::euid(), |name| std::env::var_os(name))
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns one address per key (in order) for this process, under one lock acquisition.
    ///
    /// A key this process already holds gets its address again, without asking `is_free`.
    /// Otherwise the key's candidates are probed in order, skipping addresses registered to
    /// running processes (including other holders of the same key) and those for which
    /// `is_free(key, address)` returns false; the first accepted one is registered. Duplicate
    /// keys get the same address.
    ///
    /// On error nothing is registered: release whatever `is_free` acquired.
    pub fn allocate(
        &self,
        keys: &[String],
        is_free: impl FnMut(&str, Ipv4Addr) -> bool,
    ) -> Result<Vec<Ipv4Addr>, AllocError> {
        self.allocate_as(std::process::id(), keys, is_free)
    }

    /// [`Registry::allocate`] on behalf of process `owner` (tests simulate other processes).
    pub(crate) fn allocate_as(
        &self,
        owner: u32,
        keys: &[String],
        mut is_free: impl FnMut(&str, Ipv4Addr) -> bool,
    ) -> Result<Vec<Ipv4Addr>, AllocError> {
        for key in keys {
            check_key(key)?;
        }
        let _lock = self.lock()?;
        let (mut records, mut changed) = self.load_live(owner)?;
        let mut taken: HashSet<Ipv4Addr> = records.iter().map(|r| r.addr).collect();
        let mut mine: HashMap<String, Ipv4Addr> = records
            .iter()
            .filter(|r| r.pid == owner)
            .map(|r| (r.key.clone(), r.addr))
            .collect();
        let mut addresses = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(&addr) = mine.get(key) {
                addresses.push(addr);
                continue;
            }
            let addr = pick(key, &taken, &mut is_free)?;
            taken.insert(addr);
            mine.insert(key.clone(), addr);
            records.push(Record {
                addr,
                pid: owner,
                key: key.clone(),
            });
            changed = true;
            addresses.push(addr);
        }
        if changed {
            self.save(&mut records)?;
        }
        Ok(addresses)
    }

    /// Releases this process's addresses for `keys`; keys it does not hold are ignored.
    pub fn release(&self, keys: &[String]) -> Result<(), AllocError> {
        let owner = std::process::id();
        let keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
        self.remove(owner, |r| r.pid == owner && keys.contains(r.key.as_str()))
    }

    /// Releases every address of process `pid` (this process: [`std::process::id`]).
    pub fn release_all_of(&self, pid: u32) -> Result<(), AllocError> {
        self.remove(std::process::id(), |r| r.pid == pid)
    }

    /// Lists the registered addresses, sorted by address, with whether their owner still runs.
    /// Reads without locking: the registry file is only ever replaced whole.
    pub fn entries(&self) -> Result<Vec<Entry>, AllocError> {
        dirs::check_dir(&self.dir, &self.trusted).map_err(AllocError::Unsafe)?;
        let records = store::load(&self.dir).map_err(|e| self.io("read", e))?;
        let mut alive = HashMap::new();
        let mut entries: Vec<Entry> = records
            .into_iter()
            .map(|Record { addr, pid, key }| Entry {
                address: addr,
                key,
                pid,
                alive: *alive.entry(pid).or_insert_with(|| store::pid_alive(pid)),
            })
            .collect();
        entries.sort_by_key(|e| e.address);
        Ok(entries)
    }

    /// Removes the live entries matching `doomed` (and the stale ones), under the lock.
    fn remove(&self, me: u32, doomed: impl Fn(&Record) -> bool) -> Result<(), AllocError> {
        let _lock = self.lock()?;
        let (mut records, mut changed) = self.load_live(me)?;
        let before = records.len();
        records.retain(|r| !doomed(r));
        changed |= records.len() != before;
        if changed {
            self.save(&mut records)?;
        }
        Ok(())
    }

    /// Loads the registry without the entries of dead processes (`me` counts as running);
    /// also says whether any were dropped.
    fn load_live(&self, me: u32) -> Result<(Vec<Record>, bool), AllocError> {
        let mut records = store::load(&self.dir).map_err(|e| self.io("read", e))?;
        let mut alive = HashMap::new();
        let before = records.len();
        records.retain(|r| {
            r.pid == me
                || *alive
                    .entry(r.pid)
                    .or_insert_with(|| store::pid_alive(r.pid))
        });
        let dropped = records.len() != before;
        Ok((records, dropped))
    }

    fn save(&self, records: &mut [Record]) -> Result<(), AllocError> {
        records.sort_by_key(|r| r.addr);
        store::save(&self.dir, records).map_err(|e| self.io("write", e))
    }

    /// Takes the registry lock, held until the returned file is dropped.
    fn lock(&self) -> Result<File, AllocError> {
        dirs::ensure_dir(&self.dir, store::DIR_MODE, &self.trusted).map_err(|e| match e {
            DirError::Io { source, .. } => self.io("create", source),
            unsafe_dir => AllocError::Unsafe(unsafe_dir),
        })?;
        let file = store::open_lock(&self.dir).map_err(|e| self.io("open the lock of", e))?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(AllocError::LockTimeout {
                        lock: self.dir.join(store::LOCK_FILE),
                        waited: start.elapsed(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(self.io("lock", e)),
            }
        }
    }

    fn io(&self, action: &'static str, source: io::Error) -> AllocError {
        AllocError::Io {
            action,
            dir: self.dir.clone(),
            source,
        }
    }
}

/// [`Registry::default_dir`] for user `uid` with the environment `env`.
pub fn default_dir_for(uid: u32, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let absolute = |name: &str| {
        env(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let run = Path::new("/run");
    if uid == 0 && run.is_dir() {
        return run.join("czctl-loopback");
    }
    if uid != 0 {
        // Only this user's own runtime directory (after `su` it may still name another's).
        let runtime = absolute("XDG_RUNTIME_DIR").filter(|dir| {
            std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == uid)
        });
        if let Some(runtime) = runtime {
            return runtime.join("czctl-loopback");
        }
    }
    absolute("TMPDIR")
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(format!("czctl-loopback-{uid}"))
}

/// The first candidate address of `key`: the address it gets whenever that one is free.
pub fn preferred(key: &str) -> Ipv4Addr {
    space::address(space::start_and_step(key).0)
}

/// The first candidate of `key` that is neither `taken` nor refused by `is_free`.
fn pick(
    key: &str,
    taken: &HashSet<Ipv4Addr>,
    is_free: &mut impl FnMut(&str, Ipv4Addr) -> bool,
) -> Result<Ipv4Addr, AllocError> {
    let mut refused = 0;
    for addr in candidates(key).filter(|a| !taken.contains(a)) {
        if is_free(key, addr) {
            return Ok(addr);
        }
        refused += 1;
        if refused == MAX_REFUSALS {
            return Err(AllocError::Refused {
                key: key.to_owned(),
                refused,
                last: addr,
            });
        }
    }
    Err(AllocError::Exhausted)
}

fn check_key(key: &str) -> Result<(), AllocError> {
    if key.is_empty() || key.chars().any(char::is_control) {
        return Err(AllocError::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}
