//! The two proxy handshakes: SOCKS5 (tokio-socks; the proxy resolves the API server's name,
//! as with client-go) and HTTP `CONNECT` (hyper's client connection and upgrade). After the
//! handshake the connection is handed on as it is (the TCP or TLS stream itself when nothing
//! was read past the proxy's answer), so the data path keeps its vectored writes.

use base64::Engine as _;
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::{Method, Request, StatusCode};
use kube::client::Body;
use tokio::net::TcpStream;

use hyper_util::rt::TokioIo;

use super::path::{HyperIo, PathError};
use super::proxy::Proxy;

/// The SOCKS5 handshake on `tcp` (connected to `proxy`) for `host:port`.
pub async fn socks5(
    tcp: TcpStream,
    proxy: &Proxy,
    what: &str,
    host: &str,
    port: u16,
) -> Result<Box<dyn HyperIo>, PathError> {
    use tokio_socks::tcp::Socks5Stream;
    use tokio_socks::Error as E;
    let target = (host, port);
    let done = match &proxy.auth {
        Some((user, password)) => {
            Socks5Stream::connect_with_password_and_socket(tcp, target, user, password).await
        }
        None => Socks5Stream::connect_with_socket(tcp, target).await,
    };
    let stream = done.map_err(|e| {
        let what = what.to_string();
        let refused = |detail: &str, unreachable: bool| PathError::ProxyRefused {
            what: what.clone(),
            target: format!("{host}:{port}"),
            detail: detail.to_string(),
            unreachable,
        };
        match e {
            E::NoAcceptableAuthMethods | E::PasswordAuthFailure(_) => PathError::ProxyAuth {
                what,
                given: proxy.auth.is_some(),
            },
            E::ConnectionRefused => refused("connection refused (SOCKS5 reply 5)", true),
            E::HostUnreachable => refused("host unreachable (SOCKS5 reply 4)", true),
            E::NetworkUnreachable => refused("network unreachable (SOCKS5 reply 3)", true),
            E::TtlExpired => refused("TTL expired (SOCKS5 reply 6)", true),
            E::GeneralSocksServerFailure => {
                refused("general SOCKS server failure (SOCKS5 reply 1)", true)
            }
            E::ConnectionNotAllowedByRuleset => {
                refused("not allowed by its rules (SOCKS5 reply 2)", false)
            }
            E::Io(io) => PathError::ProxyProtocol {
                what,
                detail: format!("the SOCKS5 handshake failed: {io}"),
            },
            other => PathError::ProxyProtocol {
                what,
                detail: format!("the SOCKS5 handshake failed: {other}"),
            },
        }
    })?;
    Ok(Box::new(TokioIo::new(stream.into_inner())))
}

/// `CONNECT target` on `io` (connected to `proxy`, in TLS for an HTTPS proxy).
pub async fn connect<T>(
    io: T,
    proxy: &Proxy,
    what: &str,
    target: &str,
) -> Result<Box<dyn HyperIo>, PathError>
where
    T: HyperIo,
{
    let protocol = |detail: String| PathError::ProxyProtocol {
        what: what.to_string(),
        detail,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<T, Body>(io)
        .await
        .map_err(|e| protocol(crate::exit::chain(&e)))?;
    // Drives the proxy connection until the tunnel is taken over (or the proxy answers no).
    let driver = tokio::spawn(connection.without_shutdown());
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header(HOST, target);
    if let Some((user, password)) = &proxy.auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = http::HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| protocol("the proxy credentials are not valid in a header".into()))?;
        value.set_sensitive(true);
        request = request.header(PROXY_AUTHORIZATION, value);
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| protocol(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| protocol(format!("no answer to CONNECT: {}", crate::exit::chain(&e))))?;
    let status = response.status();
    // 407 is the standard answer; some proxies (tinyproxy) answer wrong credentials with 401.
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
        || (status == StatusCode::UNAUTHORIZED && proxy.auth.is_some())
    {
        driver.abort();
        return Err(PathError::ProxyAuth {
            what: what.to_string(),
            given: proxy.auth.is_some(),
        });
    }
    if !status.is_success() {
        driver.abort();
        let detail = format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        );
        return Err(PathError::ProxyRefused {
            what: what.to_string(),
            target: target.to_string(),
            detail,
            unreachable: matches!(status.as_u16(), 500 | 502 | 503 | 504),
        });
    }
    drop(response);
    let parts = driver
        .await
        .map_err(|e| protocol(format!("the CONNECT tunnel failed: {e}")))?
        .map_err(|e| {
            protocol(format!(
                "the CONNECT tunnel failed: {}",
                crate::exit::chain(&e)
            ))
        })?;
    // The client speaks first in TLS: nothing can come from the API server before the
    // ClientHello, so bytes past the proxy's answer are the proxy's mistake.
    if !parts.read_buf.is_empty() {
        return Err(protocol(
            "it sent data after its CONNECT answer, before the tunnel was used".into(),
        ));
    }
    Ok(Box::new(parts.io))
}
