//! One accepted connection: pick a pod, open a port-forward stream, relay both ways.
//!
//! Phase 1 lasts until the pod answers. What the client sends is kept (up to
//! [`REPLAY_LIMIT`]) while it is passed on; if the pod refuses the port or is gone before
//! sending anything, another ready pod is tried and the kept bytes are replayed, so a redeploy
//! is invisible to a client that speaks first (HTTP). A client EOF in this phase is passed on
//! (the pod stream is shut down) and replayed too, so a request followed by a half-close gets
//! its answer. Neither direction waits for the other: the client is read only while the kept
//! bytes are below the limit, and reaching it commits to the current pod without an answer
//! (replay is then impossible). With no ready pod left, the client is closed at once.
//!
//! Phase 1 on one pod is [`super::attempt`]; phase 2 ([`super::relay`]) copies both ways with
//! bounded buffers until both sides ended.

use std::collections::HashSet;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{FusedFuture, FutureExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::attempt::{Attempt, Ended, Failure, Kept};
use super::memory::Connection;
use super::picker::pick;
use super::relay::{relay, Committed};
use super::target::{Stats, Target};
use super::transport::{Opened, Transport};

/// Client bytes kept for replay to another pod while the first pod has not answered.
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// How long a stream that ended without data may take to report why: a refusal arrives on the
/// error channel around the time the data stream ends.
const FAILURE_GRACE: Duration = Duration::from_millis(200);

/// Serves one client connection that arrived on listen port `port` of `target`.
pub async fn serve(
    client: TcpStream,
    target: Arc<Target>,
    port: u16,
    transport: Arc<dyn Transport>,
) {
    let Some(port_name) = target.port_name(port) else {
        return;
    };
    let _open = OpenGuard::new(&target.stats);
    let _counted = Connection::open();
    target.stats.total.fetch_add(1, Ordering::Relaxed);
    serve_inner(client, &target, &port_name, transport.as_ref()).await;
}

/// Counts a connection in `open` for as long as it lives, also when its task is cancelled.
struct OpenGuard<'a>(&'a Stats);

impl<'a> OpenGuard<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_inner(
    mut client: TcpStream,
    target: &Target,
    port_name: &str,
    transport: &dyn Transport,
) {
    let mut kept = Kept::default();
    let mut answer = Vec::new();
    let mut tried = HashSet::new();
    // Why the latest pod tried failed: with none left, it is the reason worth reporting.
    let mut last_failure: Option<String> = None;
    loop {
        let backends = target.backends();
        let Some(choice) = pick(
            &backends,
            port_name,
            target.next_start(),
            &tried,
            target.pinned.as_deref(),
        ) else {
            let service = &target.service;
            let message = match last_failure {
                None => format!("no ready pod for service {service} port {port_name:?}"),
                Some(failure) => {
                    format!("no ready pod left for service {service} port {port_name:?}; {failure}")
                }
            };
            warn!(service = %target.service, port = port_name, "{message}; closing the connection");
            target.stats.set_error(message);
            return;
        };
        let opened = transport
            .open(&target.service.namespace, &choice.pod, choice.port)
            .await;
        let Opened {
            stream: mut pod,
            failure,
        } = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let message = format!("pod {} port {}: {e}", choice.pod, choice.port);
                warn!(service = %target.service, "cannot open a port-forward: {message}");
                target.stats.set_error(message.clone());
                if e.fails_every_pod() {
                    return;
                }
                last_failure = Some(message);
                tried.insert(choice.pod);
                continue;
            }
        };
        let mut failure = failure.fuse();
        let mut attempt = Attempt::default();
        let ended = poll_fn(|cx| {
            attempt.poll(
                cx,
                &mut client,
                &mut pod,
                &mut failure,
                &mut kept,
                &mut answer,
            )
        })
        .await;
        // (bytes answered, the pod's stream has ended) or why to try another pod.
        let outcome = match ended {
            Ended::Answered(n) => Ok((n, false)),
            Ended::Full => Ok((0, false)),
            Ended::PodEof => match reason(&mut failure).await {
                Some(reason) => Err(reason),
                None => Ok((0, true)),
            },
            Ended::PodError(e) => Err(reason(&mut failure)
                .await
                .unwrap_or_else(|| format!("the port-forward stream failed: {e}"))),
            Ended::Refused(reason) => Err(reason),
            Ended::ClientGone(e) => {
                debug!(service = %target.service, error = %e, "the client failed before the pod answered");
                return;
            }
        };
        let (answered, pod_eof) = match outcome {
            Ok(committed) => committed,
            Err(reason) => {
                info!(service = %target.service, pod = %choice.pod, %reason, "pod failed before answering; trying another");
                let message = format!("pod {} port {}: {reason}", choice.pod, choice.port);
                target.stats.set_error(message.clone());
                last_failure = Some(message);
                tried.insert(choice.pod);
                continue;
            }
        };
        debug!(service = %target.service, pod = %choice.pod, "forwarding");
        target.stats.set_pod(&choice.pod);
        // Phase 2 counts bytes as they pass the pod stream; those written so far count now.
        target
            .stats
            .bytes_up
            .fetch_add(attempt.written as u64, Ordering::Relaxed);
        answer.truncate(answered);
        let unsent = kept.bytes[attempt.written..].to_vec();
        drop(kept);
        let committed = Committed {
            pod,
            failure,
            answer,
            unsent,
            pod_eof,
            pod_shut: attempt.shut,
        };
        relay(client, committed, target).await;
        return;
    }
}

/// The transport's reason for a stream that ended early, given [`FAILURE_GRACE`] to arrive.
async fn reason(failure: &mut Failure) -> Option<String> {
    if failure.is_terminated() {
        return None;
    }
    tokio::time::timeout(FAILURE_GRACE, failure)
        .await
        .ok()
        .flatten()
}
