//! czctl: develop against a remote Kubernetes cluster from a laptop.
//!
//! # Layout
//! Modules in layers; each imports only from layers below it (no cycles between session,
//! teleport, intercept and hosts).
//!
//! 1. The edge: [`cli`] (the clap definition only), [`app`] (the composition root: which
//!    command runs), `commands` (one file per command: arguments → options, outcome → stdout,
//!    and the exit code), [`docs`] (completions and man pages from the clap definitions).
//! 2. The commands' work:
//!    - [`teleport`]: `namespace teleport`: launch (reuse, background or here), plan (pure),
//!      engine (decisions, with its effects behind `Addresses`, `HostsWriter` and `Listeners`),
//!      report, and the leftovers of a crashed teleport for `session close`.
//!    - [`intercept`]: `service intercept`: typed Kubernetes objects applied as `czctl`, the
//!      derived Session CRD, the NGINX header router, the checked Service patches, the
//!      heartbeat, closing and restoring, and the leftovers of a crashed intercept.
//!    - [`env`], [`export`]: `KIND teleport NAME`: a workload's environment as the kubelet
//!      resolves it, written in a format all its readers agree on.
//!    - `doctor`: what this machine and the cluster allow.
//! 3. What those share:
//!    - [`detach`]: background sessions (the default): the child, the ready handshake, and the
//!      child's watch on the command waiting for it; it starts the hosts file's root helper
//!      where sudo can still ask for a password.
//!    - [`hosts`]: the marked block czctl owns in the hosts file, and the root helper.
//!    - `forward`: listeners, pod picking, per-connection streams (replay to another pod until
//!      one answers, then a relay of both directions with backpressure and half-close), the
//!      port-forward transports (SPDY with one pooled connection per pod, WebSocket v4
//!      fallback).
//!    - [`tunnel`]: reverse tunnels to the laptop (the laptop end and ngrok; the protocol and
//!      the in-cluster agent, `czctl-agent`, are the `cztunnel` crate in `tunnel/`).
//! 4. The runtime: [`session`]: every long-running command is a session: ids, records with
//!    `SessionKind`/`SessionState`, process identity, the stop request, the control socket, CI
//!    job groups, the claim that makes one teleport per namespace set, and `list`/`status`/
//!    `close`, which ask each kind to undo what it left through `session::manage::Leftovers`
//!    (so session imports neither teleport nor intercept).
//! 5. The base: `cluster` (the Kubernetes client, the watchers and the model they feed),
//!    `paths` (where czctl keeps its files, and the checks that keep them its own), [`exit`]
//!    (exit codes and the error that carries them), [`output`] (stdout that ends quietly when
//!    the reader goes away).
//!
//! Other crates of the workspace: `loopback` (address allocation shared by concurrent runs via
//! a registry), `spdy` (SPDY framing and multiplexing, shared with kubesim's server side),
//! `cztunnel` (the tunnel protocol and `czctl-agent`), `fixtures/kubesim` (the simulated
//! cluster the tests run against, beside a real kube-apiserver with kwok).
//!
//! # Data flow
//! ```text
//! kube API ──watch──▶ cluster::watch ──Change──▶ cluster::model ──view──▶ teleport::plan
//!                                                                      │
//!       teleport::engine (decisions) ◀──────────────────────────────────┘
//!         │ its effects, behind teleport::effects' traits (fakes in its unit tests):
//!         ├─▶ Addresses: loopback::alloc (one address per Service / StatefulSet pod)
//!         ├─▶ HostsWriter: hosts (one marked block, re-read before every write)
//!         └─▶ Listeners: forward::listener ──accept──▶ forward::conn ──picker──▶ transport ──▶ pod
//!                                           (until the pod answers; then forward::relay)
//!   forward::spdy: per pod, one upgraded SPDY connection (spdy::Connection); each client
//!   connection is an error + data stream pair on it; WebSocket v4 when SPDY is refused
//!
//! every connection to the API server (requests, watches, port-forward upgrades):
//! kube client ──▶ kube's TLS (tls-server-name) ──▶ cluster::path::Connector ──▶ TCP, or a
//!   proxy chosen by cluster::proxy (kubectl's rules) and entered by cluster::tunnel
//!   (SOCKS5, HTTP CONNECT over TCP or TLS); a failed hop is a cluster::path::PathError
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
