//! The status of a session as the control socket reports it, and its rendering.

use serde::{Deserialize, Serialize};

/// One forwarded address of a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Forward {
    /// What the address stands for, as the tables name it: `namespace/service`, or
    /// `namespace/service/pod` for a StatefulSet pod's own address.
    #[serde(default)]
    pub name: String,
    /// `namespace/name` of the Service.
    pub service: String,
    /// The pod, for per-pod addresses of StatefulSets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_host: Option<String>,
    /// The loopback address.
    pub address: String,
    /// Host names.
    pub names: Vec<String>,
    /// Listening ports.
    pub ports: Vec<u16>,
    /// Pods behind it: name and readiness.
    pub pods: Vec<PodState>,
    /// The pod that served the latest connection.
    pub last_pod: Option<String>,
    /// Connections open now.
    pub open_connections: u64,
    /// Connections so far.
    pub total_connections: u64,
    /// Bytes from clients to pods.
    pub bytes_up: u64,
    /// Bytes from pods to clients.
    pub bytes_down: u64,
    /// The latest failure.
    pub last_error: Option<String>,
}

/// A pod behind a forward.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodState {
    /// Pod name.
    pub name: String,
    /// Ready for traffic.
    pub ready: bool,
}

/// A Service that is not (fully) forwarded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    /// `namespace/name`.
    pub service: String,
    /// Why.
    pub note: String,
}

/// Everything a session reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    /// Forwarded addresses.
    pub forwards: Vec<Forward>,
    /// What is not forwarded, and why.
    pub notes: Vec<Note>,
    /// The pod port-forward protocol in use (`SPDY over WebSocket`, `SPDY`, `WebSocket v4`),
    /// once a connection has been made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// The text table of a status.
pub fn render(status: &Status) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "SERVICE".into(),
        "ADDRESS".into(),
        "PORTS".into(),
        "PODS READY".into(),
        "CONNS OPEN/TOTAL".into(),
        "BYTES UP/DOWN".into(),
        "LAST POD / ERROR".into(),
    ]];
    for f in &status.forwards {
        let service = match &f.pod_host {
            Some(host) => format!("{}/{host}", f.service),
            None => f.service.clone(),
        };
        let ready = f.pods.iter().filter(|p| p.ready).count();
        let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
        let last = match (&f.last_error, &f.last_pod) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(pod)) => pod.clone(),
            (None, None) => "-".into(),
        };
        rows.push([
            service,
            f.address.clone(),
            ports.join(","),
            format!("{ready}/{}", f.pods.len()),
            format!("{}/{}", f.open_connections, f.total_connections),
            format!("{}/{}", f.bytes_up, f.bytes_down),
            last,
        ]);
    }
    for n in &status.notes {
        rows.push([
            n.service.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            n.note.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(protocol) = &status.protocol {
        out.push_str(&format!("port-forward protocol: {protocol}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_forwards_and_notes() {
        let status = Status {
            forwards: vec![Forward {
                name: "demo/echo".into(),
                service: "demo/echo".into(),
                pod_host: None,
                address: "127.1.2.3".into(),
                names: vec!["echo.demo".into()],
                ports: vec![8080],
                pods: vec![PodState {
                    name: "echo-a".into(),
                    ready: true,
                }],
                last_pod: Some("echo-a".into()),
                open_connections: 0,
                total_connections: 3,
                bytes_up: 10,
                bytes_down: 20,
                last_error: None,
            }],
            notes: vec![Note {
                service: "demo/search".into(),
                note: "not forwarded: ExternalName".into(),
            }],
            protocol: Some("SPDY over WebSocket".into()),
        };
        let text = render(&status);
        assert!(
            text.lines().nth(1).unwrap().starts_with("demo/echo"),
            "{text}"
        );
        assert!(text.contains("0/3") && text.contains("10/20") && text.contains("echo-a"));
        assert!(text.contains("not forwarded: ExternalName"));
        assert!(
            text.ends_with("port-forward protocol: SPDY over WebSocket\n"),
            "{text}"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["forwards"][0]["ports"][0], 8080);
        assert_eq!(json["protocol"], "SPDY over WebSocket");
    }
}
