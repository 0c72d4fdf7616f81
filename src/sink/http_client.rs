//! The HTTPS client of every sink that speaks HTTP (`http`, `meta_capi`,
//! `ga4_mp`): rustls with the Mozilla roots (webpki-roots), HTTP/2 when the
//! server offers it, plain http for a test server or a local proxy; one
//! timeout over the whole exchange (connect, send, read the answer); the
//! answer's status sorted into what becomes of the batch; and `Retry-After`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::SinkError;

/// Answers are error reports at most; a bigger body is cut, not buffered.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long an idle pooled connection is kept for the next batch.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A pooled client with its sink's timeout.
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// `timeout` bounds each exchange, connecting included.
    pub(crate) fn new(timeout: Duration) -> Result<HttpClient, rustls::Error> {
        let mut http = HttpConnector::new();
        // The TLS layer routes by scheme; this connector must let https
        // URLs through to it.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Ok(HttpClient { client, timeout })
    }

    /// Send `request` and read the answer (its start: [`MAX_ANSWER_BYTES`]).
    /// A transport failure or no answer within the timeout is `Retryable`;
    /// any answer, whatever its status, is the caller's to judge
    /// ([`Answer::class`]).
    pub(crate) async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, SinkError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| retryable(format!("request failed: {}", error_chain(&e))))?;
            let (parts, body) = response.into_parts();
            let retry_after = parts
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Reading the body lets the connection go back to the pool. A
            // body too big or cut short still leaves the status to judge.
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok(Answer {
                status: parts.status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                retryable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            })?
    }

    /// POST `body` as JSON, as the ad-platform APIs take it. A status worth
    /// retrying ([`StatusClass::Retry`]) comes back as `Retryable`, with the
    /// platform's `Retry-After`; any other answer is the caller's to judge.
    pub(crate) async fn post_json(&self, uri: &str, body: Vec<u8>) -> Result<Answer, SinkError> {
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
        let answer = self.send(request).await?;
        match answer.class() {
            StatusClass::Retry => Err(answer.retry()),
            _ => Ok(answer),
        }
    }
}

/// What the server answered.
pub(crate) struct Answer {
    pub status: StatusCode,
    /// `Retry-After`, as a delay from when the answer came.
    pub retry_after: Option<Duration>,
    /// The start of the body.
    pub body: Bytes,
}

impl Answer {
    pub(crate) fn class(&self) -> StatusClass {
        classify(self.status)
    }

    /// `HTTP 503 Service Unavailable: <start of the body>`.
    pub(crate) fn describe(&self) -> String {
        format!("HTTP {}: {}", self.status, snippet(&self.body))
    }

    /// Send the same batch later, when the server said.
    pub(crate) fn retry(&self) -> SinkError {
        SinkError::Retryable {
            message: self.describe(),
            retry_after: self.retry_after,
        }
    }

    /// The batch goes to the dead-letter file.
    pub(crate) fn reject(&self) -> SinkError {
        SinkError::Rejected {
            message: self.describe(),
        }
    }
}

/// What a status says about the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// 2xx: delivered.
    Delivered,
    /// 408, 429, 5xx: the server cannot take it now; send it again later.
    Retry,
    /// 401, 403: the server refuses the sink's credentials, so no batch
    /// gets through until they change; nothing is wrong with this one.
    /// Each sink says what becomes of the batch meanwhile.
    Fatal,
    /// Any other status: the server refuses the batch as it is; it goes to
    /// the dead-letter file.
    DeadLetter,
}

pub(crate) fn classify(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Delivered,
        408 | 429 | 500..=599 => StatusClass::Retry,
        401 | 403 => StatusClass::Fatal,
        _ => StatusClass::DeadLetter,
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (a date past is no delay).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

/// hyper's error and its causes: the first alone says only "client error
/// (Connect)".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 29 Nov 2026 10:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
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
    fn statuses() {
        use StatusClass::*;
        for (code, want) in [
            (200, Delivered),
            (204, Delivered),
            (408, Retry),
            (429, Retry),
            (500, Retry),
            (503, Retry),
            (401, Fatal),
            (403, Fatal),
            (400, DeadLetter),
            (404, DeadLetter),
            (413, DeadLetter),
            (301, DeadLetter),
        ] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                want,
                "{code}"
            );
        }
    }

    #[test]
    fn snippets_are_cut_on_a_char_boundary() {
        let long = "é".repeat(400);
        let s = snippet(long.as_bytes());
        assert!(s.ends_with('…'));
        assert_eq!(s.chars().count(), 301);
        assert_eq!(snippet(b"  short answer\n"), "short answer");
    }
}
