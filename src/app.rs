//! The composition root: turns parsed arguments into a configured command and runs it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::{
    Cli, CloseArgs, ClusterArgs, Command, InterceptArgs, LogFormat, NamespaceCommand, Output,
    ServiceCommand, SessionCommand, StatusArgs, TeleportArgs, WorkloadCommand,
    WorkloadTeleportArgs,
};
use crate::cluster::client::ClientOptions;
use crate::cluster::workload::WorkloadKind;
use crate::detach::Background;
use crate::exit::{Code, Fatal};
use crate::export::ExportOptions;
use crate::session::manage::{self, Places, Which};
use crate::teleport::launch::{launch, Launch, Launched};
use crate::teleport::{self, TeleportOptions};

/// One-shot output on stdout: a reader that goes away (`| head`) ends czctl quietly.
macro_rules! outln {
    ($($arg:tt)*) => { crate::output::println(format!($($arg)*)) };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => { crate::output::print(format!($($arg)*)) };
}

/// Runs the command the user asked for; returns the exit code (a command run under a
/// workload teleport passes its own code on).
pub async fn run(cli: Cli) -> Result<i32, Fatal> {
    let done = |r: Result<(), Fatal>| r.map(|()| 0);
    let globals = Globals::of(&cli);
    let cluster = cli.cluster;
    match cli.command {
        Command::Namespace(NamespaceCommand::Teleport(args)) => {
            namespace(args, &cluster, &globals).await
        }
        Command::Deployment(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Deployment, args, &cluster, &globals).await
        }
        Command::Statefulset(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Statefulset, args, &cluster, &globals).await
        }
        Command::Daemonset(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Daemonset, args, &cluster, &globals).await
        }
        Command::Job(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Job, args, &cluster, &globals).await
        }
        Command::Cronjob(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Cronjob, args, &cluster, &globals).await
        }
        Command::Pod(WorkloadCommand::Teleport(args)) => {
            workload(WorkloadKind::Pod, args, &cluster, &globals).await
        }
        Command::Service(ServiceCommand::Intercept(args)) => intercept(args, &cluster).await,
        Command::Status(args) => done(status(args).await),
        Command::Completion { shell } => {
            crate::docs::completion(shell, &mut std::io::stdout());
            Ok(0)
        }
        Command::Session(SessionCommand::List { output }) => done(list(output).await),
        Command::Session(SessionCommand::Close(args)) => done(close(args).await),
        Command::Doctor(args) => {
            done(crate::doctor::command(&doctor_options(&args, &cluster)?, args.output).await)
        }
    }
}

/// The global flags a background child repeats.
struct Globals {
    args: Vec<OsString>,
}

impl Globals {
    fn of(cli: &Cli) -> Globals {
        let mut args: Vec<OsString> = Vec::new();
        if cli.verbose > 0 {
            args.push(format!("-{}", "v".repeat(usize::from(cli.verbose))).into());
        }
        if cli.log_format == LogFormat::Json {
            args.extend(["--log-format".into(), "json".into()]);
        }
        Globals { args }
    }
}

fn client_options(cluster: &ClusterArgs) -> ClientOptions {
    ClientOptions {
        kubeconfig: cluster.kubeconfig.clone(),
        context: cluster.context.clone(),
    }
}

/// `czctl namespace teleport NS...`: in the background (or reusing this job's session), in
/// the foreground, or as the background child itself.
async fn namespace(
    args: TeleportArgs,
    cluster: &ClusterArgs,
    globals: &Globals,
) -> Result<i32, Fatal> {
    let foreground = args.foreground;
    let timeout = args.timeout;
    let mut options = teleport_options(args, cluster)?;
    if let Ok(session) = std::env::var(crate::detach::SESSION_ENV) {
        options.session = Some(session);
        options.detached = true;
        return teleport::run(options).await;
    }
    let launched = launch(Launch {
        options,
        foreground,
        timeout,
        global_args: globals.args.clone(),
    })
    .await?;
    match launched.record() {
        Some(record) => {
            outln!("{}", record.id);
            Ok(0)
        }
        None => match launched {
            Launched::Ended(code) => Ok(code),
            _ => unreachable!("a launch without a background session ran in the foreground"),
        },
    }
}

/// `czctl service intercept SVC`: start one (in the background, or the foreground), or
/// `--close`.
async fn intercept(args: InterceptArgs, cluster: &ClusterArgs) -> Result<i32, Fatal> {
    use crate::cli::TunnelKind;
    use crate::intercept::{spec, InterceptOptions, TunnelChoice};
    check_namespace_flag(args.namespace.as_deref())?;
    let usage = |e: spec::SpecError| Fatal::new(Code::Usage, e.to_string());
    let header = spec::parse_header(args.header.as_deref()).map_err(usage)?;
    let local = spec::local_target(args.local_port, args.local_url.as_deref()).map_err(usage)?;
    let client = client_options(cluster);
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
            outln!("{line}");
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
        timeout: args.timeout,
    };
    match std::env::var(crate::detach::SESSION_ENV) {
        Ok(session) => {
            options.session = Some(session);
            options.detached = true;
        }
        Err(_) if !args.foreground => {
            let background = Background {
                session: teleport::new_id("ic"),
                state_dir: options.state_dir.clone(),
                hosts_file: None,
                args: crate::detach::own_args(),
                // The child's own --timeout fires first and cleans up; this is the backstop.
                timeout: args.timeout + std::time::Duration::from_secs(30),
            };
            // The child writes its own record once it knows the cluster.
            crate::detach::start(&background, |_| Ok(())).await?;
            outln!("{}", background.session);
            return Ok(0);
        }
        Err(_) => {}
    }
    crate::intercept::run(options).await
}

/// `czctl KIND teleport NAME`: export, then teleport the namespace (unless `--env-only`) in
/// the background or reusing this job's session of it, or run the command with the
/// exported environment while a teleport lasts.
async fn workload(
    kind: WorkloadKind,
    args: WorkloadTeleportArgs,
    cluster: &ClusterArgs,
    globals: &Globals,
) -> Result<i32, Fatal> {
    check_namespace_flag(args.namespace.as_deref())?;
    if let Ok(session) = std::env::var(crate::detach::SESSION_ENV) {
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
    let mut teleport = teleport_options(
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

fn check_namespace_flag(namespace: Option<&str>) -> Result<(), Fatal> {
    match namespace.filter(|ns| !is_dns_label(ns)) {
        Some(ns) => Err(Fatal::new(
            Code::Usage,
            format!(
                "{} is not a namespace name (lowercase letters, digits and '-', at most 63)",
                crate::exit::shown(ns)
            ),
        )),
        None => Ok(()),
    }
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
        Output::Json | Output::Yaml => {
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
            print_data(args.output, &serde_json::json!({ "sessions": sessions }))?;
        }
        Output::Text => {
            if found.is_empty() {
                eprintln!("czctl: no running sessions");
            }
            for (record, status) in &found {
                outln!(
                    "session {} ({} {}, pid {}, context {}, since {})",
                    record.id,
                    record.kind,
                    record.namespaces.join(","),
                    record.pid,
                    record.context,
                    record.started
                );
                out!("{}", crate::session::status::render(status));
            }
        }
    }
    Ok(())
}

async fn list(output: Output) -> Result<(), Fatal> {
    let mut sessions = manage::list(&places(PathBuf::from("/etc/hosts")))?;
    crate::session::intercepts::mark_expired(&mut sessions).await;
    match output {
        Output::Json | Output::Yaml => {
            print_data(output, &serde_json::json!({ "sessions": sessions }))?
        }
        Output::Text => {
            outln!(
                "{:<12} {:<9} {:<8} {:<8} {:<20} {:<14} WHAT",
                "SESSION",
                "KIND",
                "PID",
                "STATE",
                "STARTED",
                "JOB"
            );
            for s in &sessions {
                let state = if s.stale {
                    "stale"
                } else {
                    s.record.state.as_str()
                };
                outln!(
                    "{:<12} {:<9} {:<8} {:<8} {:<20} {:<14} {}",
                    s.record.id,
                    s.record.kind,
                    s.record.pid,
                    state,
                    s.record.started,
                    s.record.group.as_deref().unwrap_or("-"),
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
    let which = match args.session {
        Some(id) if !args.all => Which::One(id),
        _ => Which::All {
            group: crate::session::group::current(),
        },
    };
    let closing = manage::close(&places(args.hosts_file), &which, args.force, args.forget).await;
    for line in &closing.said {
        outln!("{line}");
    }
    let mut failed = closing.failed.into_iter();
    let Some(first) = failed.next() else {
        return Ok(());
    };
    let rest: Vec<Fatal> = failed.collect();
    if rest.is_empty() {
        return Err(first);
    }
    let mut message = format!(
        "{} sessions could not be closed:\n- {}",
        rest.len() + 1,
        first.message
    );
    for e in &rest {
        message.push_str(&format!("\n- {}", e.message));
    }
    Err(Fatal::new(first.code, message))
}

/// Prints data as JSON or YAML on stdout.
fn print_data(output: Output, value: &serde_json::Value) -> Result<(), Fatal> {
    match output {
        Output::Yaml => {
            let text = serde_saphyr::to_string(value)
                .map_err(|e| Fatal::new(Code::Failure, format!("cannot write YAML: {e}")))?;
            out!("{text}");
        }
        _ => outln!("{value}"),
    }
    Ok(())
}

fn doctor_options(
    args: &crate::cli::DoctorArgs,
    cluster: &ClusterArgs,
) -> Result<crate::doctor::DoctorOptions, Fatal> {
    if let Some(ns) = args.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!(
                "{} is not a namespace name (lowercase letters, digits and '-', at most 63)",
                crate::exit::shown(ns)
            ),
        ));
    }
    Ok(crate::doctor::DoctorOptions {
        client: client_options(cluster),
        namespace: args.namespace.clone(),
        hosts_file: args.hosts_file.clone(),
        registry_dir: registry_dir(),
    })
}

fn teleport_options(args: TeleportArgs, cluster: &ClusterArgs) -> Result<TeleportOptions, Fatal> {
    for ns in &args.namespaces {
        if !is_dns_label(ns) {
            return Err(Fatal::new(
                Code::Usage,
                format!(
                    "{} is not a namespace name (lowercase letters, digits and '-', at most 63)",
                    crate::exit::shown(ns)
                ),
            ));
        }
    }
    if !args.cluster_domain.split('.').all(is_dns_label) {
        return Err(Fatal::new(
            Code::Usage,
            format!(
                "--cluster-domain {} is not a DNS domain (dot-separated labels of lowercase letters, digits and '-')",
                crate::exit::shown(&args.cluster_domain)
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = args.namespaces.iter().find(|ns| !seen.insert(*ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!("namespace {} is given twice", crate::exit::shown(dup)),
        ));
    }
    Ok(TeleportOptions {
        namespaces: args.namespaces,
        client: client_options(cluster),
        labels: args.selector,
        hosts_file: args.hosts_file,
        cluster_domain: args.cluster_domain,
        state_dir: state_dir(),
        registry_dir: registry_dir(),
        session: None,
        detached: false,
        command: None,
        on_ready: None,
        timeout: args.timeout,
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
/// `~/.local/state/czctl`; empty variables count as unset (see [`crate::paths::state_dir`]).
pub fn state_dir() -> PathBuf {
    crate::paths::state_dir()
}

/// The address registry of this user's czctl runs: `CZCTL_REGISTRY_DIR`, else
/// `/run/czctl-loopback` for root, else `$XDG_RUNTIME_DIR/czctl-loopback`, else
/// `$TMPDIR/czctl-loopback-UID` (see [`crate::paths::registry_dir`]).
pub fn registry_dir() -> PathBuf {
    crate::paths::registry_dir()
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
