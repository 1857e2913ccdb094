//! How a teleport starts: reuse this job's live session of the same namespaces, start a
//! background session (the default) and return once it is ready, or run in this process
//! (`--foreground`, `-- COMMAND`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::startup::check_namespace;
use super::{run, want, TeleportOptions};
use crate::cluster::client;
use crate::detach::{self, Background};
use crate::exit::{Code, Fatal};
use crate::hosts::HostsEditor;
use crate::session::claim::{self, Claim};
use crate::session::control::{self, Request, Response};
use crate::session::record::Record;
use crate::session::runtime::session_id;

/// A teleport to start.
#[derive(Debug)]
pub struct Launch {
    /// What to teleport.
    pub options: TeleportOptions,
    /// Run in this process until stopped, instead of in the background.
    pub foreground: bool,
    /// How long it may take to get ready (and to wait for a session being started by another
    /// run to become reusable).
    pub timeout: Duration,
    /// The global flags a background child repeats (`-v`, `--log-format`).
    pub global_args: Vec<OsString>,
}

/// How a teleport was started.
#[derive(Debug)]
pub enum Launched {
    /// A live session already teleports the namespaces; nothing new was started.
    Reused(Record),
    /// A new background session is ready.
    Started(Record),
    /// A foreground teleport ran and ended with this exit code.
    Ended(i32),
}

impl Launched {
    /// The background session (reused or new), if any.
    pub fn record(&self) -> Option<&Record> {
        match self {
            Launched::Reused(r) | Launched::Started(r) => Some(r),
            Launched::Ended(_) => None,
        }
    }
}

/// Starts (or reuses) the teleport.
pub async fn launch(launch: Launch) -> Result<Launched, Fatal> {
    let options = &launch.options;
    // A signal or a start with no answer ends this command at once; a background child that
    // is still starting then notices it is gone and undoes what it did (detach::ParentWatch).
    // In the foreground, the run takes over with its own guard.
    let what = format!("starting a teleport of {}", options.namespaces.join(", "));
    let mut guard = Some(crate::session::guard::arm(
        what.clone(),
        launch.timeout,
        || {},
    )?);
    let connected = match client::connect(&options.client).await {
        Ok(connected) => connected,
        // In this process the run checks the hosts file first, then fails the same way.
        Err(_) if launch.foreground => {
            drop(guard);
            return run(launch.options).await.map(Launched::Ended);
        }
        Err(e) => {
            // The hosts file is checked before the kubeconfig, as in the foreground.
            HostsEditor::open(&options.hosts_file, &options.state_dir, None)
                .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
            return Err(Fatal::new(Code::Config, e.to_string()));
        }
    };
    tracing::info!(context = %connected.context, server = %connected.server, "client ready");
    // The cluster's own errors (unreachable, credentials, rights, no such namespace) come
    // from here, before anything is written.
    for ns in &options.namespaces {
        check_namespace(&connected.client, &connected.server, ns).await?;
    }
    let want = want(options, &connected.context, &connected.server);
    drop(connected);
    let state_dir = options.state_dir.clone();
    let lock = match claim::claim(&state_dir, &want, launch.timeout).await? {
        Claim::Reuse(record) => {
            eprintln!(
                "czctl: {} already teleported by session {} (pid {}, since {}); reusing it",
                plural_ns(&want.namespaces),
                record.id,
                record.pid,
                record.started
            );
            return Ok(Launched::Reused(*record));
        }
        Claim::Start(lock) => lock,
    };
    let id = session_id();
    if launch.foreground {
        let pid = std::process::id();
        want.record(&id, pid, &state_dir)
            .save(&state_dir)
            .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
        drop(lock);
        let mut options = launch.options;
        options.session = Some(id.clone());
        drop(guard);
        let result = run(options).await;
        claim::release(&state_dir, &id, pid);
        return result.map(Launched::Ended);
    }
    // From here the child's start is bounded by detach::start; the guard only backs it up.
    let _guard = crate::session::guard::arm(what, launch.timeout + Duration::from_secs(60), || {})?;
    drop(guard.take());
    let background = Background {
        session: id.clone(),
        state_dir: state_dir.clone(),
        hosts_file: Some(options.hosts_file.clone()),
        args: child_args(&launch),
        timeout: launch.timeout,
    };
    let mut lock = Some(lock);
    let mut record = None;
    let started = detach::start(&background, |pid| {
        let r = want.record(&id, pid, &state_dir);
        r.save(&state_dir)
            .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
        record = Some(r);
        // Claimed: a concurrent start now sees this session and waits to reuse it.
        drop(lock.take());
        Ok(())
    })
    .await;
    match (started, record) {
        (Ok(_), Some(mut record)) => {
            record.state = crate::session::record::SessionState::Ready;
            Ok(Launched::Started(record))
        }
        (Err(e), record) => {
            if let Some(record) = record {
                claim::release(&state_dir, &id, record.pid);
            }
            Err(e)
        }
        (Ok(_), None) => unreachable!("a started session has a record"),
    }
}

/// `namespace demo is` / `namespaces a, b are`.
fn plural_ns(namespaces: &[String]) -> String {
    match namespaces {
        [one] => format!("namespace {one} is"),
        many => format!("namespaces {} are", many.join(", ")),
    }
}

/// The background child's command line: `namespace teleport` with the same options.
fn child_args(launch: &Launch) -> Vec<OsString> {
    let o = &launch.options;
    let mut args = launch.global_args.clone();
    args.extend(["namespace".into(), "teleport".into()]);
    args.extend(o.namespaces.iter().map(OsString::from));
    if let Some(k) = &o.client.kubeconfig {
        args.extend(["--kubeconfig".into(), k.clone().into_os_string()]);
    }
    if let Some(c) = &o.client.context {
        args.extend(["--context".into(), c.into()]);
    }
    args.extend(o.client.impersonate.args().into_iter().map(OsString::from));
    if let Some(l) = &o.labels {
        args.extend(["--selector".into(), l.into()]);
    }
    args.extend([
        "--hosts-file".into(),
        o.hosts_file.clone().into_os_string(),
        "--cluster-domain".into(),
        o.cluster_domain.clone().into(),
    ]);
    args
}

/// The loopback address of every Service a live session forwards (`namespace/name` →
/// address; per-pod addresses of StatefulSets are left out).
pub async fn addresses(record: &Record) -> Result<BTreeMap<String, Ipv4Addr>, Fatal> {
    let status = match control::request(&record.socket, Request::Status).await {
        Ok(Response::Status(status)) => status,
        Ok(other) => {
            return Err(Fatal::new(
                Code::Failure,
                format!("session {} answered {other:?}", record.id),
            ))
        }
        Err(e) => return Err(Fatal::new(Code::Local, e.to_string())),
    };
    Ok(status
        .forwards
        .into_iter()
        .filter(|f| f.pod_host.is_none())
        .filter_map(|f| Some((f.service, f.address.parse().ok()?)))
        .collect())
}
