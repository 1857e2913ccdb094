//! The composition root: turns parsed arguments into a configured command and runs it.

use std::path::PathBuf;

use crate::cli::{
    AgentCommand, Cli, CloseArgs, Command, InterceptArgs, NamespaceCommand, Output, ServiceCommand,
    SessionCommand, StatusArgs, TeleportArgs, WorkloadCommand, WorkloadTeleportArgs,
};
use crate::cluster::client::ClientOptions;
use crate::cluster::workload::WorkloadKind;
use crate::exit::{Code, Fatal};
use crate::export::ExportOptions;
use crate::session::manage::{self, Places};
use crate::teleport::{self, TeleportOptions};

/// Runs the command the user asked for; returns the exit code (a command run under a
/// workload teleport passes its own code on).
pub async fn run(cli: Cli) -> Result<i32, Fatal> {
    let done = |r: Result<(), Fatal>| r.map(|()| 0);
    match cli.command {
        Command::Namespace(NamespaceCommand::Teleport(args)) => {
            let detach = args.detach;
            let mut options = teleport_options(args)?;
            match std::env::var(crate::detach::SESSION_ENV) {
                Ok(session) => {
                    options.session = Some(session);
                    options.detached = true;
                }
                Err(_) if detach => {
                    return done(crate::detach::run(
                        &teleport::session_id(),
                        &options.state_dir,
                        Some(&options.hosts_file),
                    ));
                }
                Err(_) => {}
            }
            teleport::run(options).await
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
        Command::Service(ServiceCommand::Intercept(args)) => intercept(args).await,
        Command::Agent(AgentCommand::Tunnel(args)) => crate::tunnel::agent::run(args)
            .await
            .map(|()| 0)
            .map_err(|e| Fatal::new(Code::Failure, format!("{e:#}"))),
        Command::Status(args) => done(status(args).await),
        Command::Completion { shell } => {
            crate::docs::completion(shell, &mut std::io::stdout());
            Ok(0)
        }
        Command::Session(SessionCommand::List { output }) => done(list(output).await),
        Command::Session(SessionCommand::Close(args)) => done(close(args).await),
        Command::Doctor(args) => {
            done(crate::doctor::command(&doctor_options(&args)?, args.output == Output::Json).await)
        }
    }
}

/// `czctl service intercept SVC`: start one (in the foreground or detached), or `--close`.
async fn intercept(args: InterceptArgs) -> Result<i32, Fatal> {
    use crate::cli::TunnelKind;
    use crate::intercept::{spec, InterceptOptions, TunnelChoice};
    if let Some(ns) = args.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!("{ns:?} is not a namespace name"),
        ));
    }
    let usage = |e: spec::SpecError| Fatal::new(Code::Usage, e.to_string());
    let header = spec::parse_header(args.header.as_deref()).map_err(usage)?;
    let local = spec::local_target(args.local_port, args.local_url.as_deref()).map_err(usage)?;
    let client = ClientOptions {
        kubeconfig: args.cluster.kubeconfig.clone(),
        context: args.cluster.context.clone(),
    };
    let state_dir = state_dir();
    let tunnel = match args.tunnel {
        TunnelKind::Ngrok if !args.close => {
            let token = std::env::var(crate::tunnel::ngrok::TOKEN_ENV).ok();
            let authtoken = crate::tunnel::ngrok::check_token(token)
                .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
            TunnelChoice::Ngrok { authtoken }
        }
        _ => TunnelChoice::Cluster {
            agent_image: args.agent_image.clone(),
        },
    };
    if args.close {
        let places = places(PathBuf::from("/etc/hosts"));
        let said = crate::session::intercepts::close_intercepts(
            &places,
            &client,
            args.namespace.as_deref(),
            &args.service,
            args.force,
        )
        .await?;
        for line in said {
            println!("{line}");
        }
        return Ok(0);
    }
    let mut options = InterceptOptions {
        client,
        namespace: args.namespace.clone(),
        service: args.service.clone(),
        header,
        local,
        port: args.port,
        router_image: args.router_image.clone(),
        tunnel,
        state_dir,
        session: None,
        detached: false,
    };
    match std::env::var(crate::detach::SESSION_ENV) {
        Ok(session) => {
            options.session = Some(session);
            options.detached = true;
        }
        Err(_) if args.detach => {
            let session = teleport::new_id("ic");
            return crate::detach::run(&session, &options.state_dir, None).map(|()| 0);
        }
        Err(_) => {}
    }
    crate::intercept::run(options).await
}

/// `czctl KIND teleport NAME`: export, then teleport the namespace (unless `--env-only`),
/// running the command, if any, with the exported environment.
async fn workload(kind: WorkloadKind, args: WorkloadTeleportArgs) -> Result<i32, Fatal> {
    if let Some(ns) = args.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!("{ns:?} is not a namespace name"),
        ));
    }
    let options = ExportOptions {
        kind,
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        client: ClientOptions {
            kubeconfig: args.cluster.kubeconfig.clone(),
            context: args.cluster.context.clone(),
        },
        container: args.container.clone(),
        file: args.file.clone(),
        format: args.format,
        command: args.command.clone(),
    };
    let exported = crate::export::export(&options).await?;
    if args.env_only {
        return match exported.command {
            Some(command) => {
                let mut child = teleport::command::spawn(&command)?;
                let status = child.wait().await.map_err(|e| {
                    Fatal::new(Code::Local, format!("cannot wait for the command: {e}"))
                })?;
                Ok(teleport::command::code_of(status))
            }
            None => Ok(0),
        };
    }
    let mut teleport = teleport_options(TeleportArgs {
        namespaces: vec![exported.namespace],
        cluster: args.cluster,
        selector: None,
        hosts_file: args.hosts_file,
        cluster_domain: args.cluster_domain,
        detach: args.detach,
    })?;
    teleport.command = exported.command;
    match std::env::var(crate::detach::SESSION_ENV) {
        Ok(session) => {
            teleport.session = Some(session);
            teleport.detached = true;
        }
        Err(_) if args.detach => {
            return crate::detach::run(
                &teleport::session_id(),
                &teleport.state_dir,
                Some(&teleport.hosts_file),
            )
            .map(|()| 0);
        }
        Err(_) => {}
    }
    teleport::run(teleport).await
}

fn places(hosts_file: PathBuf) -> Places {
    Places {
        state_dir: state_dir(),
        registry_dir: registry_dir(),
        hosts_file,
    }
}

async fn status(args: StatusArgs) -> Result<(), Fatal> {
    let found = manage::status(
        &places(PathBuf::from("/etc/hosts")),
        args.session.as_deref(),
    )
    .await?;
    match args.output {
        Output::Json => {
            let sessions: Vec<serde_json::Value> = found
                .iter()
                .map(|(record, status)| {
                    serde_json::json!({
                        "session": record,
                        "forwards": status.forwards,
                        "notes": status.notes,
                        "protocol": status.protocol,
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "sessions": sessions }));
        }
        Output::Text => {
            if found.is_empty() {
                eprintln!("czctl: no running sessions");
            }
            for (record, status) in &found {
                println!(
                    "session {} ({} {}, pid {}, context {}, since {})",
                    record.id,
                    record.kind,
                    record.namespaces.join(","),
                    record.pid,
                    record.context,
                    record.started
                );
                print!("{}", crate::session::status::render(status));
            }
        }
    }
    Ok(())
}

async fn list(output: Output) -> Result<(), Fatal> {
    let mut sessions = manage::list(&places(PathBuf::from("/etc/hosts")))?;
    crate::session::intercepts::mark_expired(&mut sessions).await;
    match output {
        Output::Json => println!("{}", serde_json::json!({ "sessions": sessions })),
        Output::Text => {
            println!(
                "{:<12} {:<9} {:<8} {:<8} {:<20} WHAT",
                "SESSION", "KIND", "PID", "STATE", "STARTED"
            );
            for s in &sessions {
                let state = if s.stale {
                    "stale"
                } else {
                    s.record.state.as_str()
                };
                println!(
                    "{:<12} {:<9} {:<8} {:<8} {:<20} {}",
                    s.record.id,
                    s.record.kind,
                    s.record.pid,
                    state,
                    s.record.started,
                    match &s.record.intercept {
                        Some(ic) => format!(
                            "{}/{} {} -> {}",
                            ic.namespace, ic.service, ic.header, ic.local
                        ),
                        None => s.record.namespaces.join(","),
                    }
                );
            }
        }
    }
    Ok(())
}

async fn close(args: CloseArgs) -> Result<(), Fatal> {
    let session = if args.all {
        None
    } else {
        args.session.as_deref()
    };
    for line in manage::close(&places(args.hosts_file), session, args.force).await? {
        println!("{line}");
    }
    Ok(())
}

fn doctor_options(args: &crate::cli::DoctorArgs) -> Result<crate::doctor::DoctorOptions, Fatal> {
    if let Some(ns) = args.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!(
                "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            ),
        ));
    }
    Ok(crate::doctor::DoctorOptions {
        client: ClientOptions {
            kubeconfig: args.cluster.kubeconfig.clone(),
            context: args.cluster.context.clone(),
        },
        namespace: args.namespace.clone(),
        hosts_file: args.hosts_file.clone(),
        registry_dir: registry_dir(),
    })
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
    if !args.cluster_domain.split('.').all(is_dns_label) {
        return Err(Fatal::new(
            Code::Usage,
            format!(
                "--cluster-domain {:?} is not a DNS domain (dot-separated labels of lowercase letters, digits and '-')",
                args.cluster_domain
            ),
        ));
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
        session: None,
        detached: false,
        command: None,
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
