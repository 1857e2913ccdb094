//! Leftovers of czctl runs that ended without cleaning up: hosts blocks and registered
//! addresses whose owner process is gone.

use std::path::Path;

use loopback::{Entry, Registry};

use super::check::{Area, Check};
use crate::hosts::{parse_blocks, FoundBlock};
use crate::session::process::block_owner_alive_by;

const CLOSE_FIX: &str = "czctl session close --all removes them (the next `czctl namespace \
                         teleport` also cleans them up)";

/// The stale hosts blocks of `hosts_file`: a block's owner is judged by its session record in
/// czctl's state directory (a reused pid is stale, a session in another PID namespace is not;
/// see [`crate::session::process::block_owner_alive`]); `is_alive` says whether the pid of a
/// block without a record runs.
pub fn hosts_blocks(hosts_file: &Path, is_alive: impl Fn(u32) -> bool) -> Check {
    let state_dir = crate::paths::state_dir();
    let owner_alive =
        |b: &FoundBlock| block_owner_alive_by(&state_dir, b.session(), b.pid(), &is_alive);
    match std::fs::read_to_string(hosts_file) {
        Ok(text) => blocks_check(&parse_blocks(&text), owner_alive),
        Err(e) => Check::warn(
            Area::Local,
            "stale hosts blocks",
            format!("cannot read {}: {e}", hosts_file.display()),
        ),
    }
}

/// Judges the czctl blocks found in a hosts file; `owner_alive` says whether a block's owner
/// may still run.
pub fn blocks_check(blocks: &[FoundBlock], owner_alive: impl Fn(&FoundBlock) -> bool) -> Check {
    const NAME: &str = "stale hosts blocks";
    let unterminated: Vec<&FoundBlock> = blocks.iter().filter(|b| !b.terminated()).collect();
    let stale: Vec<&FoundBlock> = blocks
        .iter()
        .filter(|b| b.terminated() && !owner_alive(b))
        .collect();
    let active = blocks.len() - unterminated.len() - stale.len();
    if let Some(first) = unterminated.first() {
        let lines: Vec<String> = unterminated
            .iter()
            .map(|b| b.first_line_number().to_string())
            .collect();
        return Check::warn(
            Area::Local,
            NAME,
            format!(
                "czctl begin marker without an end marker at line {} (session {})",
                lines.join(", "),
                first.session()
            ),
        )
        .with_fix("czctl never removes an unterminated block: edit the hosts file by hand");
    }
    if stale.is_empty() {
        return Check::pass(
            Area::Local,
            NAME,
            format!("none ({active} active session{})", plural(active)),
        );
    }
    let list: Vec<String> = stale
        .iter()
        .map(|b| {
            format!(
                "session {} (pid {}, line {})",
                b.session(),
                b.pid(),
                b.first_line_number()
            )
        })
        .collect();
    Check::warn(
        Area::Local,
        NAME,
        format!(
            "{} block{} of ended processes: {}",
            stale.len(),
            plural(stale.len()),
            list.join(", ")
        ),
    )
    .with_fix(CLOSE_FIX)
}

/// Registered addresses whose owner process is gone.
pub fn registrations(registry_dir: &Path) -> Check {
    match Registry::new(registry_dir).entries() {
        Ok(entries) => registrations_check(&entries, registry_dir),
        Err(e) => Check::warn(Area::Local, "stale address registrations", e.to_string()),
    }
}

/// Judges the entries of the address registry in `dir`.
pub fn registrations_check(entries: &[Entry], dir: &Path) -> Check {
    const NAME: &str = "stale address registrations";
    let mut dead: Vec<u32> = entries.iter().filter(|e| !e.alive).map(|e| e.pid).collect();
    let stale = dead.len();
    if stale == 0 {
        return Check::pass(
            Area::Local,
            NAME,
            format!(
                "none ({} address{} in use)",
                entries.len(),
                plural_es(entries.len())
            ),
        );
    }
    dead.sort_unstable();
    dead.dedup();
    let pids: Vec<String> = dead.iter().map(u32::to_string).collect();
    Check::warn(
        Area::Local,
        NAME,
        format!(
            "{stale} address{} in {} registered to ended processes (pid {})",
            plural_es(stale),
            dir.display(),
            pids.join(", ")
        ),
    )
    .with_fix(CLOSE_FIX)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn plural_es(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "es"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    const TEXT: &str = "127.0.0.1\tlocalhost\n\
        # czctl begin session=tp-aaaaaa pid=10 -- note\n\
        127.1.2.3\techo\n\
        # czctl end session=tp-aaaaaa\n\
        # czctl begin session=tp-bbbbbb pid=20 -- note\n\
        127.1.2.4\tapi\n\
        # czctl end session=tp-bbbbbb\n";

    #[test]
    fn dead_blocks_are_warnings_with_the_close_fix() {
        let check = blocks_check(&parse_blocks(TEXT), |b| b.pid() == 20);
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.detail,
            "1 block of ended processes: session tp-aaaaaa (pid 10, line 2)"
        );
        assert!(check
            .fix
            .unwrap_or_default()
            .contains("czctl session close --all"));
        let fine = blocks_check(&parse_blocks(TEXT), |_| true);
        assert_eq!(fine.status, Status::Pass);
        assert_eq!(fine.detail, "none (2 active sessions)");
    }

    #[test]
    fn owners_are_judged_by_their_records_then_their_pids() {
        let state = std::env::temp_dir().join(format!("czctl-stale-test-{}", std::process::id()));
        let text = "# czctl begin session=tp-zero pid=0 -- note\n127.1.2.3\tx\n\
                    # czctl end session=tp-zero\n";
        let alive = |b: &FoundBlock| block_owner_alive_by(&state, b.session(), b.pid(), |_| true);
        let check = blocks_check(&parse_blocks(text), alive);
        assert_eq!(check.status, Status::Warn, "pid 0 is no process");
        // A pid that runs something other than czctl (this test binary is czctl's).
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let text = format!(
            "# czctl begin session=tp-other pid={} -- note\n127.1.2.3\tx\n\
             # czctl end session=tp-other\n\
             # czctl begin session=tp-self pid={} -- note\n127.1.2.4\ty\n\
             # czctl end session=tp-self\n",
            other.id(),
            std::process::id()
        );
        let check = blocks_check(&parse_blocks(&text), alive);
        let _ = other.kill();
        let _ = other.wait();
        if crate::session::process::runs_czctl(std::process::id()).is_some() {
            assert!(
                check.detail.contains("session tp-other"),
                "{}",
                check.detail
            );
            assert!(!check.detail.contains("tp-self"), "{}", check.detail);
        }
    }

    #[test]
    fn unterminated_blocks_are_left_to_a_person() {
        let text = "# czctl begin session=tp-cccccc pid=1 -- note\n127.1.1.1\tx\n";
        let check = blocks_check(&parse_blocks(text), |_| false);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("line 1"), "{}", check.detail);
    }

    #[test]
    fn dead_registrations() {
        let entry = |pid, alive| Entry {
            address: std::net::Ipv4Addr::new(127, 1, 0, 1),
            key: "ctx/ns/svc".into(),
            pid,
            alive,
        };
        let dir = Path::new("/tmp/r");
        let check = registrations_check(&[entry(5, false), entry(5, false), entry(6, true)], dir);
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.detail,
            "2 addresses in /tmp/r registered to ended processes (pid 5)"
        );
        let fine = registrations_check(&[entry(6, true)], dir);
        assert_eq!(fine.status, Status::Pass);
        assert_eq!(fine.detail, "none (1 address in use)");
    }
}
