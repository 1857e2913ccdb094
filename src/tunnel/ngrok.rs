//! The ngrok tunnel: an ngrok HTTP endpoint forwards to the local target, and the router sends
//! matching requests to its public URL. The URL is public, so it is guarded: NGINX adds a
//! random per-session secret header on this route, and the endpoint's traffic policy denies
//! every request without it (and strips it before forwarding). `ngrok-skip-browser-warning` is
//! set by the router so the free plan's interstitial page never answers an API call.
//!
//! The token comes from `NGROK_AUTHTOKEN` and is checked before anything is created (an empty
//! token would only fail at ngrok's server). The ngrok session reconnects by itself after a
//! network change. ngrok cannot be reached from test machines: the configuration and the
//! errors are what the tests check.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ngrok::config::ForwarderBuilder;
use ngrok::prelude::{EndpointInfo, TunnelCloser};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Tunnel, TunnelError, TunnelStats};

/// The environment variable holding the ngrok authtoken.
pub const TOKEN_ENV: &str = "NGROK_AUTHTOKEN";
/// The header the router adds and the endpoint requires.
pub const SECRET_HEADER: &str = "x-czctl-tunnel-secret";

/// Reads and checks the authtoken from `value` (the environment's `NGROK_AUTHTOKEN`).
pub fn check_token(value: Option<String>) -> Result<String, TunnelError> {
    let token = value.unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        return Err(TunnelError::Config(format!(
            "--tunnel ngrok needs an ngrok authtoken in {TOKEN_ENV} (find it at https://dashboard.ngrok.com/get-started/your-authtoken), or use --tunnel cluster, which needs no account"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TunnelError::Config(format!(
            "{TOKEN_ENV} holds characters an ngrok authtoken never has (spaces or control characters); copy it again from the ngrok dashboard"
        )));
    }
    Ok(token.to_string())
}

/// The endpoint's traffic policy: deny requests without the session's secret header, and
/// remove the header from those it lets through.
pub fn traffic_policy(secret: &str) -> String {
    json!({
        "on_http_request": [
            {
                "expressions": [format!(
                    "!('{SECRET_HEADER}' in req.headers) || !req.headers['{SECRET_HEADER}'].exists(v, v == '{secret}')"
                )],
                "actions": [{"type": "deny", "config": {"status_code": 403}}]
            },
            {
                "actions": [{"type": "remove-headers", "config": {"headers": [SECRET_HEADER]}}]
            }
        ]
    })
    .to_string()
}

/// The host of an ngrok endpoint URL (`https://HOST`), checked so it can go into nginx.conf.
pub fn endpoint_host(url: &str) -> Result<String, TunnelError> {
    let host = url
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .ok_or_else(|| {
            TunnelError::Config(format!(
                "ngrok gave an endpoint URL czctl cannot use: {url:?}"
            ))
        })?;
    Ok(host.to_ascii_lowercase())
}

/// An open ngrok endpoint forwarding to the local target.
pub struct NgrokTunnel {
    forwarder: ngrok::forwarder::Forwarder<ngrok::tunnel::HttpTunnel>,
    host: String,
}

impl NgrokTunnel {
    /// Connects to ngrok and opens an HTTP endpoint forwarding to `local`, guarded by `secret`.
    pub async fn open(token: &str, local: SocketAddr, secret: &str) -> Result<Self, TunnelError> {
        let session = ngrok::Session::builder()
            .authtoken(token)
            .connect()
            .await
            .map_err(|e| {
                TunnelError::Config(format!(
                    "cannot start an ngrok session: {}",
                    crate::exit::chain(&e)
                ))
            })?;
        let to = url::Url::parse(&format!("http://{local}"))
            .map_err(|e| TunnelError::Config(format!("local target {local}: {e}")))?;
        let forwarder = session
            .http_endpoint()
            .traffic_policy(traffic_policy(secret))
            .metadata("czctl intercept")
            .listen_and_forward(to)
            .await
            .map_err(|e| {
                TunnelError::Config(format!(
                    "ngrok refused the endpoint: {}",
                    crate::exit::chain(&e)
                ))
            })?;
        let host = endpoint_host(forwarder.url())?;
        info!(url = forwarder.url(), "ngrok endpoint open");
        Ok(NgrokTunnel { forwarder, host })
    }

    /// The endpoint's host name (the router connects to it on 443).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Tunnel for NgrokTunnel {
    fn kind(&self) -> &'static str {
        "ngrok"
    }

    fn run(
        mut self: Box<Self>,
        _local: SocketAddr,
        stop: CancellationToken,
        stats: Arc<TunnelStats>,
    ) -> BoxFuture<'static, Result<(), TunnelError>> {
        async move {
            let ended = tokio::select! {
                _ = stop.cancelled() => None,
                ended = self.forwarder.join() => Some(ended),
            };
            match ended {
                None => {
                    if let Err(e) = self.forwarder.close().await {
                        warn!(error = %e, "closing the ngrok endpoint");
                    }
                    Ok(())
                }
                Some(result) => {
                    let why = match result {
                        Ok(Ok(())) => "the ngrok endpoint closed".to_string(),
                        Ok(Err(e)) => format!("the ngrok endpoint failed: {e}"),
                        Err(e) => format!("the ngrok forwarder stopped: {e}"),
                    };
                    stats.record_error(why.clone());
                    Err(TunnelError::Config(why))
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_checked_before_anything() {
        assert!(check_token(None)
            .unwrap_err()
            .to_string()
            .contains(TOKEN_ENV));
        assert!(check_token(Some("  ".into())).is_err());
        assert!(check_token(Some("abc def".into())).is_err());
        assert_eq!(
            check_token(Some(" 2abcDEF_123 \n".into())).unwrap(),
            "2abcDEF_123"
        );
        let err = check_token(Some("zq9xw\u{7}".into()))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("zq9xw"),
            "the token never appears in errors: {err}"
        );
    }

    #[test]
    fn policy_denies_without_the_secret() {
        let policy: serde_json::Value = serde_json::from_str(&traffic_policy("s3cr3t")).unwrap();
        let deny = &policy["on_http_request"][0];
        assert_eq!(deny["actions"][0]["type"], "deny");
        let expr = deny["expressions"][0].as_str().unwrap();
        assert!(
            expr.contains("'x-czctl-tunnel-secret' in req.headers"),
            "{expr}"
        );
        assert!(expr.contains("v == 's3cr3t'"), "{expr}");
        assert_eq!(
            policy["on_http_request"][1]["actions"][0]["type"],
            "remove-headers"
        );
    }

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("https://Ab-12.ngrok-free.app").unwrap(),
            "ab-12.ngrok-free.app"
        );
        assert!(endpoint_host("http://a.ngrok.app").is_err());
        assert!(endpoint_host("https://a.ngrok.app;include x").is_err());
        assert!(endpoint_host("https://").is_err());
    }
}
