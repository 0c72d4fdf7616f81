//! What the ad-platform sinks (`meta_capi`, `ga4_mp`) check when they are
//! built: the config's own problems, the secret, and the `endpoint`
//! override of the platform's URL.

use super::SinkBuildError;

/// What both conversion-API sinks check when they are built: the config's
/// own problems (`validate`), the secret named by `secret_key` (a `*_env`
/// key, already looked up), and the `endpoint` override of `default_base`.
/// Returns the trimmed secret and the base URL.
pub(crate) fn build_parts(
    problems: Vec<(String, String)>,
    secret_key: &str,
    secret: Option<String>,
    endpoint: Option<&str>,
    default_base: &str,
) -> Result<(String, String), SinkBuildError> {
    if !problems.is_empty() {
        return Err(SinkBuildError::Invalid(problems));
    }
    let secret = secret
        .map(|s| s.trim().to_string())
        .ok_or_else(|| SinkBuildError::Invalid(vec![(secret_key.into(), "not set".into())]))?;
    let base = match endpoint {
        Some(e) => {
            base_url(e).map_err(|m| SinkBuildError::Invalid(vec![("endpoint".into(), m)]))?
        }
        None => default_base.to_string(),
    };
    Ok((secret, base))
}

/// A base URL from config (`endpoint`): http(s), a host, no query or
/// fragment. Returned without a trailing slash, ready for a path.
pub(crate) fn base_url(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("scheme must be http or https, not {}", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("a base URL takes no query or fragment".into());
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(r: Result<(String, String), SinkBuildError>) -> Vec<(String, String)> {
        match r {
            Err(SinkBuildError::Invalid(p)) => p,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn build_parts_checks_in_order_and_trims_the_secret() {
        let base = "https://graph.example";
        let ok = build_parts(vec![], "k_env", Some(" s3cret\n".into()), None, base).unwrap();
        assert_eq!(ok, ("s3cret".to_string(), base.to_string()));
        let custom = build_parts(
            vec![],
            "k_env",
            Some("s".into()),
            Some("http://127.0.0.1:9/"),
            base,
        );
        assert_eq!(custom.unwrap().1, "http://127.0.0.1:9");
        // The config's own problems come first, whatever else is wrong.
        let p = invalid(build_parts(
            vec![("pixel_id".into(), "bad".into())],
            "k_env",
            None,
            Some("ftp://x"),
            base,
        ));
        assert_eq!(p, vec![("pixel_id".to_string(), "bad".to_string())]);
        assert_eq!(
            invalid(build_parts(vec![], "k_env", None, None, base))[0].0,
            "k_env"
        );
        assert_eq!(
            invalid(build_parts(
                vec![],
                "k_env",
                Some("s".into()),
                Some("ftp://x"),
                base
            ))[0]
                .0,
            "endpoint"
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:9/").unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            base_url("https://graph.facebook.com").unwrap(),
            "https://graph.facebook.com"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://x/?a=1").is_err());
        assert!(base_url("nonsense").is_err());
    }
}
