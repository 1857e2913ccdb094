//! The command-line interface definition (clap only).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Develop against a remote Kubernetes cluster as if your laptop were inside it.
#[derive(Debug, Parser)]
#[command(name = "czctl", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with whole namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
}

/// `czctl namespace ...`.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Make every Service of the namespaces reachable from this machine by its cluster names
    /// (svc, svc.NS, svc.NS.svc.cluster.local) until interrupted.
    Teleport(TeleportArgs),
}

/// Options of the Kubernetes client, as kubectl has them.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// `czctl namespace teleport`.
#[derive(Debug, Args)]
pub struct TeleportArgs {
    /// Namespaces to teleport; the first one's Services also get their bare names.
    #[arg(required = true, value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Kubernetes client options.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only Services matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The hosts file to add names to.
    #[arg(long, default_value = "/etc/hosts", value_name = "PATH")]
    pub hosts_file: PathBuf,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
}
