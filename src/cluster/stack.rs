//! The HTTP clients over the [`Connector`]: kube's stack (base URL, retries, credentials,
//! impersonation and extra headers, kube's rustls TLS with tls-server-name) built by hand, since
//! kube-rs's own builder takes no connector of ours; one for API requests and watches, one for
//! long-lived port-forward upgrades.

use kube::{Client, Config};

use super::path::{classify, ApiPath, Connector, PathIo};

/// What a client is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// API requests and watches: kube's default timeouts and retries.
    Requests,
    /// Long-lived upgraded connections (port-forwarding): no read/write timeouts, no retries.
    Streams,
}

/// A client like kube's default one over [`Connector`]: same base URL, TLS (kube's rustls
/// connector, with tls-server-name), credentials (exec plugins included), impersonation and
/// extra headers. Every TCP connection sets TCP_NODELAY (kube-rs's own builder leaves Nagle's
/// algorithm on, and an upgraded port-forward connection then holds a small last segment back
/// until the server's delayed ACK: milliseconds per round trip).
pub(super) fn http_client(
    config: &Config,
    path: &ApiPath,
    connector: Connector,
    purpose: Purpose,
) -> Result<Client, kube::Error> {
    use hyper_util::rt::TokioExecutor;
    use kube::client::retry::RetryPolicy;
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    let https = api_tls(config, path, connector)?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            (config.default_retry && purpose == Purpose::Requests)
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from);
    let client = match purpose {
        Purpose::Requests => {
            let mut timed = hyper_timeout::TimeoutConnector::new(https);
            timed.set_connect_timeout(config.connect_timeout);
            timed.set_read_timeout(config.read_timeout);
            timed.set_write_timeout(config.write_timeout);
            timed.set_reset_reader_on_write(config.reset_reader_on_write);
            let hyper =
                hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(timed);
            Client::new(service.service(hyper), config.default_namespace.clone())
        }
        Purpose::Streams => {
            let hyper =
                hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
            Client::new(service.service(hyper), config.default_namespace.clone())
        }
    };
    Ok(client)
}

/// kube's rustls connector (the API server's TLS) around `connector`, its TLS errors named
/// with the TLS name checked.
fn api_tls(
    config: &Config,
    path: &ApiPath,
    connector: Connector,
) -> Result<
    impl tower::Service<
            http::Uri,
            Response = hyper_rustls::MaybeHttpsStream<PathIo>,
            Error = tower::BoxError,
            Future = impl Send + Unpin,
        > + Clone
        + Send
        + Sync
        + 'static,
    kube::Error,
> {
    use kube::client::ConfigExt;
    use tower::ServiceExt as _;
    let path = path.clone();
    Ok(config
        .rustls_https_connector_with_connector(connector)?
        .map_err(move |e| classify(e, &path)))
}
