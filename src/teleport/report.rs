//! What a teleport prints on stdout: the table once everything is ready, then one line per
//! change. Logs go to stderr; stdout stays parseable.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;

use super::plan::{Desired, ForwardKey};
use crate::cluster::model::{Backend, NotForwarded, ObjectKey, ServiceView};

/// The reporter: quiet until the ready table is printed, then a line per change.
#[derive(Debug, Default)]
pub struct Report {
    live: bool,
    notes: HashMap<ObjectKey, String>,
    /// Ports of a Service this user may not listen on (below 1024 without root).
    denied: HashMap<ObjectKey, BTreeSet<u16>>,
}

fn ports_text(ports: impl Iterator<Item = u16>) -> String {
    let list: Vec<String> = ports.map(|p| p.to_string()).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (a script stopped reading) must not stop forwarding.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl Report {
    /// From now on every change is printed.
    pub fn go_live(&mut self) {
        self.live = true;
    }

    /// A new address started.
    pub fn added(&mut self, key: &ForwardKey, desired: &Desired, addr: Ipv4Addr) {
        if self.live {
            say(format!(
                "added {} {addr} ports {} names {}",
                label(key),
                ports_text(desired.ports.keys().copied()),
                desired.names.join(",")
            ));
        }
    }

    /// An address stopped.
    pub fn removed(&mut self, key: &ForwardKey, addr: Ipv4Addr) {
        if self.live {
            say(format!("removed {} {addr}", label(key)));
        }
    }

    /// The pods behind an address changed.
    pub fn backends(&mut self, key: &ForwardKey, backends: &[Backend]) {
        if self.live {
            let ready: Vec<&str> = backends
                .iter()
                .filter(|b| b.ready)
                .map(|b| b.pod.as_str())
                .collect();
            say(format!(
                "pods {} ready {}/{} {}",
                label(key),
                ready.len(),
                backends.len(),
                if ready.is_empty() {
                    "-".to_string()
                } else {
                    ready.join(",")
                }
            ));
        }
    }

    /// Remembers that this user may not listen on `port` of `service`.
    pub fn denied(&mut self, service: &ObjectKey, port: u16) {
        self.denied.entry(service.clone()).or_default().insert(port);
    }

    /// Notes what is not forwarded about a Service, printing it when it changes.
    /// `withheld` says which bare names were kept out of the hosts file (or is empty).
    pub fn service(&mut self, view: &ServiceView, withheld: &str) {
        let mut parts: Vec<String> = Vec::new();
        let base = note(view);
        if !base.is_empty() {
            parts.push(base);
        }
        if !withheld.is_empty() {
            parts.push(withheld.to_string());
        }
        if let Some(ports) = self.denied.get(&view.key).filter(|p| !p.is_empty()) {
            parts.push(denied_note(ports));
        }
        if view.not_forwarded.is_none() && !view.backends.iter().any(|b| b.ready) {
            parts.push(if view.backends.is_empty() {
                "no pod behind it yet: connections are refused until one is ready".to_string()
            } else {
                format!(
                    "none of its {} pod(s) is ready: connections are refused until one is",
                    view.backends.len()
                )
            });
        }
        let note = parts.join("; ");
        let previous = self.notes.insert(view.key.clone(), note.clone());
        if self.live && previous.as_deref().unwrap_or("") != note && !note.is_empty() {
            say(format!("note service {} {note}", view.key));
        }
    }

    /// Forgets a deleted Service's note.
    pub fn forget(&mut self, key: &ObjectKey) {
        self.notes.remove(key);
        self.denied.remove(key);
    }

    /// Every non-empty note, by Service.
    pub fn notes(&self) -> impl Iterator<Item = (&ObjectKey, &str)> {
        self.notes
            .iter()
            .filter(|(_, n)| !n.is_empty())
            .map(|(k, n)| (k, n.as_str()))
    }

    /// The note of a Service ("" when everything is forwarded).
    pub fn note_of(&self, key: &ObjectKey) -> &str {
        self.notes.get(key).map(String::as_str).unwrap_or("")
    }
}

/// `service NS/NAME` or `pod NS/NAME/HOST` for per-pod addresses.
fn label(key: &ForwardKey) -> String {
    match key.pod_host {
        Some(_) => format!("pod {key}"),
        None => format!("service {key}"),
    }
}

/// What is not forwarded about a Service, in words.
pub fn note(view: &ServiceView) -> String {
    match &view.not_forwarded {
        Some(NotForwarded::NoTcpPorts) | None => {}
        Some(reason) => return format!("not forwarded: {reason}"),
    }
    let skipped: Vec<String> = view
        .skipped_ports()
        .map(|p| format!("{}/{}", p.port, p.protocol))
        .collect();
    if skipped.is_empty() {
        String::new()
    } else {
        format!(
            "not forwarded: port {} (port-forwarding carries TCP only)",
            skipped.join(",")
        )
    }
}

/// Says which ports were not forwarded because this user may not listen on them, and how to
/// fix it.
fn denied_note(ports: &BTreeSet<u16>) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let lowest = ports.iter().min().copied().unwrap_or(0);
    format!(
        "port {} not forwarded: only root may listen below 1024 here; run czctl with sudo, or \
         allow it: sudo sysctl net.ipv4.ip_unprivileged_port_start={lowest}",
        list.join(",")
    )
}

/// Prints the table of everything forwarded and not forwarded: on stdout, or on stderr when
/// stdout belongs to a command run under the teleport.
pub fn table(rows: Vec<[String; 4]>, to_stderr: bool) {
    let header = [
        "SERVICE".to_string(),
        "ADDRESS".into(),
        "PORTS".into(),
        "NAMES / NOTES".into(),
    ];
    let all: Vec<&[String; 4]> = std::iter::once(&header).chain(rows.iter()).collect();
    let width = |i: usize| all.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for row in all {
        let line = format!("{:w0$}  {:w1$}  {:w2$}  {}", row[0], row[1], row[2], row[3]);
        if to_stderr {
            eprintln!("{}", line.trim_end());
        } else {
            say(line.trim_end().to_string());
        }
    }
}
