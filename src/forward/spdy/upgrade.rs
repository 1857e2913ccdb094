//! Upgrading a `pods/portforward` request to SPDY, the two ways kubectl 1.32 asks: SPDY inside
//! a WebSocket (`SPDY/3.1+portforward.k8s.io`), or an HTTP/1.1 `Upgrade: SPDY/3.1`. Both go
//! through kube-rs's client, so authentication, TLS and proxies are exactly the kube client's.

use std::fmt;

use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use kube::client::Body;
use kube::Client;
use spdy::portforward as pf;
use spdy::ws::WsBytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// A byte stream carrying SPDY frames.
pub trait SpdyIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> SpdyIo for T {}

/// How the SPDY frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// In binary WebSocket messages (`SPDY/3.1+portforward.k8s.io`, API servers >= 1.30).
    WebSocket,
    /// On the connection itself after `Upgrade: SPDY/3.1`.
    Http,
}

impl fmt::Display for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Upgrade::WebSocket => "SPDY over WebSocket",
            Upgrade::Http => "SPDY",
        })
    }
}

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The server answered with an error that is about the request, not the protocol: the pod
    /// is missing (404), the right is missing (403), the credentials are refused (401).
    #[error("{message}")]
    Refused {
        /// HTTP status.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The server did not switch to this protocol (for example 400 for an unknown
    /// subprotocol); another protocol may work.
    #[error("the API server did not switch to {upgrade} (HTTP {code}: {message})")]
    Unsupported {
        /// Which upgrade.
        upgrade: Upgrade,
        /// HTTP status.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The request did not reach the API server, or no answer came back (connection refused,
    /// TLS, timeout): every pod is out of reach until it is back. The text says so.
    #[error("{0}")]
    Unreachable(String),
    /// The request or the connection failed.
    #[error("{0}")]
    Failed(String),
}

/// Upgrades `GET|POST /api/v1/namespaces/NS/pods/POD/portforward` to SPDY.
pub async fn upgrade(
    client: &Client,
    namespace: &str,
    pod: &str,
    how: Upgrade,
) -> Result<Box<dyn SpdyIo>, UpgradeError> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward");
    let key = generate_key();
    let request = match how {
        Upgrade::WebSocket => Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, &key)
            .header(SEC_WEBSOCKET_PROTOCOL, pf::WEBSOCKET_PROTOCOL),
        Upgrade::Http => Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, pf::UPGRADE)
            .header(pf::STREAM_PROTOCOL_HEADER, pf::STREAM_PROTOCOL),
    };
    let request = request
        .body(Body::empty())
        .map_err(|e| UpgradeError::Failed(e.to_string()))?;
    let mut response = client
        .send(request)
        .await
        .map_err(|e| UpgradeError::Unreachable(crate::exit::describe(&e)))?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        return Err(refusal(how, status, &body));
    }
    let headers = response.headers();
    let switched = match how {
        Upgrade::WebSocket => {
            header_is(headers, SEC_WEBSOCKET_PROTOCOL, pf::WEBSOCKET_PROTOCOL)
                && header_is(
                    headers,
                    SEC_WEBSOCKET_ACCEPT,
                    &derive_accept_key(key.as_bytes()),
                )
        }
        Upgrade::Http => header_is(headers, pf::STREAM_PROTOCOL_HEADER, pf::STREAM_PROTOCOL),
    };
    if !switched {
        return Err(UpgradeError::Unsupported {
            upgrade: how,
            code: 101,
            message: "the 101 answer does not confirm the protocol".into(),
        });
    }
    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .map_err(|e| UpgradeError::Failed(format!("taking over the upgraded connection: {e}")))?;
    let io = TokioIo::new(upgraded);
    Ok(match how {
        Upgrade::WebSocket => {
            let socket = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
            Box::new(WsBytes::new(socket))
        }
        Upgrade::Http => Box::new(io),
    })
}

fn header_is(headers: &http::HeaderMap, name: impl http::header::AsHeaderName, want: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// Classifies a non-101 answer by its status and `Status` body.
fn refusal(how: Upgrade, status: StatusCode, body: &[u8]) -> UpgradeError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let code = status.as_u16();
    match code {
        401 | 403 | 404 => UpgradeError::Refused { code, message },
        _ => UpgradeError::Unsupported {
            upgrade: how,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_server_message() {
        let body = br#"{"kind":"Status","message":"pods \"x\" not found","code":404}"#;
        match refusal(Upgrade::WebSocket, StatusCode::NOT_FOUND, body) {
            UpgradeError::Refused { code, message } => {
                assert_eq!((code, message.as_str()), (404, "pods \"x\" not found"));
            }
            other => panic!("{other:?}"),
        }
        let plain = refusal(
            Upgrade::Http,
            StatusCode::BAD_REQUEST,
            b" unable to upgrade \n",
        );
        assert_eq!(
            plain.to_string(),
            "the API server did not switch to SPDY (HTTP 400: unable to upgrade)"
        );
    }
}
