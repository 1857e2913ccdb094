//! Workload configuration export.

pub mod format;
pub mod resolve;
