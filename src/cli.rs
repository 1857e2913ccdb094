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
    /// Log format on stderr: text for people, json (one object per line) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Kubernetes client options (accepted before or after the subcommand).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with whole namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Export a Deployment's configuration and teleport its namespace.
    #[command(
        subcommand,
        mut_subcommand("teleport", |c: clap::Command| c.after_help("Example:\n  czctl deployment teleport api -n staging -f api.env"))
    )]
    Deployment(WorkloadCommand),
    /// Export a StatefulSet's configuration and teleport its namespace.
    #[command(
        subcommand,
        mut_subcommand("teleport", |c: clap::Command| c.after_help("Example:\n  czctl statefulset teleport db -n staging -f db.env"))
    )]
    Statefulset(WorkloadCommand),
    /// Export a DaemonSet's configuration and teleport its namespace.
    #[command(
        subcommand,
        mut_subcommand("teleport", |c: clap::Command| c.after_help("Example:\n  czctl daemonset teleport log-agent -n monitoring -f agent.env"))
    )]
    Daemonset(WorkloadCommand),
    /// Export a Job's configuration and teleport its namespace.
    #[command(
        subcommand,
        mut_subcommand("teleport", |c: clap::Command| c.after_help("Example:\n  czctl job teleport migrate -n staging -- ./migrate.sh"))
    )]
    Job(WorkloadCommand),
    /// Export a CronJob's configuration and teleport its namespace.
    #[command(
        subcommand,
        mut_subcommand("teleport", |c: clap::Command| c.after_help("Example:\n  czctl cronjob teleport nightly-report -n staging -f report.env"))
    )]
    Cronjob(WorkloadCommand),
    /// Export a Pod's configuration and teleport its namespace.
    #[command(
        subcommand,
        mut_subcommand("teleport", |c: clap::Command| c.after_help("Example:\n  czctl pod teleport api-7d9f8-abcde -n staging -f api.env"))
    )]
    Pod(WorkloadCommand),
    /// Route requests carrying your header from a Service to a server on this machine.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Show what running sessions forward: addresses, ports, pods, connections, bytes, errors.
    Status(StatusArgs),
    /// List and close sessions (teleports), including ones left behind by a crash.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Check that czctl can work here: kubeconfig, API server, rights, hosts file, addresses.
    Doctor(DoctorArgs),
    /// Print a shell completion script (for example: czctl completion bash > /etc/bash_completion.d/czctl).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Shells completion scripts are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// `czctl doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The namespace whose rights are checked (default: the context's, else default).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The hosts file czctl would edit.
    #[arg(long, default_value = "/etc/hosts", value_name = "PATH")]
    pub hosts_file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Output format for data on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    /// Aligned text for people.
    #[default]
    Text,
    /// JSON for scripts.
    Json,
    /// YAML for scripts and people.
    Yaml,
}

/// `czctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this session (default: every running one).
    #[arg(value_name = "SESSION")]
    pub session: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `czctl session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions; stale ones (their process is gone) are marked.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// End sessions and clean up what they added (hosts entries, addresses, intercept routes),
    /// stale ones too. Closing a session that is already closed succeeds; an unknown id is an
    /// error. Inside a CI job, --all closes that job's sessions and stale ones only.
    Close(CloseArgs),
}

/// `czctl session close`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["session", "all"])))]
pub struct CloseArgs {
    /// The session to close.
    #[arg(value_name = "SESSION")]
    pub session: Option<String>,
    /// Close every session (inside a CI job: the job's and stale ones), and remove stale czctl
    /// blocks from the hosts file. Tries every session and reports each one it cannot close.
    #[arg(long)]
    pub all: bool,
    /// Discard the session's local record without closing what it holds in the cluster (for
    /// a session whose cluster or kubeconfig is gone); says what is left and how to remove it.
    #[arg(long, conflicts_with = "all")]
    pub forget: bool,
    /// The hosts file to sweep for stale blocks with --all.
    #[arg(long, default_value = "/etc/hosts", value_name = "PATH")]
    pub hosts_file: PathBuf,
    /// Restore an intercepted Service's original selector and ports even if someone changed it
    /// since czctl routed it.
    #[arg(long)]
    pub force: bool,
}

/// `czctl service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Send requests to SERVICE that carry a header (default `X-C6O-INTERCEPT: yes`) to a
    /// server on this machine; all other requests still reach the original pods. Several
    /// people can intercept one Service with different header values. The Service is restored
    /// when the last intercept ends (Ctrl-C, `czctl session close`, or `--close`).
    Intercept(InterceptArgs),
}

/// `czctl service intercept`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").args(["local_port", "local_url"])))]
pub struct InterceptArgs {
    /// The Service to intercept.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// Namespace (default: the context's).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The header that selects your requests, as NAME:VALUE (for example -x x-dev:alice).
    /// Names: letters, digits, '-'; values: letters, digits, '.', '_', '~', '-'.
    #[arg(short = 'x', long = "header", value_name = "NAME:VALUE")]
    pub header: Option<String>,
    /// The local port matching requests go to (on 127.0.0.1) [default: 8080].
    #[arg(short = 'p', long = "local-port", value_name = "PORT")]
    pub local_port: Option<u16>,
    /// Where matching requests go, as http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub local_url: Option<String>,
    /// The Service port to intercept (default: its only port).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// How requests reach this machine: `cluster` goes through the pod port-forward API to an
    /// agent pod, so only the cluster's own authentication guards it; `ngrok` uses an ngrok
    /// endpoint (NGROK_AUTHTOKEN) guarded by a per-session secret header.
    #[arg(long, value_enum, default_value_t = TunnelKind::Cluster)]
    pub tunnel: TunnelKind,
    /// Stay attached until Ctrl-C, instead of returning once requests are routed (the
    /// session then runs in the background and its id is printed on stdout).
    #[arg(long, visible_alias = "fg", conflicts_with = "close")]
    pub foreground: bool,
    /// Run in the background (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with_all = ["close", "foreground"])]
    pub detach: bool,
    /// Close intercepts of SERVICE instead: this machine's, and any whose heartbeat expired.
    #[arg(long)]
    pub close: bool,
    /// With --close: restore the Service even if someone changed it meanwhile.
    #[arg(long, requires = "close")]
    pub force: bool,
    /// The router's NGINX image.
    #[arg(long, value_name = "IMAGE", default_value = crate::intercept::manifests::DEFAULT_ROUTER_IMAGE)]
    pub router_image: String,
    /// The tunnel agent's image (czctl's own czctl-agent).
    #[arg(long, value_name = "IMAGE", default_value = crate::intercept::manifests::DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,
    /// How long the start may wait for the router and the tunnel agent (90s, 5m, or seconds).
    /// A pod that cannot start (image pull error, crash loop, unschedulable) fails it at once;
    /// either way everything the start created is removed again.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// Tunnel kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TunnelKind {
    /// Through the cluster's pod port-forward API to czctl's agent pod.
    Cluster,
    /// Through an ngrok endpoint (needs NGROK_AUTHTOKEN).
    Ngrok,
}

/// `czctl KIND ...` for workloads.
#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Write the workload's environment (env, envFrom, ConfigMaps, Secrets, downward API,
    /// Service links) to a file as the kubelet resolves it and teleport its namespace in the
    /// background (reusing this job's teleport of it if there is one), or run a command with
    /// that environment while the teleport lasts (`-- COMMAND`).
    Teleport(WorkloadTeleportArgs),
}

/// `czctl KIND teleport NAME`.
#[derive(Debug, Args)]
pub struct WorkloadTeleportArgs {
    /// The workload's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Its namespace (default: the context's namespace, else default).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Write the variables to this file (mode 0600); without it and without a command, to stdout.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace FILE even if czctl did not write it (a regular file you may write keeps its owner
    /// and group and becomes mode 0600; a symbolic link is replaced, not followed). Without it,
    /// an existing FILE is replaced only if it is yours and starts with czctl's mark.
    /// Directories, devices, FIFOs and sockets are never written.
    #[arg(long, requires = "file")]
    pub overwrite: bool,
    /// The container (default: the first app container; init containers only when named).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// File format: env (python-dotenv and dotenvy), sh (bash/dash `export`), json, yaml.
    #[arg(long, value_enum, default_value_t = crate::env::format::Format::Env)]
    pub format: crate::env::format::Format,
    /// Only export the configuration; do not teleport the namespace.
    #[arg(long, conflicts_with_all = ["detach", "foreground"])]
    pub env_only: bool,
    /// Stay attached, following changes until Ctrl-C, instead of returning once the namespace
    /// is teleported (the session then runs in the background; with -f its id is printed on
    /// stdout).
    #[arg(long, visible_alias = "fg", conflicts_with = "command")]
    pub foreground: bool,
    /// Run in the background (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with_all = ["command", "foreground"])]
    pub detach: bool,
    /// How long the teleport may take to get ready before it is stopped and undone.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// The hosts file to add names to.
    #[arg(long, default_value = "/etc/hosts", value_name = "PATH")]
    pub hosts_file: PathBuf,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// Run this command with the environment while the teleport is active; czctl exits with
    /// its exit code.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `czctl namespace ...`.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Make every Service of the namespaces reachable from this machine by its cluster names
    /// (svc, svc.NS, svc.NS.svc.cluster.local). Returns once they answer, leaving the session
    /// in the background (its id on stdout), or reuses this job's teleport of the namespaces.
    #[command(
        after_help = "Examples:\n  czctl namespace teleport staging\n  czctl namespace teleport staging payments --foreground"
    )]
    Teleport(TeleportArgs),
}

/// Options of the Kubernetes client, as kubectl has them.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Act as this user (impersonation, as kubectl's --as; overrides the kubeconfig's `as`).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act as a member of this group too (repeatable; needs --as).
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        requires = "as_user"
    )]
    pub as_groups: Vec<String>,
    /// Act with this user UID (needs --as).
    #[arg(
        long = "as-uid",
        global = true,
        value_name = "UID",
        requires = "as_user"
    )]
    pub as_uid: Option<String>,
}

/// Parses a timeout: seconds (`90`), or with units (`90s`, `5m`, `1m30s`, `500ms`); longer
/// than zero.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "{} is not a duration; write seconds (90) or with units (90s, 5m, 1m30s)",
            crate::exit::shown(text)
        )
    };
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        std::time::Duration::from_secs(text.parse().map_err(|_| bad())?)
    } else {
        let parsed: jiff::SignedDuration = text.parse().map_err(|_| bad())?;
        std::time::Duration::try_from(parsed).map_err(|_| bad())?
    };
    if duration.is_zero() {
        return Err(format!(
            "{}: the timeout must be longer than zero",
            crate::exit::shown(text)
        ));
    }
    Ok(duration)
}

/// `czctl namespace teleport`.
#[derive(Debug, Args)]
pub struct TeleportArgs {
    /// Namespaces to teleport; the first one's Services also get their bare names.
    #[arg(required = true, value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Only Services matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The hosts file to add names to.
    #[arg(long, default_value = "/etc/hosts", value_name = "PATH")]
    pub hosts_file: PathBuf,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// Stay attached, printing a line per change, until Ctrl-C or `czctl session close`,
    /// instead of returning once every forwardable Service is reachable by name.
    #[arg(long, visible_alias = "fg")]
    pub foreground: bool,
    /// Run in the background (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "foreground")]
    pub detach: bool,
    /// How long the teleport may take to get ready before it is stopped and undone.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
