//! `czctl KIND teleport NAME` for every workload kind.

use std::collections::BTreeMap;

use super::{check_namespace_flag, client_options, Globals};
use crate::cli::{ClusterArgs, TeleportArgs, WorkloadTeleportArgs};
use crate::cluster::workload::WorkloadKind;
use crate::exit::{Code, Fatal};
use crate::export::ExportOptions;
use crate::teleport;
use crate::teleport::launch::{launch, Launch, Launched};

/// `czctl KIND teleport NAME`: export, then teleport the namespace (unless `--env-only`) in
/// the background or reusing this job's session of it, or run the command with the
/// exported environment while a teleport lasts.
pub(crate) async fn run(
    kind: WorkloadKind,
    args: WorkloadTeleportArgs,
    cluster: &ClusterArgs,
    globals: &Globals,
) -> Result<i32, Fatal> {
    check_namespace_flag(args.namespace.as_deref())?;
    if let Some(session) = crate::detach::child_session() {
        return Err(Fatal::new(
            Code::Usage,
            format!("a background session ({session}) runs `namespace teleport`, not a workload export; unset {}", crate::detach::SESSION_ENV),
        ));
    }
    let options = ExportOptions {
        kind,
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        client: client_options(cluster),
        container: args.container.clone(),
        file: args.file.clone(),
        overwrite: args.overwrite,
        format: args.format,
        command: args.command.clone(),
    };
    let prepared = crate::export::prepare(&options).await?;
    if args.env_only {
        let exported = prepared.write(&options, &BTreeMap::new())?;
        return match exported.command {
            Some(command) => run_command(&command).await,
            None => Ok(0),
        };
    }
    let namespace = prepared.namespace().to_string();
    let mut teleport = super::namespace_teleport::teleport_options(
        TeleportArgs {
            namespaces: vec![namespace],
            selector: None,
            hosts_file: args.hosts_file,
            cluster_domain: args.cluster_domain,
            foreground: args.foreground,
            detach: false,
            timeout: args.timeout,
        },
        cluster,
    )?;
    let with_command = !args.command.is_empty();
    // A command runs attached by nature: the teleport lasts while it runs.
    let foreground = args.foreground || with_command;
    // Until the teleport is ready, the export cannot know the loopback addresses its Service
    // links name: it is written (and the command's environment made) once they are known.
    let prepared = std::sync::Arc::new(std::sync::Mutex::new(Some(prepared)));
    let write = {
        let prepared = prepared.clone();
        let options = options.clone();
        move |addresses: &BTreeMap<String, std::net::Ipv4Addr>| {
            let prepared = prepared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("the export is written once");
            prepared.write(&options, addresses).map(|e| e.command)
        }
    };
    if foreground {
        teleport.command = with_command.then(|| teleport::command::CommandSpec {
            argv: args.command.clone(),
            env: Vec::new(),
        });
        teleport.on_ready = Some(teleport::OnReady::new(Box::new(write.clone())));
    }
    let launched = launch(Launch {
        options: teleport,
        foreground,
        timeout: args.timeout,
        global_args: globals.args.clone(),
    })
    .await?;
    let (record, new) = match launched {
        Launched::Ended(code) => return Ok(code),
        Launched::Reused(record) => (record, false),
        Launched::Started(record) => (record, true),
    };
    let written = async {
        let addresses = teleport::launch::addresses(&record).await?;
        write(&addresses)
    }
    .await;
    match written {
        // A reused session keeps running: the command runs beside it.
        Ok(Some(command)) => run_command(&command).await,
        Ok(None) => {
            if args.file.is_some() {
                outln!("{}", record.id);
            }
            Ok(0)
        }
        Err(e) if new => {
            // Nothing half-done: the session started for this export ends with it.
            let closed = crate::session::manage::close_live(&record).await;
            Err(Fatal::new(e.code, format!("{}\n{closed}", e.message)))
        }
        Err(e) => Err(e),
    }
}

/// Runs a command with its environment and returns its exit code.
async fn run_command(command: &teleport::command::CommandSpec) -> Result<i32, Fatal> {
    let mut child = teleport::command::spawn(command)?;
    let status = child
        .wait()
        .await
        .map_err(|e| Fatal::new(Code::Local, format!("cannot wait for the command: {e}")))?;
    Ok(teleport::command::code_of(status))
}
