use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};
use k8s_openapi::ByteString;
use serde_json::{json, Value as Json};

use super::*;
use crate::exit::{Code, Fatal};

const NS: &str = "demo";

fn container(spec: Json) -> Container {
    let mut spec = spec;
    spec["name"] = json!("app");
    serde_json::from_value(spec).expect("container")
}

fn pod_spec(spec: Json) -> PodSpec {
    serde_json::from_value(spec).expect("pod spec")
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: meta(name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn meta(name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(NS.to_string()),
        ..Default::default()
    }
}

fn sources(config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> Sources {
    let mut sources = Sources::new(NS);
    for cm in config_maps {
        sources
            .config_maps
            .insert(cm.metadata.name.clone().unwrap(), cm);
    }
    for s in secrets {
        sources.secrets.insert(s.metadata.name.clone().unwrap(), s);
    }
    sources
}

fn live_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "api-7d9f-abcde", "namespace": NS, "uid": "0b7e-uid",
            "labels": {"app": "api", "tier": "web"},
            "annotations": {"team": "core"}
        },
        "spec": {
            "containers": [{"name": "app"}],
            "nodeName": "node-1",
            "serviceAccountName": "api-sa"
        },
        "status": {
            "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}],
            "hostIP": "192.168.1.10", "hostIPs": [{"ip": "192.168.1.10"}]
        }
    }))
    .expect("pod")
}

fn run(c: &Container, sources: &Sources) -> Resolved {
    resolve(&PodSpec::default(), c, sources).expect("resolves")
}

/// The variables as `(name, text)`, for comparison (non-UTF-8 shown lossily).
fn texts(resolved: &Resolved) -> Vec<(String, String)> {
    resolved
        .vars
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn text<'a>(resolved: &'a Resolved, name: &str) -> &'a str {
    resolved
        .get(name)
        .unwrap_or_else(|| panic!("{name} should be resolved"))
        .as_str()
        .expect("utf-8")
}

fn unresolved_names(resolved: &Resolved) -> Vec<&str> {
    resolved
        .unresolved
        .iter()
        .map(|u| u.name.as_str())
        .collect()
}

#[test]
fn env_from_then_env_later_wins_in_first_definition_order() {
    let c = container(json!({
        "envFrom": [
            {"configMapRef": {"name": "one"}},
            {"secretRef": {"name": "two"}},
        ],
        "env": [
            {"name": "C", "value": "env"},
            {"name": "D", "value": "d1"},
            {"name": "D", "value": "d2"},
            {"name": "A", "value": "env-a"},
        ],
    }));
    let s = sources(
        vec![config_map(
            "one",
            &[("A", "one"), ("B", "one"), ("C", "one")],
        )],
        vec![secret("two", &[("B", b"two"), ("Z", b"two")])],
    );
    let r = run(&c, &s);
    assert_eq!(
        texts(&r),
        pairs(&[
            ("A", "env-a"),
            ("B", "two"),
            ("C", "env"),
            ("Z", "two"),
            ("D", "d2"),
        ])
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(r.unresolved.is_empty());
}

#[test]
fn expansion_through_resolve() {
    // (value, expected): A and B come from envFrom and earlier env entries.
    let cases = [
        ("$(A)$(B)", "ab"),
        ("$$(A)", "$(A)"),
        ("$(", "$("),
        ("$(UNSET)", "$(UNSET)"),
        ("$$$(A)", "$a"),
        ("pre-$(A)-$(FROM_CM)-post", "pre-a-cm-post"),
        ("$(SECRET)", "s3cr3t"),
        ("$$", "$"),
        ("$", "$"),
    ];
    for (value, want) in cases {
        let c = container(json!({
            "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "sec"}}],
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "b"},
                {"name": "OUT", "value": value},
            ],
        }));
        let s = sources(
            vec![config_map("cm", &[("FROM_CM", "cm")])],
            vec![secret("sec", &[("SECRET", b"s3cr3t")])],
        );
        let r = run(&c, &s);
        assert_eq!(text(&r, "OUT"), want, "value {value:?}");
    }
}

#[test]
fn expansion_sees_only_earlier_entries_and_warns() {
    let c = container(json!({
        "env": [
            {"name": "URL", "value": "http://$(HOST):$(PORT)"},
            {"name": "HOST", "value": "db"},
            {"name": "AGAIN", "value": "$(HOST)"},
        ],
    }));
    let r = run(&c, &Sources::new(NS));
    assert_eq!(text(&r, "URL"), "http://$(HOST):$(PORT)");
    assert_eq!(text(&r, "AGAIN"), "db");
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("$(HOST)") && r.warnings[0].contains("defined later"));
    assert!(r.warnings[1].contains("$(PORT)"));
}

#[test]
fn a_variable_can_extend_its_own_earlier_value() {
    let c = container(json!({
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [
            {"name": "PATH_LIST", "value": "$(PATH_LIST):/extra"},
            {"name": "PATH_LIST", "value": "$(PATH_LIST):/more"},
        ],
    }));
    let s = sources(vec![config_map("cm", &[("PATH_LIST", "/bin")])], vec![]);
    assert_eq!(text(&run(&c, &s), "PATH_LIST"), "/bin:/extra:/more");
}

#[test]
fn value_from_values_are_not_expanded() {
    let c = container(json!({
        "env": [
            {"name": "A", "value": "a"},
            {"name": "RAW", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "raw"}}},
            {"name": "RAW_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "raw"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "cm", "optional": false}}],
    }));
    let s = sources(
        vec![config_map("cm", &[("raw", "$(A) $$")])],
        vec![secret("sec", &[("raw", b"$(A)")])],
    );
    let r = run(&c, &s);
    assert_eq!(text(&r, "RAW"), "$(A) $$");
    assert_eq!(text(&r, "RAW_SECRET"), "$(A)");
}

#[test]
fn empty_value_without_source_is_an_empty_variable() {
    let c = container(json!({"env": [{"name": "EMPTY"}, {"name": "ALSO", "value": ""}]}));
    let r = run(&c, &Sources::new(NS));
    assert_eq!(texts(&r), pairs(&[("EMPTY", ""), ("ALSO", "")]));
}

#[test]
fn missing_references() {
    struct Case {
        env: Json,
        env_from: Json,
        /// `Ok(vars)` or `Err(message fragments)`.
        want: Result<Vec<(&'static str, &'static str)>, Vec<&'static str>>,
    }
    let cases = [
        // envFrom: a missing object fails unless optional.
        Case {
            env: json!([]),
            env_from: json!([{"configMapRef": {"name": "nope"}}]),
            want: Err(vec!["configmap demo/nope not found", "envFrom"]),
        },
        Case {
            env: json!([]),
            env_from: json!([{"secretRef": {"name": "nope", "optional": false}}]),
            want: Err(vec!["secret demo/nope not found", "envFrom"]),
        },
        Case {
            env: json!([]),
            env_from: json!([
                {"configMapRef": {"name": "nope", "optional": true}},
                {"secretRef": {"name": "nope", "optional": true}},
                {"configMapRef": {"name": "cm"}},
            ]),
            want: Ok(vec![("K", "v")]),
        },
        // keyRefs: missing object or key fails unless optional.
        Case {
            env: json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]),
            env_from: json!([]),
            want: Err(vec!["configmap demo/nope not found", "variable X"]),
        },
        Case {
            env: json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "absent"}}}]),
            env_from: json!([]),
            want: Err(vec![
                "key \"absent\" not found in configmap demo/cm",
                "variable X",
            ]),
        },
        Case {
            env: json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]),
            env_from: json!([]),
            want: Err(vec!["secret demo/nope not found", "variable X"]),
        },
        Case {
            env: json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "absent"}}}]),
            env_from: json!([]),
            want: Err(vec![
                "key \"absent\" not found in secret demo/sec",
                "variable X",
            ]),
        },
        // Optional: the entry is skipped, and what envFrom set stays.
        Case {
            env: json!([
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "absent", "optional": true}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "absent", "optional": true}}},
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "U", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            ]),
            env_from: json!([{"configMapRef": {"name": "cm"}}]),
            want: Ok(vec![("K", "v")]),
        },
    ];
    let s = sources(
        vec![config_map("cm", &[("K", "v")])],
        vec![secret("sec", &[("pw", b"hunter2")])],
    );
    for (i, case) in cases.into_iter().enumerate() {
        let c = container(json!({"env": case.env, "envFrom": case.env_from}));
        match (resolve(&PodSpec::default(), &c, &s), case.want) {
            (Ok(r), Ok(want)) => assert_eq!(texts(&r), pairs(&want), "case {i}"),
            (Err(err), Err(fragments)) => {
                let message = err.to_string();
                for fragment in fragments {
                    assert!(
                        message.contains(fragment),
                        "case {i}: {message:?} lacks {fragment:?}"
                    );
                }
                assert!(
                    !message.contains("hunter2"),
                    "case {i}: a secret value leaked"
                );
                assert_eq!(err.code(), Code::NotFound, "case {i}");
            }
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn optional_skips_are_reported_as_warnings() {
    let c = container(json!({
        "envFrom": [{"secretRef": {"name": "gone", "optional": true}}],
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": true}}}],
    }));
    let r = run(&c, &sources(vec![config_map("cm", &[])], vec![]));
    assert!(r.vars.is_empty());
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("secret demo/gone"));
    assert!(r.warnings[1].contains("X is not set") && r.warnings[1].contains("configmap demo/cm"));
}

#[test]
fn prefix_and_invalid_keys() {
    let keys = [
        ("GOOD", "1"),
        ("1bad", "2"),
        ("my.key", "3"),
        ("dash-ed", "4"),
        ("..dots", "5"),
        (".", "6"),
        ("_under", "7"),
    ];
    // (prefix, rule, kept names in order, skipped names in the warning)
    let cases: [(&str, NameRule, &[&str], &str); 4] = [
        (
            "",
            NameRule::Strict,
            &["GOOD", "_under", "dash-ed", "my.key"],
            "Keys [., ..dots, 1bad] from the EnvFrom configMap demo/cm were skipped",
        ),
        (
            "P_",
            NameRule::Strict,
            &["P_.", "P_..dots", "P_1bad", "P_GOOD", "P__under", "P_dash-ed", "P_my.key"],
            "",
        ),
        (
            "1",
            NameRule::Strict,
            &[],
            "Keys [1., 1..dots, 11bad, 1GOOD, 1_under, 1dash-ed, 1my.key] from the EnvFrom configMap demo/cm",
        ),
        (
            "",
            NameRule::Relaxed,
            &[".", "..dots", "1bad", "GOOD", "_under", "dash-ed", "my.key"],
            "",
        ),
    ];
    for (prefix, rule, kept, warning) in cases {
        let c = container(json!({"envFrom": [{"configMapRef": {"name": "cm"}, "prefix": prefix}]}));
        let mut s = sources(vec![config_map("cm", &keys)], vec![]);
        s.name_rule = rule;
        let r = run(&c, &s);
        let names: Vec<&str> = r.vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, kept, "prefix {prefix:?} {rule:?}");
        if warning.is_empty() {
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        } else {
            assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
            assert!(r.warnings[0].starts_with(warning), "{:?}", r.warnings[0]);
        }
    }
}

#[test]
fn invalid_secret_keys_are_named_not_their_values() {
    let c = container(json!({"envFrom": [{"secretRef": {"name": "sec"}}]}));
    let s = sources(
        vec![],
        vec![secret("sec", &[("9lives", b"topsecret"), ("OK", b"x")])],
    );
    let r = run(&c, &s);
    assert_eq!(texts(&r), pairs(&[("OK", "x")]));
    assert_eq!(
        r.warnings,
        vec!["Keys [9lives] from the EnvFrom secret demo/sec were skipped since they are considered invalid environment variable names".to_string()]
    );
}

#[test]
fn name_rules() {
    for (name, strict, relaxed) in [
        ("A", true, true),
        ("a_b-c.d9", true, true),
        ("_", true, true),
        ("-x", true, true),
        (".x", true, true),
        ("9x", false, true),
        ("", false, false),
        (".", false, true),
        ("..", false, true),
        ("..x", false, true),
        ("a b", false, true),
        ("a:b", false, true),
        ("a=b", false, false),
        ("é", false, false),
        ("tab\t", false, false),
    ] {
        assert_eq!(NameRule::Strict.is_valid(name), strict, "strict {name:?}");
        assert_eq!(
            NameRule::Relaxed.is_valid(name),
            relaxed,
            "relaxed {name:?}"
        );
    }
}

#[test]
fn binary_secret_bytes_are_preserved() {
    let raw: &[u8] = &[0x00, 0xff, 0xfe, b'a', 0x00];
    let c = container(json!({
        "envFrom": [{"secretRef": {"name": "bin"}}],
        "env": [
            {"name": "ONE", "valueFrom": {"secretKeyRef": {"name": "bin", "key": "blob"}}},
            {"name": "EMBED", "value": "<$(blob)>"},
        ],
    }));
    let s = sources(
        vec![],
        vec![secret("bin", &[("blob", raw), ("utf8", "é\0".as_bytes())])],
    );
    let r = run(&c, &s);
    assert_eq!(r.get("blob"), Some(&Value::Bytes(raw.to_vec())));
    assert_eq!(r.get("ONE").unwrap().as_bytes(), raw);
    let mut embedded = b"<".to_vec();
    embedded.extend_from_slice(raw);
    embedded.push(b'>');
    assert_eq!(r.get("EMBED").unwrap().as_bytes(), embedded.as_slice());
    assert_eq!(r.get("utf8"), Some(&Value::Text("é\0".to_string())));
    // Debug never shows values.
    let debug = format!("{r:?}");
    assert!(debug.contains("Bytes(<5 bytes>)"), "{debug}");
    assert!(!debug.contains("255"), "{debug}");
}

#[test]
fn binary_data_of_config_maps_is_not_in_the_environment() {
    let mut cm = config_map("cm", &[("TEXT", "t")]);
    cm.binary_data = Some(BTreeMap::from([(
        "BLOB".to_string(),
        ByteString(vec![1, 2, 3]),
    )]));
    let s = sources(vec![cm], vec![]);
    let c = container(json!({"envFrom": [{"configMapRef": {"name": "cm"}}]}));
    let r = run(&c, &s);
    assert_eq!(texts(&r), pairs(&[("TEXT", "t")]));
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].contains("binaryData keys [BLOB] of configmap demo/cm"));

    let c = container(
        json!({"env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "BLOB"}}}]}),
    );
    let err = resolve(&PodSpec::default(), &c, &s).unwrap_err();
    assert!(err.to_string().contains("it is in binaryData"), "{err}");
}

#[test]
fn field_refs_without_a_live_pod() {
    let c = container(json!({"env": [
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.serviceAccountName"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "URL", "value": "http://$(IP):8080"},
        {"name": "PLAIN", "value": "ns=$(NS)"},
    ]}));
    let r = run(&c, &Sources::new(NS));
    assert_eq!(
        texts(&r),
        pairs(&[("NS", "demo"), ("SA", "default"), ("PLAIN", "ns=demo")])
    );
    assert_eq!(unresolved_names(&r), ["POD", "IP", "APP", "URL"]);
    assert!(
        r.unresolved[0].reason.contains("metadata.name")
            && r.unresolved[0].reason.contains("none does")
    );
    assert!(
        r.unresolved[3].reason.contains("$(IP)"),
        "{:?}",
        r.unresolved[3]
    );

    let spec = pod_spec(json!({"containers": [{"name": "app"}], "serviceAccountName": "builder"}));
    let r = resolve(&spec, &c, &Sources::new(NS)).unwrap();
    assert_eq!(text(&r, "SA"), "builder");
}

#[test]
fn field_refs_from_the_live_pod() {
    let cases = [
        ("metadata.name", "api-7d9f-abcde"),
        ("metadata.namespace", "demo"),
        ("metadata.uid", "0b7e-uid"),
        ("metadata.labels['app']", "api"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['team']", "core"),
        ("spec.nodeName", "node-1"),
        ("spec.host", "node-1"),
        ("spec.serviceAccountName", "api-sa"),
        ("status.podIP", "10.0.0.7"),
        ("status.podIPs", "10.0.0.7,fd00::7"),
        ("status.hostIP", "192.168.1.10"),
        ("status.hostIPs", "192.168.1.10"),
    ];
    let mut s = Sources::new(NS);
    s.pod = Some(live_pod());
    for (path, want) in cases {
        let c = container(
            json!({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]}),
        );
        let r = run(&c, &s);
        assert_eq!(text(&r, "V"), want, "{path}");
    }
    let c = container(json!({"env": [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "URL", "value": "http://$(IP):8080"},
    ]}));
    let r = run(&c, &s);
    assert_eq!(text(&r, "URL"), "http://10.0.0.7:8080");
    assert_eq!(
        r.warnings,
        vec!["POD, IP taken from the running pod demo/api-7d9f-abcde: a new pod of the workload gets its own".to_string()]
    );
}

#[test]
fn field_refs_of_a_pending_pod() {
    let mut pod = live_pod();
    pod.status = None;
    pod.spec.as_mut().unwrap().node_name = None;
    let mut s = Sources::new(NS);
    s.pod = Some(pod);
    let c = container(json!({"env": [
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]}));
    let r = run(&c, &s);
    assert_eq!(texts(&r), pairs(&[("POD", "api-7d9f-abcde")]));
    assert_eq!(unresolved_names(&r), ["IP", "IPS", "NODE"]);
    assert!(r.unresolved[0].reason.contains("has no IP yet"));
    assert!(r.unresolved[2].reason.contains("not scheduled"));
}

#[test]
fn unsupported_field_refs_fail() {
    for (field, fragment) in [
        (
            json!({"fieldPath": "status.phase"}),
            "\"status.phase\" is not supported",
        ),
        (
            json!({"fieldPath": "metadata.labels"}),
            "\"metadata.labels\" is not supported",
        ),
        (
            json!({"fieldPath": "spec.containers['x']"}),
            "subscripts work on",
        ),
        (
            json!({"apiVersion": "v2", "fieldPath": "metadata.name"}),
            "apiVersion \"v2\"",
        ),
    ] {
        let c = container(json!({"env": [{"name": "V", "valueFrom": {"fieldRef": field}}]}));
        let mut s = Sources::new(NS);
        s.pod = Some(live_pod());
        let err = resolve(&PodSpec::default(), &c, &s).unwrap_err();
        assert!(err.to_string().starts_with("variable V: "), "{err}");
        assert!(err.to_string().contains(fragment), "{err} lacks {fragment}");
        assert_eq!(err.code(), Code::Failure);
    }
}

#[test]
fn overriding_changes_resolved_and_unresolved() {
    let c = container(json!({
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [
            // A known value replaced by one that cannot be known here.
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            // An unknown one replaced by a known one.
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "B", "value": "fixed"},
        ],
    }));
    let r = run(
        &c,
        &sources(vec![config_map("cm", &[("A", "from-cm")])], vec![]),
    );
    assert_eq!(texts(&r), pairs(&[("B", "fixed")]));
    assert_eq!(unresolved_names(&r), ["A"]);
}

#[test]
fn resource_field_refs() {
    let spec = json!({
        "limits": {"cpu": "250m", "memory": "64Mi", "ephemeral-storage": "1Gi", "hugepages-2Mi": "4Mi"},
        "requests": {"cpu": "100m"}
    });
    // (resources, resource, divisor, expected: Some(value) or None for unresolved)
    let cases: Vec<(Json, &str, Option<&str>, Option<&str>)> = vec![
        (spec.clone(), "limits.cpu", None, Some("1")),
        (spec.clone(), "limits.cpu", Some("1m"), Some("250")),
        (spec.clone(), "limits.cpu", Some("1"), Some("1")),
        (spec.clone(), "limits.cpu", Some("0"), Some("1")),
        (spec.clone(), "requests.cpu", None, Some("1")),
        (spec.clone(), "requests.cpu", Some("1m"), Some("100")),
        (spec.clone(), "limits.memory", None, Some("67108864")),
        (spec.clone(), "limits.memory", Some("1Mi"), Some("64")),
        (spec.clone(), "limits.memory", Some("1M"), Some("68")),
        (spec.clone(), "limits.memory", Some("1Gi"), Some("1")),
        // requests default to limits, as the API server defaults a Pod
        (spec.clone(), "requests.memory", Some("1Mi"), Some("64")),
        (
            spec.clone(),
            "limits.ephemeral-storage",
            Some("1Mi"),
            Some("1024"),
        ),
        (
            spec.clone(),
            "requests.ephemeral-storage",
            Some("1Gi"),
            Some("1"),
        ),
        (spec.clone(), "limits.hugepages-2Mi", Some("1Mi"), Some("4")),
        (spec.clone(), "limits.hugepages-1Gi", None, Some("0")),
        // nothing set: requests are zero, limits the node's allocatable
        (json!({}), "requests.cpu", None, Some("0")),
        (json!({}), "requests.memory", None, Some("0")),
        (json!({}), "limits.cpu", None, None),
        (json!({}), "limits.memory", Some("1Mi"), None),
        (json!({}), "limits.ephemeral-storage", None, None),
        (json!({"limits": {"cpu": "0"}}), "limits.cpu", None, None),
        (
            json!({"limits": {"cpu": "2"}}),
            "limits.cpu",
            Some("1m"),
            Some("2000"),
        ),
        (
            json!({"limits": {"cpu": "1.5"}}),
            "limits.cpu",
            None,
            Some("2"),
        ),
    ];
    for (resources, resource, divisor, want) in cases {
        let mut field = json!({"resource": resource});
        if let Some(divisor) = divisor {
            field["divisor"] = json!(divisor);
        }
        let c = container(json!({
            "resources": resources,
            "env": [{"name": "V", "valueFrom": {"resourceFieldRef": field}}],
        }));
        let r = run(&c, &Sources::new(NS));
        match want {
            Some(want) => assert_eq!(text(&r, "V"), want, "{resource} / {divisor:?}"),
            None => {
                assert_eq!(unresolved_names(&r), ["V"], "{resource} / {divisor:?}");
                assert!(r.unresolved[0].reason.contains("allocatable"));
            }
        }
    }
}

#[test]
fn resource_field_refs_of_other_containers_and_pod_level_limits() {
    let spec = pod_spec(json!({
        "containers": [
            {"name": "app"},
            {"name": "sidecar", "resources": {"limits": {"memory": "128Mi"}}},
        ],
        "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "2"}}}],
        "resources": {"limits": {"cpu": "3", "memory": "1Gi"}},
    }));
    let c = container(json!({"env": [
        {"name": "SIDE", "valueFrom": {"resourceFieldRef": {"containerName": "sidecar", "resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "INIT", "valueFrom": {"resourceFieldRef": {"containerName": "init", "resource": "requests.cpu"}}},
        {"name": "POD_CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
        {"name": "POD_MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "STORAGE", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage"}}},
    ]}));
    let r = resolve(&spec, &c, &Sources::new(NS)).unwrap();
    assert_eq!(
        texts(&r),
        pairs(&[
            ("SIDE", "128"),
            ("INIT", "2"),
            ("POD_CPU", "3000"),
            ("POD_MEM", "1024")
        ])
    );
    assert_eq!(unresolved_names(&r), ["STORAGE"]);

    for (field, fragment) in [
        (
            json!({"containerName": "ghost", "resource": "limits.cpu"}),
            "container \"ghost\"",
        ),
        (
            json!({"resource": "limits.gpu"}),
            "unsupported container resource \"limits.gpu\"",
        ),
        (
            json!({"resource": "cpu"}),
            "unsupported container resource \"cpu\"",
        ),
        (
            json!({"resource": "limits.cpu", "divisor": "lots"}),
            "invalid quantity \"lots\"",
        ),
    ] {
        let c = container(json!({
            "resources": {"limits": {"cpu": "1"}},
            "env": [{"name": "V", "valueFrom": {"resourceFieldRef": field}}],
        }));
        let err = resolve(&spec, &c, &Sources::new(NS)).unwrap_err();
        assert!(err.to_string().contains(fragment), "{err} lacks {fragment}");
    }
}

#[test]
fn file_key_refs_are_unresolved() {
    let c = container(json!({"env": [{"name": "F", "valueFrom": {"fileKeyRef": {
        "volumeName": "cfg", "path": "app.env", "key": "TOKEN"
    }}}]}));
    let r = run(&c, &Sources::new(NS));
    assert_eq!(unresolved_names(&r), ["F"]);
    assert!(r.unresolved[0].reason.contains("volume \"cfg\""));
}

#[test]
fn service_variables_expand_and_come_last() {
    let c = container(json!({"env": [
        {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "8443"},
    ]}));
    let mut s = Sources::new(NS);
    s.service_env = vec![
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "10.96.0.1".to_string(),
        ),
        ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
    ];
    let r = run(&c, &s);
    assert_eq!(
        texts(&r),
        pairs(&[
            ("API", "https://10.96.0.1:443"),
            ("KUBERNETES_SERVICE_PORT", "8443"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ])
    );

    // Without them, a Service-looking reference stays and the warning says why.
    let r = run(&c, &Sources::new(NS));
    assert_eq!(
        text(&r, "API"),
        "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"
    );
    assert!(
        r.warnings[0].contains("Service variable"),
        "{:?}",
        r.warnings
    );
    assert!(r.warnings[1].contains("defined later"), "{:?}", r.warnings);
}

#[test]
fn container_selection() {
    let spec = pod_spec(json!({
        "containers": [{"name": "app"}, {"name": "sidecar"}],
        "initContainers": [{"name": "migrate"}],
    }));
    assert_eq!(select_container(&spec, None).unwrap().name, "app");
    assert_eq!(
        select_container(&spec, Some("sidecar")).unwrap().name,
        "sidecar"
    );
    assert_eq!(
        select_container(&spec, Some("migrate")).unwrap().name,
        "migrate"
    );
    let err = select_container(&spec, Some("web")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container \"web\" is not in the pod template (containers: app, sidecar; init containers: migrate)"
    );
    assert_eq!(err.code(), Code::NotFound);
    let fatal: Fatal = err.into();
    assert_eq!(fatal.code, Code::NotFound);

    let empty = PodSpec::default();
    assert_eq!(
        select_container(&empty, None).unwrap_err(),
        ResolveError::NoContainers
    );
    assert!(select_container(&empty, Some("x"))
        .unwrap_err()
        .to_string()
        .contains("containers: none; init containers: none"));
}

#[test]
fn referenced_objects() {
    let c = container(json!({
        "envFrom": [
            {"configMapRef": {"name": "cm-a"}},
            {"secretRef": {"name": "sec-a", "optional": true}},
            {"prefix": "X_"},
        ],
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-b", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec-b", "key": "k"}}},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "sec-a", "key": "k"}}},
            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "E", "value": "x"},
        ],
    }));
    let (config_maps, secrets) = referenced(&c);
    assert_eq!(
        config_maps.into_iter().collect::<Vec<_>>(),
        ["cm-a", "cm-b"]
    );
    assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["sec-a", "sec-b"]);
}

#[test]
fn values_never_reach_errors_warnings_or_debug() {
    let c = container(json!({
        "envFrom": [{"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "X", "value": "$(PASSWORD)-$(MISSING)"},
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "absent"}}},
        ],
    }));
    let s = sources(
        vec![],
        vec![secret(
            "sec",
            &[("PASSWORD", b"hunter2"), ("bad key", b"hunter3")],
        )],
    );
    let err = resolve(&PodSpec::default(), &c, &s).unwrap_err();
    assert!(!err.to_string().contains("hunter"));
    assert!(!format!("{err:?}").contains("hunter"));

    let c = container(json!({
        "envFrom": [{"secretRef": {"name": "sec"}}],
        "env": [{"name": "X", "value": "$(PASSWORD)-$(MISSING)"}],
    }));
    let r = run(&c, &s);
    assert_eq!(text(&r, "X"), "hunter2-$(MISSING)");
    let shown = format!("{:?} {:?}", r, r.warnings);
    assert!(!shown.contains("hunter"), "{shown}");
    assert!(r.warnings.iter().any(|w| w.contains("[bad key]")));
}
