//! The JSON patch (RFC 6902) an admission response carries: the difference
//! between the pod as the API server sent it and the pod as
//! [`patch_pod_spec`](crate::cli::inject::patch_pod_spec) makes it, so that
//! the webhook adds exactly what `touchgate inject` writes.

use serde_json::Value;

/// The operations that turn `before` into `after`; serialized, the JSON
/// array the `patch` field holds (base64-encoded there).
pub fn json_patch_between(before: &Value, after: &Value) -> json_patch::Patch {
    json_patch::diff(before, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_patch_turns_the_first_document_into_the_second() {
        let before = json!({"spec": {"containers": [{"name": "a"}], "x/y": 1}});
        let after = json!({"spec": {
            "initContainers": [{"name": "t"}],
            "containers": [{"name": "a", "ports": [{"name": "tg-app"}]}],
            "x/y": 1,
        }});
        let ops = json_patch_between(&before, &after);
        let mut doc = before.clone();
        json_patch::patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, after);
        assert!(json_patch_between(&before, &before).is_empty());
    }
}
