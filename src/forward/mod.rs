//! Forwarding: listeners on loopback addresses, one task per connection, pod picking, and the
//! port-forward transport.
//!
//! - [`transport`]: the `Transport` interface and kube-rs's WebSocket implementation, whose
//!   missing half-close [`linger`] emulates (after `shutdown`, silence from the pod ends it).
//! - [`picker`]: which pod a new connection goes to (pure).
//! - [`target`]: the backends behind a listener, swapped live, with statistics.
//! - [`conn`]: one connection, phase 1: until a pod answers, keep what the client sends and
//!   replay it (with its EOF) to another pod if one refuses; [`attempt`] drives one pod without
//!   blocking one direction on the other, and commits without an answer once the kept bytes
//!   reach the replay limit.
//! - [`relay`]: phase 2: copy both ways with bounded buffers and backpressure, passing each
//!   EOF on as a shutdown; [`counting`] adds the bytes to the statistics as they pass.
//! - [`spdy`]: the transport czctl uses: SPDY port-forwarding, one pooled connection per pod
//!   carrying every client connection as a stream pair, falling back to WebSocket v4.
//! - [`listener`]: bind and accept.
//! - [`memory`]: counts connections and returns free memory to the system after a burst.

pub mod attempt;
pub mod conn;
pub mod counting;
pub mod linger;
pub mod listener;
pub mod memory;
pub mod picker;
pub mod relay;
pub mod spdy;
pub mod target;
pub mod transport;

#[cfg(test)]
pub(crate) mod tests;
