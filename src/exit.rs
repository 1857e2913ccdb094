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
//!
//! The same table is [`TABLE`] (the man pages' EXIT STATUS; a test keeps the two equal).
//! Kubernetes client errors become messages for people with [`from_kube`] and
//! [`kube_problem`]: a 401 says the credentials were refused (3), a 403 names the missing
//! right (4), a connection failure names the API server and the cause (refused, DNS, TLS) (3),
//! a request too long for a URL (a huge selector or name: the client's limit, or the server's
//! 414) is a usage error (2); never a debug dump of the API's Status.
//!
//! Messages never echo a huge argument back: [`shown`] and [`shown_path`] quote a value cut to
//! about [`SHOWN_CHARS`] characters with "…", and [`Fatal::new`] cuts any longer run of
//! non-blank characters the same way, whoever wrote the message (the API server echoes invalid
//! values whole).

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
    /// A failure with a code and message; runs of more than [`LONG_RUN`] non-blank characters
    /// (a huge argument echoed back) are cut to [`SHOWN_CHARS`] with "…".
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Fatal {
            code,
            message: elide_long_runs(&message.into()),
        }
    }
}

/// How many characters of a value a message shows before "…".
pub const SHOWN_CHARS: usize = 80;

/// A run of non-blank characters longer than this in a [`Fatal`] message is cut.
pub const LONG_RUN: usize = 240;

/// `value` cut to `max` characters, with "…" and the number of characters it has when cut.
pub fn clip(value: &str, max: usize) -> String {
    let count = value.chars().count();
    if count <= max {
        return value.to_string();
    }
    let head: String = value.chars().take(max).collect();
    format!("{head}… ({count} characters)")
}

/// `value` quoted for a message (`"demo"`, control characters escaped), cut to
/// [`SHOWN_CHARS`] characters with "…" when longer.
pub fn shown(value: &str) -> String {
    let count = value.chars().count();
    if count <= SHOWN_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(SHOWN_CHARS).collect();
    let quoted = format!("{head:?}");
    format!(
        "{}…\" ({count} characters)",
        quoted.strip_suffix('"').unwrap_or(&quoted)
    )
}

/// A path for a message, unquoted; a path longer than [`SHOWN_CHARS`] keeps its start and
/// its end (the file name) around "…".
pub fn shown_path(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= SHOWN_CHARS {
        return text;
    }
    let half = SHOWN_CHARS / 2;
    let head: String = chars[..half].iter().collect();
    let tail: String = chars[chars.len() - half..].iter().collect();
    format!("{head}…{tail}")
}

/// `text` with every run of more than [`LONG_RUN`] non-blank characters cut to its first
/// [`SHOWN_CHARS`] characters, "…", and the punctuation that closed it (a quote, a colon).
pub fn elide_long_runs(text: &str) -> String {
    if text.len() <= LONG_RUN {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len().min(4 * LONG_RUN));
    let mut run: Vec<char> = Vec::new();
    let flush = |run: &mut Vec<char>, out: &mut String| {
        if run.len() > LONG_RUN {
            out.extend(&run[..SHOWN_CHARS]);
            out.push('…');
            let closing: Vec<char> = run
                .iter()
                .rev()
                .take(3)
                .take_while(|c| !c.is_alphanumeric())
                .copied()
                .collect();
            out.extend(closing.iter().rev());
        } else {
            out.extend(run.iter());
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut run, &mut out);
            out.push(c);
        } else {
            run.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Every exit code and what it means, as the module documentation and the man pages' EXIT
/// STATUS show them.
pub const TABLE: [(u8, &str); 8] = [
    (0, "success"),
    (1, "unexpected failure"),
    (2, "usage: bad arguments (clap)"),
    (3, "kubeconfig, connection or authentication problem"),
    (4, "forbidden: a Kubernetes right is missing"),
    (5, "not found: namespace or object does not exist"),
    (
        6,
        "local system: hosts file, addresses, ports, permissions on this machine",
    ),
    (
        7,
        "conflict: the cluster is not as czctl left it (a foreign change, a stale or clashing intercept)",
    ),
];

/// The API server this run talks to, for messages about failed requests (one cluster per
/// process); set by [`crate::cluster::client::connect`].
static SERVER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Remembers the API server URL that later error messages name.
pub fn set_server(url: &str) {
    if let Ok(mut server) = SERVER.lock() {
        *server = Some(url.trim_end_matches('/').to_string());
    }
}

fn server() -> Option<String> {
    SERVER.lock().ok().and_then(|s| s.clone())
}

/// What went wrong with a Kubernetes request, for people: no debug dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeProblem {
    /// The exit code it deserves.
    pub code: Code,
    /// What happened, on one line: `the API server at URL refused the credentials (401
    /// Unauthorized)`, `cannot reach the API server at URL: connection refused ...`.
    pub what: String,
    /// The next step.
    pub fix: String,
}

/// Classifies a Kubernetes client error; `server` is the API server URL to name (the one
/// given to [`set_server`] when `None`).
pub fn kube_problem(err: &kube::Error, server: Option<&str>) -> KubeProblem {
    let server = server
        .map(|s| s.trim_end_matches('/').to_string())
        .or_else(self::server);
    classify(err, server.as_deref(), true)
}

/// [`kube_problem`]; `name_server` says whether messages name `server` (the caller's context
/// may name it already).
fn classify(err: &kube::Error, server: Option<&str>, name_server: bool) -> KubeProblem {
    let at = server
        .filter(|_| name_server)
        .map(|s| format!(" at {s}"))
        .unwrap_or_default();
    match err {
        kube::Error::Api(status) => api_problem(status, &at),
        kube::Error::BuildRequest(e) => KubeProblem {
            code: Code::Usage,
            what: if too_long(err) {
                "the request is too long to send (its URL would pass the 64 KiB limit): an \
                 argument is far too long"
                    .to_string()
            } else {
                format!("cannot build the request: {}", chain(e))
            },
            fix: "shorten the argument".into(),
        },
        kube::Error::Auth(e) => KubeProblem {
            code: Code::Config,
            what: format!(
                "cannot get credentials for the API server{at}: {}",
                chain(e)
            ),
            fix: "check the user of the context in the kubeconfig (kubectl config view \
                  --minify): its exec plugin, token file or client certificate"
                .into(),
        },
        other => {
            let (cause, fix) = connection_cause(other, server);
            KubeProblem {
                code: Code::Config,
                what: format!("cannot reach the API server{at}: {cause}"),
                fix: fix.into(),
            }
        }
    }
}

/// Whether `err` says a request was too long for a URL: the client's own limit (`uri too
/// long`, about 64 KiB) or the API server's 414.
pub fn too_long(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 414,
        kube::Error::BuildRequest(_) => chain(err).contains("uri too long"),
        _ => false,
    }
}

fn api_problem(status: &kube::core::Status, at: &str) -> KubeProblem {
    let reason = if status.reason.is_empty() {
        String::new()
    } else {
        format!(" {}", status.reason)
    };
    // The server echoes invalid values whole (a 100 kB name): cut them.
    let message = elide_long_runs(status.message.trim());
    let message = message.as_str();
    let with_message = |text: String| {
        if message.is_empty() || message.eq_ignore_ascii_case(status.reason.as_str()) {
            text
        } else {
            format!("{text}: {message}")
        }
    };
    match status.code {
        401 => KubeProblem {
            code: Code::Config,
            what: with_message(format!(
                "the API server{at} refused the credentials of your kubeconfig (401{reason})"
            )),
            fix: "log in again (a token or client certificate may have expired), or check the \
                  user of the context: kubectl config view --minify"
                .into(),
        },
        403 => {
            let fix = match missing_right(message) {
                Some(right) => format!(
                    "ask your cluster admin for that right (check it with: kubectl auth can-i {right})"
                ),
                None => "ask your cluster admin for that right (kubectl auth can-i --list shows \
                         yours)"
                    .into(),
            };
            KubeProblem {
                code: Code::Forbidden,
                what: if message.is_empty() {
                    format!("forbidden (403{reason})")
                } else {
                    message.to_string()
                },
                fix,
            }
        }
        404 => KubeProblem {
            code: Code::NotFound,
            what: with_message(format!("not found (404{reason})")),
            fix: String::new(),
        },
        414 => KubeProblem {
            code: Code::Usage,
            what: format!(
                "the API server{at} refused a request whose URL is too long (414{reason})"
            ),
            fix: "shorten the argument".into(),
        },
        400 | 422 => KubeProblem {
            code: Code::Usage,
            what: with_message(format!(
                "the API server rejected the request ({}{reason})",
                status.code
            )),
            fix: String::new(),
        },
        code => KubeProblem {
            code: Code::Config,
            what: with_message(format!("the API server{at} answered {code}{reason}")),
            fix: "try again; if it persists, check the API server (kubectl cluster-info)".into(),
        },
    }
}

/// The right a 403 message names, as `kubectl auth can-i` takes it: the API server says
/// `... cannot VERB resource "RESOURCE[/SUB]" in API group "GROUP" in the namespace "NS"`.
fn missing_right(message: &str) -> Option<String> {
    let rest = &message[message.find(" cannot ")? + " cannot ".len()..];
    let (verb, rest) = rest.split_once(" resource \"")?;
    let (resource, rest) = rest.split_once('"')?;
    let group = rest
        .split_once("in API group \"")
        .and_then(|(_, g)| g.split_once('"'))
        .map(|(g, _)| g)
        .unwrap_or("");
    let namespace = rest
        .split_once("in the namespace \"")
        .and_then(|(_, n)| n.split_once('"'))
        .map(|(n, _)| n);
    if verb.contains(' ') || resource.is_empty() {
        return None;
    }
    let (resource, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let mut right = format!("{verb} {resource}");
    if !group.is_empty() {
        right.push('.');
        right.push_str(group);
    }
    if let Some(sub) = sub {
        right.push_str(&format!(" --subresource={sub}"));
    }
    // Without a namespace the request was at the cluster scope.
    if let Some(ns) = namespace {
        right.push_str(&format!(" -n {ns}"));
    }
    Some(right)
}

/// Why a connection to the API server failed, and what to check.
fn connection_cause(err: &kube::Error, server: Option<&str>) -> (String, &'static str) {
    const ADDRESS: &str = "check the server address in the kubeconfig and that the cluster is \
                           reachable from here (kubectl cluster-info): VPN, proxy settings";
    const TLS: &str = "check the cluster's certificate-authority(-data) in the kubeconfig, or \
                       fetch a fresh kubeconfig for the cluster";
    let host = server
        .and_then(|s| s.split_once("://").map(|(_, rest)| rest))
        .map(|rest| rest.split(['/', ':']).next().unwrap_or(rest).to_string());
    // A hop of the path named itself (a proxy, or TLS with the name it checked).
    for e in causes(err) {
        if let Some(path) = e.downcast_ref::<crate::cluster::path::PathError>() {
            return (path.to_string(), path.fix());
        }
    }
    for e in causes(err) {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return (tls_cause(tls, host.as_deref()), TLS);
        }
        if let Some(cause) = e.downcast_ref::<std::io::Error>().and_then(io_cause) {
            return (cause, ADDRESS);
        }
    }
    let text = chain(err);
    if let Some(at) = text.find("dns error: ") {
        let detail = &text[at + "dns error: ".len()..];
        let name = host.map(|h| format!(" {h}")).unwrap_or_default();
        return (
            format!("the host name{name} does not resolve (DNS: {detail})"),
            ADDRESS,
        );
    }
    let text = text
        .trim_start_matches("ServiceError: ")
        .trim_start_matches("HyperError: ")
        .trim_start_matches("client error (Connect): ")
        .to_string();
    (text, ADDRESS)
}

/// A failed connection's I/O error for people, when its kind says something plain.
fn io_cause(io: &std::io::Error) -> Option<String> {
    Some(match io.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused: nothing listens at that address and port".to_string()
        }
        std::io::ErrorKind::TimedOut => "the connection timed out".to_string(),
        std::io::ErrorKind::ConnectionReset => "the server reset the connection".to_string(),
        std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
            io.to_string()
        }
        _ => return None,
    })
}

/// Why a connection failed, for people: the plain cause of the I/O error in `err`'s chain
/// (connection refused, timed out…), else the whole chain.
pub fn connect_cause(err: &(dyn std::error::Error + 'static)) -> String {
    causes(err)
        .into_iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>().and_then(io_cause))
        .unwrap_or_else(|| chain(err))
}

/// `err` and its causes, looking inside I/O errors too (their `source` skips the error they
/// wrap, such as a TLS error).
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e);
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        next = wrapped.or_else(|| e.source());
    }
    out
}

/// Whether `err` or a cause of it is a TLS error.
pub fn has_tls_error(err: &(dyn std::error::Error + 'static)) -> bool {
    causes(err)
        .iter()
        .any(|e| e.downcast_ref::<rustls::Error>().is_some())
}

/// Whether the TLS error in `err` is a certificate not valid for the name checked.
pub fn tls_name_mismatch(err: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::CertificateError as C;
    causes(err).iter().any(|e| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. }
            ))
        )
    })
}

/// The TLS error in `err` for people ("TLS: the server's certificate is not valid for
/// NAME"), else its chain.
pub fn tls_text(err: &(dyn std::error::Error + 'static), name: &str) -> String {
    causes(err)
        .iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())
        .map(|tls| tls_cause(tls, Some(name)))
        .unwrap_or_else(|| chain(err))
}

fn tls_cause(err: &rustls::Error, host: Option<&str>) -> String {
    use rustls::CertificateError as C;
    let host = host.unwrap_or("its address");
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "TLS: the server's certificate is not signed by the certificate authority in the \
             kubeconfig (unknown issuer)"
                .into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            format!("TLS: the server's certificate is not valid for {host}")
        }
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            "TLS: the server's certificate has expired".into()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// A Kubernetes client error on one line, for people: what [`kube_problem`] says, without
/// the fix.
pub fn describe(err: &kube::Error) -> String {
    kube_problem(err, None).what
}

/// Classifies a Kubernetes API error for the exit code and adds the next step to its message.
/// Connection and credential problems name the API server (see [`set_server`]); no debug
/// dumps.
pub fn from_kube(context: &str, err: &kube::Error) -> Fatal {
    let server = server();
    // The context often names the server already ("cannot check namespace demo at URL").
    let named = server.as_deref().is_some_and(|s| context.contains(s));
    let problem = classify(err, server.as_deref(), !named);
    let mut message = format!("{context}: {}", problem.what);
    let mut fix = problem.fix.chars();
    if let Some(first) = fix.next() {
        message.push('\n');
        message.extend(first.to_uppercase());
        message.push_str(fix.as_str());
        message.push('.');
    }
    Fatal::new(problem.code, message)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn the_module_table_is_the_exit_status_table() {
        let rows: Vec<String> = include_str!("exit.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string)
            .collect();
        let table: Vec<String> = TABLE
            .iter()
            .map(|(code, meaning)| format!("{code} | {meaning} |"))
            .collect();
        assert_eq!(rows, table);
        for code in [
            Code::Failure,
            Code::Usage,
            Code::Config,
            Code::Forbidden,
            Code::NotFound,
            Code::Local,
            Code::Conflict,
        ] {
            assert!(TABLE.iter().any(|(c, _)| *c == code as u8), "{code:?}");
        }
    }

    #[test]
    fn a_401_says_the_credentials_were_refused_without_a_dump() {
        let problem = kube_problem(
            &api(401, "Unauthorized", "Unauthorized"),
            Some("https://k:6443/"),
        );
        assert_eq!(problem.code, Code::Config);
        assert_eq!(
            problem.what,
            "the API server at https://k:6443 refused the credentials of your kubeconfig (401 Unauthorized)"
        );
        assert!(problem.fix.contains("log in again"), "{}", problem.fix);
        let fatal = from_kube(
            "listing services",
            &api(401, "Unauthorized", "Unauthorized"),
        );
        assert_eq!(fatal.code, Code::Config);
        assert!(!fatal.message.contains("Status {"), "{}", fatal.message);
        assert!(!fatal.message.contains("ApiError"), "{}", fatal.message);
    }

    #[test]
    fn a_403_names_the_missing_right() {
        let message = r#"pods "web-1" is forbidden: User "dev" cannot create resource "pods/portforward" in API group "" in the namespace "demo""#;
        let fatal = from_kube("forwarding", &api(403, "Forbidden", message));
        assert_eq!(fatal.code, Code::Forbidden);
        assert!(fatal
            .message
            .starts_with(&format!("forwarding: {message}\n")));
        assert!(
            fatal
                .message
                .contains("kubectl auth can-i create pods --subresource=portforward -n demo"),
            "{}",
            fatal.message
        );
        let cluster = r#"namespaces is forbidden: User "dev" cannot list resource "namespaces" in API group "" at the cluster scope"#;
        assert_eq!(missing_right(cluster).as_deref(), Some("list namespaces"));
        let grouped = r#"endpointslices.discovery.k8s.io is forbidden: User "dev" cannot watch resource "endpointslices" in API group "discovery.k8s.io" in the namespace "x""#;
        assert_eq!(
            missing_right(grouped).as_deref(),
            Some("watch endpointslices.discovery.k8s.io -n x")
        );
        assert_eq!(missing_right("forbidden"), None);
    }

    #[test]
    fn other_statuses_keep_their_codes() {
        let missing = from_kube(
            "reading x",
            &api(404, "NotFound", r#"services "x" not found"#),
        );
        assert_eq!(missing.code, Code::NotFound);
        assert_eq!(
            missing.message,
            r#"reading x: not found (404 NotFound): services "x" not found"#
        );
        assert_eq!(
            from_kube("patching", &api(422, "Invalid", "bad")).code,
            Code::Usage
        );
        let busy = kube_problem(&api(503, "ServiceUnavailable", "later"), Some("https://k"));
        assert_eq!(busy.code, Code::Config);
        assert_eq!(
            busy.what,
            "the API server at https://k answered 503 ServiceUnavailable: later"
        );
    }

    /// The error kube gives for a request whose URL passes the `http` crate's limit.
    fn uri_too_long() -> kube::Error {
        let url = format!("/api/v1/services?labelSelector={}", "a".repeat(70_000));
        let err = http::Request::builder()
            .uri(url)
            .body(())
            .expect_err("too long a URI");
        kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(err))
    }

    #[test]
    fn a_request_too_long_for_a_url_is_a_usage_error() {
        let client = uri_too_long();
        assert!(too_long(&client));
        let fatal = from_kube("cannot list services", &client);
        assert_eq!(fatal.code, Code::Usage, "{}", fatal.message);
        assert!(fatal.message.contains("too long"), "{}", fatal.message);
        assert!(!fatal.message.contains("reach"), "{}", fatal.message);
        let server = api(414, "RequestURITooLong", "");
        assert!(too_long(&server));
        assert_eq!(from_kube("listing", &server).code, Code::Usage);
        assert!(!too_long(&api(400, "BadRequest", "uri too long")));
    }

    #[test]
    fn long_values_are_shown_cut() {
        assert_eq!(shown("demo"), "\"demo\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let huge = "a".repeat(100_000);
        let cut = shown(&huge);
        assert_eq!(
            cut,
            format!("\"{}…\" (100000 characters)", "a".repeat(SHOWN_CHARS))
        );
        assert_eq!(clip("abc", 2), "ab… (3 characters)");
        assert_eq!(clip("abc", 3), "abc");
        let path = format!("/home/u/{}/kubeconfig", "d".repeat(200));
        let shown = shown_path(std::path::Path::new(&path));
        assert!(
            shown.starts_with("/home/u/d") && shown.ends_with("d/kubeconfig"),
            "{shown}"
        );
        assert_eq!(shown.chars().count(), SHOWN_CHARS + 1);
        assert_eq!(shown_path(std::path::Path::new("/etc/hosts")), "/etc/hosts");
    }

    #[test]
    fn fatal_messages_never_carry_a_huge_run() {
        let huge = "x".repeat(100_000);
        let fatal = Fatal::new(
            Code::Usage,
            format!("namespace \"{huge}\": not found\nFix it."),
        );
        assert_eq!(
            fatal.message,
            // The run starts at the quote: 80 characters with it.
            format!(
                "namespace \"{}…\": not found\nFix it.",
                "x".repeat(SHOWN_CHARS - 1)
            )
        );
        // Ordinary messages, long ones too, are left alone.
        let words = "word ".repeat(200);
        assert_eq!(Fatal::new(Code::Usage, words.clone()).message, words);
        let run = "y".repeat(LONG_RUN);
        assert_eq!(Fatal::new(Code::Usage, run.clone()).message, run);
        // An API message echoing a huge value is cut too.
        let problem = kube_problem(
            &api(
                422,
                "Invalid",
                &format!("Service \"{huge}\" is invalid: bad"),
            ),
            None,
        );
        assert!(problem.what.len() < 300, "{}", problem.what);
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_server_and_the_cause() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("http://127.0.0.1:{port}");
        let config = kube::Config::new(url.parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let err = client
            .apiserver_version()
            .await
            .expect_err("nothing listens");
        let problem = kube_problem(&err, Some(&url));
        assert_eq!(problem.code, Code::Config);
        assert_eq!(
            problem.what,
            format!(
                "cannot reach the API server at {url}: connection refused: nothing listens at \
                 that address and port"
            )
        );
    }
}
