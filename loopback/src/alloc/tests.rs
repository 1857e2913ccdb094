use super::space::*;
use super::*;
use crate::ranges::CZCTL_BLOCKS;
use std::process::{Child, Command};
use std::sync::{Arc, Barrier};

/// A pid that cannot belong to a running process (above Linux's largest pid_max, 2^22).
const DEAD_PID: u32 = 0x7fff_fff0;

fn registry(name: &str) -> Registry {
    let dir = std::env::temp_dir().join(format!("loopback-alloc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Registry::new(dir)
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}/svc-{i}")).collect()
}

fn all_free(_: &str, _: Ipv4Addr) -> bool {
    true
}

fn assert_distinct(addresses: &[Ipv4Addr]) {
    let set: HashSet<_> = addresses.iter().collect();
    assert_eq!(set.len(), addresses.len(), "duplicate addresses");
}

/// A running process standing in for another czctl: its pid is alive until it is dropped.
struct OtherProcess(Child);

impl OtherProcess {
    fn start() -> OtherProcess {
        // The test machine has `sleep`; failing to start it is a broken environment.
        OtherProcess(
            Command::new("sleep")
                .arg("300")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hash_and_address_mapping_are_pinned() {
    // Published FNV-1a 64 test vectors.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    // Changing this value moves every user's addresses: don't, unless on purpose.
    assert_eq!(preferred("kind-dev/shop/cart"), PINNED);
    assert_eq!(address(0), Ipv4Addr::new(127, 1, 0, 1));
    assert_eq!(address(SPACE - 1), Ipv4Addr::new(127, 191, 255, 254));
    for index in [0, 253, 254, PER_BLOCK - 1, PER_BLOCK, SPACE / 2, SPACE - 1] {
        assert_eq!(index_of(address(index)), Some(index));
    }
    for outside in [
        "127.0.5.5",
        "127.192.0.1",
        "127.5.5.0",
        "127.5.5.255",
        "10.1.1.1",
    ] {
        // The literals are valid IPv4 addresses.
        assert_eq!(index_of(outside.parse().unwrap()), None, "{outside}");
    }
}

const PINNED: Ipv4Addr = Ipv4Addr::new(127, 71, 134, 138);

#[test]
fn probe_sequence_visits_distinct_candidates() {
    let first: Vec<_> = candidates("ctx/ns/svc").take(10_000).collect();
    assert_eq!(first[0], preferred("ctx/ns/svc"));
    assert_distinct(&first);
    assert!(first.iter().all(|a| index_of(*a).is_some()));
}

#[test]
fn same_key_same_address_across_registries_and_after_release() {
    let a = registry("stable");
    let b = Registry::new(a.dir());
    let key = vec!["ctx/ns/web".to_string()];
    let first = a.allocate(&key, all_free).unwrap();
    assert_eq!(first, vec![preferred("ctx/ns/web")]);
    // Re-finding a held address does not consult the predicate.
    assert_eq!(b.allocate(&key, |_, _| false).unwrap(), first);
    a.release(&key).unwrap();
    assert!(a.entries().unwrap().is_empty());
    assert_eq!(b.allocate(&key, all_free).unwrap(), first);
}

#[test]
fn distinct_keys_distinct_addresses() {
    let reg = registry("distinct");
    let mut keys = keys("ctx/ns", 50);
    keys.push("ctx/ns/svc-3".to_string()); // a duplicate gets the same address
    let addresses = reg.allocate(&keys, all_free).unwrap();
    assert_eq!(addresses[3], addresses[50]);
    assert_distinct(&addresses[..50]);
    assert_eq!(reg.entries().unwrap().len(), 50);
}

#[test]
fn refused_candidate_probes_on() {
    let reg = registry("refused");
    let key = vec!["ctx/ns/db".to_string()];
    let busy = preferred("ctx/ns/db");
    let mut asked = Vec::new();
    let got = reg
        .allocate(&key, |k, a| {
            asked.push((k.to_string(), a));
            a != busy
        })
        .unwrap();
    assert_ne!(got[0], busy);
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0], ("ctx/ns/db".to_string(), busy));
    assert_eq!(got[0], candidates("ctx/ns/db").nth(1).unwrap());
    // Once the blocker is gone, the key gets its preferred address back.
    reg.release(&key).unwrap();
    assert_eq!(reg.allocate(&key, all_free).unwrap(), vec![busy]);
}

#[test]
fn too_many_refusals_is_an_error_and_registers_nothing() {
    let reg = registry("refusals");
    let mut calls = 0;
    let err = reg
        .allocate(&keys("ctx/ns", 1), |_, _| {
            calls += 1;
            false
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            AllocError::Refused {
                refused: MAX_REFUSALS,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(calls, MAX_REFUSALS);
    assert!(err.to_string().contains("ctx/ns/svc-0"), "{err}");
    assert!(reg.entries().unwrap().is_empty());
}

#[test]
fn other_live_owner_never_shares_an_address() {
    let reg = registry("owners");
    let other = OtherProcess::start();
    let keys = keys("ctx/ns", 20);
    let theirs = reg.allocate_as(other.pid(), &keys, all_free).unwrap();
    let ours = reg.allocate(&keys, all_free).unwrap();
    // pid 1 always runs (and we may not signal it: EPERM counts as running).
    let init = reg.allocate_as(1, &keys, all_free).unwrap();
    assert_distinct(&[theirs.clone(), ours, init].concat());
    assert_eq!(reg.entries().unwrap().len(), 60);
    assert!(reg.entries().unwrap().iter().all(|e| e.alive));
    // The other process exits: its addresses are reclaimed and go to their keys' next user.
    drop(other);
    reg.release_all_of(std::process::id()).unwrap();
    assert!(reg.entries().unwrap().iter().all(|e| e.pid == 1));
    assert_eq!(reg.allocate(&keys, all_free).unwrap(), theirs);
}

#[test]
fn stale_entries_are_reclaimed() {
    let reg = registry("stale");
    let keys = keys("ctx/old", 10);
    let dead = reg.allocate_as(DEAD_PID, &keys, all_free).unwrap();
    let listed = reg.entries().unwrap();
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|e| e.pid == DEAD_PID && !e.alive));
    assert_eq!(reg.allocate(&keys, all_free).unwrap(), dead);
    let listed = reg.entries().unwrap();
    assert!(listed
        .iter()
        .all(|e| e.pid == std::process::id() && e.alive));
    // Pid 0 is not a process (kill(0, 0) would signal our own group): stale too.
    assert!(!store::pid_alive(0));
    assert!(!store::pid_alive(u32::MAX));
}

#[test]
fn release_by_key_and_by_pid() {
    let reg = registry("release");
    let other = OtherProcess::start();
    let ours = keys("ctx/a", 3);
    reg.allocate(&ours, all_free).unwrap();
    reg.allocate_as(other.pid(), &keys("ctx/b", 2), all_free)
        .unwrap();
    reg.release(&ours[..1]).unwrap();
    // Releasing keys of another process, or unknown keys, does nothing.
    reg.release(&keys("ctx/b", 2)).unwrap();
    reg.release(&["nope".to_string()]).unwrap();
    let left: Vec<_> = reg.entries().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(left.len(), 4);
    assert!(!left.contains(&ours[0]));
    reg.release_all_of(other.pid()).unwrap();
    reg.release_all_of(std::process::id()).unwrap();
    assert!(reg.entries().unwrap().is_empty());
}

#[test]
fn thousand_keys_at_once() {
    let reg = registry("thousand");
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("ctx/ns-{}/svc-{i}", i % 7))
        .collect();
    let start = Instant::now();
    let addresses = reg.allocate(&keys, all_free).unwrap();
    let first = start.elapsed();
    let start = Instant::now();
    assert_eq!(reg.allocate(&keys, all_free).unwrap(), addresses);
    let again = start.elapsed();
    println!("1,000 keys: allocated in {first:?}, re-found in {again:?}");
    assert_distinct(&addresses);
    for addr in &addresses {
        let [a, b, _, d] = addr.octets();
        assert!(
            a == 127 && CZCTL_BLOCKS.contains(&b) && d != 0 && d != 255,
            "{addr}"
        );
    }
}

#[test]
fn concurrent_registries_get_disjoint_addresses() {
    const THREADS: usize = 6;
    let dir = registry("concurrent").dir().to_path_buf();
    let owners: Vec<_> = (0..THREADS).map(|_| OtherProcess::start()).collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = owners
        .iter()
        .enumerate()
        .map(|(t, owner)| {
            let (reg, pid, barrier) = (Registry::new(&dir), owner.pid(), barrier.clone());
            std::thread::spawn(move || {
                // Own keys, plus keys every thread asks for (two sessions on one namespace).
                let keys = [keys(&format!("ctx/ns-{t}"), 150), keys("ctx/shared", 10)].concat();
                barrier.wait();
                let mut all = Vec::new();
                for chunk in keys.chunks(40) {
                    all.extend(reg.allocate_as(pid, chunk, all_free).unwrap());
                }
                all
            })
        })
        .collect();
    // A panicking thread already failed the test.
    let all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(all.len(), THREADS * 160);
    assert_distinct(&all);
    assert_eq!(Registry::new(&dir).entries().unwrap().len(), THREADS * 160);
}

#[test]
fn missing_or_corrupt_registry_is_tolerated() {
    let reg = registry("corrupt");
    assert!(reg.entries().unwrap().is_empty());
    std::fs::create_dir_all(reg.dir()).unwrap();
    let good = preferred("ctx/ns/kept");
    let text = format!(
        "garbage\n\0\u{fffd}\n127.0.0.1 1 ctx/ns/bad\n{good} 1 ctx/ns/kept\n{good} 1 ctx/ns/dup\n\
         127.5.5.5 notapid ctx/ns/x\n127.5.5.6 1\n127.9.9.9 1 trunc"
    );
    std::fs::write(reg.dir().join(store::REGISTRY_FILE), text).unwrap();
    let listed = reg.entries().unwrap();
    let pairs: Vec<_> = listed.iter().map(|e| (e.address, e.key.as_str())).collect();
    let trunc = Ipv4Addr::new(127, 9, 9, 9);
    assert_eq!(pairs, vec![(trunc, "trunc"), (good, "ctx/ns/kept")]);
    let got = reg
        .allocate(&["ctx/ns/kept".to_string()], all_free)
        .unwrap();
    assert_ne!(got[0], good, "pid 1 holds it");
    let text = std::fs::read_to_string(reg.dir().join(store::REGISTRY_FILE)).unwrap();
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 3);
}

#[test]
fn invalid_keys_are_rejected_and_files_are_private() {
    let reg = registry("invalid");
    for key in ["", "ctx/ns/a\nb", "tab\tkey"] {
        let err = reg.allocate(&[key.to_string()], all_free).unwrap_err();
        assert!(matches!(err, AllocError::InvalidKey { .. }), "{err}");
    }
    assert!(
        !reg.dir().exists(),
        "validation comes before any file is touched"
    );
    let key = "ctx/with space/svc".to_string();
    let got = reg.allocate(std::slice::from_ref(&key), all_free).unwrap();
    assert_eq!(reg.entries().unwrap()[0].key, key);
    assert_eq!(reg.entries().unwrap()[0].address, got[0]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |name: &str| {
            let meta = std::fs::metadata(reg.dir().join(name)).unwrap();
            meta.permissions().mode() & 0o7777
        };
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode(store::LOCK_FILE), 0o600);
        assert_eq!(mode(store::REGISTRY_FILE), 0o600);
    }
}

#[test]
fn files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let reg = registry("umask");
    // A clear mask can only widen what other tests create for a moment, which their exact
    // modes undo.
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let got = reg.allocate(&keys("ctx/umask", 1), all_free);
    rustix::process::umask(old);
    got.unwrap();
    let mode = |name: &str| {
        std::fs::metadata(reg.dir().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode(store::LOCK_FILE), 0o600);
    assert_eq!(mode(store::REGISTRY_FILE), 0o600);
}

#[test]
fn a_linked_foreign_or_shared_directory_is_refused_and_nothing_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let reg = registry("planted");
    let target = std::env::temp_dir().join(format!("loopback-alloc-victim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, reg.dir()).unwrap();
    let err = reg.allocate(&keys("ctx/planted", 1), all_free).unwrap_err();
    assert!(matches!(err, AllocError::Unsafe(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains(&reg.dir().display().to_string()), "{text}");
    assert!(text.contains("symbolic link"), "{text}");
    assert!(matches!(reg.release_all_of(1), Err(AllocError::Unsafe(_))));
    assert!(matches!(reg.entries(), Err(AllocError::Unsafe(_))));
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    std::fs::remove_file(reg.dir()).unwrap();

    // The old shared layout (a 0777 directory) is refused, not used.
    std::fs::create_dir(reg.dir()).unwrap();
    std::fs::set_permissions(reg.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = reg.allocate(&keys("ctx/planted", 1), all_free).unwrap_err();
    assert!(err.to_string().contains("mode 0777"), "{err}");
    assert_eq!(std::fs::read_dir(reg.dir()).unwrap().count(), 0);
    std::fs::remove_dir_all(reg.dir()).unwrap();

    // Another user's directory, however private.
    let mut foreign = Registry::new(reg.dir());
    foreign.trusted = vec![u32::MAX - 1];
    std::fs::create_dir(reg.dir()).unwrap();
    let err = foreign
        .allocate(&keys("ctx/planted", 1), all_free)
        .unwrap_err();
    assert!(err.to_string().contains("belongs to"), "{err}");
    let _ = std::fs::remove_dir_all(reg.dir());
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn a_planted_lock_or_registry_link_is_not_followed() {
    let reg = registry("links");
    std::fs::create_dir_all(reg.dir()).unwrap();
    let victim = reg.dir().with_extension("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, reg.dir().join(store::LOCK_FILE)).unwrap();
    let err = reg.allocate(&keys("ctx/links", 1), all_free).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    std::fs::remove_file(reg.dir().join(store::LOCK_FILE)).unwrap();
    std::os::unix::fs::symlink(&victim, reg.dir().join(store::REGISTRY_FILE)).unwrap();
    assert!(reg.entries().is_err(), "a linked registry is not read");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let _ = std::fs::remove_file(&victim);
}

#[test]
fn the_default_directory_is_per_user_and_ignores_empty_variables() {
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    assert_eq!(
        default_dir_for(
            0,
            env(&[("TMPDIR", "/scratch"), ("XDG_RUNTIME_DIR", "/run/user/0")])
        ),
        Path::new("/run/czctl-loopback"),
        "root never uses a temporary or another user's directory"
    );
    assert_eq!(
        default_dir_for(1234, env(&[("TMPDIR", "/scratch")])),
        Path::new("/scratch/czctl-loopback-1234")
    );
    assert_eq!(
        default_dir_for(1234, env(&[("TMPDIR", ""), ("XDG_RUNTIME_DIR", "")])),
        Path::new("/tmp/czctl-loopback-1234")
    );
    assert_eq!(
        default_dir_for(1234, env(&[("TMPDIR", "relative")])),
        Path::new("/tmp/czctl-loopback-1234")
    );
    // A runtime directory that is not this user's is passed over.
    assert_eq!(
        default_dir_for(1234, env(&[("XDG_RUNTIME_DIR", "/")])),
        Path::new("/tmp/czctl-loopback-1234")
    );
    let mine = std::env::temp_dir().join(format!("loopback-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&mine).unwrap();
    let leaked: &'static str = Box::leak(mine.to_str().unwrap().to_string().into_boxed_str());
    let pairs: &'static [(&'static str, &'static str)] =
        Box::leak(vec![("XDG_RUNTIME_DIR", leaked)].into_boxed_slice());
    assert_eq!(
        default_dir_for(crate::dirs::euid().max(1), env(pairs)),
        if crate::dirs::euid() == 0 {
            Path::new("/tmp/czctl-loopback-1").to_path_buf()
        } else {
            mine.join("czctl-loopback")
        }
    );
    let _ = std::fs::remove_dir_all(&mine);
}
