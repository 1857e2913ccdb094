//! Everything that talks to the Kubernetes API: the client, the watchers and the model they feed.
//!
//! - [`client`]: kubeconfig resolution and client construction.
//! - [`proxy`]: which proxy carries the connections to the API server (kubectl's rules, pure).
//! - [`path`]: the connections themselves: TCP, the proxy's handshake ([`tunnel`]), and which
//!   hop failed; `stack`: the kube clients over them.
//! - [`model`]: Services and EndpointSlices → what czctl forwards (pure).
//! - [`watch`]: watchers that feed the model.
//! - [`workload`]: a workload's pod template and a live pod of it (configuration export).

pub mod client;
pub mod model;
pub mod path;
pub mod proxy;
mod stack;
mod tunnel;
pub mod watch;
pub mod workload;
