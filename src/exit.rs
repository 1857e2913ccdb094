//! Exit codes and the one error type that carries them to `main`.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | unexpected failure |
//! | 2 | usage: bad arguments (clap) |
//! | 3 | kubeconfig, connection or authentication problem |
//! | 4 | forbidden: a Kubernetes right is missing |
//! | 5 | not found: namespace or object does not exist |
//! | 6 | local system: hosts file, addresses, ports, permissions on this machine |
//! | 7 | conflict: the cluster is not as czctl left it (a foreign change, a stale or clashing intercept) |

/// What kind of failure ended the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Unexpected failure.
    Failure = 1,
    /// Bad arguments.
    Usage = 2,
    /// Kubeconfig, connection or authentication.
    Config = 3,
    /// A Kubernetes right is missing.
    Forbidden = 4,
    /// Something named does not exist.
    NotFound = 5,
    /// This machine: hosts file, addresses, ports.
    Local = 6,
    /// The cluster is not as czctl left it, or another intercept is in the way.
    Conflict = 7,
}

/// A failure reported to the user: the message says what failed, why and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// The exit code.
    pub code: Code,
    /// The whole message.
    pub message: String,
}

impl Fatal {
    /// A failure with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

/// Classifies a Kubernetes API error for the exit code and adds the next step to its message.
pub fn from_kube(context: &str, err: &kube::Error) -> Fatal {
    match err {
        kube::Error::Api(status) if status.code == 403 => Fatal::new(
            Code::Forbidden,
            format!("{context}: {}\nAsk your cluster admin for that right (czctl needs list and watch on services and endpointslices, and create on pods/portforward).", status.message),
        ),
        kube::Error::Api(status) if status.code == 401 => Fatal::new(
            Code::Config,
            format!("{context}: the API server does not accept your credentials ({}); log in again or check the kubeconfig user", status.message),
        ),
        kube::Error::Api(status) if status.code == 404 => {
            Fatal::new(Code::NotFound, format!("{context}: {}", status.message))
        }
        kube::Error::Api(status) if status.code == 400 || status.code == 422 => Fatal::new(
            Code::Usage,
            format!("{context}: the API server rejected the request: {}", status.message),
        ),
        kube::Error::Api(status) => Fatal::new(
            Code::Config,
            format!("{context}: the API server answered {} {}: {}", status.code, status.reason, status.message),
        ),
        other => Fatal::new(
            Code::Config,
            format!("{context}: cannot reach the cluster: {}\nCheck that the cluster in your kubeconfig is reachable (kubectl cluster-info).", chain(other)),
        ),
    }
}

/// An error and its causes on one line (`a: b: c`), so "connection refused" is not hidden
/// behind a generic "client error".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
