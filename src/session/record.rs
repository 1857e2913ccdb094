//! Session records: one small JSON file per running (or crashed) session in czctl's state
//! directory, so any later run can list, inspect and close it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process::{self, Identity, Liveness};

/// What a session is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Record {
    /// Session id (`tp-xxxxxx`), also in the hosts-file markers.
    pub id: String,
    /// What kind of session it is.
    pub kind: SessionKind,
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
    pub state: SessionState,
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
    /// Which process `pid` is (start time, boot, PID namespace, executable), taken when the
    /// record is written ([`Record::save`] fills it in); `None` in records of older czctl
    /// versions, whose pid is then never signalled. See [`super::process`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// What kind of session a record is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// `namespace teleport` (also under a workload teleport).
    #[default]
    Teleport,
    /// `service intercept`.
    Intercept,
}

impl std::fmt::Display for SessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionKind::Teleport => "teleport",
            SessionKind::Intercept => "intercept",
        })
    }
}

/// Where a session is in its life, as its record (or a listing) says.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Connecting, checking, forwarding not yet complete.
    #[default]
    Starting,
    /// Everything it was asked for is in place.
    Ready,
    /// Only in listings: the session runs in another PID namespace, where its record's state
    /// cannot be trusted from here.
    #[serde(rename = "unknown (other pid namespace)")]
    Unknown,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionState::Starting => "starting",
            SessionState::Ready => "ready",
            SessionState::Unknown => "unknown (other pid namespace)",
        })
    }
}

/// Where an intercept's route lives in the cluster, so any later run can close it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterceptRef {
    /// The kubeconfig given with `--kubeconfig`, if any.
    pub kubeconfig: Option<PathBuf>,
    /// `--as`, `--as-group` and `--as-uid` as given, so a later close acts as the same user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impersonate: Vec<String>,
    /// Namespace of the Service.
    pub namespace: String,
    /// The intercepted Service.
    pub service: String,
    /// Which kind of object holds the Session record.
    pub backend: Backend,
    /// The header route, for listings (`x-dev: alice`).
    pub header: String,
    /// Where matching requests go on this machine.
    pub local: String,
}

/// The kind of object an intercept's Session record is stored in, in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A `Session` custom resource.
    Crd,
    /// A labelled ConfigMap.
    Configmap,
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
    /// The state directory is not a private directory of this user (see the `paths` module).
    #[error(transparent)]
    Place(#[from] crate::paths::PathError),
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

    /// Whether its process still runs; see [`process::judge`].
    pub fn liveness(&self) -> Liveness {
        process::judge(self.pid, self.identity.as_ref())
    }

    /// Why the record, read from `file` in `state_dir`, cannot be acted upon, if it cannot: its
    /// id is not a session id or not its file's name, its pid names no process (0, or 1 in
    /// our PID namespace: init), or its socket is not the session's socket in the sessions
    /// directory (closing it would remove whatever file it names).
    pub fn invalid(&self, file: &Path, state_dir: &Path) -> Option<String> {
        if !valid_id(&self.id) {
            return Some(format!(
                "its id {:?} is not a session id (1-64 letters, digits or '-')",
                self.id
            ));
        }
        if file.file_name() != Some(std::ffi::OsStr::new(&format!("{}.json", self.id))) {
            return Some(format!(
                "its id {} is not its file name (it belongs in {}.json)",
                self.id, self.id
            ));
        }
        let elsewhere = self
            .identity
            .as_ref()
            .is_some_and(|i| process::own_pid_namespace().is_some_and(|ns| ns != i.pid_namespace));
        if self.pid == 0 || (self.pid == 1 && !elsewhere) || i32::try_from(self.pid).is_err() {
            return Some(format!("its pid {} names no session process", self.pid));
        }
        let wanted = socket_path(state_dir, &self.id);
        let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        let in_place = self.socket == wanted
            || (self.socket.file_name() == wanted.file_name()
                && self.socket.is_absolute()
                && !self
                    .socket
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                && same_dir(
                    self.socket.parent().unwrap_or(Path::new("")),
                    &dir(state_dir),
                ));
        if !in_place {
            return Some(format!(
                "its control socket {} is not {}",
                self.socket.display(),
                wanted.display()
            ));
        }
        None
    }

    /// Writes the record atomically, mode 0600, with the identity of its process (taken now
    /// unless the record has one).
    pub fn save(&self, state_dir: &Path) -> Result<(), RecordError> {
        crate::paths::ensure_sessions_dir(state_dir)?;
        let mut record = self.clone();
        if record.identity.is_none() {
            record.identity = Identity::of(record.pid);
        }
        // A struct of strings always serializes.
        let text = serde_json::to_vec_pretty(&record).expect("record serializes");
        replace_private(&Self::path(state_dir, &self.id), &text)
    }

    /// Removes the record and the session's socket, and remembers that the session was closed
    /// (so closing it again says "already closed", not "no such session"). The log goes too
    /// once the session had been ready; the log of a start that failed stays for the command
    /// waiting on it, which reads it out and removes it ([`remove_log`]).
    pub fn remove(&self, state_dir: &Path) {
        if !valid_id(&self.id) {
            return;
        }
        let _ = std::fs::remove_file(Self::path(state_dir, &self.id));
        // The session's own socket, never the path the record names.
        let _ = std::fs::remove_file(socket_path(state_dir, &self.id));
        if self.state == SessionState::Ready {
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
    let path = closed_path(state_dir);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut ids: Vec<&str> = old.lines().filter(|l| *l != id).collect();
    ids.push(id);
    let keep = &ids[ids.len().saturating_sub(CLOSED_KEPT)..];
    // Best effort: without it, closing this id again says "no session" instead.
    let _ = replace_private(&path, format!("{}\n", keep.join("\n")).as_bytes());
}

/// Replaces `path` atomically with `bytes`, mode 0600, never following a link planted where
/// its temporary file goes.
fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = crate::paths::open_nofollow(
        &tmp,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600),
    )
    .map_err(io("write", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))
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

/// Whether `id` can be a session id (and so a file name): 1-64 ASCII letters, digits or '-'.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A record file that cannot be acted upon.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub reason: String,
}

impl Invalid {
    /// The session id its file name claims.
    pub fn id(&self) -> String {
        self.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// What to say about it: the file, why, and how to remove it.
    pub fn message(&self) -> String {
        format!(
            "ignored the invalid session record {}: {}; czctl never acts on it. If no czctl \
             session of yours needs it, remove it: rm {}",
            self.file.display(),
            self.reason,
            self.file.display()
        )
    }
}

/// Every record file in the state directory: the valid records, oldest first, and the invalid
/// ones (unreadable, or see [`Record::invalid`]).
pub fn scan(state_dir: &Path) -> Result<(Vec<Record>, Vec<Invalid>), RecordError> {
    let dir = dir(state_dir);
    // A sessions directory that is a planted link or writable by others is never read.
    if !crate::paths::check_private_dir(&dir)? {
        return Ok(Default::default());
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(io("read", &dir)(e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut records = Vec::new();
    let mut invalid = Vec::new();
    for file in files {
        let read = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string()),
            // Removed meanwhile: a session that just ended.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
        };
        match read.map(|r| (r.invalid(&file, state_dir), r)) {
            Ok((None, record)) => records.push(record),
            Ok((Some(reason), _)) | Err(reason) => invalid.push(Invalid { file, reason }),
        }
    }
    records.sort_by(|a, b| (&a.started, &a.id).cmp(&(&b.started, &b.id)));
    Ok((records, invalid))
}

/// The valid records in the state directory, oldest first, without those whose pid now
/// belongs to another process (their session is over); invalid files are skipped.
pub fn list(state_dir: &Path) -> Result<Vec<Record>, RecordError> {
    let (records, _) = scan(state_dir)?;
    Ok(records
        .into_iter()
        .filter(|r| !matches!(r.liveness(), Liveness::Reused { .. }))
        .collect())
}

/// Session `id`'s record, if there is a valid one.
pub fn load(state_dir: &Path, id: &str) -> Option<Record> {
    if !valid_id(id) {
        return None;
    }
    let file = Record::path(state_dir, id);
    let record: Record = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    record.invalid(&file, state_dir).is_none().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_list_remove() {
        let state = std::env::temp_dir().join(format!("czctl-record-test-{}", std::process::id()));
        let record = Record {
            id: "tp-abc".into(),
            kind: SessionKind::Teleport,
            pid: std::process::id(),
            namespaces: vec!["demo".into()],
            context: "kubesim".into(),
            hosts_file: "/etc/hosts".into(),
            socket: socket_path(&state, "tp-abc"),
            started: "2026-11-23T09:00:00Z".into(),
            state: SessionState::Ready,
            ..Record::default()
        };
        record.save(&state).unwrap();
        // The identity of its process is written with it.
        let record = Record {
            identity: Identity::current(),
            ..record
        };
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
