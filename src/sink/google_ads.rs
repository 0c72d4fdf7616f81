//! `google_ads` sink: Google Ads offline click conversions, with enhanced
//! conversions for leads.
//!
//! One request per ≤ 2,000 conversions:
//! `POST {endpoint}/{api_version}/customers/{customer_id}:uploadClickConversions`
//! with `partialFailure: true`, the `developer-token` header, the
//! `login-customer-id` header when the account is reached through a
//! manager, and an OAuth access token exchanged for the refresh token at
//! `token_endpoint` and refreshed before it expires.
//!
//! Each conversion carries one click id (`gclid`, `gbraid` or `wbraid`, at
//! most 90 days old), `conversionAction` as a resource name,
//! `conversionDateTime` (`yyyy-mm-dd hh:mm:ss+00:00`), `orderId` = the
//! event id (Google's dedupe key), `conversionValue` and `currencyCode`
//! when the event's properties carry `value` and `currency`,
//! `userIdentifiers` hashed under Google's rules (`identity::match_keys`),
//! and `consent` from touchgate's. Only mapped events with ads consent and
//! a Google click are sent; in `consent.mode = "tcf"` also only with
//! consent for Google (vendor 755) and purposes 1 and 7.
//!
//! Answers: a row refused inside a partial failure goes to the dead-letter
//! file with Google's message, the other rows are delivered; 429 and 5xx
//! are retried with backoff; an authentication failure (401, 403, or the
//! token endpoint refusing the refresh token) stops the sink's uploads
//! until touchgate is restarted with working credentials, said once at
//! error level; the events stay in the spool meanwhile (up to `max_age`).

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::ad_platform;
use super::http_client::{self, HttpClient, StatusClass};
use super::{DeliveryConfig, Sink, SinkBuildError, SinkError};
use crate::capture::visit::CLICK_MAX_AGE;
use crate::event::{AdClick, Envelope, Event};
use crate::sink::meta_capi::is_sha256_hex;

/// Google takes at most this many conversions in one request.
pub const MAX_CONVERSIONS_PER_REQUEST: usize = 2000;
const DEFAULT_ENDPOINT: &str = "https://googleads.googleapis.com";
const DEFAULT_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";
/// `ConversionUploadError` codes for a conversion Google already has
/// (same click, action and time, or same `orderId`).
const ALREADY_TAKEN: [&str; 2] = ["CLICK_CONVERSION_ALREADY_EXISTS", "ORDER_ID_ALREADY_IN_USE"];
/// An access token is replaced this long before Google says it expires,
/// so that no request carries one that expires on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// While uploads are stopped by an authentication failure, each batch
/// waits this long before it is looked at again.
const AUTH_STOPPED_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAdsSinkConfig {
    pub name: Option<String>,
    /// The Google Ads account the conversions belong to (`123-456-7890`
    /// or `1234567890`).
    pub customer_id: String,
    /// The manager account the credentials reach it through, if any.
    pub login_customer_id: Option<String>,
    pub developer_token_env: String,
    pub client_id_env: String,
    pub client_secret_env: String,
    pub refresh_token_env: String,
    /// Replaces `https://googleads.googleapis.com` (tests, egress proxies).
    pub endpoint: Option<String>,
    /// Replaces `https://oauth2.googleapis.com/token`.
    pub token_endpoint: Option<String>,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// touchgate event name → conversion action id
    /// (`signup_submitted = "123456789"`). Only these events are sent.
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// Time allowed for one request, answer included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_api_version() -> String {
    "v22".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `123-456-7890` → `1234567890`; `None` unless it is ten digits.
pub fn customer_digits(id: &str) -> Option<String> {
    let digits: String = id.chars().filter(|c| *c != '-').collect();
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

impl GoogleAdsSinkConfig {
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |k: &str, m: String| problems.push((k.to_string(), m));
        if customer_digits(&self.customer_id).is_none() {
            bad(
                "customer_id",
                "a Google Ads customer id is ten digits, e.g. \"123-456-7890\"".into(),
            );
        }
        if let Some(l) = &self.login_customer_id
            && customer_digits(l).is_none()
        {
            bad(
                "login_customer_id",
                "a manager account id is ten digits, e.g. \"123-456-7890\"".into(),
            );
        }
        for (key, var, what) in [
            (
                "developer_token_env",
                &self.developer_token_env,
                "the developer token from the Google Ads API Center",
            ),
            ("client_id_env", &self.client_id_env, "the OAuth client id"),
            (
                "client_secret_env",
                &self.client_secret_env,
                "the OAuth client secret",
            ),
            (
                "refresh_token_env",
                &self.refresh_token_env,
                "an OAuth refresh token with the adwords scope",
            ),
        ] {
            match env(var) {
                None => bad(
                    key,
                    format!("environment variable {var} is not set ({what})"),
                ),
                Some(v) if v.trim().is_empty() => {
                    bad(key, format!("environment variable {var} is empty"))
                }
                Some(_) => {}
            }
        }
        for (key, url) in [
            ("endpoint", &self.endpoint),
            ("token_endpoint", &self.token_endpoint),
        ] {
            if let Some(u) = url
                && let Err(m) = ad_platform::base_url(u)
            {
                bad(key, m);
            }
        }
        let version_ok = self
            .api_version
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !version_ok {
            bad(
                "api_version",
                "a Google Ads API version looks like \"v22\"".into(),
            );
        }
        if self.events.is_empty() {
            bad(
                "events",
                "no event is sent: map touchgate events to conversion action ids, e.g. events = { signup_submitted = \"123456789\" }".into(),
            );
        }
        for (from, to) in &self.events {
            if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
                bad(
                    &format!("events.{from}"),
                    "a conversion action id is a number (Goals → Conversions → the action's ctId)"
                        .into(),
                );
            }
        }
        if self.timeout.is_zero() {
            bad("timeout", "must be more than zero".into());
        }
        problems
    }
}

/// One `ClickConversion`, as the Google Ads API documents it (JSON names).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClickConversion {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gclid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbraid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wbraid: Option<String>,
    pub conversion_action: String,
    pub conversion_date_time: String,
    pub order_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_identifiers: Vec<UserIdentifier>,
    pub consent: ConversionConsent,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum UserIdentifier {
    HashedEmail(String),
    HashedPhoneNumber(String),
    AddressInfo(AddressInfo),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressInfo {
    pub hashed_first_name: String,
    pub hashed_last_name: String,
    pub country_code: String,
    pub postal_code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionConsent {
    pub ad_user_data: ConsentStatus,
    pub ad_personalization: ConsentStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsentStatus {
    Granted,
    Denied,
}

impl From<bool> for ConsentStatus {
    fn from(granted: bool) -> Self {
        if granted {
            ConsentStatus::Granted
        } else {
            ConsentStatus::Denied
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadRequest<'a> {
    conversions: &'a [ClickConversion],
    partial_failure: bool,
}

/// Google's `yyyy-mm-dd hh:mm:ss+|-hh:mm`, here always in UTC.
pub fn conversion_date_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Whether `envelope` may go to Google at all: ads consent, and in TCF
/// mode consent for Google (vendor 755) and `ad_user_data`.
pub fn consented(envelope: &Envelope) -> bool {
    envelope.event.consent.ads
        && envelope
            .ad_match
            .as_ref()
            .and_then(|m| m.tcf)
            .is_none_or(|t| t.google && t.ad_user_data)
}

/// The conversion for `envelope` under conversion action `action` of
/// `customer`, or why Google would refuse it. Pure.
pub fn click_conversion(
    envelope: &Envelope,
    customer: &str,
    action: &str,
) -> Result<ClickConversion, String> {
    let event = &envelope.event;
    let m = envelope
        .ad_match
        .as_ref()
        .ok_or("no ad match keys were captured for this event")?;
    let click = m
        .google_click
        .as_ref()
        .ok_or("no Google Ads click (gclid, gbraid or wbraid) before this conversion")?;
    check_click(click, event.occurred_at)?;
    let (mut gclid, mut gbraid, mut wbraid) = (None, None, None);
    match click.kind.as_str() {
        "gclid" => gclid = Some(click.value.clone()),
        "gbraid" => gbraid = Some(click.value.clone()),
        "wbraid" => wbraid = Some(click.value.clone()),
        other => return Err(format!("{other} is not a Google Ads click id")),
    }
    let mut user_identifiers = Vec::new();
    if let Some(g) = &m.google {
        let digest = |what: &str, h: &String| {
            if is_sha256_hex(h) {
                Ok(h.clone())
            } else {
                Err(format!(
                    "{what} is not a SHA-256 hex digest; refusing to send it"
                ))
            }
        };
        if let Some(e) = &g.email {
            user_identifiers.push(UserIdentifier::HashedEmail(digest("email", e)?));
        }
        if let Some(p) = &g.phone {
            user_identifiers.push(UserIdentifier::HashedPhoneNumber(digest("phone", p)?));
        }
        if let Some(a) = &g.address {
            user_identifiers.push(UserIdentifier::AddressInfo(AddressInfo {
                hashed_first_name: digest("first name", &a.hashed_first_name)?,
                hashed_last_name: digest("last name", &a.hashed_last_name)?,
                country_code: a.country_code.clone(),
                postal_code: a.postal_code.clone(),
            }));
        }
    }
    let (conversion_value, currency_code) = value_and_currency(event);
    Ok(ClickConversion {
        gclid,
        gbraid,
        wbraid,
        conversion_action: format!("customers/{customer}/conversionActions/{action}"),
        conversion_date_time: conversion_date_time(event.occurred_at),
        order_id: event.event_id.clone(),
        conversion_value,
        currency_code,
        user_identifiers,
        consent: ConversionConsent {
            ad_user_data: ConsentStatus::Granted,
            ad_personalization: m
                .tcf
                .map_or(event.consent.ads, |t| t.ad_personalization)
                .into(),
        },
    })
}

fn check_click(click: &AdClick, converted: OffsetDateTime) -> Result<(), String> {
    if click.at > converted {
        return Err("the click is after the conversion".into());
    }
    if converted - click.at > CLICK_MAX_AGE {
        return Err("the click is more than 90 days before the conversion".into());
    }
    if click.value.is_empty() || !click.value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the click id is not printable ASCII".into());
    }
    Ok(())
}

/// `value` (a number, or a string of one) and `currency` (ISO 4217, three
/// letters) from the event's properties, when it carries them.
fn value_and_currency(event: &Event) -> (Option<f64>, Option<String>) {
    let value = event.properties.get("value").and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    });
    let value = value.filter(|v| v.is_finite() && *v >= 0.0);
    let currency = event
        .properties
        .get("currency")
        .and_then(|c| c.as_str())
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()));
    match value {
        Some(v) => (Some(v), currency),
        None => (None, None),
    }
}

/// `{"error": {"code", "message", "status"}}`, Google's error answer.
#[derive(Debug, Default, Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadAnswer {
    #[serde(default)]
    partial_failure_error: Option<PartialFailureError>,
}

#[derive(Debug, Deserialize)]
struct PartialFailureError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<FailureDetail>,
}

#[derive(Debug, Deserialize)]
struct FailureDetail {
    #[serde(default)]
    errors: Vec<GoogleAdsError>,
}

#[derive(Debug, Deserialize)]
struct GoogleAdsError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "errorCode")]
    error_code: Option<serde_json::Value>,
    #[serde(default)]
    location: Option<ErrorLocation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorLocation {
    #[serde(default)]
    field_path_elements: Vec<FieldPathElement>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FieldPathElement {
    field_name: String,
    #[serde(default)]
    index: Option<usize>,
}

/// The rows (indexes into the uploaded `conversions`) a partial failure
/// names, each with Google's message. A failure that names no row is
/// given for every row, since Google refused what it does not place.
fn partial_failures(body: &[u8], rows: usize) -> Vec<(usize, String)> {
    let Ok(answer) = serde_json::from_slice::<UploadAnswer>(body) else {
        return Vec::new();
    };
    let Some(failure) = answer.partial_failure_error else {
        return Vec::new();
    };
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for e in failure.details.iter().flat_map(|d| &d.errors) {
        let code = e
            .error_code
            .as_ref()
            .and_then(|c| c.as_object())
            .and_then(|o| o.iter().next())
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()));
        // A retried batch meets the rows Google took the first time:
        // those are delivered, not refused.
        if code.is_some_and(|(_, v)| ALREADY_TAKEN.contains(&v)) {
            continue;
        }
        let code = code
            .map(|(k, v)| format!(" ({k}: {v})"))
            .unwrap_or_default();
        let text = format!("Google Ads: {}{code}", e.message);
        let row = e.location.as_ref().and_then(|l| {
            l.field_path_elements
                .iter()
                .find(|p| p.field_name == "conversions")
                .and_then(|p| p.index)
        });
        match row.filter(|r| *r < rows) {
            Some(r) => out.entry(r).or_default().push(text),
            None => unplaced.push(text),
        }
    }
    let listed = failure.details.iter().any(|d| !d.errors.is_empty());
    if !listed && !failure.message.is_empty() {
        unplaced.push(format!("Google Ads: {}", failure.message));
    }
    if !unplaced.is_empty() && out.is_empty() {
        let text = unplaced.join("; ");
        return (0..rows).map(|r| (r, text.clone())).collect();
    }
    out.into_iter().map(|(r, m)| (r, m.join("; "))).collect()
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

struct Credentials {
    developer_token: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

pub struct GoogleAdsSink {
    name: String,
    customer: String,
    login_customer: Option<String>,
    upload_uri: String,
    token_uri: String,
    events: BTreeMap<String, String>,
    credentials: Credentials,
    token: tokio::sync::Mutex<Option<Token>>,
    auth_failed: AtomicBool,
    client: HttpClient,
}

impl std::fmt::Debug for GoogleAdsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleAdsSink")
            .field("name", &self.name)
            .field("upload_uri", &self.upload_uri)
            .finish_non_exhaustive()
    }
}

impl GoogleAdsSink {
    pub fn new(
        cfg: &GoogleAdsSinkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GoogleAdsSink, SinkBuildError> {
        let (developer_token, endpoint) = ad_platform::build_parts(
            cfg.validate(env),
            "developer_token_env",
            env(&cfg.developer_token_env),
            cfg.endpoint.as_deref(),
            DEFAULT_ENDPOINT,
        )?;
        let secret = |key: &str, var: &str| {
            env(var)
                .map(|s| s.trim().to_string())
                .ok_or_else(|| SinkBuildError::Invalid(vec![(key.into(), "not set".into())]))
        };
        let token_uri = match &cfg.token_endpoint {
            Some(t) => ad_platform::base_url(t)
                .map_err(|m| SinkBuildError::Invalid(vec![("token_endpoint".into(), m)]))?,
            None => DEFAULT_TOKEN_ENDPOINT.to_string(),
        };
        // `validate` checked both ids.
        let customer = customer_digits(&cfg.customer_id).unwrap_or_default();
        Ok(GoogleAdsSink {
            name: cfg.name.clone().unwrap_or_else(|| "google_ads".into()),
            upload_uri: format!(
                "{endpoint}/{}/customers/{customer}:uploadClickConversions",
                cfg.api_version
            ),
            customer,
            login_customer: cfg.login_customer_id.as_deref().and_then(customer_digits),
            token_uri,
            events: cfg.events.clone(),
            credentials: Credentials {
                developer_token,
                client_id: secret("client_id_env", &cfg.client_id_env)?,
                client_secret: secret("client_secret_env", &cfg.client_secret_env)?,
                refresh_token: secret("refresh_token_env", &cfg.refresh_token_env)?,
            },
            token: tokio::sync::Mutex::new(None),
            auth_failed: AtomicBool::new(false),
            client: HttpClient::new(cfg.timeout)
                .map_err(|e| SinkBuildError::Client(format!("TLS setup: {e}")))?,
        })
    }

    /// Go by `name` in metrics and logs.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn action(&self, event: &Event) -> Option<&str> {
        if event.is_attempt() {
            return None;
        }
        self.events.get(&event.event_name).map(String::as_str)
    }

    /// Authentication failed: stop uploading, say so once at error level.
    fn auth_failure(&self, what: String) -> SinkError {
        if !self.auth_failed.swap(true, Ordering::SeqCst) {
            tracing::error!(
                sink = %self.name,
                "google_ads: AUTHENTICATION FAILED, uploads stopped until touchgate restarts with working credentials: {what}. Check the developer token, the OAuth client and refresh token (adwords scope), and login_customer_id for accounts under a manager. Events stay in the spool up to delivery.max_age."
            );
        }
        stopped(&what)
    }

    /// A valid access token: the cached one, or a fresh one when it is
    /// within [`REFRESH_MARGIN`] of expiring.
    async fn access_token(&self) -> Result<String, SinkError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let c = &self.credentials;
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &c.client_id)
            .append_pair("client_secret", &c.client_secret)
            .append_pair("refresh_token", &c.refresh_token)
            .finish();
        let request = Request::post(&self.token_uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::USER_AGENT, user_agent())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::Rejected {
                message: format!("cannot build the token request: {e}"),
            })?;
        let answer = self.client.send(request).await?;
        match answer.class() {
            StatusClass::Delivered => {}
            StatusClass::Retry => return Err(answer.retry()),
            _ => {
                let e: TokenError = serde_json::from_slice(&answer.body).unwrap_or_default();
                return Err(self.auth_failure(format!(
                    "the token endpoint answered HTTP {}: {} {}",
                    answer.status, e.error, e.error_description
                )));
            }
        }
        let t: TokenAnswer = serde_json::from_slice(&answer.body).map_err(|e| {
            http_client::retryable(format!("the token endpoint's answer is not a token: {e}"))
        })?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
        // A token shorter-lived than the margin is used once and replaced.
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN);
        *slot = Some(Token {
            value: t.access_token.clone(),
            refresh_at,
        });
        Ok(t.access_token)
    }

    async fn upload(
        &self,
        conversions: &[ClickConversion],
    ) -> Result<Vec<(usize, String)>, SinkError> {
        let token = self.access_token().await?;
        let body = serde_json::to_vec(&UploadRequest {
            conversions,
            partial_failure: true,
        })
        .map_err(|e| SinkError::Rejected {
            message: format!("cannot encode the request: {e}"),
        })?;
        let mut request = Request::post(&self.upload_uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, user_agent())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("developer-token", &self.credentials.developer_token);
        if let Some(l) = &self.login_customer {
            request = request.header("login-customer-id", l);
        }
        let request =
            request
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| SinkError::Rejected {
                    message: format!("cannot build the request: {e}"),
                })?;
        let answer = self.client.send(request).await?;
        let error = || {
            let e: ErrorAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
            if e.error.message.is_empty() {
                answer.describe()
            } else {
                format!(
                    "Google Ads answered HTTP {} {}: {}",
                    answer.status, e.error.status, e.error.message
                )
            }
        };
        match answer.class() {
            StatusClass::Delivered => Ok(partial_failures(&answer.body, conversions.len())),
            StatusClass::Retry => Err(SinkError::Retryable {
                message: error(),
                retry_after: answer.retry_after,
            }),
            StatusClass::Fatal => {
                // The cached token may have been revoked: the next start
                // asks for a new one.
                *self.token.lock().await = None;
                Err(self.auth_failure(error()))
            }
            StatusClass::DeadLetter => Err(SinkError::Rejected { message: error() }),
        }
    }
}

fn user_agent() -> &'static str {
    concat!("touchgate/", env!("CARGO_PKG_VERSION"))
}

fn stopped(what: &str) -> SinkError {
    SinkError::Retryable {
        message: format!("uploads stopped after an authentication failure: {what}"),
        retry_after: Some(AUTH_STOPPED_WAIT),
    }
}

#[async_trait]
impl Sink for GoogleAdsSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Mapped events with consent that follow a Google Ads click: a
    /// signup without one is not Google's to credit.
    fn accepts(&self, envelope: &Envelope) -> bool {
        self.action(&envelope.event).is_some()
            && consented(envelope)
            && envelope
                .ad_match
                .as_ref()
                .is_some_and(|m| m.google_click.is_some())
    }

    fn check(&self, envelope: &Envelope) -> Result<(), String> {
        let action = self
            .action(&envelope.event)
            .ok_or("event name not mapped in google_ads events")?;
        click_conversion(envelope, &self.customer, action).map(|_| ())
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        if self.auth_failed.load(Ordering::SeqCst) {
            return Err(stopped("see the error logged when it happened"));
        }
        // Conversions with the index of their event in `batch`.
        let mut rows = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (i, envelope) in batch.iter().enumerate() {
            let Some(action) = self.action(&envelope.event).filter(|_| consented(envelope)) else {
                continue;
            };
            match click_conversion(envelope, &self.customer, action) {
                Ok(c) => rows.push((i, c)),
                Err(why) => rejected.push((i, why)),
            }
        }
        for chunk in rows.chunks(MAX_CONVERSIONS_PER_REQUEST) {
            let conversions: Vec<ClickConversion> = chunk.iter().map(|(_, c)| c.clone()).collect();
            for (row, why) in self.upload(&conversions).await? {
                if let Some((i, _)) = chunk.get(row) {
                    rejected.push((*i, why));
                }
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Partial { rejected })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AdMatch, GoogleAddress, GoogleMatch, Origin, TcfAds};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-29 10:00:00.250 UTC);

    fn envelope() -> Envelope {
        let mut e = Event::new(
            "ev1".into(),
            "signup_submitted".into(),
            Origin::Proxy,
            NOW,
            NOW,
        );
        e.properties.insert("value".into(), "49.90".into());
        e.properties.insert("currency".into(), "eur".into());
        Envelope {
            event: e,
            ad_match: Some(AdMatch {
                google_click: Some(AdClick {
                    kind: "gclid".into(),
                    value: "Cj0KCQiA".into(),
                    at: NOW - time::Duration::days(3),
                }),
                google: Some(GoogleMatch {
                    email: Some("a".repeat(64)),
                    phone: Some("b".repeat(64)),
                    address: Some(GoogleAddress {
                        hashed_first_name: "c".repeat(64),
                        hashed_last_name: "d".repeat(64),
                        country_code: "DE".into(),
                        postal_code: "10115".into(),
                    }),
                }),
                ..AdMatch::default()
            }),
        }
    }

    #[test]
    fn builds_the_documented_conversion() {
        let c = click_conversion(&envelope(), "1234567890", "987").unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["gclid"], "Cj0KCQiA");
        assert!(v.get("gbraid").is_none() && v.get("wbraid").is_none());
        assert_eq!(
            v["conversionAction"],
            "customers/1234567890/conversionActions/987"
        );
        assert_eq!(v["conversionDateTime"], "2026-11-29 10:00:00+00:00");
        assert_eq!(v["orderId"], "ev1");
        assert_eq!(v["conversionValue"], 49.9);
        assert_eq!(v["currencyCode"], "EUR");
        assert_eq!(v["userIdentifiers"][0]["hashedEmail"], "a".repeat(64));
        assert_eq!(v["userIdentifiers"][1]["hashedPhoneNumber"], "b".repeat(64));
        assert_eq!(
            v["userIdentifiers"][2]["addressInfo"]["hashedFirstName"],
            "c".repeat(64)
        );
        assert_eq!(v["userIdentifiers"][2]["addressInfo"]["countryCode"], "DE");
        assert_eq!(v["consent"]["adUserData"], "GRANTED");
        assert_eq!(v["consent"]["adPersonalization"], "GRANTED");
    }

    #[test]
    fn refuses_what_google_would_refuse() {
        let mut old = envelope();
        old.ad_match
            .as_mut()
            .unwrap()
            .google_click
            .as_mut()
            .unwrap()
            .at = NOW - time::Duration::days(91);
        assert!(
            click_conversion(&old, "1", "2")
                .unwrap_err()
                .contains("90 days")
        );
        let mut later = envelope();
        later
            .ad_match
            .as_mut()
            .unwrap()
            .google_click
            .as_mut()
            .unwrap()
            .at = NOW + time::Duration::minutes(1);
        assert!(click_conversion(&later, "1", "2").is_err());
        let mut raw = envelope();
        raw.ad_match
            .as_mut()
            .unwrap()
            .google
            .as_mut()
            .unwrap()
            .email = Some("someone@example.com".into());
        assert!(
            click_conversion(&raw, "1", "2")
                .unwrap_err()
                .contains("SHA-256")
        );
        let mut none = envelope();
        none.ad_match.as_mut().unwrap().google_click = None;
        assert!(click_conversion(&none, "1", "2").is_err());
    }

    #[test]
    fn tcf_consent_gates_and_sets_personalization() {
        let mut e = envelope();
        assert!(consented(&e));
        let tcf = |google, ad_user_data, ad_personalization| TcfAds {
            google,
            ad_user_data,
            ad_personalization,
        };
        e.ad_match.as_mut().unwrap().tcf = Some(tcf(true, true, false));
        assert!(consented(&e));
        let v = serde_json::to_value(click_conversion(&e, "1", "2").unwrap()).unwrap();
        assert_eq!(v["consent"]["adPersonalization"], "DENIED");
        e.ad_match.as_mut().unwrap().tcf = Some(tcf(false, true, true));
        assert!(!consented(&e), "no consent for vendor 755");
        e.ad_match.as_mut().unwrap().tcf = Some(tcf(true, false, true));
        assert!(!consented(&e));
        let mut no_ads = envelope();
        no_ads.event.consent.ads = false;
        assert!(!consented(&no_ads));
    }

    #[test]
    fn value_needs_a_number() {
        let mut e = envelope();
        e.event.properties.insert("value".into(), "free".into());
        let c = click_conversion(&e, "1", "2").unwrap();
        assert_eq!((c.conversion_value, c.currency_code), (None, None));
        e.event
            .properties
            .insert("value".into(), serde_json::json!(10));
        e.event.properties.insert("currency".into(), "euro".into());
        let c = click_conversion(&e, "1", "2").unwrap();
        assert_eq!((c.conversion_value, c.currency_code), (Some(10.0), None));
    }

    #[test]
    fn date_times() {
        assert_eq!(
            conversion_date_time(datetime!(2026-01-02 03:04:05.999 +02:00)),
            "2026-01-02 01:04:05+00:00"
        );
    }

    #[test]
    fn partial_failures_are_placed_by_row() {
        let body = br#"{"partialFailureError":{"code":3,"message":"Multiple errors in details","details":[{"@type":"type.googleapis.com/google.ads.googleads.v22.errors.GoogleAdsFailure","errors":[{"errorCode":{"conversionUploadError":"EXPIRED_EVENT"},"message":"The click is too old.","location":{"fieldPathElements":[{"fieldName":"conversions","index":1},{"fieldName":"gclid"}]}}]}]},"results":[{"gclid":"a"},{}]}"#;
        let p = partial_failures(body, 2);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, 1);
        assert!(p[0].1.contains("The click is too old."), "{}", p[0].1);
        assert!(p[0].1.contains("EXPIRED_EVENT"), "{}", p[0].1);
        assert!(partial_failures(br#"{"results":[{}]}"#, 1).is_empty());
        let again = br#"{"partialFailureError":{"code":3,"message":"x","details":[{"errors":[{"errorCode":{"conversionUploadError":"CLICK_CONVERSION_ALREADY_EXISTS"},"message":"This conversion was already uploaded.","location":{"fieldPathElements":[{"fieldName":"conversions","index":0}]}}]}]}}"#;
        assert!(
            partial_failures(again, 1).is_empty(),
            "already taken = delivered"
        );
        let unplaced = br#"{"partialFailureError":{"code":3,"message":"Something","details":[]}}"#;
        assert_eq!(partial_failures(unplaced, 2).len(), 2);
    }

    #[test]
    fn config_is_validated() {
        let cfg: GoogleAdsSinkConfig = toml::from_str(
            r#"
            customer_id = "123-45"
            login_customer_id = "x"
            developer_token_env = "D"
            client_id_env = "C"
            client_secret_env = "S"
            refresh_token_env = "R"
            endpoint = "ftp://x"
            api_version = "22"
            events = { signup_submitted = "abc" }
        "#,
        )
        .unwrap();
        let keys: Vec<String> = cfg
            .validate(&|_| None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in [
            "customer_id",
            "login_customer_id",
            "developer_token_env",
            "client_id_env",
            "client_secret_env",
            "refresh_token_env",
            "endpoint",
            "api_version",
            "events.signup_submitted",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} in {keys:?}");
        }
        let good: GoogleAdsSinkConfig = toml::from_str(
            "customer_id = \"123-456-7890\"\ndeveloper_token_env = \"D\"\nclient_id_env = \"C\"\nclient_secret_env = \"S\"\nrefresh_token_env = \"R\"\nevents = { signup_submitted = \"987\" }\n",
        )
        .unwrap();
        assert!(good.validate(&|_| Some("x".into())).is_empty());
        assert_eq!(
            customer_digits("123-456-7890").as_deref(),
            Some("1234567890")
        );
    }
}
