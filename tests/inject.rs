//! `touchgate inject`: golden files for each workload kind in both sidecar
//! forms, idempotence, untouched documents, Service rewiring, errors, and every
//! output document checked against the Kubernetes API types (k8s-openapi).
//!
//! Golden files: `tests/fixtures/inject/NAME.yaml` is the input,
//! `NAME.native.yaml` / `NAME.classic.yaml` the expected outputs. After a
//! deliberate change, regenerate with `UPDATE_GOLDEN=1 cargo test --test
//! inject`, then review the diff before committing.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use touchgate::cli::inject::{AppPort, InjectError, InjectOptions, inject};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

/// Fixed options, so the golden files do not change with the crate version.
fn opts(classic: bool) -> InjectOptions {
    InjectOptions {
        classic,
        image: "ghcr.io/touchgate/touchgate:test".into(),
        ..InjectOptions::default()
    }
}

/// The golden cases: input fixture and the options it is injected with.
fn cases() -> Vec<(&'static str, Option<AppPort>)> {
    vec![
        ("deployment", None),
        ("statefulset", None),
        ("daemonset", None),
        // No declared port: the number is taken as given.
        ("job", Some(AppPort::Number(8000))),
        ("cronjob", None),
        // The app is the second container.
        ("pod", Some(AppPort::Name("web".into()))),
        ("list", None),
    ]
}

fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .header("expected", "actual")
        .to_string()
}

#[test]
fn golden_files_for_each_kind_and_form() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, app_port) in cases() {
        let input = read(&format!("{name}.yaml"));
        for (form, classic) in [("native", false), ("classic", true)] {
            let options = InjectOptions {
                app_port: app_port.clone(),
                ..opts(classic)
            };
            let actual =
                inject(&input, &options).unwrap_or_else(|e| panic!("{name} ({form}): {e}"));
            let path = fixtures().join(format!("{name}.{form}.yaml"));
            if update {
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
            if expected != actual {
                failures.push(format!(
                    "{} differs:\n{}",
                    path.display(),
                    diff(&expected, &actual)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn injecting_twice_changes_nothing() {
    for (name, app_port) in cases() {
        let input = read(&format!("{name}.yaml"));
        for classic in [false, true] {
            let options = InjectOptions {
                app_port: app_port.clone(),
                ..opts(classic)
            };
            let once = inject(&input, &options).unwrap();
            assert_ne!(once, input, "{name}: nothing was injected");
            let twice = inject(&once, &options).unwrap();
            assert!(
                once == twice,
                "{name} (classic: {classic}) changed on the second run:\n{}",
                diff(&once, &twice)
            );
            // The other form does not stack a second sidecar either.
            let other = InjectOptions {
                classic: !classic,
                ..options
            };
            assert_eq!(inject(&once, &other).unwrap(), once, "{name}");
        }
    }
}

#[test]
fn documents_without_pod_templates_pass_through_byte_for_byte() {
    let input = "\u{feff}# a leading comment\n\
        apiVersion: v1\n\
        kind: ConfigMap\n\
        metadata: {name: flags}   # flow style and a comment\n\
        data:\n  mode: 'on'\n  perms: 0644\n\
        ---\n\
        # only a comment in this document\n\
        ---   \n\
        apiVersion: example.com/v1\n\
        kind: Deployment          # a CRD reusing the name: not a workload\n\
        spec: {template: {spec: {containers: []}}}\n\
        ...\n\
        ---\r\n\
        apiVersion: v1\r\nkind: Secret\r\nmetadata:\r\n  name: s\r\nstringData:\r\n  k: v\r\n\
        ---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selector: {app: x}\n  ports: [{port: 80}]";
    assert_eq!(inject(input, &opts(false)).unwrap(), input);
    assert_eq!(inject("", &opts(false)).unwrap(), "");
}

#[test]
fn untouched_documents_keep_their_bytes_beside_patched_ones() {
    let input = read("deployment.yaml");
    let output = inject(&input, &opts(false)).unwrap();
    let configmap = input.split("---\n").next().unwrap();
    assert!(output.starts_with(configmap), "{output}");
    assert!(output.contains("LOG_LEVEL: info   # a comment that must survive"));
    // The patched document keeps its leading comment line.
    assert!(
        output.contains("---\n# Source: shop/templates/deployment.yaml\napiVersion: apps/v1\n")
    );
}

#[test]
fn an_injected_pod_is_left_exactly_as_it_was() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  \
        - {name: app, image: app, ports: [{containerPort: 3000}]}\n  \
        - {name: touchgate, image: my-own-build}\n";
    assert_eq!(inject(input, &opts(false)).unwrap(), input);
}

/// The documents of a YAML stream as JSON, read by a YAML 1.2 parser that
/// shares no code with touchgate's reader.
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|de| Value::deserialize(de).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .flat_map(|d| match d["items"].as_array() {
            Some(items) => items.iter().collect::<Vec<_>>(),
            None => vec![d],
        })
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn target_ports(service: &Value) -> Vec<Value> {
    service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].clone())
        .collect()
}

#[test]
fn services_are_rewired_by_port_name_and_number() {
    // By name: `http` is the app port, whose name touchgate's port takes
    // (the app's becomes `tg-app`), so the Service is left as it was;
    // `metrics` is another port of the app.
    let docs = documents(&inject(&read("deployment.yaml"), &opts(false)).unwrap());
    assert_eq!(
        target_ports(find(&docs, "Service", "shop")),
        vec![Value::from("http"), Value::from("metrics")]
    );
    let spec = &find(&docs, "Deployment", "shop")["spec"]["template"]["spec"];
    assert_eq!(spec["initContainers"][0]["ports"][0]["name"], "http");
    assert_eq!(spec["containers"][0]["ports"][0]["name"], "tg-app");
    assert_eq!(spec["containers"][0]["ports"][1]["name"], "metrics");
    // The app's own probe named its port: it follows the rename.
    assert_eq!(
        spec["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "tg-app"
    );
    // By number; the same labels in another namespace are other pods; a
    // headless Service is left alone.
    let docs = documents(&inject(&read("statefulset.yaml"), &opts(false)).unwrap());
    let by_namespace = |ns: &str| {
        docs.iter()
            .find(|d| {
                d["kind"] == "Service"
                    && d["metadata"]["name"] == "leads"
                    && d["metadata"]["namespace"] == ns
            })
            .unwrap()
    };
    assert_eq!(
        target_ports(by_namespace("marketing")),
        vec![Value::from("touchgate")]
    );
    assert_eq!(
        target_ports(by_namespace("staging")),
        vec![Value::from(5000)]
    );
    assert_eq!(
        target_ports(find(&docs, "Service", "leads-peers")),
        vec![Value::Null]
    );
    // A number that is the number of the named app port, and the default
    // targetPort (= port): pointed at the name touchgate's port took; then
    // by name in a List, which needs no change.
    let options = InjectOptions {
        app_port: Some(AppPort::Name("web".into())),
        ..opts(true)
    };
    let docs = documents(&inject(&read("pod.yaml"), &options).unwrap());
    assert_eq!(
        target_ports(find(&docs, "Service", "landing")),
        vec![Value::from("web"), Value::from("web")]
    );
    let docs = documents(&inject(&read("list.yaml"), &opts(false)).unwrap());
    assert_eq!(
        target_ports(find(&docs, "Service", "signup")),
        vec![Value::from("http")]
    );
}

#[test]
fn a_service_beside_an_already_injected_pod_is_rewired() {
    let injected = inject(&read("deployment.yaml"), &opts(false)).unwrap();
    let workload = injected.split("---\n").nth(1).unwrap();
    let service = read("deployment.yaml")
        .split("---\n")
        .nth(2)
        .unwrap()
        .to_string();
    let again = inject(&format!("{workload}---\n{service}"), &opts(false)).unwrap();
    let docs = documents(&again);
    assert_eq!(
        target_ports(find(&docs, "Service", "shop")),
        vec![Value::from("http"), Value::from("metrics")]
    );
    // By number, beside the injected pod: pointed at the name touchgate's
    // port carries.
    let by_number = service.replace("targetPort: http", "targetPort: 3000");
    let docs = documents(&inject(&format!("{workload}---\n{by_number}"), &opts(false)).unwrap());
    assert_eq!(
        target_ports(find(&docs, "Service", "shop")),
        vec![Value::from("http"), Value::from("metrics")]
    );
    assert!(
        again.starts_with(workload),
        "the injected workload must not change"
    );
}

#[test]
fn the_sidecar_is_native_by_default_and_classic_on_request() {
    let input = read("deployment.yaml");
    let native = documents(&inject(&input, &opts(false)).unwrap());
    let spec = &find(&native, "Deployment", "shop")["spec"]["template"]["spec"];
    let sidecar = &spec["initContainers"][0];
    assert_eq!(sidecar["name"], "touchgate");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1);

    let classic = documents(&inject(&input, &opts(true)).unwrap());
    let spec = &find(&classic, "Deployment", "shop")["spec"]["template"]["spec"];
    assert!(spec.get("initContainers").is_none());
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(
        containers[0]["name"], "shop",
        "the app stays the default container"
    );
    let sidecar = &containers[1];
    assert_eq!(sidecar["name"], "touchgate");
    assert!(sidecar.get("restartPolicy").is_none());

    // What the sidecar carries, in both forms.
    for sidecar in [
        &spec["containers"][1],
        &find(&native, "Deployment", "shop")["spec"]["template"]["spec"]["initContainers"][0],
    ] {
        assert_eq!(sidecar["image"], "ghcr.io/touchgate/touchgate:test");
        assert_eq!(
            sidecar["args"],
            serde_json::json!(["run", "--config", "/etc/touchgate/touchgate.toml"])
        );
        // The app port's name, which Services target.
        assert_eq!(sidecar["ports"][0]["name"], "http");
        assert_eq!(sidecar["ports"][0]["containerPort"], 8080);
        assert_eq!(sidecar["ports"][1]["name"], "tg-admin");
        assert_eq!(sidecar["ports"][1]["containerPort"], 9901);
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], "tg-admin");
        let env = sidecar["env"].as_array().unwrap();
        assert_eq!(env[0]["name"], "TOUCHGATE_SECRET");
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "touchgate");
        assert_eq!(env[1]["name"], "TOUCHGATE_UPSTREAM");
        assert_eq!(env[1]["value"], "http://127.0.0.1:3000");
        assert_eq!(sidecar["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
        let security = &sidecar["securityContext"];
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(sidecar["resources"]["requests"]["memory"].is_string());
        assert!(sidecar["resources"]["limits"]["memory"].is_string());
    }
}

#[test]
fn volumes_and_grace_period() {
    let options = InjectOptions {
        config_map: "shop-touchgate".into(),
        secret: "shop-secrets".into(),
        drain_delay: std::time::Duration::from_millis(2500),
        drain_timeout: std::time::Duration::from_secs(20),
        ..opts(false)
    };
    let docs = documents(&inject(&read("deployment.yaml"), &options).unwrap());
    let spec = &find(&docs, "Deployment", "shop")["spec"]["template"]["spec"];
    let volumes = spec["volumes"].as_array().unwrap();
    assert_eq!(
        volumes[0]["name"], "settings",
        "existing volumes stay first"
    );
    assert_eq!(
        volumes[0]["configMap"]["defaultMode"], 420,
        "0644 is octal to kubectl"
    );
    assert_eq!(volumes[1]["configMap"]["name"], "shop-touchgate");
    assert!(volumes[2]["emptyDir"].is_object());
    let sidecar = &spec["initContainers"][0];
    assert_eq!(
        sidecar["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "shop-secrets"
    );
    assert_eq!(sidecar["envFrom"][0]["secretRef"]["name"], "shop-secrets");
    // preStop 3 s (rounded up) + drain_delay 3 s + drain_timeout 20 s + 5 s.
    assert_eq!(sidecar["lifecycle"]["preStop"]["sleep"]["seconds"], 3);
    assert_eq!(spec["terminationGracePeriodSeconds"], 31);

    // A longer grace period is kept; a shorter one is raised.
    let docs = documents(&inject(&read("statefulset.yaml"), &opts(false)).unwrap());
    assert_eq!(
        find(&docs, "StatefulSet", "leads")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        60
    );
    let docs = documents(&inject(&read("daemonset.yaml"), &opts(false)).unwrap());
    let spec = &find(&docs, "DaemonSet", "edge")["spec"]["template"]["spec"];
    assert_eq!(spec["terminationGracePeriodSeconds"], 40);
    // The sidecar starts before the existing init container.
    assert_eq!(spec["initContainers"][0]["name"], "touchgate");
    assert_eq!(spec["initContainers"][1]["name"], "fetch-geoip");
}

#[test]
fn meaning_survives_re_emission() {
    let docs = documents(&inject(&read("deployment.yaml"), &opts(false)).unwrap());
    let app = &find(&docs, "Deployment", "shop")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(app["env"][0]["value"], "yes", "a quoted yes stays a string");
    assert_eq!(app["args"], serde_json::json!(["--port", "3000"]));
    let docs = documents(
        &inject(
            &read("job.yaml"),
            &InjectOptions {
                app_port: Some(AppPort::Number(8000)),
                ..opts(false)
            },
        )
        .unwrap(),
    );
    let app = &find(&docs, "Job", "backfill")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(app["args"], serde_json::json!(["--since", "2024-01-01"]));
    // Multi-line strings come out as literal blocks with the same text.
    let docs = documents(&inject(&read("daemonset.yaml"), &opts(false)).unwrap());
    let init = &find(&docs, "DaemonSet", "edge")["spec"]["template"]["spec"]["initContainers"][1];
    assert_eq!(init["command"][2], "set -e\nfetch --out /data/geo.mmdb\n");
}

fn expect_patch_error(input: &str, options: &InjectOptions, document: usize, reason: &str) {
    match inject(input, options) {
        Err(e @ InjectError::Patch { .. }) => {
            assert_eq!(e.document(), document, "{e}");
            let text = e.to_string();
            assert!(text.contains(reason), "{text:?} lacks {reason:?}");
        }
        other => panic!("expected a patch error, got {other:?}"),
    }
}

#[test]
fn bad_yaml_is_an_error_with_its_document_and_line() {
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# comment\n---\n\
        apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\n   labels: x\n";
    match inject(input, &opts(false)) {
        Err(e @ InjectError::Parse { line, .. }) => {
            // `---` starts a document even when only a comment follows.
            assert_eq!(e.document(), 4, "{e}");
            assert_eq!(line, 15, "{e}");
            assert!(e.to_string().starts_with("document 4: line 15"), "{e}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let unclosed = "apiVersion: v1\nkind: Pod\nspec: {containers: [\n";
    assert!(matches!(
        inject(unclosed, &opts(false)),
        Err(InjectError::Parse { document: 1, .. })
    ));
}

#[test]
fn unpatchable_documents_are_errors_naming_the_field() {
    let no_containers = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n\
        spec:\n  template:\n    spec: {}\n";
    expect_patch_error(
        no_containers,
        &opts(false),
        2,
        "Deployment/web: cannot inject: spec.template.spec.containers is missing",
    );
    let no_template = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n";
    expect_patch_error(no_template, &opts(false), 1, "spec.template is missing");
    let cron =
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate: {}\n";
    expect_patch_error(cron, &opts(false), 1, "spec.jobTemplate.spec is missing");

    // The default app port needs a declared port on the first container.
    expect_patch_error(&read("pod.yaml"), &opts(false), 1, "pass --app-port");
    let missing = InjectOptions {
        app_port: Some(AppPort::Name("grpc".into())),
        ..opts(false)
    };
    expect_patch_error(
        &read("deployment.yaml"),
        &missing,
        2,
        "no container declares a port named \"grpc\"",
    );
    // touchgate's ports must be free in the pod.
    let clash = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  \
        - {name: app, image: app, ports: [{containerPort: 3000}, {containerPort: 9901}]}\n";
    expect_patch_error(clash, &opts(false), 1, "declares port 9901");
    let on_8080 = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  \
        - {name: app, image: app, ports: [{name: http, containerPort: 8080}]}\n";
    expect_patch_error(on_8080, &opts(false), 1, "the app port 8080");
    // A List item is named by its position.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: DaemonSet\n  \
        metadata: {name: d}\n  spec: {template: {spec: {containers: []}}}\n";
    expect_patch_error(
        list,
        &opts(false),
        1,
        "List item 1: DaemonSet/d: cannot inject: spec.template.spec.containers is empty",
    );
    // A construct the re-emitted document could not keep.
    let tagged = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {a: !custom x}}\n\
        spec:\n  containers:\n  - {name: app, image: app, ports: [{containerPort: 3000}]}\n";
    expect_patch_error(tagged, &opts(false), 1, "line 3: the tag !custom");
}

// ---------------------------------------------------------------------------
// Schema: every output document must deserialize into the Kubernetes type of
// its kind, and serialize back to the same JSON. k8s-openapi ignores unknown
// fields, so the round trip is what catches a misspelt or misplaced one.

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let mut back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    drop_added_type_meta(&mut back, doc);
    if back == *doc {
        Ok(())
    } else {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap();
        Err(format!(
            "fields lost in the typed round trip (unknown or misplaced):\n{}",
            diff(&pretty(doc), &pretty(&back))
        ))
    }
}

/// k8s-openapi writes `apiVersion`/`kind` into embedded objects (a
/// StatefulSet's volumeClaimTemplates) that manifests leave out.
fn drop_added_type_meta(back: &mut Value, doc: &Value) {
    match (back, doc) {
        (Value::Object(b), Value::Object(d)) => {
            for key in ["apiVersion", "kind"] {
                if !d.contains_key(key) {
                    b.remove(key);
                }
            }
            for (k, v) in b.iter_mut() {
                if let Some(dv) = d.get(k) {
                    drop_added_type_meta(v, dv);
                }
            }
        }
        (Value::Array(b), Value::Array(d)) => {
            for (bv, dv) in b.iter_mut().zip(d) {
                drop_added_type_meta(bv, dv);
            }
        }
        _ => {}
    }
}

fn validate(doc: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    let api_version = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    match (api_version, kind) {
        ("apps/v1", "Deployment") => round_trip::<apps::Deployment>(doc),
        ("apps/v1", "StatefulSet") => round_trip::<apps::StatefulSet>(doc),
        ("apps/v1", "DaemonSet") => round_trip::<apps::DaemonSet>(doc),
        ("apps/v1", "ReplicaSet") => round_trip::<apps::ReplicaSet>(doc),
        ("batch/v1", "Job") => round_trip::<batch::Job>(doc),
        ("batch/v1", "CronJob") => round_trip::<batch::CronJob>(doc),
        ("v1", "Pod") => round_trip::<core::Pod>(doc),
        ("v1", "Service") => round_trip::<core::Service>(doc),
        ("v1", "ConfigMap") => round_trip::<core::ConfigMap>(doc),
        ("v1", "List") => doc["items"]
            .as_array()
            .ok_or("a List without items")?
            .iter()
            .try_for_each(validate),
        _ => Err(format!("no schema for {api_version} {kind}")),
    }
}

#[test]
fn every_output_document_matches_the_kubernetes_schema() {
    let mut checked = 0;
    for (name, app_port) in cases() {
        let input = read(&format!("{name}.yaml"));
        for classic in [false, true] {
            let options = InjectOptions {
                app_port: app_port.clone(),
                ..opts(classic)
            };
            for doc in documents(&inject(&input, &options).unwrap()) {
                validate(&doc).unwrap_or_else(|e| panic!("{name} (classic: {classic}): {e}"));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 26, "documents checked");
}

#[test]
fn the_schema_check_catches_a_misplaced_field() {
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "a", "restartPolicyy": "Always"}]}
    });
    assert!(validate(&doc).is_err());
}

// ---------------------------------------------------------------------------
// deploy/kubernetes and docs/operations.md

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Environment for `Config::parse`: every variable a config names is set,
/// URLs where the name says so.
fn any_env(name: &str) -> Option<String> {
    if name == "TOUCHGATE_UPSTREAM" {
        // An override would hide the upstream the example declares.
        return None;
    }
    Some(if name.contains("REDIS") {
        "redis://127.0.0.1:6379".into()
    } else if name.contains("PG") {
        "postgres://touchgate@127.0.0.1/touchgate".into()
    } else {
        "an-example-value-that-is-long-enough-0123456789".into()
    })
}

#[test]
fn the_kubernetes_examples_are_the_output_of_inject() {
    let input = repo_file("deploy/kubernetes/app.yaml");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (file, classic) in [
        ("sidecar-native.yaml", false),
        ("sidecar-classic.yaml", true),
    ] {
        let options = InjectOptions {
            classic,
            ..InjectOptions::default()
        };
        let actual = inject(&input, &options).unwrap();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes")
            .join(file);
        if update {
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert!(
            expected == actual,
            "{file} is not `touchgate inject{}` of app.yaml:\n{}",
            if classic { " --classic" } else { "" },
            diff(&expected, &actual)
        );
        let docs = documents(&actual);
        for doc in &docs {
            validate(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        // The Service targets the app's port name, which touchgate's port
        // takes over: it is left as it was.
        let service = find(&docs, "Service", "shop");
        assert_eq!(target_ports(service), vec![Value::from("http")]);
        // The ConfigMap's config is valid, listens where the sidecar's ports
        // and probes expect, and keeps its spool on the emptyDir.
        let toml = find(&docs, "ConfigMap", "touchgate-config")["data"]["touchgate.toml"]
            .as_str()
            .unwrap();
        let config = touchgate::config::Config::parse("touchgate.toml", toml, &any_env)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.proxy.listen.port(), 8080);
        assert_eq!(config.admin.listen.port(), 9901);
        assert!(config.proxy.listen.ip().is_unspecified());
        assert!(config.admin.listen.ip().is_unspecified());
        assert!(config.spool.dir.starts_with("/var/lib/touchgate"));
        let defaults = InjectOptions::default().with_drain_from(&config.proxy);
        assert_eq!(defaults.drain_delay, InjectOptions::default().drain_delay);
        assert_eq!(
            defaults.drain_timeout,
            InjectOptions::default().drain_timeout
        );
    }
}

#[test]
fn every_config_in_the_operations_guide_is_valid() {
    let guide = repo_file("docs/operations.md");
    let mut blocks = 0;
    let mut rest = guide.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("an unclosed toml block");
        let line = guide.len() - rest.len() + start;
        let line = guide[..line].lines().count() + 1;
        let text = &body[..end];
        touchgate::config::Config::parse(&format!("docs/operations.md:{line}"), text, &any_env)
            .unwrap_or_else(|e| panic!("{e}"));
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 4, "only {blocks} toml blocks");
}

#[test]
fn the_image_config_is_valid_and_listens_outside_the_container() {
    let text = repo_file("deploy/docker/touchgate.toml");
    let config = touchgate::config::Config::parse("deploy/docker/touchgate.toml", &text, &any_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.proxy.listen.ip().is_unspecified());
    assert!(config.admin.listen.ip().is_unspecified());
    assert_eq!(
        (config.proxy.listen.port(), config.admin.listen.port()),
        (8080, 9901)
    );
    let dockerfile = repo_file("deploy/docker/Dockerfile");
    assert!(dockerfile.contains("EXPOSE 8080 9901"));
    assert!(dockerfile.contains("COPY deploy/docker/touchgate.toml /etc/touchgate/touchgate.toml"));
    assert!(!dockerfile.contains("HEALTHCHECK "));
}
