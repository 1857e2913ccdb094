//! What the user asks for, checked before anything touches the cluster: the header route
//! (`-x NAME:VALUE`) and where intercepted requests go on this machine.
//!
//! Header names and values end up inside nginx.conf, so only characters that cannot change
//! its meaning are accepted: names `^[A-Za-z0-9][A-Za-z0-9-]{0,62}$` (no `_`, which NGINX
//! ignores by default), values `^[A-Za-z0-9._~-]{1,128}$`. The local port is 1-65535 (port 0
//! would be "any free port", where nothing listens). Refused values are echoed cut to about 80
//! characters ([`crate::exit::shown`]).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::exit::shown;

/// The header CodeZero's intercept uses; ours by default.
pub const DEFAULT_HEADER: &str = "X-C6O-INTERCEPT";
/// The default header value.
pub const DEFAULT_VALUE: &str = "yes";

/// Requests carrying `name: value` go to the developer.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct HeaderMatch {
    /// Header name, lower-cased (HTTP header names are case-insensitive).
    pub name: String,
    /// Header value (NGINX compares it ignoring case).
    pub value: String,
}

impl HeaderMatch {
    /// The NGINX variable holding this header (`x-dev` → `$http_x_dev`).
    pub fn nginx_variable(&self) -> String {
        format!("$http_{}", self.name.replace('-', "_"))
    }

    /// Whether two routes would catch the same requests.
    pub fn overlaps(&self, other: &HeaderMatch) -> bool {
        self.name == other.name && self.value.eq_ignore_ascii_case(&other.value)
    }
}

impl fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.value)
    }
}

/// Why a header spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// No `:` separator.
    #[error("header spec {} has no ':'; write it as NAME:VALUE, for example -x x-dev:alice", shown(.0))]
    NoSeparator(String),
    /// The name has characters NGINX would mangle or that could alter its configuration.
    #[error("header name {} is not allowed: use 1-63 letters, digits and '-', starting with a letter or digit (NGINX ignores '_' in header names)", shown(.0))]
    BadName(String),
    /// The value has characters that could alter NGINX's configuration.
    #[error("header value {} is not allowed: use 1-128 letters, digits and '.', '_', '~', '-'", shown(.0))]
    BadValue(String),
    /// Port 0 asks the system for any free port: nothing would listen there.
    #[error("local port 0 cannot be used: intercepted requests need the port your server listens on (1-65535), for example -p 3000")]
    PortZero,
    /// The local URL cannot be used.
    #[error("local URL {} cannot be used: {why}; write it as http://HOST:PORT, for example http://127.0.0.1:3000", shown(.url))]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// Parses `-x NAME:VALUE` (no `-x`: the CodeZero default header).
pub fn parse_header(spec: Option<&str>) -> Result<HeaderMatch, SpecError> {
    let Some(spec) = spec else {
        return Ok(HeaderMatch {
            name: DEFAULT_HEADER.to_ascii_lowercase(),
            value: DEFAULT_VALUE.into(),
        });
    };
    let (name, value) = spec
        .split_once(':')
        .ok_or_else(|| SpecError::NoSeparator(spec.to_string()))?;
    let value = value.trim_start_matches(' ');
    if !valid_name(name) {
        return Err(SpecError::BadName(name.to_string()));
    }
    if !valid_value(value) {
        return Err(SpecError::BadValue(value.to_string()));
    }
    Ok(HeaderMatch {
        name: name.to_ascii_lowercase(),
        value: value.to_string(),
    })
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

fn valid_value(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Where intercepted requests go: `-l PORT` (127.0.0.1) or `--local-url http://HOST:PORT`.
pub fn local_target(port: Option<u16>, url: Option<&str>) -> Result<SocketAddr, SpecError> {
    match (port, url) {
        (_, Some(url)) => parse_url(url),
        (Some(0), None) => Err(SpecError::PortZero),
        (Some(port), None) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        (None, None) => Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
    }
}

fn parse_url(url: &str) -> Result<SocketAddr, SpecError> {
    let bad = |why: &str| SpecError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is supported (the router speaks plain HTTP to it)"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("it names no host"));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut addrs = with_port
        .to_socket_addrs()
        .map_err(|e| bad(&format!("its host does not resolve ({e})")))?;
    let addr = addrs.next().ok_or_else(|| bad("its host has no address"))?;
    if addr.port() == 0 {
        return Err(bad("port 0 is not a port anything listens on"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_codezero_header() {
        let m = parse_header(None).unwrap();
        assert_eq!(m.name, "x-c6o-intercept");
        assert_eq!(m.value, "yes");
        assert_eq!(m.nginx_variable(), "$http_x_c6o_intercept");
    }

    #[test]
    fn accepts_ordinary_specs() {
        let m = parse_header(Some("X-Dev:alice.v2~1_a-b")).unwrap();
        assert_eq!(m.name, "x-dev");
        assert_eq!(m.value, "alice.v2~1_a-b");
        assert_eq!(parse_header(Some("x-dev: bob")).unwrap().value, "bob");
    }

    #[test]
    fn refuses_hostile_specs() {
        let hostile = [
            "x-dev",
            "x_dev:alice",
            ":alice",
            "-x:alice",
            "x-dev:",
            "x-dev:a b",
            "x-dev:\"a\"",
            "x-dev:'a'",
            "x-dev:a;b",
            "x-dev:{a}",
            "x-dev:a}",
            "x-dev:$host",
            "x-dev:a\nb",
            "x-dev:a\\b",
            "x{dev:a",
            "x;dev:a",
            "x dev:a",
            "x-dev:default\"; include /etc/passwd; #",
        ];
        for spec in hostile {
            assert!(parse_header(Some(spec)).is_err(), "{spec:?} was accepted");
        }
        let long = format!("x-dev:{}", "a".repeat(129));
        assert!(parse_header(Some(&long)).is_err());
        let long_name = format!("{}:a", "a".repeat(64));
        assert!(parse_header(Some(&long_name)).is_err());
    }

    #[test]
    fn keywords_are_plain_values() {
        // `default` and `include` are NGINX keywords; the router's `v:` prefix makes them
        // ordinary map keys, so they are fine as values.
        assert_eq!(
            parse_header(Some("x-dev:default")).unwrap().value,
            "default"
        );
        assert_eq!(parse_header(Some("include:x")).unwrap().name, "include");
    }

    #[test]
    fn overlap_ignores_value_case() {
        let a = parse_header(Some("x-dev:Alice")).unwrap();
        let b = parse_header(Some("X-DEV:alice")).unwrap();
        let c = parse_header(Some("x-user:alice")).unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn local_targets() {
        assert_eq!(
            local_target(Some(3000), None).unwrap(),
            "127.0.0.1:3000".parse().unwrap()
        );
        assert_eq!(
            local_target(None, Some("http://127.0.0.2:81/x")).unwrap(),
            "127.0.0.2:81".parse().unwrap()
        );
        assert_eq!(
            local_target(None, Some("http://127.0.0.3")).unwrap(),
            "127.0.0.3:80".parse().unwrap()
        );
        assert!(local_target(None, Some("https://127.0.0.1:1")).is_err());
        assert!(local_target(None, Some("http://")).is_err());
    }

    #[test]
    fn port_zero_is_refused() {
        assert_eq!(local_target(Some(0), None), Err(SpecError::PortZero));
        let url = local_target(None, Some("http://127.0.0.1:0")).unwrap_err();
        assert!(url.to_string().contains("port 0"), "{url}");
        assert!(local_target(Some(1), None).is_ok());
        assert!(local_target(Some(65535), None).is_ok());
    }

    #[test]
    fn refused_values_are_echoed_cut() {
        let huge = "a".repeat(100_000);
        for err in [
            parse_header(Some(&huge)).unwrap_err(),
            parse_header(Some(&format!("{huge}:x"))).unwrap_err(),
            parse_header(Some(&format!("x-dev:{huge}"))).unwrap_err(),
            local_target(None, Some(&format!("ftp://{huge}"))).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.len() < 400, "{} bytes: {}", text.len(), &text[..400]);
            assert!(text.contains("…\" (100"), "{text}");
        }
        // Short values are quoted whole, control characters escaped.
        let newline = parse_header(Some("x-dev:a\nb")).unwrap_err().to_string();
        assert!(newline.contains("\"a\\nb\""), "{newline}");
    }
}
