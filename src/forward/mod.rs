//! Forwarding: listeners on loopback addresses, one task per connection, pod picking, and the
//! port-forward transport.
//!
//! - [`transport`]: the `Transport` interface and kube-rs's WebSocket implementation.
//! - [`picker`]: which pod a new connection goes to (pure).
//! - [`target`]: the backends behind a listener, swapped live, with statistics.
//! - [`conn`]: one connection: retry other pods until one answers, then copy both ways.
//! - [`listener`]: bind and accept.

pub mod conn;
pub mod listener;
pub mod picker;
pub mod target;
pub mod transport;
