//! The cluster checks: kubeconfig and context, API server reachable, rights in the namespace.

use std::time::Duration;

use super::check::{Area, Check};
use super::rights;
use crate::cluster::client::{self, ClientError, ClientOptions};

/// How long the API server may take to answer `/version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the cluster checks for `namespace` (the context's namespace when `None`).
pub async fn checks(options: &ClientOptions, namespace: Option<&str>) -> Vec<Check> {
    let connected = match client::connect(options).await {
        Ok(connected) => connected,
        Err(e) => {
            let mut out = vec![kubeconfig_failed(&e)];
            out.push(Check::warn(Area::Cluster, "api server", NO_CLIENT));
            out.push(skipped_rights(namespace, NO_CLIENT));
            return out;
        }
    };
    let namespace = namespace
        .unwrap_or_else(|| connected.client.default_namespace())
        .to_string();
    let mut out = vec![Check::pass(
        Area::Cluster,
        "kubeconfig",
        format!("context {}, namespace {namespace}", connected.context),
    )];
    let path = path_check(&connected).await;
    let path_failed = path.status == super::check::Status::Fail;
    out.push(path);
    if path_failed {
        out.push(Check::warn(
            Area::Cluster,
            "api server",
            "skipped: the path to it failed",
        ));
        out.push(skipped_rights(Some(&namespace), UNREACHABLE));
        return out;
    }
    let at = format!(" at {}", connected.server.trim_end_matches('/'));
    let version = tokio::time::timeout(VERSION_TIMEOUT, connected.client.apiserver_version()).await;
    match version {
        Ok(Ok(info)) => {
            out.push(Check::pass(
                Area::Cluster,
                "api server",
                format!("{}{at}", info.git_version),
            ));
            out.extend(rights::check(&connected.client, &namespace).await);
        }
        Ok(Err(e)) => {
            let problem = crate::exit::kube_problem(&e, Some(&connected.server));
            let why = match &e {
                kube::Error::Api(status) if status.code == 401 => {
                    "skipped: the API server refused the credentials"
                }
                kube::Error::Api(_) => "skipped: the API server did not answer /version",
                _ => UNREACHABLE,
            };
            let mut check = Check::fail(Area::Cluster, "api server", problem.what);
            if !problem.fix.is_empty() {
                check = check.with_fix(problem.fix);
            }
            out.push(check);
            out.push(skipped_rights(Some(&namespace), why));
        }
        Err(_) => {
            out.push(
                Check::fail(
                    Area::Cluster,
                    "api server",
                    format!(
                        "no answer from the API server{at} within {}s",
                        VERSION_TIMEOUT.as_secs()
                    ),
                )
                .with_fix(REACH_FIX),
            );
            out.push(skipped_rights(Some(&namespace), UNREACHABLE));
        }
    }
    out
}

/// How the API server is reached (direct, which proxy, which TLS name), and whether its first
/// hops work: a TCP connection, through the proxy when there is one (the TLS handshake and
/// the request are the next check's).
async fn path_check(connected: &client::Connected) -> Check {
    use tower::ServiceExt as _;
    let described = connected.path.to_string();
    let uri: http::Uri = match connected.server.parse() {
        Ok(uri) => uri,
        Err(e) => {
            return Check::fail(
                Area::Cluster,
                "api path",
                format!("{described}; the server URL does not parse: {e}"),
            )
        }
    };
    let probe = connected.connector.clone().oneshot(uri);
    match tokio::time::timeout(VERSION_TIMEOUT, probe).await {
        Ok(Ok(_)) if connected.path.insecure => Check::warn(Area::Cluster, "api path", described)
            .with_fix(
                "remove insecure-skip-tls-verify from the kubeconfig's cluster and set its \
                 certificate-authority instead",
            ),
        Ok(Ok(_)) => Check::pass(Area::Cluster, "api path", described),
        Ok(Err(e)) => {
            let (what, fix) = match e.downcast_ref::<crate::cluster::path::PathError>() {
                Some(hop) => (hop.to_string(), hop.fix()),
                None => (
                    format!(
                        "cannot connect to the API server at {}: {}",
                        connected.server.trim_end_matches('/'),
                        crate::exit::connect_cause(&*e)
                    ),
                    REACH_FIX,
                ),
            };
            Check::fail(Area::Cluster, "api path", what).with_fix(fix)
        }
        Err(_) => Check::fail(
            Area::Cluster,
            "api path",
            format!(
                "{described}: no connection within {}s",
                VERSION_TIMEOUT.as_secs()
            ),
        )
        .with_fix(REACH_FIX),
    }
}

const REACH_FIX: &str = "check that the cluster is reachable from here (kubectl cluster-info): \
                         VPN, proxy settings, or the server address in the kubeconfig";

fn kubeconfig_failed(e: &ClientError) -> Check {
    let fix = match e {
        ClientError::Missing { .. } => {
            "pass the path of a kubeconfig that exists, or leave --kubeconfig out to use \
             KUBECONFIG or ~/.kube/config"
        }
        ClientError::Kubeconfig { .. } | ClientError::NotFound { .. } => {
            "pass --kubeconfig PATH or set KUBECONFIG to a kubeconfig file that exists and parses \
             (kubectl config view)"
        }
        ClientError::Context { .. } => {
            "pick a context that exists: kubectl config get-contexts, then --context NAME"
        }
        ClientError::Build(_) => "check the certificates and proxy settings of the kubeconfig",
        ClientError::Proxy(_) => {
            "fix the proxy URL (the kubeconfig's proxy-url, or HTTPS_PROXY / HTTP_PROXY); \
             kubectl reads the same settings"
        }
        ClientError::Unsupported { fix, .. } | ClientError::Refused { fix, .. } => fix,
    };
    Check::fail(Area::Cluster, "kubeconfig", e.to_string()).with_fix(fix)
}

const NO_CLIENT: &str = "skipped: no client";
const UNREACHABLE: &str = "skipped: the API server is not reachable";

/// The rights checks that could not run, as one warning.
fn skipped_rights(namespace: Option<&str>, why: &str) -> Check {
    let ns = namespace.unwrap_or("the namespace");
    Check::warn(Area::Rights, format!("rights in {ns}"), why)
}
