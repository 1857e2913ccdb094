//! Waiting for the cluster while an intercept starts: every wait says what it waits for once it
//! has taken [`QUIET`] (and again whenever that changes), keeps it where the control socket's
//! status finds it, fails at once when a pod cannot start (image pull errors, crash loops,
//! unschedulable, bad configuration) and fails with what it waited for when the start's
//! `--timeout` runs out.
//!
//! Waits watch the cluster (kube-runtime's `await_condition` for the Deployment, a reflector
//! of its pods); a local timer only decides when to speak and when to give up.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::ListParams;
use kube::runtime::wait::{await_condition, Condition};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::debug;

use super::manifests::GENERATION_ANNOTATION;
use super::publish::template_generation;
use crate::exit::{Code, Fatal};

/// How long a wait stays silent.
pub const QUIET: Duration = Duration::from_secs(2);
/// The default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Container waiting reasons that do not go away by waiting.
pub const FATAL_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
];

/// A duration for people: `2s`, `3m`, `1m30s`, `500ms`.
pub fn show(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, secs % 60) {
        (0, _) => format!("{}ms", d.as_millis()),
        (s, 0) if s >= 60 => format!("{}m", s / 60),
        (s, r) if s >= 60 => format!("{}m{r}s", s / 60),
        (s, _) => format!("{s}s"),
    }
}

/// What the start waits for right now (one line per wait), shared with the status the
/// control socket reports.
#[derive(Debug, Clone, Default)]
pub struct Current(Arc<Mutex<BTreeMap<u64, String>>>);

impl Current {
    /// The waits in progress, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("wait lock")
            .values()
            .cloned()
            .collect()
    }

    fn set(&self, key: u64, line: Option<String>) {
        let mut map = self.0.lock().expect("wait lock");
        match line {
            Some(line) => map.insert(key, line),
            None => map.remove(&key),
        };
    }
}

/// The waits of one start: its deadline, where progress goes, what it waits for now.
#[derive(Debug, Clone)]
pub struct Waits {
    timeout: Duration,
    deadline: Instant,
    current: Current,
    to_stdout: bool,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Waits {
    /// Waits that together may take `timeout` from now. Progress lines go to stderr, or with
    /// `to_stdout` (a detached child, whose stdout the waiting parent shows) to stdout.
    pub fn new(timeout: Duration, current: Current, to_stdout: bool) -> Waits {
        Waits {
            timeout,
            deadline: Instant::now() + timeout,
            current,
            to_stdout,
            next: Arc::default(),
        }
    }

    /// The `--timeout` these waits share.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts waiting for `what` (`the router Deployment demo/x`), until the start's deadline
    /// or, with `cap`, at most that long.
    pub fn start(&self, what: impl Into<String>, cap: Option<Duration>) -> Progress<'_> {
        let now = Instant::now();
        let deadline = match cap {
            Some(cap) => self.deadline.min(now + cap),
            None => self.deadline,
        };
        Progress {
            waits: self,
            key: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            what: what.into(),
            started: now,
            deadline,
            limit: cap.map_or(self.timeout, |c| c.min(self.timeout)),
            shown: None,
        }
    }

    fn say(&self, line: &str) {
        debug!("{line}");
        if self.to_stdout {
            // The parent may be gone: a broken pipe is not this wait's problem.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "czctl: {line}");
            let _ = out.flush();
        } else {
            eprintln!("czctl: {line}");
        }
    }
}

/// One wait in progress; it leaves the status when dropped.
pub struct Progress<'a> {
    waits: &'a Waits,
    key: u64,
    what: String,
    started: Instant,
    deadline: Instant,
    limit: Duration,
    shown: Option<String>,
}

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// What it waits for cannot happen (a pod cannot start).
    #[error("{what} cannot start: {why}")]
    Failed {
        /// What was waited for.
        what: String,
        /// Why it cannot happen.
        why: String,
    },
    /// The time ran out.
    #[error("gave up waiting for {what} after {} (--timeout {}): {last}", show(*.waited), show(*.limit))]
    TimedOut {
        /// What was waited for.
        what: String,
        /// Its state when the time ran out.
        last: String,
        /// How long it was waited for.
        waited: Duration,
        /// The limit.
        limit: Duration,
    },
}

impl WaitError {
    /// A failure of the start, with `hint` (what to change) on its own line. Both a pod that
    /// cannot start and a timeout are failures in the cluster: exit code 1.
    pub fn fatal(self, hint: &str) -> Fatal {
        Fatal::new(Code::Failure, format!("{self}\n{hint}"))
    }
}

impl Progress<'_> {
    /// Still waiting; `now` says for what (`0/1 pods ready (pod x: ContainerCreating)`).
    /// Shows it once the wait has taken [`QUIET`] and whenever it changes; fails when the
    /// time is up.
    pub fn pending(&mut self, now: String) -> Result<(), WaitError> {
        let line = format!("waiting for {}: {now}", self.what);
        self.waits.current.set(self.key, Some(line.clone()));
        if self.started.elapsed() >= QUIET && self.shown.as_deref() != Some(now.as_str()) {
            self.waits.say(&line);
            self.shown = Some(now.clone());
        }
        if Instant::now() >= self.deadline {
            return Err(WaitError::TimedOut {
                what: self.what.clone(),
                last: now,
                waited: self.started.elapsed(),
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// What it waits for cannot happen.
    pub fn failed(&self, why: String) -> WaitError {
        WaitError::Failed {
            what: self.what.clone(),
            why,
        }
    }

    /// When this wait has something to do without news from the cluster: show itself (at the
    /// end of its quiet time) or give up (at its deadline).
    pub fn next_wake(&self) -> Instant {
        let speak = self.started + QUIET;
        if self.shown.is_none() && speak > Instant::now() {
            speak.min(self.deadline)
        } else {
            self.deadline
        }
    }

    /// Done: says so if the wait was shown.
    pub fn done(self) {
        if self.shown.is_some() {
            self.waits.say(&format!(
                "done waiting for {} (after {})",
                self.what,
                show(Duration::from_secs(self.started.elapsed().as_secs()))
            ));
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        self.waits.current.set(self.key, None);
    }
}

/// Waits until the Deployment `namespace/name` has rolled out a template of generation ≥
/// `generation` (any with 0) with all its replicas updated and available. Fails at once when
/// one of the pods of that template cannot start, or the Deployment is deleted. `what` names
/// it for people.
pub async fn rollout(
    waits: &Waits,
    client: &Client,
    namespace: &str,
    name: &str,
    generation: u64,
    what: &str,
) -> Result<(), WaitError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut progress = waits.start(what, None);
    let deployment = match deployments.get_opt(name).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Err(progress.failed(format!("deployment {namespace}/{name} was deleted")))
        }
        Err(e) => {
            return Err(progress.failed(format!(
                "cannot read deployment {namespace}/{name}: {}",
                crate::exit::describe(&e)
            )))
        }
    };
    let want = deployment.spec.replicas.unwrap_or(1);
    let finished = await_condition(
        deployments,
        name,
        rollout_complete(generation).or(|d: Option<&Deployment>| d.is_none()),
    );
    tokio::pin!(finished);
    let (current_pods, writer) = reflector::store();
    let config = watcher::Config::default().labels(&selector_of(&deployment));
    let pod_events = reflector(writer, watcher(pods, config).default_backoff()).fuse();
    tokio::pin!(pod_events);
    let mut now = describe(want, &[]);
    loop {
        tokio::select! {
            finished = &mut finished => return match finished {
                Ok(Some(_)) => {
                    progress.done();
                    Ok(())
                }
                Ok(None) => Err(progress.failed(format!("deployment {namespace}/{name} was deleted"))),
                Err(e) => Err(progress.failed(format!("cannot watch deployment {namespace}/{name}: {e}"))),
            },
            Some(event) = pod_events.next() => match event {
                Ok(_) => {
                    let current: Vec<Pod> = current_pods
                        .state()
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| pod_generation(p) >= generation)
                        .map(|p| Pod::clone(p))
                        .collect();
                    if let Some(why) = current.iter().find_map(failing) {
                        return Err(progress.failed(why));
                    }
                    now = describe(want, &current);
                }
                // Without the right to watch pods the wait still ends, by rollout or timeout.
                Err(e) => now = format!("pods not readable ({e})"),
            },
            () = tokio::time::sleep_until(progress.next_wake()) => {}
        }
        progress.pending(now.clone())?;
    }
}

/// The condition "the Deployment has rolled out generation `generation` everywhere".
pub(crate) fn rollout_complete(generation: u64) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| d.is_some_and(|d| rolled_out(d, generation))
}

/// Waits (watching) at most `timeout` until the Deployment `namespace/name` has rolled out
/// generation `generation`; on timeout says why with its pods' states.
pub(crate) async fn rollout_within(
    client: &Client,
    namespace: &str,
    name: &str,
    generation: u64,
    timeout: Duration,
) -> Result<(), String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let finished = await_condition(
        deployments,
        name,
        rollout_complete(generation).or(|d: Option<&Deployment>| d.is_none()),
    );
    match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(format!("deployment {namespace}/{name} was deleted")),
        Ok(Err(e)) => Err(format!("cannot watch deployment {namespace}/{name}: {e}")),
        Err(_) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let prefix = format!("{name}-");
            let states = match pods.list(&ListParams::default()).await {
                Ok(list) => list
                    .items
                    .iter()
                    .filter(|p| {
                        p.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(&prefix))
                    })
                    .map(|p| {
                        format!(
                            "\n  pod {}: {}",
                            p.metadata.name.as_deref().unwrap_or_default(),
                            failing(p).unwrap_or_else(|| pod_state(p))
                        )
                    })
                    .collect::<String>(),
                Err(e) => format!(" (pods not readable: {})", crate::exit::describe(&e)),
            };
            Err(format!(
                "deployment {namespace}/{name} was not ready after {}{states}",
                show(timeout)
            ))
        }
    }
}

/// Whether the Deployment has rolled out generation `generation` everywhere.
pub fn rolled_out(d: &Deployment, generation: u64) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    template_generation(d) >= generation
        && status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) == want
}

/// The label selector of a Deployment's pods (`a=b,c=d`).
fn selector_of(d: &Deployment) -> String {
    d.spec
        .selector
        .match_labels
        .as_ref()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The router configuration generation a pod was made for (0 without one).
fn pod_generation(pod: &Pod) -> u64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

fn containers(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status.and_then(|s| s.init_container_statuses.as_ref());
    let main = status.and_then(|s| s.container_statuses.as_ref());
    init.into_iter().flatten().chain(main.into_iter().flatten())
}

/// Why `pod` cannot start, as the kubelet or the scheduler says: `pod NAME container C is
/// REASON: MESSAGE`; `None` while it may still start.
pub fn failing(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let with_message = |head: String, message: Option<&str>| match message {
        Some(m) if !m.trim().is_empty() => format!("{head}: {}", m.trim()),
        _ => head,
    };
    if let Some(c) = condition(pod, "PodScheduled") {
        if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") {
            return Some(with_message(
                format!("pod {name} is Unschedulable"),
                c.message.as_deref(),
            ));
        }
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let reason = status.reason.as_deref().unwrap_or("Failed");
        return Some(with_message(
            format!("pod {name} failed ({reason})"),
            status.message.as_deref(),
        ));
    }
    containers(pod).find_map(|cs| {
        let waiting = cs.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        FATAL_REASONS.contains(&reason).then(|| {
            let mut text = with_message(
                format!("pod {name} container {} is {reason}", cs.name),
                waiting.message.as_deref(),
            );
            if reason == "CrashLoopBackOff" {
                if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    text.push_str(&format!(
                        " (it exited with code {}{}; see: kubectl logs -n {} {name} -c {} --previous)",
                        t.exit_code,
                        t.reason
                            .as_deref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        cs.name
                    ));
                }
            }
            text
        })
    })
}

/// What a pod is doing, in a few words: `ContainerCreating`, `running, not ready`, ...
pub fn pod_state(pod: &Pod) -> String {
    if let Some(c) = condition(pod, "PodScheduled").filter(|c| c.status == "False") {
        return format!(
            "not scheduled ({})",
            c.reason.as_deref().unwrap_or("waiting for a node")
        );
    }
    let mut parts: Vec<String> = Vec::new();
    for cs in containers(pod).filter(|cs| !cs.ready) {
        let state = cs.state.as_ref();
        if let Some(reason) = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
        {
            parts.push(reason);
        } else if state.is_some_and(|s| s.running.is_some()) {
            parts.push("running, not ready".into());
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            parts.push(format!("exited with code {}", t.exit_code));
        }
    }
    parts.dedup();
    if parts.is_empty() {
        return if is_ready(pod) {
            "ready".into()
        } else {
            pod.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into())
        };
    }
    parts.join(", ")
}

/// A Deployment's progress: `0/1 pods ready (pod x: ContainerCreating)`.
fn describe(want: i32, pods: &[Pod]) -> String {
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let mut text = format!("{ready}/{want} pods ready");
    let waiting: Vec<String> = pods
        .iter()
        .filter(|p| !is_ready(p))
        .map(|p| {
            format!(
                "pod {}: {}",
                p.metadata.name.as_deref().unwrap_or_default(),
                pod_state(p)
            )
        })
        .collect();
    if pods.is_empty() {
        text.push_str(" (no pod created yet)");
    } else if !waiting.is_empty() {
        text.push_str(&format!(" ({})", waiting.join("; ")));
    } else {
        text.push_str(" (the old pods are being replaced)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "interceptor-echo-abc", "namespace": "demo"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(show(Duration::from_secs(180)), "3m");
        assert_eq!(show(Duration::from_secs(90)), "1m30s");
        assert_eq!(show(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn pull_errors_fail_with_the_kubelets_message() {
        for reason in [
            "ErrImagePull",
            "ImagePullBackOff",
            "CreateContainerConfigError",
        ] {
            let p = pod(json!({"phase": "Pending", "containerStatuses": [{
                "name": "tunnel", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "cannot pull x"}}
            }]}));
            assert_eq!(
                failing(&p).as_deref(),
                Some(
                    format!("pod interceptor-echo-abc container tunnel is {reason}: cannot pull x")
                        .as_str()
                )
            );
        }
        let creating = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "tunnel", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        assert_eq!(failing(&creating), None);
        assert_eq!(pod_state(&creating), "ContainerCreating");
    }

    #[test]
    fn unschedulable_and_crash_loops_fail() {
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory."
        }]}));
        assert_eq!(
            failing(&p).as_deref(),
            Some("pod interceptor-echo-abc is Unschedulable: 0/3 nodes are available: 3 Insufficient memory.")
        );
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "nginx", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}));
        let why = failing(&p).unwrap();
        assert!(
            why.contains("CrashLoopBackOff: back-off 10s") && why.contains("code 1, Error"),
            "{why}"
        );
        let running = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "nginx", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"running": {}}
        }]}));
        assert_eq!(failing(&running), None);
        assert_eq!(pod_state(&running), "running, not ready");
    }

    fn deployment(template_generation: u64, available: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "interceptor-echo", "generation": 4},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"czctl.dev/router": "echo"}},
                "template": {"metadata": {"annotations": {
                    GENERATION_ANNOTATION: template_generation.to_string()}}},
            },
            "status": {"observedGeneration": 4, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_complete_once_its_generation_is_available_everywhere() {
        let complete = rollout_complete(3);
        assert!(complete.matches_object(Some(&deployment(3, 1))));
        assert!(complete.matches_object(Some(&deployment(5, 1))));
        assert!(
            !complete.matches_object(Some(&deployment(2, 1))),
            "older template"
        );
        assert!(
            !complete.matches_object(Some(&deployment(3, 0))),
            "not available"
        );
        assert!(
            !complete.matches_object(None),
            "a deleted Deployment never rolls out"
        );
        let mut stale = deployment(3, 1);
        stale.status.as_mut().unwrap().observed_generation = Some(3);
        assert!(
            !complete.matches_object(Some(&stale)),
            "status of an older spec"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_wakes_to_speak_after_quiet_then_only_at_its_deadline() {
        let waits = Waits::new(Duration::from_secs(5), Current::default(), false);
        let start = Instant::now();
        let mut p = waits.start("the router", None);
        assert_eq!(p.next_wake(), start + QUIET);
        tokio::time::advance(QUIET).await;
        p.pending("0/1 pods ready".into()).unwrap();
        assert_eq!(p.next_wake(), start + Duration::from_secs(5));
        let capped = waits.start("the endpoints", Some(Duration::from_secs(1)));
        assert_eq!(capped.next_wake(), Instant::now() + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_shows_after_quiet_and_on_change_and_times_out() {
        let current = Current::default();
        let waits = Waits::new(Duration::from_secs(5), current.clone(), false);
        let mut p = waits.start("the router Deployment demo/x", None);
        p.pending("0/1 pods ready".into()).unwrap();
        assert_eq!(p.shown, None, "quiet at first");
        assert_eq!(
            current.lines(),
            vec!["waiting for the router Deployment demo/x: 0/1 pods ready".to_string()]
        );
        tokio::time::advance(QUIET).await;
        p.pending("0/1 pods ready".into()).unwrap();
        assert_eq!(p.shown.as_deref(), Some("0/1 pods ready"));
        tokio::time::advance(Duration::from_secs(3)).await;
        let err = p.pending("0/1 pods ready (pod a: running, not ready)".into());
        let err = err.unwrap_err().to_string();
        assert!(
            err.starts_with("gave up waiting for the router Deployment demo/x after 5s (--timeout 5s): 0/1 pods ready (pod a"),
            "{err}"
        );
        drop(p);
        assert!(
            current.lines().is_empty(),
            "a finished wait leaves the status"
        );
    }
}
