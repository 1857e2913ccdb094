//! Session records: one small JSON file per running (or crashed) session in czctl's state
//! directory, so any later run can list, inspect and close it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a session is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

    /// Removes the record and the session's socket and log.
    pub fn remove(&self, state_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(state_dir, &self.id));
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(log_path(state_dir, &self.id));
    }
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
            intercept: None,
        };
        record.save(&state).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Record::path(&state, "tp-abc"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(list(&state).unwrap(), vec![record.clone()]);
        record.remove(&state);
        assert!(list(&state).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(state);
    }
}
