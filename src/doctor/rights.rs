//! The Kubernetes rights czctl needs in a namespace, asked with SelfSubjectAccessReview.

use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::check::{Area, Check};

/// How long one access review may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(15);

/// One right: a verb on a resource (and subresource) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Right {
    /// `list`, `watch`, `create`.
    pub verb: &'static str,
    /// API group, "" for core.
    pub group: &'static str,
    /// Plural resource.
    pub resource: &'static str,
    /// Subresource, "" for none.
    pub subresource: &'static str,
}

/// What czctl needs: list and watch Services, EndpointSlices and Pods, create pods/portforward.
pub const NEEDED: [Right; 7] = [
    right("list", "", "services", ""),
    right("watch", "", "services", ""),
    right("list", "discovery.k8s.io", "endpointslices", ""),
    right("watch", "discovery.k8s.io", "endpointslices", ""),
    right("list", "", "pods", ""),
    right("watch", "", "pods", ""),
    right("create", "", "pods", "portforward"),
];

/// What `service intercept` needs on top (a denial is a warning: teleports work without them).
/// It writes its objects with server-side apply (patch, and create when they are new) and
/// watches its Deployments roll out.
pub const FOR_INTERCEPT: [Right; 11] = [
    right("patch", "", "services", ""),
    right("create", "apps", "deployments", ""),
    right("patch", "apps", "deployments", ""),
    right("watch", "apps", "deployments", ""),
    right("create", "", "configmaps", ""),
    right("patch", "", "configmaps", ""),
    right("create", "", "secrets", ""),
    right("patch", "", "secrets", ""),
    right("create", "coordination.k8s.io", "leases", ""),
    right("patch", "coordination.k8s.io", "leases", ""),
    right("create", "", "services", ""),
];

const fn right(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
) -> Right {
    Right {
        verb,
        group,
        resource,
        subresource,
    }
}

impl Right {
    /// `pods/portforward` or `services`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The resource as `kubectl create role --resource` takes it: `endpointslices.discovery.k8s.io`,
    /// `pods/portforward`.
    fn kubectl_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource_path()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// The check's name: `rights: list services`.
    pub fn check_name(&self) -> String {
        format!("rights: {} {}", self.verb, self.resource_path())
    }
}

/// The fix for the denied rights of one resource: a role granting all of them (`denied` are the
/// denied rights, `of` picks the resource), bound to the user.
pub fn fix(denied: &[Right], of: &Right, namespace: &str) -> String {
    let verbs: Vec<&str> = denied
        .iter()
        .filter(|r| r.group == of.group && r.resource_path() == of.resource_path())
        .map(|r| r.verb)
        .collect();
    let role = format!("czctl-{}", of.resource_path().replace('/', "-"));
    format!(
        "ask your cluster admin for: kubectl create role {role} --verb={} --resource={} -n {namespace} \
         && kubectl create rolebinding {role} --role={role} --user=YOUR_USER -n {namespace}",
        verbs.join(","),
        of.kubectl_resource(),
    )
}

/// The answer to one access review.
#[derive(Debug)]
enum Answer {
    Allowed,
    Denied(Option<String>),
    Error(kube::Error),
    TimedOut,
}

/// Asks for every needed right in `namespace` at once; one check per right. When the reviews
/// themselves are forbidden, one warning says the rights could not be checked.
pub async fn check(client: &Client, namespace: &str) -> Vec<Check> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let all: Vec<Right> = NEEDED.iter().chain(&FOR_INTERCEPT).copied().collect();
    let answers = join_all(all.iter().map(|r| review(&api, r, namespace))).await;
    let forbidden = answers.iter().find_map(|a| match a {
        Answer::Error(kube::Error::Api(status)) if status.code == 403 => {
            Some(status.message.clone())
        }
        _ => None,
    });
    if let Some(message) = forbidden {
        return vec![Check::warn(
            Area::Rights,
            format!("rights in {namespace}"),
            format!(
                "could not be checked: you may not create SelfSubjectAccessReviews ({message})"
            ),
        )
        .with_fix(format!(
            "none needed if czctl works; otherwise check by hand: \
             kubectl auth can-i create pods --subresource=portforward -n {namespace}"
        ))];
    }
    let denied: Vec<Right> = all
        .iter()
        .zip(&answers)
        .filter(|(_, a)| matches!(a, Answer::Denied(_)))
        .map(|(r, _)| *r)
        .collect();
    all.iter()
        .zip(answers)
        .map(|(right, answer)| {
            let name = right.check_name();
            if FOR_INTERCEPT.contains(right) {
                if let Answer::Denied(_) = answer {
                    return Check::warn(
                        Area::Rights,
                        name,
                        format!(
                            "denied in namespace {namespace}: needed only by service intercept"
                        ),
                    )
                    .with_fix(fix(&denied, right, namespace));
                }
            }
            match answer {
                Answer::Allowed => Check::pass(
                    Area::Rights,
                    name,
                    format!("allowed in namespace {namespace}"),
                ),
                Answer::Denied(reason) => Check::fail(
                    Area::Rights,
                    name,
                    format!(
                        "denied in namespace {namespace}{}",
                        reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    ),
                )
                .with_fix(fix(&denied, right, namespace)),
                Answer::Error(e) => Check::warn(
                    Area::Rights,
                    name,
                    format!("could not be checked: {}", crate::exit::describe(&e)),
                ),
                Answer::TimedOut => Check::warn(
                    Area::Rights,
                    name,
                    format!(
                        "could not be checked: no answer within {}s",
                        REVIEW_TIMEOUT.as_secs()
                    ),
                ),
            }
        })
        .collect()
}

async fn review(api: &Api<SelfSubjectAccessReview>, right: &Right, namespace: &str) -> Answer {
    let request = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some(right.verb.to_string()),
                group: Some(right.group.to_string()),
                resource: Some(right.resource.to_string()),
                subresource: (!right.subresource.is_empty()).then(|| right.subresource.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let created =
        tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &request)).await;
    match created {
        Err(_) => Answer::TimedOut,
        Ok(Err(e)) => Answer::Error(e),
        Ok(Ok(answer)) => match answer.status {
            Some(status) if status.allowed => Answer::Allowed,
            Some(status) => Answer::Denied(status.reason.filter(|r| !r.is_empty())),
            None => Answer::Denied(Some("the server sent no status".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_are_kubectl_commands_per_resource() {
        let denied = [NEEDED[0], NEEDED[1], NEEDED[6]];
        assert_eq!(
            fix(&denied, &NEEDED[6], "demo"),
            "ask your cluster admin for: kubectl create role czctl-pods-portforward --verb=create \
             --resource=pods/portforward -n demo && kubectl create rolebinding \
             czctl-pods-portforward --role=czctl-pods-portforward --user=YOUR_USER -n demo"
        );
        assert!(fix(&denied, &NEEDED[1], "demo")
            .contains("create role czctl-services --verb=list,watch --resource=services -n demo"));
        assert!(fix(&[NEEDED[3]], &NEEDED[3], "x")
            .contains("--verb=watch --resource=endpointslices.discovery.k8s.io -n x"));
    }

    #[test]
    fn names() {
        assert_eq!(NEEDED[6].check_name(), "rights: create pods/portforward");
        assert_eq!(NEEDED[2].check_name(), "rights: list endpointslices");
        // pods (list) and pods/portforward are different resources for the fix.
        assert!(fix(&[NEEDED[4], NEEDED[6]], &NEEDED[4], "d").contains("--verb=list --"));
    }
}
