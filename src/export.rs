//! `czctl KIND teleport NAME`: export a workload's configuration (resolved as the kubelet
//! resolves it) to a 0600 file, then teleport its namespace, optionally running a command with
//! that environment while the teleport is active.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cluster::client::{self, ClientOptions};
use crate::cluster::workload::{self, WorkloadKind};
use crate::env::format::{self, Format};
use crate::env::{resolve, sources};
use crate::exit::{Code, Fatal};
use crate::teleport::command::CommandSpec;

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name.
    pub name: String,
    /// Namespace (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// Client configuration.
    pub client: ClientOptions,
    /// Container name (default: the first app container).
    pub container: Option<String>,
    /// Output file; stdout when absent and no command is given.
    pub file: Option<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Command to run with the environment.
    pub command: Vec<OsString>,
}

/// What the export produced, for the teleport that may follow.
pub struct Exported {
    /// The workload's namespace.
    pub namespace: String,
    /// The command to run, with the environment, if one was given.
    pub command: Option<CommandSpec>,
}

/// Resolves and writes the configuration.
pub async fn export(options: &ExportOptions) -> Result<Exported, Fatal> {
    let connected = client::connect(&options.client)
        .await
        .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| connected.client.default_namespace().to_string());
    let workload =
        workload::fetch(&connected.client, options.kind, &namespace, &options.name).await?;
    let container = resolve::select_container(&workload.spec, options.container.as_deref())?;
    let sources = sources::fetch(&connected.client, &namespace, &workload, container).await?;
    let resolved = resolve::resolve(&workload.spec, container, &sources)?;
    for warning in &resolved.warnings {
        eprintln!("czctl: warning: {warning}");
    }
    for missing in &resolved.unresolved {
        eprintln!(
            "czctl: warning: {} is not exported: {}",
            missing.name, missing.reason
        );
    }
    let vars: Vec<(String, Vec<u8>)> = resolved
        .vars
        .iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect();
    match &options.file {
        Some(path) => {
            let text = format::render(options.format, &vars)?;
            format::write_private(path, &text).map_err(|e| {
                Fatal::new(Code::Local, format!("cannot write {}: {e}", path.display()))
            })?;
            eprintln!(
                "czctl: wrote {} variables of {} {namespace}/{} ({} format) to {} (mode 0600)",
                vars.len(),
                options.kind.resource(),
                options.name,
                options.format.name(),
                path.display()
            );
        }
        None if options.command.is_empty() => {
            use std::io::Write;
            let text = format::render(options.format, &vars)?;
            let _ = std::io::stdout().write_all(&text);
        }
        None => {}
    }
    let command = (!options.command.is_empty()).then(|| CommandSpec {
        argv: options.command.clone(),
        env: vars,
    });
    Ok(Exported { namespace, command })
}
