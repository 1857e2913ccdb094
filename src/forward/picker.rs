//! Choosing the pod for a new connection: round-robin over ready backends that have the port,
//! skipping pods that already failed this connection. Pure code.

use std::collections::HashSet;

use crate::cluster::model::Backend;

/// The pod and target port for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Pod name.
    pub pod: String,
    /// Port on the pod.
    pub port: u16,
}

/// Picks a ready backend serving `port_name`, starting the round-robin at `start`, skipping
/// `tried`. With `pinned`, only that pod qualifies (per-pod addresses of StatefulSets).
pub fn pick(
    backends: &[Backend],
    port_name: &str,
    start: usize,
    tried: &HashSet<String>,
    pinned: Option<&str>,
) -> Option<Pick> {
    let candidates: Vec<(&Backend, u16)> = backends
        .iter()
        .filter(|b| b.ready && !tried.contains(&b.pod))
        .filter(|b| pinned.is_none_or(|p| p == b.pod))
        .filter_map(|b| Some((b, *b.ports.get(port_name)?)))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let (backend, port) = candidates[start % candidates.len()];
    Some(Pick {
        pod: backend.pod.clone(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn backend(pod: &str, ready: bool, port: u16) -> Backend {
        Backend {
            pod: pod.into(),
            ready,
            hostname: None,
            ports: BTreeMap::from([("http".to_string(), port)]),
        }
    }

    #[test]
    fn round_robin_over_ready_backends() {
        let backends = [
            backend("a", true, 1),
            backend("b", false, 2),
            backend("c", true, 3),
        ];
        let none = HashSet::new();
        let picks: Vec<String> = (0..4)
            .map(|i| pick(&backends, "http", i, &none, None).unwrap().pod)
            .collect();
        assert_eq!(picks, ["a", "c", "a", "c"]);
        assert_eq!(pick(&backends, "grpc", 0, &none, None), None);
    }

    #[test]
    fn tried_and_pinned() {
        let backends = [backend("a", true, 1), backend("c", true, 3)];
        let tried = HashSet::from(["a".to_string()]);
        assert_eq!(
            pick(&backends, "http", 0, &tried, None).unwrap(),
            Pick {
                pod: "c".into(),
                port: 3
            }
        );
        let all = HashSet::from(["a".to_string(), "c".to_string()]);
        assert_eq!(pick(&backends, "http", 0, &all, None), None);
        assert_eq!(
            pick(&backends, "http", 1, &HashSet::new(), Some("a"))
                .unwrap()
                .pod,
            "a"
        );
    }
}
