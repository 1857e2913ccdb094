//! Building the Kubernetes client as kubectl would: `--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config` (the invoking user's when run under sudo), `--context`, exec credential
//! plugins, and the in-cluster service account as a last resort.
//!
//! Which kubeconfig files, as client-go's loader decides (kube-rs's `Kubeconfig::read` fails
//! on the first missing file of `KUBECONFIG`, kubectl does not):
//! - `--kubeconfig PATH` wins over everything and is one file, which must exist.
//! - Else `KUBECONFIG`, a list separated by `:`: empty entries and repeated files are ignored,
//!   missing files are skipped, a file that exists but cannot be read or parsed is an error.
//!   When none of them exists, the in-cluster service account is tried, else it is an error.
//! - Else (run as root under sudo) the invoking user's `~/.kube/config`, else `~/.kube/config`;
//!   when it is missing, the in-cluster service account, else an error.
//!
//! Files are merged in order and the first to set something wins: a cluster, user or context
//! of a given name is taken whole from the first file that has it, `current-context` and
//! `preferences` from the first file that sets them. Relative paths in a file are relative
//! to that file.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError, LoadDataError};
use kube::{Client, Config};

pub use super::path::ApiPath;
use super::path::Connector;
use super::proxy::Route;

/// Where the client's configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `--kubeconfig PATH`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context NAME`.
    pub context: Option<String>,
    /// `--as`, `--as-group`, `--as-uid`.
    pub impersonate: Impersonate,
}

/// Impersonation asked for on the command line; it replaces the kubeconfig's, as kubectl's
/// flags do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Impersonate {
    /// `--as USER`.
    pub user: Option<String>,
    /// `--as-group GROUP`, repeatable.
    pub groups: Vec<String>,
    /// `--as-uid UID`.
    pub uid: Option<String>,
}

impl Impersonate {
    /// The command-line flags that ask for it again (for a child process).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(user) = &self.user {
            args.extend(["--as".to_string(), user.clone()]);
        }
        for group in &self.groups {
            args.extend(["--as-group".to_string(), group.clone()]);
        }
        if let Some(uid) = &self.uid {
            args.extend(["--as-uid".to_string(), uid.clone()]);
        }
        args
    }

    /// Back from [`Impersonate::args`] (as kept in an intercept's record).
    pub fn from_args(args: &[String]) -> Impersonate {
        let mut out = Impersonate::default();
        for pair in args.chunks(2) {
            if let [flag, value] = pair {
                match flag.as_str() {
                    "--as" => out.user = Some(value.clone()),
                    "--as-group" => out.groups.push(value.clone()),
                    "--as-uid" => out.uid = Some(value.clone()),
                    _ => {}
                }
            }
        }
        out
    }

    fn apply(&self, config: &mut Config) {
        let Some(user) = &self.user else { return };
        let auth = &mut config.auth_info;
        auth.impersonate = Some(user.clone());
        auth.impersonate_groups = (!self.groups.is_empty()).then(|| self.groups.clone());
        auth.impersonate_uid = self.uid.clone();
        auth.impersonate_user_extra = None;
    }
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A kubeconfig file could not be read or parsed (a parse error gives the YAML position
    /// only: the file may be anything, and its lines are not ours to print).
    #[error(
        "cannot load the kubeconfig {path}: {}",
        describe_kubeconfig_error(source)
    )]
    Kubeconfig {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: KubeconfigError,
    },
    /// The file given with `--kubeconfig` does not exist.
    #[error(
        "the kubeconfig {path} given with --kubeconfig does not exist; pass the path of an \
         existing file (or leave --kubeconfig out to use KUBECONFIG or ~/.kube/config)"
    )]
    Missing {
        /// The file.
        path: String,
    },
    /// The kubeconfig has no usable context / cluster / user.
    #[error(
        "the kubeconfig cannot be used{context}: {}",
        describe_kubeconfig_error(source)
    )]
    Context {
        /// ` (context X)` when one was asked for.
        context: String,
        /// The cause.
        #[source]
        source: KubeconfigError,
    },
    /// No kubeconfig and not inside a cluster.
    #[error(
        "no kubeconfig found (looked at {looked}) and not running in a cluster; \
         pass --kubeconfig PATH or set KUBECONFIG"
    )]
    NotFound {
        /// What was looked at: `KUBECONFIG (/a, /b)` or the default path.
        looked: String,
    },
    /// The HTTP client could not be built (TLS material, proxy settings).
    #[error("cannot build the Kubernetes client: {}", crate::exit::chain(.0))]
    Build(#[source] kube::Error),
    /// The proxy setting (kubeconfig `proxy-url`, `HTTPS_PROXY`…) cannot be used.
    #[error("cannot use the proxy setting: {0}")]
    Proxy(#[from] super::proxy::ProxyError),
    /// The kubeconfig asks for something kubectl refuses too.
    #[error("the kubeconfig's {entry} {why}; {fix}")]
    Refused {
        /// `cluster NAME`.
        entry: String,
        /// What is wrong.
        why: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// The kubeconfig asks for something czctl does not do.
    #[error("the kubeconfig's user {user} uses {what}, which czctl does not support; {fix}")]
    Unsupported {
        /// The user entry.
        user: String,
        /// What it uses.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
}

/// A client plus the name of the context it uses (part of every stable loopback address key).
pub struct Connected {
    /// The client.
    pub client: Client,
    /// The same credentials and server for long-lived upgraded streams (port-forwarding): its
    /// sockets set TCP_NODELAY, so small frames are not held back by Nagle's algorithm.
    pub streams: Client,
    /// The context name (`in-cluster` for the service account).
    pub context: String,
    /// The API server URL, for messages.
    pub server: String,
    /// How connections reach it.
    pub path: ApiPath,
    /// The first hops of that path (TCP and the proxy), for `doctor` to test on their own.
    pub connector: Connector,
}

/// The kubeconfig files to read, as kubectl picks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    /// `--kubeconfig PATH`: must exist.
    Explicit(PathBuf),
    /// `KUBECONFIG`: missing files are skipped.
    Env(Vec<PathBuf>),
    /// `~/.kube/config` (the invoking user's under sudo): may be missing.
    Default(PathBuf),
}

impl Files {
    /// The files for `--kubeconfig` (`explicit`), the value of `KUBECONFIG` (`env`) and the
    /// default file.
    pub fn pick(
        explicit: Option<&Path>,
        env: Option<&std::ffi::OsStr>,
        default: impl FnOnce() -> PathBuf,
    ) -> Files {
        if let Some(path) = explicit {
            return Files::Explicit(path.to_path_buf());
        }
        if let Some(value) = env {
            let mut paths: Vec<PathBuf> = Vec::new();
            for path in std::env::split_paths(value) {
                if !path.as_os_str().is_empty() && !paths.contains(&path) {
                    paths.push(path);
                }
            }
            if !paths.is_empty() {
                return Files::Env(paths);
            }
        }
        Files::Default(default())
    }

    /// What was looked at, for messages.
    fn looked(&self) -> String {
        match self {
            Files::Explicit(path) | Files::Default(path) => path.display().to_string(),
            Files::Env(paths) => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                format!(
                    "KUBECONFIG ({}: {})",
                    list.join(", "),
                    if paths.len() == 1 {
                        "it does not exist"
                    } else {
                        "none of them exists"
                    }
                )
            }
        }
    }
}

/// Reads and merges the kubeconfig `files`; `None` when there is none to read (then the
/// in-cluster service account is the last resort).
pub fn load(files: &Files) -> Result<Option<Kubeconfig>, ClientError> {
    let paths: &[PathBuf] = match files {
        Files::Explicit(path) => {
            if !path.exists() && std::fs::symlink_metadata(path).is_err() {
                return Err(ClientError::Missing {
                    path: crate::exit::shown_path(path),
                });
            }
            std::slice::from_ref(path)
        }
        Files::Env(paths) => paths,
        Files::Default(path) => std::slice::from_ref(path),
    };
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        let config = match Kubeconfig::read_from(path) {
            Ok(config) => config,
            Err(KubeconfigError::ReadConfig(e, _))
                if e.kind() == std::io::ErrorKind::NotFound
                    && !matches!(files, Files::Explicit(_)) =>
            {
                continue;
            }
            Err(source) => {
                return Err(ClientError::Kubeconfig {
                    path: crate::exit::shown_path(path),
                    source,
                })
            }
        };
        merged = Some(match merged {
            None => config,
            Some(first) => merge(first, config),
        });
    }
    Ok(merged)
}

/// `first` with what `next` adds: names `first` does not have, fields it does not set.
fn merge(first: Kubeconfig, mut next: Kubeconfig) -> Kubeconfig {
    // kubectl does not compare kind and apiVersion across files; kube-rs refuses a mismatch.
    next.kind = None;
    next.api_version = None;
    match first.clone().merge(next) {
        Ok(merged) => merged,
        // Unreachable with kind and apiVersion cleared; keep the first file.
        Err(_) => first,
    }
}

/// A kubeconfig error on one line, paths as they are (kube-rs quotes them twice).
pub fn describe_kubeconfig_error(err: &KubeconfigError) -> String {
    let data = |what: &str, e: &LoadDataError| match e {
        LoadDataError::ReadFile(io, path) => {
            format!("cannot read the {what} file {}: {io}", path.display())
        }
        other => format!("cannot load the {what}: {other}"),
    };
    match err {
        KubeconfigError::ReadConfig(io, _) if io.raw_os_error() == Some(libc::EISDIR) => {
            "it is a directory, not a kubeconfig file".to_string()
        }
        KubeconfigError::ReadConfig(io, path) => {
            format!("cannot read {}: {io}", crate::exit::shown_path(path))
        }
        // Never the parser's message: it quotes the file (a snippet of its lines, or a value
        // it could not use), and the file may be /etc/shadow or a private key.
        KubeconfigError::Parse(e) => match e.location() {
            Some(at) => format!(
                "it is not a kubeconfig: not the YAML of one (the YAML parser stopped at line {} \
                 column {}); check it with: kubectl config view --kubeconfig FILE",
                at.line(),
                at.column()
            ),
            None => "it is not a kubeconfig: not the YAML of one; check it with: kubectl \
                     config view --kubeconfig FILE"
                .to_string(),
        },
        // Named here too: a current-context read from the file is not named anywhere else.
        KubeconfigError::LoadContext(name) => format!(
            "it has no such context ({}); list them with: kubectl config get-contexts",
            crate::exit::shown(name)
        ),
        KubeconfigError::LoadClusterOfContext(name) => {
            format!(
                "the context's cluster {} is not in it",
                crate::exit::shown(name)
            )
        }
        KubeconfigError::LoadCertificateAuthority(e) => data("certificate authority", e),
        KubeconfigError::LoadClientCertificate(e) => data("client certificate", e),
        KubeconfigError::LoadClientKey(e) => data("client key", e),
        other => crate::exit::elide_long_runs(&crate::exit::chain(other)),
    }
}

/// Builds the client.
pub async fn connect(options: &ClientOptions) -> Result<Connected, ClientError> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..Default::default()
    };
    let files = Files::pick(
        options.kubeconfig.as_deref(),
        std::env::var_os("KUBECONFIG").as_deref(),
        || sudo_user_kubeconfig().unwrap_or_else(default_path),
    );
    let env = |name: &str| std::env::var(name).ok();
    let Some(kubeconfig) = load(&files)? else {
        let config = Config::incluster().map_err(|_| ClientError::NotFound {
            looked: files.looked(),
        })?;
        let mut config = config;
        options.impersonate.apply(&mut config);
        let route = super::proxy::route(None, &config.cluster_url, env)?;
        return build(config, route, "in-cluster".into());
    };
    let context = options
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_default();
    let (cluster, user) = chosen(&kubeconfig, &context);
    refuse_unsupported(cluster.as_ref(), user.as_ref())?;
    let proxy_url = cluster.and_then(|c| c.cluster).and_then(|c| c.proxy_url);
    let config = Config::from_custom_kubeconfig(kubeconfig, &kube_options)
        .await
        .map_err(|source| ClientError::Context {
            context: options
                .context
                .as_ref()
                .map(|c| format!(" (context {})", crate::exit::shown(c)))
                .unwrap_or_default(),
            source,
        })?;
    let mut config = config;
    options.impersonate.apply(&mut config);
    let route = super::proxy::route(proxy_url.as_deref(), &config.cluster_url, env)?;
    build(config, route, context)
}

/// The cluster and user entries of `context` (when the kubeconfig has them; kube reports a
/// missing context or cluster itself).
fn chosen(
    kubeconfig: &Kubeconfig,
    context: &str,
) -> (
    Option<kube::config::NamedCluster>,
    Option<kube::config::NamedAuthInfo>,
) {
    let Some(ctx) = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
    else {
        return (None, None);
    };
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .cloned();
    let user = ctx
        .user
        .as_ref()
        .and_then(|name| kubeconfig.auth_infos.iter().find(|u| &u.name == name))
        .cloned();
    (cluster, user)
}

/// Refuses by name what kubectl refuses, or what czctl cannot do as kubectl does, rather than
/// half-doing it.
fn refuse_unsupported(
    cluster: Option<&kube::config::NamedCluster>,
    user: Option<&kube::config::NamedAuthInfo>,
) -> Result<(), ClientError> {
    if let Some(named) = cluster {
        if let Some(c) = &named.cluster {
            let has_ca =
                c.certificate_authority.is_some() || c.certificate_authority_data.is_some();
            if has_ca && c.insecure_skip_tls_verify == Some(true) {
                return Err(ClientError::Refused {
                    entry: format!("cluster {}", crate::exit::shown(&named.name)),
                    why: "sets both a certificate-authority and insecure-skip-tls-verify, which \
                          kubectl refuses too (\"specifying a root certificates file with the \
                          insecure flag is not allowed\")",
                    fix: "remove one of them: keep the certificate-authority",
                });
            }
        }
    }
    let Some(user) = user else { return Ok(()) };
    let Some(provider) = user
        .auth_info
        .as_ref()
        .and_then(|a| a.auth_provider.as_ref())
    else {
        return Ok(());
    };
    // kube-rs would send an OIDC id-token without ever refreshing it (kubectl refreshes), and
    // kubectl itself has dropped the gcp and azure providers.
    Err(ClientError::Unsupported {
        user: crate::exit::shown(&user.name),
        what: format!("auth-provider {}", crate::exit::shown(&provider.name)),
        fix: "use an exec credential plugin instead (kubectl's docs: client-go credential \
              plugins; for OIDC, kubelogin / kubectl oidc-login)",
    })
}

/// The clients for `config` along `route`.
fn build(mut config: Config, route: Route, context: String) -> Result<Connected, ClientError> {
    // The route replaces kube's own reading of proxy-url and HTTPS_PROXY.
    config.proxy_url = None;
    let server = config.cluster_url.to_string();
    crate::exit::set_server(&server);
    let path = ApiPath {
        tls_name: config
            .tls_server_name
            .clone()
            .unwrap_or_else(|| config.cluster_url.host().unwrap_or_default().to_string()),
        tls_name_configured: config.tls_server_name.is_some(),
        insecure: config.accept_invalid_certs,
        route,
    };
    if path.insecure {
        tracing::warn!(
            "the kubeconfig's cluster sets insecure-skip-tls-verify: the API server's \
             certificate is not checked, so anyone on the network path can read and change \
             the traffic, credentials included"
        );
    }
    tracing::info!(server = %server, path = %path, "reaching the API server");
    let connector = Connector::new(path.route.clone(), &config).map_err(ClientError::Build)?;
    let streams = super::stack::http_client(
        &config,
        &path,
        connector.clone(),
        super::stack::Purpose::Streams,
    )
    .map_err(ClientError::Build)?;
    let client = super::stack::http_client(
        &config,
        &path,
        connector.clone(),
        super::stack::Purpose::Requests,
    )
    .map_err(ClientError::Build)?;
    Ok(Connected {
        client,
        streams,
        context,
        server,
        path,
        connector,
    })
}

fn default_path() -> PathBuf {
    home_dir().unwrap_or_default().join(".kube").join("config")
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Under `sudo`, root's kubeconfig is not the one the user means: use the invoking user's
/// (only when neither `--kubeconfig` nor `KUBECONFIG` names files: see [`Files::pick`]).
fn sudo_user_kubeconfig() -> Option<PathBuf> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let user = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")?;
    let home = home_of(&user)?;
    let path = home.join(".kube").join("config");
    path.exists().then_some(path)
}

/// The home directory of `user` from the password database. `getpwnam_r` (through nix), not
/// `getpwnam`: this runs on a multi-threaded runtime, and `getpwnam`'s static buffer is shared.
fn home_of(user: &str) -> Option<PathBuf> {
    let entry = nix::unistd::User::from_name(user).ok().flatten()?;
    (!entry.dir.as_os_str().is_empty()).then_some(entry.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig naming cluster `cluster` at `server`, user `user` with `token`, context
    /// `context`, and maybe a current-context.
    fn config(cluster: &str, server: &str, user: &str, token: &str, context: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster: {{server: {server}}}\n\
             users:\n- name: {user}\n  user: {{token: {token}}}\n\
             contexts:\n- name: {context}\n  context: {{cluster: {cluster}, user: {user}}}\n"
        )
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("czctl-client-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn files_are_picked_as_kubectl_picks_them() {
        let default = || PathBuf::from("/home/u/.kube/config");
        let env = std::ffi::OsStr::new("/a::/b:/a");
        assert_eq!(
            Files::pick(Some(Path::new("/x")), Some(env), default),
            Files::Explicit("/x".into())
        );
        assert_eq!(
            Files::pick(None, Some(env), default),
            Files::Env(vec!["/a".into(), "/b".into()])
        );
        assert_eq!(
            Files::pick(None, Some(std::ffi::OsStr::new("")), default),
            Files::Default(default())
        );
        assert_eq!(Files::pick(None, None, default), Files::Default(default()));
    }

    #[test]
    fn missing_files_are_skipped_and_the_first_to_set_a_key_wins() {
        let dir = scratch("merge");
        let first = dir.join("first");
        let second = dir.join("second");
        std::fs::write(
            &first,
            format!(
                "{}current-context: a\n",
                config("shared", "https://first:6443", "u1", "t1", "a")
            ),
        )
        .unwrap();
        // The same cluster name with another server, another current-context, a context of
        // its own; and a different apiVersion spelling that kubectl does not compare.
        std::fs::write(
            &second,
            format!(
                "{}current-context: b\n",
                config("shared", "https://second:6443", "u2", "t2", "b")
            )
            .replace("kind: Config", "kind: Config\npreferences: {}"),
        )
        .unwrap();
        let missing = dir.join("missing");
        let files = Files::Env(vec![missing.clone(), first.clone(), second.clone()]);
        let merged = load(&files).expect("loads").expect("a config");
        assert_eq!(merged.current_context.as_deref(), Some("a"));
        let shared: Vec<_> = merged
            .clusters
            .iter()
            .filter(|c| c.name == "shared")
            .collect();
        assert_eq!(shared.len(), 1);
        let server = shared[0].cluster.as_ref().and_then(|c| c.server.clone());
        assert_eq!(server.as_deref(), Some("https://first:6443"));
        let contexts: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(contexts, ["a", "b"]);
        let users: Vec<&str> = merged.auth_infos.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(users, ["u1", "u2"]);

        // Only missing files: nothing to read (then in-cluster, else an error naming them).
        let none = Files::Env(vec![missing.clone(), dir.join("also-missing")]);
        assert!(load(&none).expect("no error").is_none());
        assert_eq!(
            none.looked(),
            format!(
                "KUBECONFIG ({}, {}: none of them exists)",
                missing.display(),
                dir.join("also-missing").display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_explicit_file_must_exist_and_errors_name_paths_plainly() {
        let dir = scratch("explicit");
        let missing = dir.join("missing");
        let err = load(&Files::Explicit(missing.clone())).expect_err("missing");
        assert!(matches!(err, ClientError::Missing { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "the kubeconfig {} given with --kubeconfig",
                missing.display()
            )),
            "{err}"
        );
        // A file that exists but does not parse fails even in a KUBECONFIG list.
        let broken = dir.join("broken");
        std::fs::write(&broken, "clusters: [this is not: a kubeconfig").unwrap();
        let err = load(&Files::Env(vec![missing, broken.clone()])).expect_err("broken");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot load the kubeconfig {}: ",
                broken.display()
            )),
            "{text}"
        );
        assert!(!text.contains("\"/"), "a path in double quotes: {text}");
        // A directory is not a kubeconfig.
        let err = load(&Files::Explicit(dir.clone())).expect_err("a directory");
        assert!(!err.to_string().contains("\"/"), "{err}");
        assert!(
            err.to_string()
                .ends_with("it is a directory, not a kubeconfig file"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_kubeconfig_is_named_without_its_content() {
        let dir = scratch("not-a-kubeconfig");
        let secrets = [
            // Not YAML of a mapping (as /etc/passwd).
            "root:x:0:0:secret-one:/root:/bin/bash\ndaemon:x:1:1:secret-two:/usr/sbin\n",
            // A mapping whose values have the wrong type (serde quotes them).
            "clusters: secret-three\n",
            // A scalar.
            "secret-four\n",
            // Broken YAML.
            "a: [secret-five\n",
        ];
        for (i, text) in secrets.iter().enumerate() {
            let path = dir.join(format!("file-{i}"));
            std::fs::write(&path, text).unwrap();
            let err = load(&Files::Explicit(path.clone())).expect_err(text);
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "cannot load the kubeconfig {}: it is not a kubeconfig",
                    path.display()
                )),
                "{message}"
            );
            assert!(
                !message.contains("secret"),
                "the file's content leaked: {message}"
            );
            assert!(!message.contains('\n'), "one line: {message}");
        }
        let passwd = load(&Files::Explicit(dir.join("file-0"))).unwrap_err();
        assert!(passwd.to_string().contains("line 1 column 1"), "{passwd}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn huge_names_are_not_echoed_whole() {
        let long = PathBuf::from(format!("/tmp/{}/kubeconfig", "d".repeat(3000)));
        let err = load(&Files::Explicit(long)).expect_err("missing");
        let text = err.to_string();
        assert!(text.len() < 400, "{text}");
        assert!(text.contains("…") && text.contains("/kubeconfig"), "{text}");
        let cluster = KubeconfigError::LoadClusterOfContext("c".repeat(100_000));
        let text = describe_kubeconfig_error(&cluster);
        assert!(
            text.len() < 300 && text.contains("(100000 characters)"),
            "{text}"
        );
        let context = ClientError::Context {
            context: format!(" (context {})", crate::exit::shown(&"c".repeat(100_000))),
            source: KubeconfigError::LoadContext("c".repeat(100_000)),
        };
        let text = context.to_string();
        assert!(
            text.len() < 500 && text.contains("no such context"),
            "{text}"
        );
    }

    fn options(path: &Path) -> ClientOptions {
        ClientOptions {
            kubeconfig: Some(path.to_path_buf()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_path_names_the_proxy_and_tls_name_and_refusals_name_the_entry() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = scratch("path");
        let file = dir.join("config");
        let base = config("c", "https://10.1.2.3:6443", "u", "t", "x") + "current-context: x\n";
        let with = |extra: &str, user_extra: &str| {
            base.replace(
                "cluster: {server: https://10.1.2.3:6443}",
                &format!("cluster: {{server: https://10.1.2.3:6443{extra}}}"),
            )
            .replace(
                "user: {token: t}",
                &format!("user: {{token: t{user_extra}}}"),
            )
        };
        std::fs::write(
            &file,
            with(
                ", proxy-url: 'socks5://me:pw@127.0.0.1:1080', tls-server-name: api.example",
                "",
            ),
        )
        .unwrap();
        let connected = connect(&options(&file)).await.expect("connects");
        assert_eq!(
            connected.path.to_string(),
            "through the SOCKS5 proxy socks5://127.0.0.1:1080 (from the kubeconfig's proxy-url); \
             TLS name api.example (tls-server-name)"
        );

        std::fs::write(&file, with(", proxy-url: 'socks4://127.0.0.1:1080'", "")).unwrap();
        let err = connect(&options(&file))
            .await
            .err()
            .expect("socks4 refused");
        assert!(matches!(err, ClientError::Proxy(_)), "{err}");

        std::fs::write(
            &file,
            with(
                ", insecure-skip-tls-verify: true, certificate-authority-data: AAAA",
                "",
            ),
        )
        .unwrap();
        let err = connect(&options(&file))
            .await
            .err()
            .expect("CA + insecure refused");
        assert!(
            err.to_string()
                .starts_with("the kubeconfig's cluster \"c\" sets both"),
            "{err}"
        );

        std::fs::write(
            &file,
            with("", ", auth-provider: {name: oidc, config: {id-token: x}}"),
        )
        .unwrap();
        let err = connect(&options(&file))
            .await
            .err()
            .expect("auth-provider refused");
        assert_eq!(
            err.to_string().split(';').next().unwrap(),
            "the kubeconfig's user \"u\" uses auth-provider \"oidc\", which czctl does not support"
        );

        std::fs::write(&file, with(", insecure-skip-tls-verify: true", "")).unwrap();
        let connected = connect(&options(&file)).await.expect("insecure connects");
        assert!(connected.path.insecure);
        assert!(connected
            .path
            .to_string()
            .ends_with("TLS certificate NOT checked (insecure-skip-tls-verify)"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn impersonation_flags_round_trip() {
        let imp = Impersonate {
            user: Some("jane".into()),
            groups: vec!["dev".into(), "ops".into()],
            uid: Some("42".into()),
        };
        assert_eq!(
            imp.args(),
            [
                "--as",
                "jane",
                "--as-group",
                "dev",
                "--as-group",
                "ops",
                "--as-uid",
                "42"
            ]
        );
        assert_eq!(Impersonate::from_args(&imp.args()), imp);
        assert_eq!(Impersonate::from_args(&[]), Impersonate::default());
    }

    #[test]
    fn root_has_a_home() {
        assert_eq!(
            home_of("root").as_deref(),
            Some(std::path::Path::new("/root"))
        );
        assert_eq!(home_of("no-such-user-czctl"), None);
    }
}
