//! czctl: develop against a remote Kubernetes cluster from a laptop.
//!
//! # Layout
//! - [`cli`]: the command-line definition (clap only); commands appear as they start working.
//!
//! The pipeline that the next modules implement (see README.md and `../shared/DESIGN.md`):
//! ```text
//! kube API ──watch──▶ model ──▶ address allocator (loopback/) ──▶ hosts-file block
//!                          └──▶ listeners ──accept──▶ pod picker ──▶ port-forward stream ──▶ pod
//! ```

pub mod cli;
