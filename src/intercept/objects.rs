//! Writing the intercept's own objects: server-side apply with czctl's field manager, deletes
//! that accept "already gone", the router's generation-guarded writes, and the bounded,
//! backed-off retries of writes that lost an optimistic-concurrency race (409 Conflict).
//!
//! The user's Service is the exception: it is read as raw JSON ([`user_services`]) and changed
//! only by JSON patches whose `test` operations compare every field the server returned (a
//! typed Service would drop fields newer than czctl's API version, and the tests would fail).

use std::fmt::Debug;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::store::{status_of, StoreError};

/// The field manager of everything czctl applies.
pub const FIELD_MANAGER: &str = "czctl";

/// The user's Services in `namespace`, as raw JSON (see the module docs).
pub fn user_services(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<Service>(&()),
    )
}

/// Server-side apply as czctl: czctl's fields win over another manager's (`force`), fields
/// others set and czctl does not are kept.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `obj` (named in its metadata) and returns it as the server stored it.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await
}

/// Deletes `name` (already gone is fine).
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Err(e) if status_of(&e) != Some(404) => Err(e),
        _ => Ok(()),
    }
}

/// The delays between tries of a write refused with 409 Conflict: 20 ms doubling to 1 s, each
/// with up to as much again at random (so racing writers spread out), at most
/// [`CONFLICT_RETRIES`] times.
pub(crate) struct Conflicts {
    delays: ExponentialBackoff,
    refused: usize,
}

/// How often a write refused with 409 Conflict is tried again.
pub(crate) const CONFLICT_RETRIES: usize = 12;

impl Default for Conflicts {
    fn default() -> Self {
        Conflicts {
            delays: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_secs(1))
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(CONFLICT_RETRIES)
                .build(),
            refused: 0,
        }
    }
}

impl Conflicts {
    /// After a write of `what` was refused with 409: waits before the next try, or fails when
    /// the tries are used up.
    pub(crate) async fn again(&mut self, what: &str) -> Result<(), StoreError> {
        self.refused += 1;
        match self.delays.next() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(StoreError::Contended {
                what: what.to_string(),
                tries: self.refused,
            }),
        }
    }
}

/// Writes `obj` unless the object already carries a generation ≥ `generation` (a concurrent
/// czctl wrote a newer configuration): a missing object is created (so of two racing
/// creators only one wins), an older one is applied with its resourceVersion as a
/// precondition (so a newer write in between is never overwritten). Conflicts are retried
/// with backoff, a bounded number of times.
pub async fn write_generation<K>(
    api: &Api<K>,
    mut obj: K,
    generation: u64,
    generation_of: impl Fn(&K) -> u64,
) -> Result<(), StoreError>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.name_any();
    let what = format!("{} {name}", K::kind(&Default::default()));
    let mut conflicts = Conflicts::default();
    loop {
        let written = match api.get_opt(&name).await? {
            None => {
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                obj.meta_mut().resource_version = None;
                api.create(&params, &obj).await
            }
            Some(existing) if generation_of(&existing) >= generation => return Ok(()),
            Some(existing) => {
                obj.meta_mut().resource_version = existing.meta().resource_version.clone();
                api.patch(&name, &apply_params(), &Patch::Apply(&obj)).await
            }
        };
        match written {
            Err(e) if status_of(&e) == Some(409) => conflicts.again(&what).await?,
            other => return other.map(drop).map_err(StoreError::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_retried_a_bounded_number_of_times_with_growing_delays() {
        let mut conflicts = Conflicts::default();
        let start = tokio::time::Instant::now();
        for _ in 0..CONFLICT_RETRIES {
            conflicts.again("the record").await.unwrap();
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_secs(30),
            "{waited:?}"
        );
        let err = conflicts.again("the record").await.unwrap_err().to_string();
        assert!(
            err.contains("the record kept changing") && err.contains("13 writes"),
            "{err}"
        );
    }
}
