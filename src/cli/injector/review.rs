//! One AdmissionReview (`admission.k8s.io/v1`) in, its answer out: a pure
//! function of the request body and the injector's options.
//!
//! The injector never denies: every answer is `allowed: true`, with a JSON
//! patch when the sidecar is to be added and without one otherwise. A pod
//! that cannot be injected (a port the sidecar needs is taken, an override
//! annotation that makes no sense) is admitted as it is, with a warning the
//! API server hands back to the client that created the pod.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::inject::{AppPort, InjectOptions, PodPatch, patch_pod_spec};

use super::diff::json_patch_between;

pub const API_VERSION: &str = "admission.k8s.io/v1";
/// Pod annotation: `enabled` opts in, `disabled` opts out.
pub const ANNOTATION_INJECT: &str = "touchgate.io/inject";
pub const ANNOTATION_APP_PORT: &str = "touchgate.io/app-port";
pub const ANNOTATION_IMAGE: &str = "touchgate.io/image";
pub const ANNOTATION_CONFIG_MAP: &str = "touchgate.io/config-map";

/// Why a request body is not an AdmissionReview the injector can answer;
/// the server turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error("request.uid is missing or empty")]
    NoUid,
}

/// What the injector did with a review, for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The sidecar is added by the patch.
    Injected,
    /// Nothing to do; the reason, for the log.
    Skipped(&'static str),
    /// The pod is admitted without the sidecar, and the client is warned.
    Refused(String),
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub uid: String,
    /// The AdmissionReview to send back.
    pub review: Value,
    pub decision: Decision,
    /// `namespace/name` of the pod (`generateName…` before it has a name).
    pub pod: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: Option<String>,
    kind: Option<GroupVersionKind>,
    operation: Option<String>,
    namespace: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// Answer the AdmissionReview in `body`.
pub fn review(body: &[u8], opts: &InjectOptions) -> Result<Answer, ReviewError> {
    let parsed: Review =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    if parsed.kind.as_deref() != Some("AdmissionReview") {
        return Err(ReviewError::NotAReview(format!(
            "kind is {:?}, expected \"AdmissionReview\"",
            parsed.kind.as_deref().unwrap_or("")
        )));
    }
    if parsed.api_version.as_deref() != Some(API_VERSION) {
        return Err(ReviewError::NotAReview(format!(
            "apiVersion is {:?}, expected {API_VERSION:?} (set admissionReviewVersions: [v1])",
            parsed.api_version.as_deref().unwrap_or("")
        )));
    }
    let Some(request) = parsed.request else {
        return Err(ReviewError::NotAReview("request is missing".into()));
    };
    let uid = match request.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => return Err(ReviewError::NoUid),
    };
    let pod = pod_name(&request);
    let (patch, mut decision) = decide(&request, opts);
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch.filter(|p| !p.is_empty()) {
        match serde_json::to_vec(&patch) {
            Ok(bytes) => {
                response["patchType"] = Value::from("JSONPatch");
                response["patch"] = Value::from(B64.encode(bytes));
            }
            Err(e) => decision = Decision::Refused(format!("cannot write the patch: {e}")),
        }
    }
    if let Decision::Refused(why) = &decision {
        response["warnings"] = json!([format!("touchgate sidecar not injected: {why}")]);
    }
    Ok(Answer {
        uid,
        review: json!({
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "response": response,
        }),
        decision,
        pod,
    })
}

fn pod_name(request: &Request) -> String {
    let meta = request.object.as_ref().and_then(|o| o.get("metadata"));
    let text = |key| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| text("namespace"))
        .unwrap_or("");
    match (text("name"), text("generateName")) {
        (Some(name), _) if !name.is_empty() => format!("{namespace}/{name}"),
        (_, Some(prefix)) => format!("{namespace}/{prefix}…"),
        _ => format!("{namespace}/(unnamed)"),
    }
}

/// The JSON patch for the request's pod, if any, and why.
fn decide(request: &Request, opts: &InjectOptions) -> (Option<json_patch::Patch>, Decision) {
    let is_pod = request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.kind == "Pod");
    if !is_pod {
        return (None, Decision::Skipped("not a pod"));
    }
    if request.operation.as_deref() != Some("CREATE") {
        // A running pod's containers cannot change: only new pods get it.
        return (None, Decision::Skipped("not a CREATE"));
    }
    let Some(pod) = request.object.as_ref().filter(|o| o.is_object()) else {
        return (
            None,
            Decision::Refused("the review holds no pod object".into()),
        );
    };
    let annotations = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    match annotation(annotations, ANNOTATION_INJECT).map(str::trim) {
        None | Some("enabled") => {}
        Some("disabled") => return (None, Decision::Skipped("opted out")),
        Some(other) => {
            return (
                None,
                Decision::Refused(format!(
                    "annotation {ANNOTATION_INJECT}: {other:?} is neither \"enabled\" nor \
                     \"disabled\""
                )),
            );
        }
    }
    let opts = match with_overrides(opts, annotations) {
        Ok(o) => o,
        Err(why) => return (None, Decision::Refused(why)),
    };
    let Some(spec) = pod.get("spec") else {
        return (None, Decision::Refused("the pod has no spec".into()));
    };
    match patch_pod_spec(spec, &opts) {
        Ok(PodPatch::Injected { spec: patched, .. }) => {
            let mut after = pod.clone();
            after["spec"] = patched;
            (Some(json_patch_between(pod, &after)), Decision::Injected)
        }
        Ok(PodPatch::AlreadyInjected { .. }) => (None, Decision::Skipped("already injected")),
        Err(e) => (None, Decision::Refused(format!("spec.{e}"))),
    }
}

type Annotations = serde_json::Map<String, Value>;

fn annotation<'a>(annotations: Option<&'a Annotations>, key: &str) -> Option<&'a str> {
    annotations?.get(key)?.as_str()
}

/// The options with the pod's override annotations applied.
fn with_overrides(
    opts: &InjectOptions,
    annotations: Option<&Annotations>,
) -> Result<InjectOptions, String> {
    let annotation = |key| annotation(annotations, key);
    let mut opts = opts.clone();
    if let Some(port) = annotation(ANNOTATION_APP_PORT) {
        opts.app_port = Some(
            port.parse::<AppPort>()
                .map_err(|e| format!("annotation {ANNOTATION_APP_PORT}: {e}"))?,
        );
    }
    let non_empty = |key: &str, value: &str| {
        let value = value.trim();
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            Err(format!(
                "annotation {key}: {value:?} is empty or has spaces"
            ))
        } else {
            Ok(value.to_string())
        }
    };
    if let Some(image) = annotation(ANNOTATION_IMAGE) {
        opts.image = non_empty(ANNOTATION_IMAGE, image)?;
    }
    if let Some(name) = annotation(ANNOTATION_CONFIG_MAP) {
        let name = non_empty(ANNOTATION_CONFIG_MAP, name)?;
        if !is_dns_subdomain(&name) {
            return Err(format!(
                "annotation {ANNOTATION_CONFIG_MAP}: {name:?} is not a ConfigMap name \
                 (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ));
        }
        opts.config_map = name;
    }
    Ok(opts)
}

/// An RFC 1123 subdomain, as Kubernetes validates object names.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_of(object: Value, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": operation,
                "namespace": "shop",
                "object": object,
            }
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "web-7d9-", "annotations": annotations},
            "spec": {"containers": [{"name": "web", "image": "web",
                "ports": [{"containerPort": 3000}]}]},
        })
    }

    #[test]
    fn annotations_opt_out_and_override() {
        let opts = InjectOptions::default();
        let out = review(&review_of(pod(json!({})), "CREATE"), &opts).unwrap();
        assert_eq!(out.decision, Decision::Injected);
        assert_eq!(out.pod, "shop/web-7d9-…");
        let out = review(
            &review_of(pod(json!({ANNOTATION_INJECT: "disabled"})), "CREATE"),
            &opts,
        )
        .unwrap();
        assert_eq!(out.decision, Decision::Skipped("opted out"));
        assert!(out.review["response"].get("patch").is_none());
        let out = review(
            &review_of(pod(json!({ANNOTATION_INJECT: "yes"})), "CREATE"),
            &opts,
        )
        .unwrap();
        assert!(matches!(out.decision, Decision::Refused(_)));
        assert!(
            out.review["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("\"yes\"")
        );
        for (key, value) in [
            (ANNOTATION_APP_PORT, "Not_A_Port"),
            (ANNOTATION_IMAGE, " "),
            (ANNOTATION_CONFIG_MAP, "Bad_Name"),
        ] {
            let out = review(&review_of(pod(json!({key: value})), "CREATE"), &opts).unwrap();
            assert!(
                matches!(&out.decision, Decision::Refused(why) if why.contains(key)),
                "{key}: {:?}",
                out.decision
            );
        }
    }

    fn port() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        (
            proptest::option::of(prop::sample::select(vec![
                "http",
                "web",
                "metrics",
                "tg-app",
                "touchgate",
            ])),
            prop::sample::select(vec![3000i64, 5000, 8080, 9901, 0, 70000]),
        )
            .prop_map(|(name, number)| match name {
                Some(name) => json!({"name": name, "containerPort": number}),
                None => json!({"containerPort": number}),
            })
    }

    fn container() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        (
            prop::sample::select(vec!["app", "web", "touchgate"]),
            prop::collection::vec(port(), 0..3),
            proptest::option::of(prop::sample::select(vec!["http", "web"])),
        )
            .prop_map(|(name, ports, probe)| {
                let mut c = json!({"name": name, "image": "x", "ports": ports});
                if let Some(probe) = probe {
                    c["readinessProbe"] = json!({"httpGet": {"path": "/", "port": probe}});
                }
                c
            })
    }

    proptest::proptest! {
        /// Any pod of these parts is answered, allowed, and a patch applied
        /// to it gives what `patch_pod_spec` makes of it.
        #[test]
        fn the_patch_applied_is_patch_pod_spec(
            containers in proptest::collection::vec(container(), 0..3),
            init in proptest::option::of(proptest::collection::vec(container(), 0..2)),
            app_port in proptest::option::of(proptest::sample::select(vec!["http", "3000", "web"])),
            grace in proptest::option::of(0i64..100),
        ) {
            let mut annotations = json!({});
            if let Some(p) = app_port {
                annotations[ANNOTATION_APP_PORT] = Value::from(p);
            }
            let mut object = pod(annotations);
            object["spec"]["containers"] = Value::from(containers);
            if let Some(init) = init {
                object["spec"]["initContainers"] = Value::from(init);
            }
            if let Some(grace) = grace {
                object["spec"]["terminationGracePeriodSeconds"] = Value::from(grace);
            }
            let opts = InjectOptions::default();
            let out = review(&review_of(object.clone(), "CREATE"), &opts).unwrap();
            let response = &out.review["response"];
            proptest::prop_assert_eq!(&response["uid"], "u-1");
            proptest::prop_assert_eq!(&response["allowed"], true);
            if let Some(patch) = response.get("patch").and_then(Value::as_str) {
                let ops: json_patch::Patch =
                    serde_json::from_slice(&B64.decode(patch).unwrap()).unwrap();
                let mut patched = object.clone();
                json_patch::patch(&mut patched, &ops).unwrap();
                let opts = with_overrides(&opts, object["metadata"]["annotations"].as_object()).unwrap();
                let Ok(PodPatch::Injected { spec, .. }) = patch_pod_spec(&object["spec"], &opts) else {
                    panic!("a patch for a pod patch_pod_spec does not inject");
                };
                proptest::prop_assert_eq!(&patched["spec"], &spec);
                proptest::prop_assert_eq!(&patched["metadata"], &object["metadata"]);
            } else {
                proptest::prop_assert!(out.decision != Decision::Injected);
            }
        }
    }

    #[test]
    fn bodies_that_are_not_reviews_are_errors() {
        let opts = InjectOptions::default();
        assert!(matches!(review(b"{", &opts), Err(ReviewError::Json(_))));
        assert!(matches!(
            review(br#"{"kind":"Pod"}"#, &opts),
            Err(ReviewError::NotAReview(_))
        ));
        let v1beta1 = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#;
        assert!(matches!(
            review(v1beta1, &opts),
            Err(ReviewError::NotAReview(_))
        ));
        let no_uid = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#;
        assert_eq!(review(no_uid, &opts), Err(ReviewError::NoUid));
    }
}
