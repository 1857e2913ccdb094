//! Watchers: one per namespace for Services and one for EndpointSlices, feeding the engine.
//!
//! kube-runtime's watcher lists, then watches, and relists with backoff after errors or a 410;
//! this module turns its events into model [`Change`]s plus a [`WatchEvent::Synced`] marker at
//! the end of every (re)list, so the engine can drop what disappeared while it was not looking.
//!
//! The backoff is [`retry_delays`], not kube's default (0.8 s doubling to 30 s): after a long
//! API outage that one waited up to half a minute before a Service created meanwhile appeared.
//! A developer's laptop watches a few namespaces, so a retry about every second is cheap.
//!
//! # Why not kube-runtime's reflector
//! A reflector keeps a `Store` of the watched objects and swaps in each relist whole: the
//! bookkeeping [`WatchEvent::Synced`] and [`Model`](super::model::Model) do here. It does not
//! fit this job, which is why these watchers feed the model instead:
//! - Memory. A store holds every object as decoded (`Arc<Service>`, `Arc<EndpointSlice>`):
//!   metadata, managed fields, annotations such as `last-applied-configuration`, status. The
//!   model keeps a few hundred bytes of facts per Service and drops the rest on arrival, which
//!   is what keeps 10,000 Services under the memory target. `WatchStreamExt::modify` could
//!   strip fields, but the k8s-openapi structs stay many times larger than the facts.
//! - Changes, not state. The engine reconciles only the Services an event touched; a store
//!   answers "what is there now", so the event stream would still be read beside it, and
//!   finding what a relist dropped would still take a diff (the `Synced` set does that now).
//! - Joins. Backends come from EndpointSlices joined to Services by the
//!   `kubernetes.io/service-name` label; a store indexes objects by name only, so the model's
//!   Service → slices index would stay.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

use super::model::{Change, ObjectKey};

/// Which resource a watcher follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Services.
    Services,
    /// EndpointSlices.
    EndpointSlices,
}

impl Kind {
    /// The plural resource name, for messages.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
        }
    }
}

/// What the watchers tell the engine.
#[derive(Debug)]
pub enum WatchEvent {
    /// An object changed.
    Change(Change),
    /// A (re)list of `kind` in `namespace` finished: these are all the objects there are.
    Synced {
        /// The namespace.
        namespace: String,
        /// The resource.
        kind: Kind,
        /// Every object the list returned.
        present: HashSet<ObjectKey>,
    },
    /// The watch failed; it retries with backoff.
    Failed {
        /// The namespace.
        namespace: String,
        /// The resource.
        kind: Kind,
        /// The error.
        error: watcher::Error,
    },
}

/// Starts the watchers of one namespace; they run until the receiver is dropped.
pub fn spawn(client: &Client, namespace: &str, labels: Option<&str>, tx: mpsc::Sender<WatchEvent>) {
    let mut config = watcher::Config::default();
    if let Some(labels) = labels {
        config = config.labels(labels);
    }
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(run(
        services,
        namespace.to_string(),
        Kind::Services,
        config,
        tx.clone(),
    ));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(run(
        slices,
        namespace.to_string(),
        Kind::EndpointSlices,
        watcher::Config::default(),
        tx,
    ));
}

trait Watched:
    Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static
{
    fn applied(self) -> Change;
    fn deleted(key: ObjectKey) -> Change;
}

impl Watched for Service {
    fn applied(self) -> Change {
        Change::ServiceApplied(Box::new(self))
    }
    fn deleted(key: ObjectKey) -> Change {
        Change::ServiceDeleted(key)
    }
}

impl Watched for EndpointSlice {
    fn applied(self) -> Change {
        Change::SliceApplied(Box::new(self))
    }
    fn deleted(key: ObjectKey) -> Change {
        Change::SliceDeleted(key)
    }
}

async fn run<K>(
    api: Api<K>,
    namespace: String,
    kind: Kind,
    config: watcher::Config,
    tx: mpsc::Sender<WatchEvent>,
) where
    K: Watched,
{
    let mut stream = watcher::watcher(api, config)
        .backoff(retry_delays())
        .boxed();
    let mut listing: HashSet<ObjectKey> = HashSet::new();
    while let Some(event) = stream.next().await {
        let out = match event {
            Ok(Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(Event::InitApply(obj)) => {
                listing.insert(key(&obj));
                WatchEvent::Change(obj.applied())
            }
            Ok(Event::InitDone) => WatchEvent::Synced {
                namespace: namespace.clone(),
                kind,
                present: std::mem::take(&mut listing),
            },
            Ok(Event::Apply(obj)) => WatchEvent::Change(obj.applied()),
            Ok(Event::Delete(obj)) => WatchEvent::Change(K::deleted(key(&obj))),
            Err(error) => WatchEvent::Failed {
                namespace: namespace.clone(),
                kind,
                error,
            },
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// Delays between a failed watch and its next try: 200 ms doubling to 600 ms, each plus up to
/// as much again at random (so watchers spread out), reset by every success; the API server is
/// found again within about 1.2 s of coming back.
fn retry_delays() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(600))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

fn key<K: Resource>(obj: &K) -> ObjectKey {
    let meta = obj.meta();
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retry_delays;

    #[test]
    fn watch_retries_stay_around_a_second_apart_however_long_the_outage() {
        let delays: Vec<Duration> = retry_delays().take(50).collect();
        assert_eq!(delays.len(), 50, "the retries never stop");
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(200)));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(1200)),
            "{delays:?}"
        );
    }
}
