//! The heartbeat of an intercept: a `coordination.k8s.io/v1` Lease per session, renewed while
//! czctl runs. A route whose Lease has expired (or is gone) belongs to a crashed or cut-off
//! czctl: any later run may close it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long a Lease stays valid without renewal.
pub const LEASE_SECONDS: u32 = 30;
/// How often it is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The current time in the Lease's MicroTime format.
pub fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Renews the Lease `name` until `stop`; failures are logged and retried (the API may be
/// away for a while; the route keeps working meanwhile).
pub async fn renew(client: Client, namespace: String, name: String, stop: CancellationToken) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
        let patch = Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(lease = %name, error = %crate::exit::describe(&e), "could not renew the intercept's heartbeat; retrying");
        }
    }
}

/// Whether the Lease `name` has expired (a missing Lease counts as expired); `None` when it
/// cannot be read.
pub async fn expired(client: &Client, namespace: &str, name: &str) -> Option<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(None) => Some(true),
        Ok(Some(lease)) => Some(lease_expired(&lease, jiff::Timestamp::now())),
        Err(e) => {
            warn!(lease = %name, error = %crate::exit::describe(&e), "cannot read an intercept's heartbeat");
            None
        }
    }
}

/// Whether `lease` was last renewed longer ago than its duration.
pub fn lease_expired(lease: &Lease, now: jiff::Timestamp) -> bool {
    let spec = lease.spec.clone().unwrap_or_default();
    let Some(renewed) = spec.renew_time.or(spec.acquire_time) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS as i32));
    let renewed_secs = renewed.0.as_second();
    now.as_second() > renewed_secs + seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "l"},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": seconds}
        }))
        .unwrap()
    }

    #[test]
    fn expiry() {
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert!(!lease_expired(
            &lease("2026-11-23T09:59:45.000000Z", 30),
            now
        ));
        assert!(lease_expired(
            &lease("2026-11-23T09:59:00.000000Z", 30),
            now
        ));
        let empty: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap();
        assert!(lease_expired(&empty, now));
    }

    #[test]
    fn micro_time_format() {
        let now = micro_now();
        assert_eq!(now.len(), "2026-11-23T10:00:00.000000Z".len(), "{now}");
    }
}
