//! Everything that talks to the Kubernetes API: the client, the watchers and the model they feed.
//!
//! - [`client`]: kubeconfig resolution and client construction.
//! - [`model`]: Services and EndpointSlices → what czctl forwards (pure).
//! - [`watch`]: watchers that feed the model.
//! - [`workload`]: a workload's pod template and a live pod of it (configuration export).

pub mod client;
pub mod model;
pub mod watch;
pub mod workload;
