//! The composition root: turns parsed arguments into a configured command and runs it.

use std::path::PathBuf;

use crate::cli::{Cli, Command, NamespaceCommand, TeleportArgs};
use crate::cluster::client::ClientOptions;
use crate::exit::{Code, Fatal};
use crate::teleport::{self, TeleportOptions};

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> Result<(), Fatal> {
    match cli.command {
        Command::Namespace(NamespaceCommand::Teleport(args)) => {
            teleport::run(teleport_options(args)?).await
        }
    }
}

fn teleport_options(args: TeleportArgs) -> Result<TeleportOptions, Fatal> {
    for ns in &args.namespaces {
        if !is_dns_label(ns) {
            return Err(Fatal::new(
                Code::Usage,
                format!("{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = args.namespaces.iter().find(|ns| !seen.insert(*ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!("namespace {dup:?} is given twice"),
        ));
    }
    Ok(TeleportOptions {
        namespaces: args.namespaces,
        client: ClientOptions {
            kubeconfig: args.cluster.kubeconfig,
            context: args.cluster.context,
        },
        labels: args.selector,
        hosts_file: args.hosts_file,
        cluster_domain: args.cluster_domain,
        state_dir: state_dir(),
        registry_dir: registry_dir(),
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// czctl's per-user state: `CZCTL_STATE_DIR`, else `$XDG_STATE_HOME/czctl`, else
/// `~/.local/state/czctl`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CZCTL_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("czctl");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".local").join("state").join("czctl")
}

/// The machine-wide address registry shared by every czctl run: `CZCTL_REGISTRY_DIR`, else
/// `czctl-loopback` in the temp directory.
pub fn registry_dir() -> PathBuf {
    std::env::var_os("CZCTL_REGISTRY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("czctl-loopback"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        assert!(is_dns_label("demo-1"));
        assert!(!is_dns_label("Demo"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
    }
}
