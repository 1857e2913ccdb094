//! Which proxy, if any, carries the connections to the API server: kubectl's rules, so a
//! kubeconfig and environment that work for kubectl work for czctl the same way.
//!
//! - The cluster's `proxy-url` in the kubeconfig wins and is used for every request;
//!   `NO_PROXY` does not apply to it. Its scheme must be `http`, `https` or `socks5`
//!   (client-go's validation).
//! - Else the environment, as Go's `http.ProxyFromEnvironment`: `HTTPS_PROXY` (then
//!   `https_proxy`) for an `https://` server, `HTTP_PROXY` (then `http_proxy`) for an `http://`
//!   one; a value without a scheme means `http://`. `ALL_PROXY` is not read (Go does not).
//! - An environment proxy is never used for `localhost` or a loopback address, nor for a host
//!   that `NO_PROXY` (then `no_proxy`) matches: `*`; an IP address or CIDR range; a domain
//!   name, which matches itself and its subdomains (`example.com`, `.example.com` and
//!   `*.example.com` all match `api.example.com`); each optionally with `:port`.
//!
//! Everything here is pure: the environment comes in as a function, so the rules are tested
//! without touching the process's environment.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The kind of proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// An HTTP proxy, tunnelled through with `CONNECT`.
    Http,
    /// An HTTP proxy reached over TLS, tunnelled through with `CONNECT`.
    Https,
    /// A SOCKS5 proxy; the API server's host name is resolved by the proxy.
    Socks5,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Socks5 => 1080,
        }
    }

    /// How the proxy is named in messages.
    pub fn kind(self) -> &'static str {
        match self {
            Scheme::Http => "HTTP proxy",
            Scheme::Https => "HTTPS proxy",
            Scheme::Socks5 => "SOCKS5 proxy",
        }
    }
}

/// Where the proxy setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cluster's `proxy-url` in the kubeconfig.
    Kubeconfig,
    /// This environment variable.
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Kubeconfig => f.write_str("the kubeconfig's proxy-url"),
            Source::Env(var) => f.write_str(var),
        }
    }
}

/// A proxy to go through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Its kind.
    pub scheme: Scheme,
    /// Its host name or address (IPv6 without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// User name and password from the URL, percent-decoded.
    pub auth: Option<(String, String)>,
    /// Where it was set.
    pub source: Source,
}

impl Proxy {
    /// `scheme://host:port`, without credentials (for messages and logs).
    pub fn shown(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Socks5 => "socks5",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

// Credentials never reach logs: a derived Debug would print them.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.shown())
            .field("auth", &self.auth.as_ref().map(|_| "…"))
            .field("source", &self.source)
            .finish()
    }
}

/// Why no proxy is used although one is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bypass {
    /// `var` is never used for localhost or a loopback address.
    Loopback {
        /// The proxy variable that was set.
        var: &'static str,
    },
    /// `NO_PROXY` (or `no_proxy`) matches the server.
    NoProxy {
        /// The proxy variable that was set.
        var: &'static str,
        /// `NO_PROXY` or `no_proxy`.
        list: &'static str,
        /// The entry that matched.
        entry: String,
    },
}

/// How connections reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight to the server; with the reason a set proxy is not used.
    Direct(Option<Bypass>),
    /// Through this proxy.
    Proxy(Proxy),
}

impl Route {
    /// The proxy, if any.
    pub fn proxy(&self) -> Option<&Proxy> {
        match self {
            Route::Proxy(proxy) => Some(proxy),
            Route::Direct(_) => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct(None) => f.write_str("direct (no proxy set)"),
            Route::Direct(Some(Bypass::Loopback { var })) => write!(
                f,
                "direct ({var} is not used for localhost or loopback addresses, as in kubectl)"
            ),
            Route::Direct(Some(Bypass::NoProxy { var, list, entry })) => {
                write!(
                    f,
                    "direct ({list} entry {entry:?} matches, so {var} is not used)"
                )
            }
            Route::Proxy(proxy) => write!(
                f,
                "through the {} {} (from {})",
                proxy.scheme.kind(),
                proxy.shown(),
                proxy.source
            ),
        }
    }
}

/// A proxy setting czctl cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Not a URL.
    #[error("{origin} is not a proxy URL ({why}); write it as http://HOST:PORT, https://HOST:PORT or socks5://HOST:PORT")]
    Invalid {
        /// Where it was set.
        origin: Source,
        /// What is wrong.
        why: String,
    },
    /// A scheme kubectl does not support there.
    #[error("{origin} uses the proxy scheme {scheme:?}, which czctl (like kubectl) does not support; use http, https or socks5")]
    Scheme {
        /// Where it was set.
        origin: Source,
        /// The scheme.
        scheme: String,
    },
}

/// The route to `server` (the API server URL) given the kubeconfig's `proxy-url` and the
/// environment (`env` returns a variable's value).
pub fn route(
    proxy_url: Option<&str>,
    server: &http::Uri,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Route, ProxyError> {
    if let Some(url) = proxy_url.map(str::trim).filter(|u| !u.is_empty()) {
        return parse(url, Source::Kubeconfig).map(Route::Proxy);
    }
    let https = server.scheme_str() != Some("http");
    let names: [&'static str; 2] = if https {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    let Some((var, value)) = first_set(&names, &env) else {
        return Ok(Route::Direct(None));
    };
    let host = server
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = server.port_u16().unwrap_or(if https { 443 } else { 80 });
    let ip = host.parse::<IpAddr>().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return Ok(Route::Direct(Some(Bypass::Loopback { var })));
    }
    if let Some((list, no_proxy)) = first_set(&["NO_PROXY", "no_proxy"], &env) {
        if let Some(entry) = no_proxy_match(&no_proxy, &host, ip, port) {
            return Ok(Route::Direct(Some(Bypass::NoProxy { var, list, entry })));
        }
    }
    parse_env(&value, Source::Env(var)).map(Route::Proxy)
}

fn first_set(
    names: &[&'static str],
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()).map(|v| (*name, v)))
}

/// An environment value: without a scheme it means `http://` (as Go reads it); `socks5h` is
/// `socks5` (the proxy resolves names either way).
fn parse_env(value: &str, source: Source) -> Result<Proxy, ProxyError> {
    let value = value.trim();
    let with_scheme = match url::Url::parse(value) {
        Ok(url) if url.has_host() => value.to_string(),
        _ => format!("http://{value}"),
    };
    let with_scheme = match with_scheme.strip_prefix("socks5h://") {
        Some(rest) => format!("socks5://{rest}"),
        None => with_scheme,
    };
    parse(&with_scheme, source)
}

fn parse(text: &str, source: Source) -> Result<Proxy, ProxyError> {
    let url = url::Url::parse(text).map_err(|e| ProxyError::Invalid {
        origin: source,
        why: e.to_string(),
    })?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "socks5" => Scheme::Socks5,
        other => {
            return Err(ProxyError::Scheme {
                origin: source,
                scheme: crate::exit::elide_long_runs(other),
            })
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(name)) => name.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => {
            return Err(ProxyError::Invalid {
                origin: source,
                why: "it has no host".into(),
            })
        }
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = (!url.username().is_empty()).then(|| {
        (
            decode(url.username()),
            decode(url.password().unwrap_or_default()),
        )
    });
    Ok(Proxy {
        scheme,
        port: url.port().unwrap_or(scheme.default_port()),
        host,
        auth,
        source,
    })
}

/// The `NO_PROXY` entry that matches `host` (lower case, no brackets) at `port`, Go's rules.
fn no_proxy_match(list: &str, host: &str, ip: Option<IpAddr>, port: u16) -> Option<String> {
    for raw in list.split(',') {
        let entry = raw.trim().to_ascii_lowercase();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return Some(entry);
        }
        if let Ok(net) = entry.parse::<IpNet>() {
            if ip.is_some_and(|ip| net.contains(&ip)) {
                return Some(entry);
            }
            continue;
        }
        let (name, want_port) = split_port(&entry);
        if name.is_empty() {
            continue;
        }
        let port_ok = want_port.is_none_or(|p| p == port);
        if let Ok(want_ip) = name.parse::<IpAddr>() {
            if ip == Some(want_ip) && port_ok {
                return Some(entry);
            }
            continue;
        }
        let name = name.strip_prefix('*').unwrap_or(name);
        let (suffix, exact) = match name.strip_prefix('.') {
            Some(bare) => (name.to_string(), bare),
            None => (format!(".{name}"), name),
        };
        let matches = host.ends_with(&suffix) || (!name.starts_with('.') && host == exact);
        if matches && port_ok {
            return Some(entry);
        }
    }
    None
}

/// `host:port`, `[v6]:port` or just a host.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match entry.rsplit_once(':') {
        // One colon: host:port (an IPv6 address has more and no brackets).
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn server(url: &str) -> http::Uri {
        url.parse().unwrap()
    }

    fn proxied(route: Route) -> String {
        match route {
            Route::Proxy(p) => format!("{} {}", p.shown(), p.source),
            other => panic!("not proxied: {other}"),
        }
    }

    #[test]
    fn the_kubeconfig_proxy_wins_and_no_proxy_does_not_apply_to_it() {
        let vars = [("HTTPS_PROXY", "http://env:3128"), ("NO_PROXY", "*")];
        let route = route(
            Some("socks5://127.0.0.1:1080"),
            &server("https://127.0.0.1:6443"),
            env(&vars),
        )
        .unwrap();
        assert_eq!(
            proxied(route),
            "socks5://127.0.0.1:1080 the kubeconfig's proxy-url"
        );
    }

    #[test]
    fn the_environment_is_read_per_scheme_upper_case_first() {
        let vars = [
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("http_proxy", "socks5h://plain:1080"),
        ];
        let api = server("https://api.example.com:6443");
        assert_eq!(
            proxied(route(None, &api, env(&vars)).unwrap()),
            "http://upper:3128 HTTPS_PROXY"
        );
        let lower = [("https_proxy", "lower:3128")];
        assert_eq!(
            proxied(route(None, &api, env(&lower)).unwrap()),
            "http://lower:3128 https_proxy"
        );
        // An http:// server uses HTTP_PROXY, never HTTPS_PROXY; socks5h is socks5.
        assert_eq!(
            proxied(route(None, &server("http://api.example.com"), env(&vars)).unwrap()),
            "socks5://plain:1080 http_proxy"
        );
        assert_eq!(
            route(None, &api, env(&[("HTTP_PROXY", "http://p:1")])).unwrap(),
            Route::Direct(None)
        );
        // Empty values are unset.
        assert_eq!(
            route(None, &api, env(&[("HTTPS_PROXY", "")])).unwrap(),
            Route::Direct(None)
        );
    }

    #[test]
    fn loopback_servers_never_use_the_environment_proxy() {
        let vars = [("HTTPS_PROXY", "http://proxy:3128")];
        for url in [
            "https://127.0.0.1:6443",
            "https://127.1.2.3",
            "https://localhost:6443",
            "https://[::1]:6443",
        ] {
            assert_eq!(
                route(None, &server(url), env(&vars)).unwrap(),
                Route::Direct(Some(Bypass::Loopback { var: "HTTPS_PROXY" })),
                "{url}"
            );
        }
        // A name that resolves to loopback is not checked: only the literal.
        assert!(
            route(None, &server("https://kubesim.test:6443"), env(&vars))
                .unwrap()
                .proxy()
                .is_some()
        );
    }

    #[test]
    fn no_proxy_matches_as_go_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "https://api.example.com", true),
            ("example.com", "https://api.example.com", true),
            ("example.com", "https://example.com", true),
            ("example.com", "https://notexample.com", false),
            (".example.com", "https://api.example.com", true),
            (".example.com", "https://example.com", false),
            ("*.example.com", "https://api.example.com", true),
            ("example.com:6443", "https://api.example.com:6443", true),
            ("example.com:443", "https://api.example.com:6443", false),
            ("example.com:443", "https://api.example.com", true),
            ("10.0.0.0/8", "https://10.1.2.3:6443", true),
            ("10.0.0.0/8", "https://11.1.2.3:6443", false),
            ("10.1.2.3", "https://10.1.2.3:6443", true),
            ("10.1.2.3:6443", "https://10.1.2.3:6443", true),
            ("10.1.2.3:443", "https://10.1.2.3:6443", false),
            ("fd00::/8", "https://[fd00::1]:6443", true),
            ("[fd00::1]:6443", "https://[fd00::1]:6443", true),
            (" , EXAMPLE.com ", "https://api.example.com", true),
            ("other.org,example.com", "https://api.example.com", true),
            ("", "https://api.example.com", false),
        ];
        for (list, url, bypass) in cases {
            let vars = [("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", *list)];
            let route = route(None, &server(url), env(&vars)).unwrap();
            assert_eq!(
                route.proxy().is_none(),
                *bypass,
                "NO_PROXY={list:?} server {url}: {route}"
            );
        }
        let vars = [("HTTPS_PROXY", "p:1"), ("no_proxy", "a.org,example.com")];
        assert_eq!(
            route(None, &server("https://api.example.com"), env(&vars))
                .unwrap()
                .to_string(),
            "direct (no_proxy entry \"example.com\" matches, so HTTPS_PROXY is not used)"
        );
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let route = route(
            Some("http://us%40er:p%3Ass@proxy.example.com:8080"),
            &server("https://api"),
            env(&[]),
        )
        .unwrap();
        let proxy = route.proxy().unwrap();
        assert_eq!(proxy.auth, Some(("us@er".to_string(), "p:ss".to_string())));
        assert_eq!(proxy.shown(), "http://proxy.example.com:8080");
        assert!(!format!("{proxy:?}{route}").contains("p:ss"));
        assert!(!format!("{proxy:?}{route}").contains("p%3Ass"));
    }

    #[test]
    fn default_ports_and_refused_settings() {
        let api = server("https://api");
        for (url, shown) in [
            ("http://p", "http://p:80"),
            ("https://p", "https://p:443"),
            ("socks5://p", "socks5://p:1080"),
            ("socks5://[fd00::1]:9", "socks5://[fd00::1]:9"),
        ] {
            let route = route(Some(url), &api, env(&[])).unwrap();
            assert_eq!(route.proxy().unwrap().shown(), shown);
        }
        let err = route(Some("socks4://p:1080"), &api, env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kubeconfig's proxy-url uses the proxy scheme \"socks4\", which czctl (like \
             kubectl) does not support; use http, https or socks5"
        );
        // kubectl's kubeconfig validation refuses socks5h; only the environment accepts it.
        assert!(route(Some("socks5h://p"), &api, env(&[])).is_err());
        let err = route(Some("http://"), &api, env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the kubeconfig's proxy-url is not a proxy URL"),
            "{err}"
        );
    }
}
