//! `czctl service intercept`: requests to a Service that carry the developer's header go to a
//! server on the laptop; all others go on to the original pods.
//!
//! - [`spec`]: header routes and the local target, checked before anything else.
//! - [`shape`]: what the Service looks like, what czctl sets, the checked patches.
//! - [`record`], [`store`]: the Session record (a custom resource whose CRD is derived from
//!   [`record::RecordBody`], or a ConfigMap) that holds the restore patch and the routes with
//!   their owners; written with replace, so concurrent czctl runs never both win.
//! - [`manifests`], [`objects`], [`names`]: the router, decoy, tunnel and heartbeat objects, as
//!   typed k8s-openapi objects written with server-side apply (field manager `czctl`); 409
//!   conflicts are retried with backoff a bounded number of times.
//! - [`nginx`], [`publish`]: the router's configuration from the record.
//! - [`setup`], [`routes`], [`close`]: adding a route (record first, then the objects, then the
//!   Service patch) and removing it; the last close restores the Service.
//! - [`heartbeat`]: the Lease that marks a crashed czctl's routes as stale.
//! - [`wait`]: the start's waits, watching (kube-runtime's `await_condition`, reflectors), not
//!   polling: progress after 2 s, fail-fast on pods that cannot start, `--timeout`.
//!
//! ```text
//! client ─▶ Service (selector → router) ─▶ NGINX ─┬─ header matches ─▶ tunnel agent ─▶ laptop
//!                                                 └─ otherwise ──────▶ decoy Service ─▶ pods
//! ```
//! Order of a run: check the header and target, read the Service, choose the record store,
//! write the local session record, add the route (record → decoy, Lease, tunnel → router
//! config → wait ready → patch the Service), run the tunnel and the heartbeat until stopped,
//! then remove the route (the last one restores the Service, drops the finalizer and deletes
//! the record).

pub mod close;
pub mod heartbeat;
pub mod leftovers;
pub mod manifests;
pub mod names;
pub mod nginx;
pub mod objects;
pub mod publish;
pub mod record;
pub mod routes;
mod run;
pub mod setup;
pub mod shape;
pub mod spec;
pub mod store;
pub mod wait;

pub use run::{describe_closed, run, InterceptOptions, TunnelChoice};
