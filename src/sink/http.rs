//! `http` sink: NDJSON batches, POST.
//!
//! One request per batch: `content-type: application/x-ndjson`, one `Event`
//! per line (never the ad-platform match keys), gzip-compressed with
//! `content-encoding: gzip` when `gzip = true`. Headers come from
//! `headers_env` (header name → environment variable, for secrets, read once
//! at start) and `headers` (plain values, refused for credential-looking
//! names). 2xx acknowledges the batch; 408, 429, 5xx, timeouts and
//! connection errors are retried (honouring `Retry-After`, seconds or
//! HTTP-date); any other status rejects the batch to the dead-letter file.
//! The client is the one every HTTP sink shares (`http_client.rs`): rustls
//! with the Mozilla roots (webpki-roots), HTTP/2 when the collector offers
//! it.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri};
use http_body_util::Full;
use serde::Deserialize;

use super::http_client::{HttpClient, StatusClass};
use super::{DeliveryConfig, RawEvent, Sink, SinkError};
use crate::event::Envelope;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Compress request bodies (`content-encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// Header name → environment variable holding its value, e.g.
    /// `{ authorization = "COLLECTOR_AUTH" }`. Secrets go here.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Header name → value, for what is not secret.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whole request: connect, send, and read the answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Headers touchgate sets itself.
const RESERVED: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "transfer-encoding",
];

fn looks_secret(name: &str) -> bool {
    matches!(name, "authorization" | "proxy-authorization" | "cookie")
        || [
            "token",
            "secret",
            "api-key",
            "apikey",
            "password",
            "signature",
        ]
        .iter()
        .any(|s| name.contains(s))
}

impl HttpSinkConfig {
    pub fn new(url: impl Into<String>) -> HttpSinkConfig {
        HttpSinkConfig {
            name: None,
            url: url.into(),
            delivery: DeliveryConfig::default(),
            gzip: false,
            headers_env: BTreeMap::new(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
        }
    }

    /// The sink's label in metrics, logs and the spool: `name`, else "http".
    pub fn sink_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "http".into())
    }

    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut out = super::delivery::validate(&self.delivery);
        let mut bad = |k: String, m: String| out.push((k, m));
        match url::Url::parse(&self.url) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => bad(
                "url".into(),
                format!("scheme {:?}: must be http or https", u.scheme()),
            ),
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                bad("url".into(), "has no host".into())
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => bad(
                "url".into(),
                "must not carry credentials; use headers_env = { authorization = \"VAR\" }".into(),
            ),
            Ok(_) if self.url.parse::<Uri>().is_err() => {
                bad("url".into(), "not a valid request URI".into())
            }
            Ok(_) => {}
            Err(e) => bad("url".into(), format!("not a URL: {e}")),
        }
        if self.timeout.is_zero() {
            bad("timeout".into(), "must be more than 0".into());
        }
        for (name, var) in &self.headers_env {
            let key = format!("headers_env.{name}");
            if let Some(m) = header_name_problem(name) {
                bad(key, m);
                continue;
            }
            match env(var) {
                None => bad(key, format!("environment variable {var} is not set")),
                Some(v) if HeaderValue::from_str(&v).is_err() => bad(
                    key,
                    format!("environment variable {var} is not a valid header value"),
                ),
                Some(_) => {}
            }
        }
        for (name, value) in &self.headers {
            let key = format!("headers.{name}");
            if let Some(m) = header_name_problem(name) {
                bad(key, m);
            } else if looks_secret(&name.to_ascii_lowercase()) {
                bad(
                    key,
                    format!(
                        "looks like a secret: put it in headers_env = {{ {name} = \"ENV_VAR\" }}"
                    ),
                );
            } else if HeaderValue::from_str(value).is_err() {
                bad(key, "not a valid header value".into());
            }
            if self
                .headers_env
                .keys()
                .any(|k| k.eq_ignore_ascii_case(name))
            {
                bad(format!("headers.{name}"), "also set in headers_env".into());
            }
        }
        out
    }
}

fn header_name_problem(name: &str) -> Option<String> {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Some("not a valid header name".into());
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Some("set by touchgate itself".into());
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    #[error("http sink: {}", render(.0))]
    Config(Vec<(String, String)>),
    #[error("http sink: TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

fn render(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(k, m)| format!("{k}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub struct HttpSink {
    name: String,
    uri: Uri,
    headers: HeaderMap,
    gzip: bool,
    client: HttpClient,
}

impl HttpSink {
    /// Validate the config, read the header secrets through `env` (e.g.
    /// `&|k| std::env::var(k).ok()`), and build the pooled client.
    pub fn new(
        cfg: &HttpSinkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpSink, HttpSinkError> {
        let problems = cfg.validate(env);
        if !problems.is_empty() {
            return Err(HttpSinkError::Config(problems));
        }
        let config_err =
            |k: &str, m: &str| HttpSinkError::Config(vec![(k.to_string(), m.to_string())]);
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|_| config_err("url", "not a valid request URI"))?;
        let mut headers = HeaderMap::new();
        for (name, var) in &cfg.headers_env {
            let value = env(var)
                .ok_or_else(|| config_err("headers_env", "environment variable not set"))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| config_err("headers_env", "not a valid header value"))?;
            value.set_sensitive(true);
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_err("headers_env", "not a valid header name"))?;
            headers.insert(name, value);
        }
        for (name, value) in &cfg.headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| config_err("headers", "not a valid header value"))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_err("headers", "not a valid header name"))?;
            headers.insert(name, value);
        }
        Ok(HttpSink {
            name: cfg.sink_name(),
            uri,
            headers,
            gzip: cfg.gzip,
            client: HttpClient::new(cfg.timeout)?,
        })
    }

    async fn body(&self, batch: &[Envelope]) -> Result<Bytes, SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 768);
        for env in batch {
            serde_json::to_writer(&mut buf, &env.event).map_err(|e| SinkError::Rejected {
                message: format!("event cannot be serialized: {e}"),
            })?;
            buf.push(b'\n');
        }
        self.finish_body(buf).await
    }

    async fn raw_body(&self, batch: &[RawEvent]) -> Result<Bytes, SinkError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.json.len() + 1).sum());
        for e in batch {
            buf.extend_from_slice(&e.json);
            buf.push(b'\n');
        }
        self.finish_body(buf).await
    }

    /// Compression is CPU work of milliseconds per batch: it runs on the
    /// blocking pool, off the threads that serve the proxy.
    async fn finish_body(&self, buf: Vec<u8>) -> Result<Bytes, SinkError> {
        if !self.gzip {
            return Ok(buf.into());
        }
        let gz = tokio::task::spawn_blocking(move || {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(buf.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(&buf).and_then(|()| gz.finish())
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        gz.map(Bytes::from).map_err(|e| SinkError::Retryable {
            message: format!("gzip: {e}"),
            retry_after: None,
        })
    }
}

#[async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        let body = self.body(batch).await?;
        self.post(body).await
    }

    fn raw(&self) -> bool {
        true
    }

    async fn send_raw(&self, batch: &[RawEvent]) -> Result<(), SinkError> {
        let body = self.raw_body(batch).await?;
        self.post(body).await
    }
}

impl HttpSink {
    async fn post(&self, body: Bytes) -> Result<(), SinkError> {
        let mut req = Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| SinkError::Rejected {
                message: format!("request: {e}"),
            })?;
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if self.gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let answer = self.client.send(req).await?;
        match answer.class() {
            StatusClass::Delivered => Ok(()),
            StatusClass::Retry => Err(answer.retry()),
            // Other 4xx dead-letter the batch, refused credentials included
            // (README, "Delivery").
            StatusClass::Fatal | StatusClass::DeadLetter => Err(answer.reject()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let env = |k: &str| (k == "AUTH").then(|| "Bearer x".to_string());
        let mut c = HttpSinkConfig::new("https://collector.example/v1/batch");
        c.headers_env.insert("authorization".into(), "AUTH".into());
        assert!(c.validate(&env).is_empty(), "{:?}", c.validate(&env));
        assert!(HttpSink::new(&c, &env).is_ok());

        let mut c = HttpSinkConfig::new("ftp://x/");
        c.headers_env.insert("x-key".into(), "MISSING".into());
        c.headers_env.insert("content-type".into(), "AUTH".into());
        c.headers
            .insert("authorization".into(), "Bearer secret".into());
        c.headers.insert("x-source".into(), "touchgate".into());
        let keys: Vec<String> = c.validate(&env).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "url",
                "headers_env.content-type",
                "headers_env.x-key",
                "headers.authorization"
            ]
        );
        assert!(matches!(
            HttpSink::new(&c, &env),
            Err(HttpSinkError::Config(_))
        ));
        for u in ["not a url", "http://user:pw@host/", "https:///nohost"] {
            let c = HttpSinkConfig::new(u);
            assert!(c.validate(&env).iter().any(|(k, _)| k == "url"), "{u}");
        }
    }
}
