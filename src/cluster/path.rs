//! The path of every connection to the API server: TCP (with `TCP_NODELAY`), then, with a
//! proxy, its handshake (SOCKS5, or HTTP `CONNECT` over TCP or over TLS), under the TLS of the
//! API server itself (kube's rustls connector, wrapped around [`Connector`]). API requests,
//! watches and the upgraded port-forward connections (WebSocket and SPDY) all take it: they
//! are requests of the same kube client.
//!
//! A connection that fails says which hop failed ([`PathError`]): the proxy is unreachable,
//! its TLS failed, it wants credentials, it would not connect to the API server, it timed
//! out; or the API server's TLS failed (with the TLS name that was checked).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tower::{BoxError, Service};

use super::proxy::{Proxy, Route, Scheme};

/// A byte stream to the API server (before its TLS).
pub trait HyperIo: Read + Write + Send + Unpin + 'static {}
impl<T: Read + Write + Send + Unpin + 'static> HyperIo for T {}

/// A connection made by [`Connector`]: plain TCP, or a tunnel through a proxy.
pub struct PathIo(Box<dyn HyperIo>);

impl Read for PathIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl Write for PathIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for PathIo {
    /// A tunnel, never a forwarding proxy: requests keep their origin form.
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// How connections reach the API server: the route (direct or which proxy) and TLS.
#[derive(Debug, Clone)]
pub struct ApiPath {
    /// Direct, or through which proxy.
    pub route: Route,
    /// The name the server's certificate is checked against.
    pub tls_name: String,
    /// Whether that name is the kubeconfig's `tls-server-name` (else the server URL's host).
    pub tls_name_configured: bool,
    /// `insecure-skip-tls-verify`: the certificate is not checked at all.
    pub insecure: bool,
}

impl std::fmt::Display for ApiPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; ", self.route)?;
        if self.insecure {
            f.write_str("TLS certificate NOT checked (insecure-skip-tls-verify)")
        } else if self.tls_name_configured {
            write!(f, "TLS name {} (tls-server-name)", self.tls_name)
        } else {
            write!(f, "TLS name {} (from the server URL)", self.tls_name)
        }
    }
}

/// A hop of the path that failed, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No TCP connection to the proxy.
    #[error("cannot connect to the {what}: {}", crate::exit::connect_cause(source.as_ref()))]
    ProxyUnreachable {
        /// The proxy, as named in messages.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake with an HTTPS proxy failed.
    #[error("TLS with the {what} failed: {}", crate::exit::chain(&**source))]
    ProxyTls {
        /// The proxy.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The proxy wants credentials, or refused the ones given.
    #[error("the {what} {}", if *given { "refused the user name and password of its URL" } else { "asks for a user name and password (HTTP 407 or SOCKS5 authentication)" })]
    ProxyAuth {
        /// The proxy.
        what: String,
        /// Whether the URL had credentials.
        given: bool,
    },
    /// The proxy would not connect to the API server.
    #[error("the {what} would not connect to the API server {target}: {detail}")]
    ProxyRefused {
        /// The proxy.
        what: String,
        /// `host:port` of the API server.
        target: String,
        /// The proxy's answer.
        detail: String,
        /// Whether the proxy said it could not reach the target (rather than forbidding it).
        unreachable: bool,
    },
    /// The proxy did not speak its protocol.
    #[error("the {what} did not answer as one: {detail}")]
    ProxyProtocol {
        /// The proxy.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The proxy's handshake took too long.
    #[error("the {what} did not open a connection to the API server within {secs}s")]
    ProxyTimeout {
        /// The proxy.
        what: String,
        /// The limit.
        secs: u64,
    },
    /// The TLS handshake with the API server failed.
    #[error("{}", api_tls_text(name, *configured, via, source.as_ref()))]
    ApiTls {
        /// The name the certificate was checked against.
        name: String,
        /// Whether it is the kubeconfig's `tls-server-name`.
        configured: bool,
        /// `; through the … proxy …` when there is one.
        via: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl PathError {
    /// The next step for the user.
    pub fn fix(&self) -> &'static str {
        match self {
            PathError::ProxyUnreachable { .. } | PathError::ProxyTimeout { .. } => {
                "check that the proxy runs and that its address is right (the kubeconfig's \
                 proxy-url, or HTTPS_PROXY / HTTP_PROXY); kubectl uses the same setting"
            }
            PathError::ProxyTls { .. } => {
                "an https:// proxy's certificate is checked against the kubeconfig's \
                 certificate-authority, as kubectl does: use an http:// proxy URL, or a proxy \
                 certificate that CA signed"
            }
            PathError::ProxyAuth { .. } => {
                "put the proxy's user name and password in its URL: \
                 http://USER:PASSWORD@HOST:PORT (percent-encode special characters)"
            }
            PathError::ProxyRefused {
                unreachable: true, ..
            } => {
                "the proxy cannot reach the API server: check the server address in the \
                 kubeconfig, and that the proxy's side of the network can reach it"
            }
            PathError::ProxyRefused { .. } => {
                "the proxy's rules forbid this destination: ask its admin to allow the API \
                 server's host and port, or use NO_PROXY to go around it"
            }
            PathError::ProxyProtocol { .. } => {
                "check the proxy URL's scheme (http, https or socks5) and port"
            }
            PathError::ApiTls { source, .. } => {
                if crate::exit::tls_name_mismatch(source.as_ref()) {
                    "set tls-server-name in the kubeconfig's cluster to a name on the API \
                     server's certificate (kubectl config set-cluster NAME \
                     --tls-server-name=DNS-NAME), or use such a name in its server URL"
                } else {
                    "check the cluster's certificate-authority(-data) in the kubeconfig, or \
                     fetch a fresh kubeconfig for the cluster"
                }
            }
        }
    }
}

/// Connects to the API server along its [`Route`] (the first hops; TLS to the API server is
/// added around it).
#[derive(Clone)]
pub struct Connector {
    route: Arc<Route>,
    tcp: HttpConnector,
    /// For an `https://` proxy: TLS to the proxy, with the cluster's TLS settings (client-go
    /// uses the same TLS configuration for the proxy as for the API server).
    proxy_tls: Option<hyper_rustls::HttpsConnector<HttpConnector>>,
    timeout: Option<Duration>,
}

impl Connector {
    /// A connector along `route`; `config` gives the connect timeout and, for an HTTPS proxy,
    /// the TLS settings.
    pub fn new(route: Route, config: &kube::Config) -> Result<Connector, kube::Error> {
        use kube::client::ConfigExt;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(config.connect_timeout);
        let proxy_tls = match route.proxy() {
            Some(proxy) if proxy.scheme == Scheme::Https => {
                Some(config.rustls_https_connector_with_connector(tcp.clone())?)
            }
            _ => None,
        };
        Ok(Connector {
            route: Arc::new(route),
            tcp,
            proxy_tls,
            timeout: config.connect_timeout,
        })
    }

    async fn connect(mut self, dst: Uri) -> Result<PathIo, BoxError> {
        let Some(proxy) = self.route.proxy().cloned() else {
            let tcp = self.tcp.call(dst).await?;
            return Ok(PathIo(Box::new(tcp)));
        };
        let what = what(&proxy);
        let limit = self.timeout;
        let work = self.through(proxy, what.clone(), dst);
        match limit {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => Err(PathError::ProxyTimeout {
                    what,
                    secs: limit.as_secs(),
                }
                .into()),
            },
            None => work.await,
        }
    }

    async fn through(&mut self, proxy: Proxy, what: String, dst: Uri) -> Result<PathIo, BoxError> {
        let host = dst
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = dst.scheme_str() != Some("http");
        let port = dst.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bracketed = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_string()
            }
        };
        let proxy_uri: Uri = format!(
            "{}://{}:{}",
            if proxy.scheme == Scheme::Https {
                "https"
            } else {
                "http"
            },
            bracketed(&proxy.host),
            proxy.port
        )
        .parse()?;
        let target = format!("{}:{port}", bracketed(&host));
        match (proxy.scheme, self.proxy_tls.as_mut()) {
            (Scheme::Https, Some(tls)) => {
                let io = tls.call(proxy_uri).await.map_err(|e| {
                    let source: BoxError = e;
                    if crate::exit::has_tls_error(source.as_ref()) {
                        PathError::ProxyTls {
                            what: what.clone(),
                            source,
                        }
                    } else {
                        PathError::ProxyUnreachable {
                            what: what.clone(),
                            source,
                        }
                    }
                })?;
                super::tunnel::connect(io, &proxy, &what, &target).await
            }
            (scheme, _) => {
                let tcp =
                    self.tcp
                        .call(proxy_uri)
                        .await
                        .map_err(|e| PathError::ProxyUnreachable {
                            what: what.clone(),
                            source: e.into(),
                        })?;
                if scheme == Scheme::Socks5 {
                    super::tunnel::socks5(tcp.into_inner(), &proxy, &what, &host, port).await
                } else {
                    super::tunnel::connect(tcp, &proxy, &what, &target).await
                }
            }
        }
        .map(PathIo)
        .map_err(BoxError::from)
    }
}

/// [`PathError::ApiTls`] for people: the name and where it came from only when the
/// certificate does not match it.
fn api_tls_text(
    name: &str,
    configured: bool,
    via: &str,
    source: &(dyn std::error::Error + 'static),
) -> String {
    let text = crate::exit::tls_text(source, name);
    let from = if configured {
        "the kubeconfig's tls-server-name"
    } else {
        "the host of the server URL"
    };
    match (crate::exit::tls_name_mismatch(source), via.is_empty()) {
        (true, _) => format!("{text} ({from}{via})"),
        (false, false) => format!("{text} ({})", via.trim_start_matches("; ")),
        (false, true) => text,
    }
}

/// `SOCKS5 proxy socks5://h:p (from …)`.
pub fn what(proxy: &Proxy) -> String {
    format!(
        "{} {} (from {})",
        proxy.scheme.kind(),
        proxy.shown(),
        proxy.source
    )
}

impl Service<Uri> for Connector {
    type Response = PathIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PathIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Box::pin(self.clone().connect(dst))
    }
}

/// Wraps an error of the API server's TLS connector: a TLS failure becomes
/// [`PathError::ApiTls`] naming the TLS name (and the proxy); anything else stays as it is.
pub fn classify(err: BoxError, path: &ApiPath) -> BoxError {
    if err.downcast_ref::<PathError>().is_some() || !crate::exit::has_tls_error(err.as_ref()) {
        return err;
    }
    let via = path
        .route
        .proxy()
        .map(|p| format!("; through the {}", what(p)))
        .unwrap_or_default();
    PathError::ApiTls {
        name: path.tls_name.clone(),
        configured: path.tls_name_configured,
        via,
        source: err,
    }
    .into()
}
