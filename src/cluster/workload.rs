//! Workloads as configuration sources: the pod template of a Deployment, StatefulSet,
//! DaemonSet, Job, CronJob or Pod, and a live pod of it when one runs (for downward-API
//! values such as the pod name and IP).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::exit::{self, Code, Fatal};

/// The kinds whose configuration can be exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    Statefulset,
    /// apps/v1 DaemonSet.
    Daemonset,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob.
    Cronjob,
    /// core/v1 Pod.
    Pod,
}

impl WorkloadKind {
    /// The resource name, as kubectl spells it.
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::Statefulset => "statefulset",
            WorkloadKind::Daemonset => "daemonset",
            WorkloadKind::Job => "job",
            WorkloadKind::Cronjob => "cronjob",
            WorkloadKind::Pod => "pod",
        }
    }
}

/// A workload's pod template and, when one runs, a live pod of it.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The pod spec containers are taken from.
    pub spec: PodSpec,
    /// A running pod of the workload (the Pod itself for kind Pod).
    pub live_pod: Option<Pod>,
}

/// Fetches the workload `kind/name` in `namespace`.
pub async fn fetch(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
) -> Result<Workload, Fatal> {
    let context = format!("cannot read {} {namespace}/{name}", kind.resource());
    let fail = |e: kube::Error| exit::from_kube(&context, &e);
    let (spec, selector) = match kind {
        WorkloadKind::Deployment => {
            let d = Api::<Deployment>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let spec = d.spec;
            (spec.template.spec, Some(spec.selector))
        }
        WorkloadKind::Statefulset => {
            let s = Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let spec = s.spec;
            (spec.template.spec, Some(spec.selector))
        }
        WorkloadKind::Daemonset => {
            let d = Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let spec = d.spec;
            (spec.template.spec, Some(spec.selector))
        }
        WorkloadKind::Job => {
            let j = Api::<Job>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let spec = j.spec.unwrap_or_default();
            (spec.template.spec, spec.selector)
        }
        WorkloadKind::Cronjob => {
            let c = Api::<CronJob>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let template = c.spec.job_template.spec.unwrap_or_default().template;
            (template.spec, None)
        }
        WorkloadKind::Pod => {
            let pod = Api::<Pod>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let spec = pod.spec.clone();
            return Ok(Workload {
                spec: spec.unwrap_or_default(),
                live_pod: Some(pod),
            });
        }
    };
    let spec = spec
        .ok_or_else(|| Fatal::new(Code::NotFound, format!("{context}: it has no pod template")))?;
    let live_pod = match selector.as_ref().and_then(selector_string) {
        Some(labels) => live_pod(client, namespace, &labels).await,
        None => None,
    };
    Ok(Workload { spec, live_pod })
}

/// The best live pod matching `labels`: running and ready first, then any running one.
async fn live_pod(client: &Client, namespace: &str, labels: &str) -> Option<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(labels))
        .await
        .ok()?;
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let deleting = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    let mut candidates: Vec<Pod> = pods
        .items
        .into_iter()
        .filter(|p| running(p) && !deleting(p))
        .collect();
    candidates.sort_by_key(|p| (!ready(p), p.metadata.name.clone()));
    candidates.into_iter().next()
}

/// A label selector as the `labelSelector` query string (matchLabels and matchExpressions).
pub fn selector_string(selector: &LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            "DoesNotExist" => format!("!{}", expr.key),
            _ => return None,
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_as_query_strings() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "echo"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&sel).unwrap(),
            "app=echo,tier in (web,api),!canary"
        );
        assert_eq!(selector_string(&LabelSelector::default()), None);
    }
}
