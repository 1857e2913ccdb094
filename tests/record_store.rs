//! The intercept's session record as the API server keeps it: czctl's `sessions.czctl.dev` CRD
//! (created by czctl, then validated and pruned by the server's structural schema), optimistic
//! concurrency on replace, the finalizer, and the garbage collection of what the record owns.
//! Run against kubesim and, with `CZCTL_TEST_SERVER=realk8s`, against the real API server,
//! where a schema that drops a field would lose the data an intercept needs to restore a Service.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use czctl::intercept::record::{RecordBody, Route, Shape, TunnelKind, FINALIZER};
use czctl::intercept::spec::parse_header;
use czctl::intercept::store::{Backend, RecordStore, StoreError};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::json;

use common::*;

async fn client(sim: &KubeSim) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&sim.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A record with every field set, the optional ones included.
fn body() -> RecordBody {
    RecordBody {
        service: "echo".into(),
        service_uid: "0b7c4f9e-0000-4000-8000-000000000001".into(),
        port: 8080,
        router_image: "nginx:1.27".into(),
        original: Shape {
            selector: BTreeMap::from([("app".into(), "echo".into())]),
            ports: vec![
                json!({"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"}),
            ],
        },
        hijacked: Some(Shape {
            selector: BTreeMap::from([("czctl.dev/router".into(), "echo".into())]),
            ports: vec![
                json!({"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}),
            ],
        }),
        restore_patch: serde_json::from_value(json!([
            {"op": "test", "path": "/spec/selector", "value": {"czctl.dev/router": "echo"}},
            {"op": "replace", "path": "/spec/selector", "value": {"app": "echo"}},
        ]))
        .unwrap(),
        generation: 3,
        closing: false,
        routes: vec![Route {
            session: "ic-abc123".into(),
            header: parse_header(Some("x-dev:alice")).unwrap(),
            owner: "alice@laptop".into(),
            tunnel: TunnelKind::Cluster,
            upstream: Some("10.0.0.7:7000".into()),
            lease: "czctl-ic-abc123".into(),
            started: "2026-12-06T09:00:00Z".into(),
            tls: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_survives_the_servers_schema_and_owns_what_it_made() {
    let sim = kubesim(&["demo"], &[]);
    let client = client(&sim).await;
    let store = RecordStore::detect(client.clone(), "demo").await.unwrap();
    assert_eq!(store.backend, Backend::Crd);

    // Every field comes back as written: nothing is pruned by the structural schema.
    let created = store.create("echo", "echo", &body()).await.unwrap();
    assert_eq!(created.body, body());
    let read = store.get("echo").await.unwrap().expect("the record");
    assert_eq!(read.body, body());
    assert_eq!(
        read.meta.finalizers.as_deref(),
        Some(&[FINALIZER.to_string()][..])
    );

    // A replace based on a stale read is refused (409), so two czctl runs can't both win.
    let mut first = read.clone();
    first.body.generation = 4;
    store.replace(&first).await.unwrap();
    let mut stale = read;
    stale.body.generation = 5;
    match store.replace(&stale).await {
        Err(StoreError::Kube(e)) => assert_eq!(czctl::intercept::store::status_of(&e), Some(409)),
        other => panic!("a stale replace was not refused: {other:?}"),
    }

    // Something the record owns goes when the record goes (the garbage collector), and the
    // record itself stays until its finalizer is dropped.
    let owned = store.get("echo").await.unwrap().unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "demo");
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned-by-record"},
        "data": {"k": "v"},
    }))
    .unwrap();
    cm.metadata.owner_references = Some(vec![store.owner_ref(&owned).unwrap()]);
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    store.delete("echo").await.unwrap();
    let mut deleting = store
        .get("echo")
        .await
        .unwrap()
        .expect("held by its finalizer");
    assert!(deleting.deleting());
    deleting.drop_finalizer(FINALIZER);
    store.replace(&deleting).await.unwrap();
    eventually_async("the record and what it owned are gone", async || {
        let record_gone = store.get("echo").await.unwrap().is_none();
        let owned_gone = configmaps
            .get_opt("owned-by-record")
            .await
            .unwrap()
            .is_none();
        record_gone && owned_gone
    })
    .await;
    let _ = configmaps
        .delete("owned-by-record", &DeleteParams::default())
        .await;
}

async fn eventually_async(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The intercept's Service patches as the server applies them: the setup patch's `test` ops
/// hold against the Service as read, the restore brings back exactly the original selector and
/// ports, and a patch whose `test` no longer holds (someone changed the Service) is refused
/// with 422 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_patches_test_what_they_replace() {
    use czctl::intercept::{objects, shape};
    use kube::api::{Patch, PatchParams};

    let sim = kubesim(&["demo"], &[]);
    let client = client(&sim).await;
    let services = objects::user_services(&client, "demo");
    let before = services.get("api").await.unwrap();
    let uid = before.metadata.uid.clone().unwrap();
    let original = shape::of_service(&before).unwrap();
    let target = shape::hijacked(&original, "api", 80);

    let setup = shape::setup_patch(&uid, &original, &target);
    let patched = services
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Json::<()>(setup.clone()),
        )
        .await
        .expect("the setup patch applies to the Service as read");
    let hijacked = shape::read(&patched);
    assert_eq!(hijacked.selector, target.selector);

    // The same setup patch again: its `test` of the original selector no longer holds.
    let again = services
        .patch("api", &PatchParams::default(), &Patch::Json::<()>(setup))
        .await
        .expect_err("a stale test op is refused");
    assert_eq!(
        czctl::intercept::store::status_of(&again),
        Some(422),
        "{again}"
    );

    let restore = shape::restore_patch(&uid, &hijacked, &original);
    let restored = services
        .patch("api", &PatchParams::default(), &Patch::Json::<()>(restore))
        .await
        .expect("the restore patch applies");
    assert_eq!(
        restored.data["spec"]["selector"],
        before.data["spec"]["selector"]
    );
    assert_eq!(restored.data["spec"]["ports"], before.data["spec"]["ports"]);
}

/// The heartbeat Lease: renewed by a merge patch of its MicroTime, read back as alive; a Lease
/// not renewed for longer than its duration reads as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_lease_reads_alive_then_expired() {
    use czctl::intercept::heartbeat;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Patch, PatchParams};

    let sim = kubesim(&["demo"], &[]);
    let client = client(&sim).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "demo");
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "czctl-ic-test"},
        "spec": {"holderIdentity": "alice@laptop", "leaseDurationSeconds": 30,
                 "acquireTime": heartbeat::micro_now(), "renewTime": heartbeat::micro_now()},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        heartbeat::expired(&client, "demo", "czctl-ic-test").await,
        Some(false)
    );
    // Renewed a minute ago (as a crashed session leaves it): expired.
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60))
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    leases
        .patch(
            "czctl-ic-test",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"renewTime": old}})),
        )
        .await
        .unwrap();
    assert_eq!(
        heartbeat::expired(&client, "demo", "czctl-ic-test").await,
        Some(true)
    );
    assert_eq!(
        heartbeat::expired(&client, "demo", "no-such-lease").await,
        Some(true)
    );
}

/// The objects czctl owns are written with server-side apply as field manager `czctl`: an
/// apply creates, a second one changes what czctl sets and keeps what others added; the
/// router's generation-guarded writes never go backwards; and everything carries the record's
/// ownerReference, so the garbage collector takes it with the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn czctls_objects_are_applied_and_never_go_backwards() {
    use czctl::intercept::manifests::{self, Common};
    use czctl::intercept::objects;
    use czctl::intercept::publish::generation_in;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};

    let sim = kubesim(&["demo"], &[]);
    let client = client(&sim).await;
    let store = RecordStore::detect(client.clone(), "demo").await.unwrap();
    let stored = store
        .create("intercept-demo-echo", "echo", &body())
        .await
        .unwrap();
    let owner = store.owner_ref(&stored).unwrap();
    let common = Common {
        namespace: "demo",
        service: "echo",
        owner: &owner,
    };

    // The router configuration: created, replaced by a newer generation, never by an older.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "demo");
    let generation = |cm: &ConfigMap| generation_in(cm.metadata.annotations.as_ref());
    let conf = |cm: ConfigMap| cm.data.unwrap_or_default()["nginx.conf"].clone();
    for (written, text) in [(2, "conf 2"), (1, "conf 1"), (3, "conf 3"), (3, "conf 3b")] {
        objects::write_generation(
            &configmaps,
            manifests::router_config(&common, text, written),
            written,
            generation,
        )
        .await
        .unwrap();
    }
    let cm = configmaps.get("interceptor-echo").await.unwrap();
    assert_eq!(generation(&cm), 3);
    assert_eq!(
        conf(cm),
        "conf 3",
        "an equal or older generation never overwrites"
    );

    // The agent's Deployment: applied, labelled by someone else, applied again with another
    // image: czctl's change lands and the other manager's label stays.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "demo");
    let first = objects::apply(&deployments, &manifests::tunnel(&common, "ic-abc", "img:1"))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.owner_references.as_deref(),
        Some(std::slice::from_ref(&owner))
    );
    deployments
        .patch(
            "interceptor-echo-ic-abc",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "web"}}})),
        )
        .await
        .unwrap();
    let second = objects::apply(&deployments, &manifests::tunnel(&common, "ic-abc", "img:2"))
        .await
        .unwrap();
    let image = second.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("img:2"));
    let labels = second.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        labels.get("czctl.dev/tunnel").map(String::as_str),
        Some("ic-abc")
    );

    // Every other object an intercept makes is accepted as czctl applies it, twice.
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Secret, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let services: Api<Service> = Api::namespaced(client.clone(), "demo");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "demo");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "demo");
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "demo");
    let now = jiff::Timestamp::now();
    for _ in 0..2 {
        let decoy = manifests::decoy(&common, &body().original).unwrap();
        let decoy = objects::apply(&services, &decoy).await.unwrap();
        let ports = decoy.spec.unwrap().ports.unwrap();
        assert_eq!((ports[0].port, ports[0].node_port), (8080, None));
        let tunnel = objects::apply(&services, &manifests::tunnel_service(&common, "ic-abc"))
            .await
            .unwrap();
        let ip = tunnel.spec.unwrap().cluster_ip.unwrap_or_default();
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip:?}");
        let secret = manifests::tunnel_secret(&common, "ic-abc", "t0ken");
        let secret = objects::apply(&secrets, &secret).await.unwrap();
        assert_eq!(secret.data.unwrap()["token"].0, b"t0ken");
        let lease = manifests::lease(&common, "ic-abc", "alice@laptop", 30, now);
        objects::apply(&leases, &lease).await.unwrap();
        objects::apply(&policies, &manifests::tunnel_policy(&common, "ic-abc"))
            .await
            .unwrap();
    }
    assert_eq!(
        czctl::intercept::heartbeat::expired(&client, "demo", "interceptor-echo-ic-abc").await,
        Some(false)
    );

    // The record goes, and what it owns goes with it.
    let mut record = store.get("intercept-demo-echo").await.unwrap().unwrap();
    record.drop_finalizer(FINALIZER);
    store.replace(&record).await.unwrap();
    store.delete("intercept-demo-echo").await.unwrap();
    eventually_async("the record's objects are collected", async || {
        configmaps
            .get_opt("interceptor-echo")
            .await
            .unwrap()
            .is_none()
            && deployments
                .get_opt("interceptor-echo-ic-abc")
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

/// A cluster where an earlier czctl created the CRD with its hand-written schema (`spec` kept
/// as unknown fields): a start replaces it with the derived one, records keep every field,
/// and the next start finds it current and leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_written_crd_is_replaced_by_the_derived_one() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let sim = kubesim(&["demo"], &[]);
    let client = client(&sim).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let old: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "sessions.czctl.dev", "labels": {"app.kubernetes.io/managed-by": "czctl"}},
        "spec": {
            "group": "czctl.dev", "scope": "Namespaced",
            "names": {"plural": "sessions", "singular": "session", "kind": "Session",
                      "listKind": "SessionList", "shortNames": ["czsession"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &old).await.unwrap();

    let store = RecordStore::detect(client.clone(), "demo").await.unwrap();
    assert_eq!(store.backend, Backend::Crd);
    let upgraded = crds.get("sessions.czctl.dev").await.unwrap();
    let schema = serde_json::to_value(&upgraded.spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    assert!(
        spec.get("x-kubernetes-preserve-unknown-fields").is_none()
            && spec["properties"]["routes"].is_object(),
        "{schema}"
    );
    eventually_async("the replaced CRD serves records", async || {
        store.get("echo").await.is_ok()
    })
    .await;
    let created = store.create("echo", "echo", &body()).await.unwrap();
    assert_eq!(created.body, body());

    RecordStore::detect(client.clone(), "demo").await.unwrap();
    let again = crds.get("sessions.czctl.dev").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, upgraded.metadata.resource_version,
        "a current CRD is left alone"
    );
    let mut record = store.get("echo").await.unwrap().unwrap();
    record.drop_finalizer(FINALIZER);
    store.replace(&record).await.unwrap();
}

/// A start that finds the record closing watches it until it is gone, in either store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_record_is_watched_until_it_is_gone() {
    let sim = kubesim(&["demo"], &[]);
    let client = client(&sim).await;
    for backend in [Backend::Crd, Backend::Configmap] {
        let store = match backend {
            Backend::Crd => RecordStore::detect(client.clone(), "demo").await.unwrap(),
            Backend::Configmap => RecordStore::new(client.clone(), "demo", backend),
        };
        assert_eq!(store.backend, backend);
        let mut closing = body();
        closing.closing = true;
        store.create("closing", "echo", &closing).await.unwrap();
        let open = store.wait_open("closing");
        tokio::pin!(open);
        // Still closing: the watch has not finished after its initial list.
        tokio::select! {
            opened = &mut open => panic!("{backend:?}: a closing record read as open: {opened:?}"),
            () = async {
                let mut again = store.get("closing").await.unwrap().unwrap();
                again.body.generation += 1;
                store.replace(&again).await.unwrap();
            } => {}
        }
        let mut record = store.get("closing").await.unwrap().unwrap();
        record.drop_finalizer(FINALIZER);
        store.replace(&record).await.unwrap();
        store.delete("closing").await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), open)
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: the record's deletion was not seen"))
            .unwrap();
    }
}
