//! Workload configuration export: a container's environment, resolved as the kubelet resolves
//! it, written in a format whose readers all get every value back byte-for-byte.
//!
//! - [`sources`]: fetch the ConfigMaps, Secrets and live pod a container refers to, and the
//!   Services its links come from.
//! - [`links`]: the Service variables the kubelet adds (`DB_SERVICE_HOST`, ...) (pure).
//! - [`resolve`]: the kubelet's rules (pure).
//! - [`format`]: `env`, `sh`, `json`, `yaml`, and refusal of what a format cannot carry (pure),
//!   plus the 0600 atomic file write.

pub mod format;
pub mod links;
pub mod resolve;
pub mod sources;
