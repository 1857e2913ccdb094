//! Session records: one small JSON file per running (or crashed) session in czctl's state
//! directory, so any later run can list, inspect and close it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a session is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Record {
    /// Session id (`tp-xxxxxx`), also in the hosts-file markers.
    pub id: String,
    /// `teleport` or `intercept`.
    pub kind: String,
    /// The process owning the session.
    pub pid: u32,
    /// The namespaces teleported.
    pub namespaces: Vec<String>,
    /// The kubeconfig context.
    pub context: String,
    /// The hosts file the session edits.
    pub hosts_file: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// When it started (RFC 3339).
    pub started: String,
    /// `starting` until everything is forwarded, then `ready`.
    pub state: String,
    /// For intercepts: what the cluster holds for this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<InterceptRef>,
    /// The CI job (or `CZCTL_SESSION_GROUP`) it was started in; see [`super::group`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The API server URL of the context.
    #[serde(default)]
    pub server: String,
    /// For teleports: the label selector on Services, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// For teleports: the cluster DNS domain the names use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_domain: String,
}

/// Where an intercept's route lives in the cluster, so any later run can close it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterceptRef {
    /// The kubeconfig given with `--kubeconfig`, if any.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Service.
    pub namespace: String,
    /// The intercepted Service.
    pub service: String,
    /// Which kind of object holds the Session record.
    pub backend: crate::intercept::store::Backend,
    /// The header route, for listings (`x-dev: alice`).
    pub header: String,
    /// Where matching requests go on this machine.
    pub local: String,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The sessions directory or a record file could not be used.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The directory of session records under a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sessions")
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RecordError + 'a {
    move |source| RecordError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Record {
    /// The record's file.
    pub fn path(state_dir: &Path, id: &str) -> PathBuf {
        dir(state_dir).join(format!("{id}.json"))
    }

    /// Writes the record atomically, mode 0600.
    pub fn save(&self, state_dir: &Path) -> Result<(), RecordError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = Self::path(state_dir, &self.id);
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("write", &tmp))?;
        // A struct of strings always serializes.
        let text = serde_json::to_vec_pretty(self).expect("record serializes");
        file.write_all(&text).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("write", &path))
    }

    /// Removes the record and the session's socket, and remembers that the session was closed
    /// (so closing it again says "already closed", not "no such session"). The log goes too
    /// once the session had been ready; the log of a start that failed stays for the command
    /// waiting on it, which reads it out and removes it ([`remove_log`]).
    pub fn remove(&self, state_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(state_dir, &self.id));
        let _ = std::fs::remove_file(&self.socket);
        if self.state == "ready" {
            remove_log(state_dir, &self.id);
        }
        mark_closed(state_dir, &self.id);
    }
}

/// How many closed session ids are remembered.
const CLOSED_KEPT: usize = 500;

fn closed_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("closed")
}

/// Remembers that session `id` was closed (the newest [`CLOSED_KEPT`] ids are kept).
pub fn mark_closed(state_dir: &Path, id: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = closed_path(state_dir);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut ids: Vec<&str> = old.lines().filter(|l| *l != id).collect();
    ids.push(id);
    let keep = &ids[ids.len().saturating_sub(CLOSED_KEPT)..];
    let tmp = path.with_extension("tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(format!("{}\n", keep.join("\n")).as_bytes())
        });
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// Whether session `id` was closed (within the newest [`CLOSED_KEPT`]).
pub fn was_closed(state_dir: &Path, id: &str) -> bool {
    std::fs::read_to_string(closed_path(state_dir)).is_ok_and(|t| t.lines().any(|l| l == id))
}

/// Removes the hosts-file backup of a session that ended cleanly (its block is gone, so the
/// backup is no longer needed to repair anything).
pub fn remove_backup(state_dir: &Path, id: &str) {
    let _ = std::fs::remove_file(state_dir.join(format!("hosts-{id}.backup")));
}

/// Removes a session's log.
pub fn remove_log(state_dir: &Path, id: &str) {
    let _ = std::fs::remove_file(log_path(state_dir, id));
}

/// Where a detached session logs.
pub fn log_path(state_dir: &Path, id: &str) -> PathBuf {
    dir(state_dir).join(format!("{id}.log"))
}

/// Where a session's control socket lives.
pub fn socket_path(state_dir: &Path, id: &str) -> PathBuf {
    dir(state_dir).join(format!("{id}.sock"))
}

/// Every record in the state directory, oldest first; unreadable files are skipped.
pub fn list(state_dir: &Path) -> Result<Vec<Record>, RecordError> {
    let dir = dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", &dir)(e)),
    };
    let mut records: Vec<Record> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect();
    records.sort_by(|a, b| (&a.started, &a.id).cmp(&(&b.started, &b.id)));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_list_remove() {
        let state = std::env::temp_dir().join(format!("czctl-record-test-{}", std::process::id()));
        let record = Record {
            id: "tp-abc".into(),
            kind: "teleport".into(),
            pid: 42,
            namespaces: vec!["demo".into()],
            context: "kubesim".into(),
            hosts_file: "/etc/hosts".into(),
            socket: socket_path(&state, "tp-abc"),
            started: "2026-11-23T09:00:00Z".into(),
            state: "ready".into(),
            ..Record::default()
        };
        record.save(&state).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Record::path(&state, "tp-abc"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(list(&state).unwrap(), vec![record.clone()]);
        assert!(!was_closed(&state, "tp-abc"));
        record.remove(&state);
        assert!(list(&state).unwrap().is_empty());
        assert!(was_closed(&state, "tp-abc"));
        assert!(!was_closed(&state, "tp-abd"));
        let _ = std::fs::remove_dir_all(state);
    }
}
