//! The composition root: parsed arguments → the command that runs them (one file each in
//! `commands`).

use crate::cli::{Cli, Command, NamespaceCommand, ServiceCommand, SessionCommand, WorkloadCommand};
use crate::cluster::workload::WorkloadKind;
use crate::commands::{self, Globals};
use crate::exit::Fatal;

/// Runs the command the user asked for; returns the exit code (a command run under a
/// workload teleport passes its own code on).
pub async fn run(cli: Cli) -> Result<i32, Fatal> {
    let done = |r: Result<(), Fatal>| r.map(|()| 0);
    let globals = Globals::of(&cli);
    let cluster = cli.cluster;
    let workload = |kind: WorkloadKind, args| {
        let (cluster, globals) = (&cluster, &globals);
        async move { commands::workload_teleport::run(kind, args, cluster, globals).await }
    };
    match cli.command {
        Command::Namespace(NamespaceCommand::Teleport(args)) => {
            commands::namespace_teleport::run(args, &cluster, &globals).await
        }
        Command::Deployment(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Deployment, args).await
        }
        Command::Statefulset(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Statefulset, args).await
        }
        Command::Daemonset(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Daemonset, args).await
        }
        Command::Job(WorkloadCommand::Teleport(args)) => workload(WorkloadKind::Job, args).await,
        Command::Cronjob(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Cronjob, args).await
        }
        Command::Pod(WorkloadCommand::Teleport(args)) => workload(WorkloadKind::Pod, args).await,
        Command::Service(ServiceCommand::Intercept(args)) => {
            commands::service_intercept::run(args, &cluster).await
        }
        Command::Status(args) => done(commands::status::run(args).await),
        Command::Completion { shell } => {
            crate::docs::completion(shell, &mut std::io::stdout());
            Ok(0)
        }
        Command::Session(SessionCommand::List { output }) => {
            done(commands::session_list::run(output).await)
        }
        Command::Session(SessionCommand::Close(args)) => {
            done(commands::session_close::run(args).await)
        }
        Command::Doctor(args) => done(commands::doctor::run(args, &cluster).await),
    }
}
