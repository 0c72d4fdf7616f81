//! The HTTPS client and answer handling shared by the ad-platform sinks
//! (`meta_capi`, `ga4_mp`): one POST of a JSON body, with the failures that
//! are worth retrying (network, timeout, 429, 5xx) already told apart.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;
use time::OffsetDateTime;

use super::{SinkBuildError, SinkError};

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Answers are error reports at most; a bigger body is cut, not buffered.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub(crate) fn client() -> Result<HttpClient, SinkBuildError> {
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| SinkBuildError::Client(format!("TLS setup: {e}")))?
        // Plain http only ever reaches a test server or a local proxy set by
        // `endpoint`; the platforms' own URLs are https.
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

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

/// What the platform answered.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// POST `body` as JSON. Transport failures and timeouts, 408, 429 and 5xx
/// come back as `Retryable` (with the platform's `Retry-After`); any other
/// status is the caller's to judge.
pub(crate) async fn post_json(
    client: &HttpClient,
    uri: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, SinkError> {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("touchgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SinkError::Rejected {
            message: format!("cannot build the request: {e}"),
        })?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| retryable(format!("{e:#}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            // A body too big or cut short still leaves the status to judge.
            .unwrap_or_default();
        Ok::<_, SinkError>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            retryable(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })??;
    let status = parts.status;
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        let retry_after = parts
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, OffsetDateTime::now_utc()));
        return Err(SinkError::Retryable {
            message: format!("HTTP {status}: {}", snippet(&body)),
            retry_after,
        });
    }
    Ok(Answer { status, body })
}

pub(crate) fn retryable(message: String) -> SinkError {
    SinkError::Retryable {
        message,
        retry_after: None,
    }
}

/// The start of an answer body, for a log line or an error message.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// `Retry-After`, parsed once for every HTTP sink by [`super::http::parse_retry_after`].
pub(crate) fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    super::http::parse_retry_after(value, std::time::SystemTime::from(now))
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
    fn retry_after_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-29 10:00:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
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

    #[test]
    fn snippets_are_cut_on_a_char_boundary() {
        let long = "é".repeat(400);
        let s = snippet(long.as_bytes());
        assert!(s.ends_with('…'));
        assert_eq!(s.chars().count(), 301);
    }
}
