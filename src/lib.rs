//! czctl: develop against a remote Kubernetes cluster from a laptop.
//!
//! # Layout
//! - [`cli`]: the command-line definition (clap only).
//! - [`app`]: the composition root: arguments → configured command.
//! - [`cluster`]: the Kubernetes client, the watchers and the model they feed.
//! - [`forward`]: listeners, pod picking, per-connection streams (replay to another pod until
//!   one answers, then a relay of both directions with backpressure and half-close), the
//!   port-forward transports (SPDY with one pooled connection per pod, WebSocket v4 fallback).
//! - [`hosts`]: the marked block czctl owns in the hosts file.
//! - [`intercept`]: `service intercept`: the NGINX header router, the Session record, the
//!   checked Service patches, the heartbeat, closing and restoring.
//! - [`teleport`]: `namespace teleport`: launch (reuse, background or here), plan, engine,
//!   report.
//! - [`session`]: session records, control sockets, `status`, `session list|close`, CI job
//!   groups, and the claim that makes one teleport per namespace set.
//! - [`detach`]: background sessions (the default): the child, the ready handshake, and the
//!   child's watch on the command waiting for it.
//! - [`output`]: one-shot output on stdout that ends quietly when the reader goes away.
//! - [`docs`]: shell completions and the man pages in `man/`, from the clap definitions.
//! - [`exit`]: exit codes and the error type that carries them.
//! - [`env`], [`export`]: `KIND teleport NAME`: a workload's environment as the kubelet resolves
//!   it, written in a format all its readers agree on, then a teleport with an optional command.
//! - [`tunnel`]: reverse tunnels to the laptop (the laptop end; the protocol and the in-cluster
//!   agent, `czctl-agent`, are the `cztunnel` crate in `tunnel/`).
//! - [`paths`]: where czctl keeps its files (state, registry) and the checks that keep them
//!   its own (private directories, no symlinks followed).
//!
//! Address allocation lives in the `loopback` crate (shared by concurrent runs via a registry);
//! SPDY framing and multiplexing in the `spdy` crate (shared with kubesim's server side).
//!
//! # Data flow
//! ```text
//! kube API ──watch──▶ cluster::watch ──Change──▶ cluster::model ──view──▶ teleport::plan
//!                                                                      │
//!       teleport::engine ◀──────────────────────────────────────────────┘
//!         ├─▶ loopback::alloc (one address per Service / StatefulSet pod)
//!         ├─▶ hosts (one marked block, re-read before every write)
//!         └─▶ forward::listener ──accept──▶ forward::conn ──picker──▶ transport ──▶ pod
//!                                           (until the pod answers; then forward::relay)
//!   forward::spdy: per pod, one upgraded SPDY connection (spdy::Connection); each client
//!   connection is an error + data stream pair on it; WebSocket v4 when SPDY is refused
//!
//! service intercept:
//! intercept::setup ──▶ Session record (intercept::store) ──▶ decoy, tunnel agent, Lease
//!        └─▶ intercept::publish (nginx.conf, router rollout) ──ready──▶ checked Service patch
//! router pod ──header──▶ czctl-agent (cztunnel) ◀──parked port-forwards── tunnel::cluster ──▶ local
//! intercept::close ──▶ route removed; the last one restores the Service, drops the finalizer,
//!                      deletes the record (ownerReferences take the rest)
//! ```

pub mod app;
pub mod cli;
pub(crate) mod cluster;
mod commands;
pub mod detach;
pub mod docs;
pub(crate) mod doctor;
pub mod env;
pub mod exit;
pub mod export;
pub(crate) mod forward;
pub mod hosts;
pub mod intercept;
pub mod output;
pub(crate) mod paths;
pub mod session;
pub mod teleport;
pub mod tunnel;
