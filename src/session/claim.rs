//! One teleport per namespace set: before a teleport starts, it either finds a live session
//! of the same user, job (group) and cluster that already teleports its namespaces and reuses
//! it, or claims the namespaces by writing its record, under a lock, so two concurrent starts
//! never both win.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::{self, Record, SessionKind, SessionState};
use crate::exit::{Code, Fatal};

/// What a new teleport would be.
#[derive(Debug, Clone)]
pub struct Want {
    /// Namespaces, in the order given.
    pub namespaces: Vec<String>,
    /// The kubeconfig context.
    pub context: String,
    /// The API server URL.
    pub server: String,
    /// The hosts file.
    pub hosts_file: PathBuf,
    /// The label selector on Services.
    pub selector: Option<String>,
    /// The cluster DNS domain.
    pub cluster_domain: String,
    /// The CI job.
    pub group: Option<String>,
}

impl Want {
    /// The record a session started for this would write first (`starting`).
    pub fn record(&self, id: &str, pid: u32, state_dir: &Path) -> Record {
        Record {
            id: id.to_string(),
            kind: SessionKind::Teleport,
            pid,
            namespaces: self.namespaces.clone(),
            context: self.context.clone(),
            hosts_file: self.hosts_file.clone(),
            socket: record::socket_path(state_dir, id),
            started: super::runtime::now_rfc3339(),
            state: SessionState::Starting,
            intercept: None,
            group: self.group.clone(),
            server: self.server.clone(),
            selector: self.selector.clone(),
            cluster_domain: self.cluster_domain.clone(),
            identity: super::process::Identity::of(pid),
        }
    }
}

/// What the records say about a wanted teleport.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// A ready live session teleports all of it with the same options.
    Ready(Record),
    /// A live session that would be reused is still starting.
    Starting(Record),
    /// No live session covers any of the namespaces.
    Free,
}

/// Decides from the records (pure): reuse, wait, start, or refuse with the reason.
pub fn find(
    records: &[Record],
    want: &Want,
    alive: impl Fn(&Record) -> bool,
) -> Result<Found, Fatal> {
    for r in records {
        let same_place = r.kind == SessionKind::Teleport
            && r.group == want.group
            && r.context == want.context
            && (r.server.is_empty() || r.server == want.server)
            && alive(r);
        let overlap: Vec<&String> = want
            .namespaces
            .iter()
            .filter(|ns| r.namespaces.contains(ns))
            .collect();
        if !same_place || overlap.is_empty() {
            continue;
        }
        let mut differs = Vec::new();
        if overlap.len() < want.namespaces.len() {
            let missing: Vec<&str> = want
                .namespaces
                .iter()
                .filter(|ns| !r.namespaces.contains(ns))
                .map(String::as_str)
                .collect();
            differs.push(format!("it does not teleport {}", missing.join(", ")));
        }
        if r.selector != want.selector {
            differs.push(format!(
                "its Service selector is {} (this one: {})",
                r.selector.as_deref().unwrap_or("none"),
                want.selector.as_deref().unwrap_or("none")
            ));
        }
        if r.hosts_file != want.hosts_file {
            differs.push(format!("it edits {}", r.hosts_file.display()));
        }
        if !r.cluster_domain.is_empty() && r.cluster_domain != want.cluster_domain {
            differs.push(format!("its cluster domain is {}", r.cluster_domain));
        }
        if !differs.is_empty() {
            let shared: Vec<&str> = overlap.iter().map(|s| s.as_str()).collect();
            return Err(Fatal::new(
                Code::Conflict,
                format!(
                    "session {} already teleports {} of context {}, but {}; a second teleport \
                     of the same namespace would give its names two addresses. Teleport exactly \
                     what it does (it is then reused), teleport the other namespaces on their \
                     own, or close it first: czctl session close {}",
                    r.id,
                    shared.join(", "),
                    r.context,
                    differs.join("; "),
                    r.id
                ),
            ));
        }
        return Ok(if r.state == SessionState::Ready {
            Found::Ready(r.clone())
        } else {
            Found::Starting(r.clone())
        });
    }
    Ok(Found::Free)
}

/// The outcome of [`claim`].
pub enum Claim {
    /// Reuse this ready session.
    Reuse(Box<Record>),
    /// Nobody teleports the namespaces: start a session. The lock is held until this is
    /// dropped; write the new session's record ([`Want::record`]) before dropping it.
    Start(Lock),
}

/// The lock on the session records (`sessions/lock`); released when dropped.
pub struct Lock(#[allow(dead_code)] File);

/// Takes the lock (waiting up to `timeout`).
pub async fn lock(state_dir: &Path, timeout: Duration) -> Result<Lock, Fatal> {
    use std::os::unix::fs::OpenOptionsExt;
    let local = |what: String, e: std::io::Error| Fatal::new(Code::Local, format!("{what}: {e}"));
    let dir = crate::paths::ensure_sessions_dir(state_dir)
        .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
    let path = dir.join("lock");
    let file = crate::paths::open_nofollow(
        &path,
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
    )
    .map_err(|e| local(format!("cannot open {}", path.display()), e))?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Lock(file)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Fatal::new(
                    Code::Local,
                    format!(
                        "another czctl held {} for {}s; try again",
                        path.display(),
                        timeout.as_secs()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(local(format!("cannot lock {}", path.display()), e))
            }
        }
    }
}

/// Reuses a live session that teleports `want`, waiting (up to `timeout`) for one that is
/// still starting, or returns the lock to start a new one under.
pub async fn claim(state_dir: &Path, want: &Want, timeout: Duration) -> Result<Claim, Fatal> {
    let deadline = Instant::now() + timeout;
    let mut said = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let lock = lock(state_dir, left).await?;
        let records =
            record::list(state_dir).map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
        match find(&records, want, |r| !r.liveness().is_stale())? {
            Found::Ready(r) => return Ok(Claim::Reuse(Box::new(r))),
            Found::Free => return Ok(Claim::Start(lock)),
            Found::Starting(r) => {
                drop(lock);
                if Instant::now() >= deadline {
                    return Err(Fatal::new(
                        Code::Failure,
                        format!(
                            "session {} (pid {}) teleports {} but was not ready after {}s; see \
                             its log {} or close it: czctl session close {}",
                            r.id,
                            r.pid,
                            r.namespaces.join(", "),
                            timeout.as_secs(),
                            record::log_path(state_dir, &r.id).display(),
                            r.id
                        ),
                    ));
                }
                if !said {
                    eprintln!(
                        "czctl: session {} (pid {}) is starting a teleport of {}; waiting to reuse it",
                        r.id,
                        r.pid,
                        r.namespaces.join(", ")
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Removes session `id`'s record if `pid` still owns it (a start that failed before its
/// process could clean up).
pub fn release(state_dir: &Path, id: &str, pid: u32) {
    let path = Record::path(state_dir, id);
    let owned = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .is_some_and(|r| r.pid == pid);
    if owned {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(record::socket_path(state_dir, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(namespaces: &[&str]) -> Want {
        Want {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            context: "ctx".into(),
            server: "https://127.0.0.1:6443".into(),
            hosts_file: "/etc/hosts".into(),
            selector: None,
            cluster_domain: "cluster.local".into(),
            group: None,
        }
    }

    fn session(id: &str, namespaces: &[&str], state: SessionState) -> Record {
        let mut r = want(namespaces).record(id, 10, Path::new("/state"));
        r.state = state;
        r
    }

    #[test]
    fn a_ready_session_of_the_namespace_is_reused() {
        let records = [session("tp-a", &["demo", "other"], SessionState::Ready)];
        assert_eq!(
            find(&records, &want(&["demo"]), |_| true).unwrap(),
            Found::Ready(records[0].clone())
        );
        assert_eq!(
            find(&records, &want(&["other", "demo"]), |_| true).unwrap(),
            Found::Ready(records[0].clone())
        );
        let starting = [session("tp-b", &["demo"], SessionState::Starting)];
        assert!(matches!(
            find(&starting, &want(&["demo"]), |_| true).unwrap(),
            Found::Starting(_)
        ));
    }

    #[test]
    fn other_namespaces_groups_contexts_and_dead_sessions_do_not_count() {
        let records = [session("tp-a", &["demo"], SessionState::Ready)];
        assert_eq!(
            find(&records, &want(&["web"]), |_| true).unwrap(),
            Found::Free
        );
        assert_eq!(
            find(&records, &want(&["demo"]), |_| false).unwrap(),
            Found::Free
        );
        let mut job = want(&["demo"]);
        job.group = Some("gitlab:1".into());
        assert_eq!(find(&records, &job, |_| true).unwrap(), Found::Free);
        let mut other = want(&["demo"]);
        other.context = "prod".into();
        assert_eq!(find(&records, &other, |_| true).unwrap(), Found::Free);
        let mut server = want(&["demo"]);
        server.server = "https://10.0.0.1".into();
        assert_eq!(find(&records, &server, |_| true).unwrap(), Found::Free);
    }

    #[test]
    fn a_partial_or_different_teleport_is_refused_with_the_session() {
        let records = [session("tp-a", &["demo"], SessionState::Ready)];
        let e = find(&records, &want(&["demo", "web"]), |_| true).unwrap_err();
        assert_eq!(e.code, Code::Conflict);
        assert!(
            e.message.contains("tp-a") && e.message.contains("web"),
            "{e}"
        );
        let mut selected = want(&["demo"]);
        selected.selector = Some("app=x".into());
        let e = find(&records, &selected, |_| true).unwrap_err();
        assert!(e.message.contains("app=x"), "{e}");
    }
}
