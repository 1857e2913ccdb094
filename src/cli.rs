//! The command-line interface definition (clap only).

use clap::Parser;

/// Develop against a remote Kubernetes cluster as if your laptop were inside it.
#[derive(Debug, Parser)]
#[command(name = "czctl", version)]
pub struct Cli {}
