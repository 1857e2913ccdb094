//! Building the Kubernetes client as kubectl would: `--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config` (the invoking user's when run under sudo), `--context`, exec credential
//! plugins, and the in-cluster service account as a last resort.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

/// Where the client's configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `--kubeconfig PATH`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context NAME`.
    pub context: Option<String>,
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("cannot load the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig has no usable context / cluster / user.
    #[error("the kubeconfig cannot be used{context}: {source}")]
    Context {
        /// ` (context X)` when one was asked for.
        context: String,
        /// The cause.
        #[source]
        source: KubeconfigError,
    },
    /// No kubeconfig and not inside a cluster.
    #[error(
        "no kubeconfig found (looked at --kubeconfig, KUBECONFIG and {default}) and not running in a cluster; \
         pass --kubeconfig PATH or set KUBECONFIG"
    )]
    NotFound {
        /// The default path looked at.
        default: String,
    },
    /// The HTTP client could not be built (TLS material, proxy settings).
    #[error("cannot build the Kubernetes client: {0}")]
    Build(#[source] kube::Error),
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
}

/// Builds the client.
pub async fn connect(options: &ClientOptions) -> Result<Connected, ClientError> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..Default::default()
    };
    let explicit = options.kubeconfig.clone().or_else(sudo_user_kubeconfig);
    let kubeconfig = match &explicit {
        Some(path) => {
            Some(
                Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?,
            )
        }
        None => match Kubeconfig::read() {
            Ok(k) => Some(k),
            Err(_) if std::env::var_os("KUBECONFIG").is_none() && !default_path().exists() => None,
            Err(source) => {
                return Err(ClientError::Kubeconfig {
                    path: std::env::var("KUBECONFIG")
                        .unwrap_or_else(|_| default_path().display().to_string()),
                    source,
                })
            }
        },
    };
    let Some(kubeconfig) = kubeconfig else {
        let config = Config::incluster().map_err(|_| ClientError::NotFound {
            default: default_path().display().to_string(),
        })?;
        let server = config.cluster_url.to_string();
        let streams = streaming_client(config.clone()).map_err(ClientError::Build)?;
        let client = Client::try_from(config).map_err(ClientError::Build)?;
        return Ok(Connected {
            client,
            streams,
            context: "in-cluster".into(),
            server,
        });
    };
    let context = options
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_default();
    let config = Config::from_custom_kubeconfig(kubeconfig, &kube_options)
        .await
        .map_err(|source| ClientError::Context {
            context: options
                .context
                .as_ref()
                .map(|c| format!(" (context {c})"))
                .unwrap_or_default(),
            source,
        })?;
    let server = config.cluster_url.to_string();
    let streams = streaming_client(config.clone()).map_err(ClientError::Build)?;
    let client = Client::try_from(config).map_err(ClientError::Build)?;
    Ok(Connected {
        client,
        streams,
        context,
        server,
    })
}

/// A client like kube's default one whose TCP connections set TCP_NODELAY (kube-rs's builder
/// leaves Nagle's algorithm on, and an upgraded port-forward connection then holds a small
/// last segment back until the server's delayed ACK: milliseconds per round trip). Same
/// base URL, TLS, credentials (exec plugins included) and extra headers; with a proxy
/// configured, kube's own builder is used (its proxy connectors), Nagle and all.
fn streaming_client(config: Config) -> Result<Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

fn default_path() -> PathBuf {
    home_dir().unwrap_or_default().join(".kube").join("config")
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Under `sudo`, root's kubeconfig is not the one the user means: use the invoking user's,
/// unless KUBECONFIG says otherwise.
fn sudo_user_kubeconfig() -> Option<PathBuf> {
    if std::env::var_os("KUBECONFIG").is_some() {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let user = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")?;
    let home = home_of(&user)?;
    let path = home.join(".kube").join("config");
    path.exists().then_some(path)
}

/// The home directory of `user` from the password database.
fn home_of(user: &str) -> Option<PathBuf> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy what we need
    // before any other call could overwrite it.
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
        Some(PathBuf::from(dir.to_string_lossy().into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_home() {
        assert_eq!(
            home_of("root").as_deref(),
            Some(std::path::Path::new("/root"))
        );
        assert_eq!(home_of("no-such-user-czctl"), None);
    }
}
