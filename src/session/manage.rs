//! Listing, inspecting and closing sessions from any czctl run: live ones through their
//! control socket, stale ones (their process is gone) by undoing what they left behind.
//!
//! What a stale session left depends on its kind (a teleport's hosts block and addresses, an
//! intercept's route in the cluster): each kind says how to undo it through [`Leftovers`], and
//! the command wires them in, so this module imports neither teleport nor intercept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::control::{self, Request, Response};
use super::process::{Liveness, Verified};
use super::record::{self, Invalid, Record};
use super::status::Status;
use crate::exit::{Code, Fatal};

/// What closing a session whose process is over needs from the kind of session it was.
pub trait Leftovers {
    /// Refuses, before anything is closed, when what `close --all` sweeps cannot be swept.
    fn check(&self, places: &Places) -> Result<(), Fatal>;
    /// Undoes what a session whose process is over left, and removes its record; says what was
    /// done.
    fn clean(
        &mut self,
        places: &Places,
        record: &Record,
        liveness: &Liveness,
        force: bool,
    ) -> impl std::future::Future<Output = Result<String, Fatal>>;
    /// `--forget`: discards what the session left on this machine, and its record, without
    /// asking the cluster; says what was removed and what stays where.
    fn forget(
        &mut self,
        places: &Places,
        record: &Record,
        liveness: &Liveness,
    ) -> Result<String, Fatal>;
    /// After `close --all`: removes what no record names any more.
    fn sweep(&mut self, places: &Places, out: &mut Closing);
}

/// Where sessions and their leftovers live.
#[derive(Debug, Clone)]
pub struct Places {
    /// czctl's state directory.
    pub state_dir: PathBuf,
    /// The address registry directory.
    pub registry_dir: PathBuf,
    /// The hosts file to sweep for stale blocks without a record.
    pub hosts_file: PathBuf,
}

/// A session as `session list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The record; its `state` is `unknown (other pid namespace)` for a session started in
    /// another PID namespace (its process cannot be seen from here).
    #[serde(flatten)]
    pub record: Record,
    /// Its process is gone (or its pid belongs to another process now): it left things behind
    /// that `session close` cleans.
    pub stale: bool,
    /// Why its process is not (known to be) the recorded one, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// The valid records, each with whether its process runs, and the invalid record files.
pub type Judged = (Vec<(Record, Liveness)>, Vec<Invalid>);

/// Reads and judges every record of the state directory.
pub fn judged(places: &Places) -> Result<Judged, Fatal> {
    let (records, invalid) =
        record::scan(&places.state_dir).map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
    let records = records
        .into_iter()
        .map(|r| {
            let liveness = r.liveness();
            (r, liveness)
        })
        .collect();
    Ok((records, invalid))
}

/// Every session, live or stale. Invalid record files are reported on stderr and left out.
pub fn list(places: &Places) -> Result<Vec<Listed>, Fatal> {
    let (records, invalid) = judged(places)?;
    for bad in &invalid {
        eprintln!("czctl: {}", bad.message());
    }
    Ok(records
        .into_iter()
        .map(|(mut record, liveness)| {
            if let Some(state) = liveness.shown_state() {
                record.state = state;
            }
            let process = (liveness != Liveness::Running).then(|| liveness.describe(record.pid));
            Listed {
                stale: liveness.is_stale(),
                process,
                record,
            }
        })
        .collect())
}

/// The status of one session, or of every live one.
pub async fn status(places: &Places, id: Option<&str>) -> Result<Vec<(Record, Status)>, Fatal> {
    let mut out = Vec::new();
    let (all, invalid) = judged(places)?;
    if let Some(id) = id {
        if let Some(bad) = invalid.iter().find(|b| b.id() == id) {
            return Err(Fatal::new(Code::Local, bad.message()));
        }
        if !all.iter().any(|(r, _)| r.id == id) {
            return Err(Fatal::new(
                Code::NotFound,
                format!("no session {id:?}; list them with: czctl session list"),
            ));
        }
    }
    for (record, liveness) in all
        .into_iter()
        .filter(|(r, _)| id.is_none_or(|id| r.id == id))
    {
        if liveness.is_stale() {
            if id.is_some() {
                return Err(Fatal::new(
                    Code::NotFound,
                    format!(
                        "session {} is stale ({}); clean it with: czctl session close {}",
                        record.id,
                        liveness.describe(record.pid),
                        record.id
                    ),
                ));
            }
            continue;
        }
        match control::request(&record.socket, Request::Status).await {
            Ok(Response::Status(status)) => out.push((record, status)),
            Ok(other) => {
                return Err(Fatal::new(
                    Code::Failure,
                    format!("session {} answered {other:?}", record.id),
                ))
            }
            // A session whose process cannot be checked and whose socket does not answer
            // may well have ended: only asking for it by id is an error.
            Err(_) if liveness != Liveness::Running && id.is_none() => {}
            Err(e) if liveness != Liveness::Running => {
                return Err(Fatal::new(
                    Code::Local,
                    format!("{e}; {}", liveness.describe(record.pid)),
                ))
            }
            Err(e) => return Err(Fatal::new(Code::Local, e.to_string())),
        }
    }
    Ok(out)
}

/// Which sessions `session close` closes.
#[derive(Debug, Clone, PartialEq)]
pub enum Which {
    /// One session by id.
    One(String),
    /// Every session of this group (CI job), and every stale one; every session outside a
    /// job.
    All {
        /// The current group.
        group: Option<String>,
    },
}

/// What `session close` did: a line per thing done, and a line per failure (each with its fix).
#[derive(Debug, Default)]
pub struct Closing {
    /// What was done or left alone, for stdout.
    pub said: Vec<String>,
    /// What could not be done, with the exit code of the first.
    pub failed: Vec<Fatal>,
}

/// Closes sessions, trying every one and reporting each failure; closing a session that is
/// already closed succeeds and says so; an unknown id is an error (exit 5). With `forget`,
/// the session's process is stopped and its local traces removed without touching the
/// cluster, saying what stays there. Invalid record files are reported (each a failure, with
/// how to remove it) and never acted upon; `--all` leaves sessions of another PID namespace
/// alone (whether they run cannot be told from here) and says so.
pub async fn close(
    places: &Places,
    which: &Which,
    force: bool,
    forget: bool,
    kinds: &mut impl Leftovers,
) -> Closing {
    let mut out = Closing::default();
    if let Err(refusal) = kinds.check(places) {
        out.failed.push(refusal);
        return out;
    }
    let (all, invalid) = match judged(places) {
        Ok(found) => found,
        Err(e) => {
            out.failed.push(e);
            return out;
        }
    };
    let chosen: Vec<(Record, Liveness)> = match which {
        Which::One(id) => {
            if let Some(bad) = invalid.iter().find(|b| &b.id() == id) {
                out.failed.push(Fatal::new(Code::Local, bad.message()));
                return out;
            }
            let found: Vec<(Record, Liveness)> =
                all.into_iter().filter(|(r, _)| &r.id == id).collect();
            if found.is_empty() {
                if record::was_closed(&places.state_dir, id) {
                    out.said.push(format!("session {id} is already closed"));
                } else {
                    out.failed.push(Fatal::new(
                        Code::NotFound,
                        format!(
                            "no session {id:?} on this machine; list them with: czctl session list"
                        ),
                    ));
                }
                return out;
            }
            found
        }
        Which::All { group } => {
            for bad in &invalid {
                out.failed.push(Fatal::new(Code::Local, bad.message()));
            }
            let (elsewhere, all): (Vec<_>, Vec<_>) = all
                .into_iter()
                .partition(|(_, l)| *l == Liveness::OtherNamespace);
            for (r, _) in &elsewhere {
                out.said.push(format!(
                    "left alone session {} (pid {}): it was started in another PID namespace, so \
                     czctl cannot tell from here whether it still runs; close it from there, or \
                     ask it to close through its control socket: czctl session close {}",
                    r.id, r.pid, r.id
                ));
            }
            let (mine, others): (Vec<_>, Vec<_>) = all
                .into_iter()
                .partition(|(r, l)| group.is_none() || &r.group == group || l.is_stale());
            if !others.is_empty() {
                let ids: Vec<String> = others
                    .iter()
                    .map(|(r, _)| {
                        format!("{} ({})", r.id, r.group.as_deref().unwrap_or("no CI job"))
                    })
                    .collect();
                out.said.push(format!(
                    "left alone {} live session(s) of other jobs: {}; this job is {}",
                    others.len(),
                    ids.join(", "),
                    group.as_deref().unwrap_or("none")
                ));
            }
            mine
        }
    };
    for (record, liveness) in chosen {
        match close_one(places, &record, &liveness, force, forget, kinds).await {
            Ok(lines) => out.said.extend(lines),
            Err(e) => out.failed.push(e),
        }
    }
    if matches!(which, Which::All { .. }) {
        kinds.sweep(places, &mut out);
        for id in super::logs::sweep_orphans(&places.state_dir) {
            out.said.push(format!(
                "removed the log of session {id}, whose start was killed before it had a record"
            ));
        }
    }
    if matches!(which, Which::All { .. }) && out.said.is_empty() && out.failed.is_empty() {
        out.said.push("no sessions to close".into());
    }
    out
}

/// Closes one session: stops its process, then undoes what it left (or, with `forget`, only
/// its local traces). Only a verified process is ever signalled.
async fn close_one(
    places: &Places,
    record: &Record,
    liveness: &Liveness,
    force: bool,
    forget: bool,
    kinds: &mut impl Leftovers,
) -> Result<Vec<String>, Fatal> {
    let mut said = Vec::new();
    let path = Record::path(&places.state_dir, &record.id);
    match liveness {
        Liveness::Running => {
            said.extend(stop(record).await?);
        }
        Liveness::Unverified { .. } | Liveness::OtherNamespace => {
            if ask_to_close(record).await {
                said.push(format!("session {} closed", record.id));
            } else if forget && *liveness == Liveness::OtherNamespace {
                said.push(kinds.forget(places, record, liveness)?);
                return Ok(said);
            } else {
                return Err(cannot_verify(places, record, liveness));
            }
        }
        Liveness::Gone | Liveness::Reused { .. } => {}
    }
    // A session that ended by itself keeps only the log of a failed start; this is its end.
    record::remove_log(&places.state_dir, &record.id);
    if !path.exists() {
        return Ok(said);
    }
    // Whatever happened above, only a record whose process is over is cleaned up here.
    let liveness = match record.liveness() {
        Liveness::Running if *liveness == Liveness::Running => {
            return Err(did_not_stop(record));
        }
        now if now.is_stale() => now,
        _ => return Ok(said),
    };
    said.push(if forget {
        kinds.forget(places, record, &liveness)?
    } else {
        kinds.clean(places, record, &liveness, force).await?
    });
    Ok(said)
}

fn did_not_stop(record: &Record) -> Fatal {
    Fatal::new(
        Code::Local,
        format!(
            "session {} (pid {}) did not stop; stop it yourself (kill {}) and close it again",
            record.id, record.pid, record.pid
        ),
    )
}

/// Why a session whose process cannot be verified was not closed, and what to do.
fn cannot_verify(places: &Places, record: &Record, liveness: &Liveness) -> Fatal {
    let file = Record::path(&places.state_dir, &record.id);
    let fix = match liveness {
        Liveness::OtherNamespace => format!(
            "Close it from inside that namespace; if it has ended, discard it: czctl session \
             close {} --forget",
            record.id
        ),
        _ => format!(
            "If pid {pid} is this czctl session, stop it yourself (kill {pid}) and close it again; \
             if it is not, the session is over: remove its record (rm {}) and run czctl session \
             close --all",
            file.display(),
            pid = record.pid
        ),
    };
    Fatal::new(
        Code::Local,
        format!(
            "session {}: its control socket does not answer and {}; czctl does not signal a \
             process it cannot verify. {fix}",
            record.id,
            liveness.describe(record.pid)
        ),
    )
}

/// Asks a live session to close and waits for its process to end (SIGTERM, then SIGKILL, as
/// fallbacks, only to the verified process); the session cleans up after itself.
pub async fn close_live(record: &Record) -> String {
    match record.liveness() {
        Liveness::Running => match stop(record).await {
            Ok(said) => said.unwrap_or_else(|| format!("session {} had ended", record.id)),
            Err(e) => e.message,
        },
        Liveness::Unverified { .. } | Liveness::OtherNamespace if ask_to_close(record).await => {
            format!("session {} closed", record.id)
        }
        other => format!(
            "session {} was not closed: {}",
            record.id,
            other.describe(record.pid)
        ),
    }
}

/// Stops a session whose process is verified: through its control socket, else SIGTERM, then
/// SIGKILL, each sent only to that process; `None` when it had ended already.
async fn stop(record: &Record) -> Result<Option<String>, Fatal> {
    let process = match &record.identity {
        Some(identity) => Verified::open(record.pid, identity).ok(),
        None => None,
    };
    let Some(process) = process else {
        // It ended meanwhile.
        return Ok(None);
    };
    let asked = matches!(
        control::request(&record.socket, Request::Close).await,
        Ok(Response::Closing)
    );
    if !asked {
        process.signal(libc::SIGTERM);
    }
    if process.wait_gone(Duration::from_secs(10)).await {
        return Ok(Some(format!("session {} closed", record.id)));
    }
    process.signal(libc::SIGKILL);
    if process.wait_gone(Duration::from_secs(5)).await {
        return Ok(Some(format!(
            "session {} did not stop in time and was killed",
            record.id
        )));
    }
    Err(did_not_stop(record))
}

/// Asks a session whose process cannot be verified to close through its control socket (it
/// is in the sessions directory: whoever answers there is a czctl session of this user), and
/// waits until its record is gone; whether it closed.
async fn ask_to_close(record: &Record) -> bool {
    let asked = matches!(
        control::request(&record.socket, Request::Close).await,
        Ok(Response::Closing)
    );
    if !asked {
        return false;
    }
    // Its record and socket go when it has cleaned up (the record is next to the socket).
    let file = record.socket.with_extension("json");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if !file.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !file.exists()
}
