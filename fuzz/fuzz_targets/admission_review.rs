#![no_main]
//! The injector's AdmissionReview handling, on raw bodies and on a review of
//! a Pod whose object is the input read as JSON (so the pod handling is
//! reached, not just the JSON parser). It must never panic; a well-formed
//! review is always answered `allowed` with its uid, and a patch, applied to
//! the pod, gives the spec `patch_pod_spec` makes of it.

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use touchgate::cli::inject::{InjectOptions, PodPatch, patch_pod_spec};
use touchgate::cli::injector::review::review;

fuzz_target!(|data: &[u8]| {
    let opts = InjectOptions::default();
    let _ = review(data, &opts);
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "object": object,
        },
    });
    let body = serde_json::to_vec(&body).expect("a Value serializes");
    let answer = review(&body, &opts).expect("a well-formed review is answered");
    let response = &answer.review["response"];
    assert_eq!(response["uid"], "fuzz");
    assert_eq!(response["allowed"], true);
    if let Some(patch) = response.get("patch").and_then(|p| p.as_str()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("the patch is base64");
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("the patch is JSON");
        let mut pod = object.clone();
        json_patch::patch(&mut pod, &ops).expect("the patch applies to the pod");
        let Ok(PodPatch::Injected { spec, .. }) = patch_pod_spec(&object["spec"], &opts) else {
            panic!("a patch for a pod patch_pod_spec does not inject");
        };
        assert_eq!(pod["spec"], spec);
    }
});
