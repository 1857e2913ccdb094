//! Sessions: every long-running czctl command is a session with a record in the state
//! directory and a control socket, so scripts and people can see and end it from any run.
//!
//! - [`record`]: the JSON record per session (0600), socket and log paths.
//! - [`control`]: the control socket (Unix, 0600, peer uid checked): status and close.
//! - [`status`]: what a session reports, and its table.
//! - [`process`]: which process a record names, and whether it still runs (pid reuse, PID
//!   namespaces), and signals that reach only it.
//! - [`runtime`]: what a running session shares: ids, timestamps, the stop request, the ready
//!   handshake of a background session.
//! - [`manage`]: `session list`, `status`, `session close` (live or stale, every one tried);
//!   each kind of session undoes what it left through [`manage::Leftovers`].
//!
//! This module is the runtime teleports and intercepts share: it imports neither of them,
//! nor the hosts file.
//! - [`group`]: the CI job a session belongs to (job-scoped `close --all`, reuse).
//! - [`claim`]: one teleport per namespace set: reuse a live one or claim under a lock.
//! - [`guard`]: until a session handles signals itself, they (and a timeout) end its start.
//! - [`logs`]: a start holds a lock on its log; `close --all` removes logs nobody holds.

pub mod claim;
pub mod control;
pub mod group;
pub mod guard;
pub mod logs;
pub mod manage;
pub mod process;
pub mod record;
pub mod runtime;
pub mod status;
