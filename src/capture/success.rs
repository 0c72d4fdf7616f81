//! What success looks like for one form, and the decision over the app's
//! answer: whether a form post is a conversion the app really accepted.
//!
//! The rule comes from `[[form]]` (`success_status`, `success_location`,
//! `failure_location`, `success_header`, `failure_body`); its patterns are
//! compiled once, when the config is loaded. The decision is pure: the
//! response's status and headers in, then (only when the rule reads the
//! body) the first bytes of the body, a [`Verdict`] out.

use http::{HeaderMap, HeaderName, header};
use serde::{Deserialize, Deserializer};

/// A form's success rule. Every part is optional; with none, a 2xx, or a
/// 3xx whose `Location` is not the form's own path, is a success.
#[derive(Debug, Clone, Default)]
pub struct SuccessRule {
    /// `success_status`: the statuses that may confirm; empty means any
    /// 2xx or 3xx.
    pub status: Vec<u16>,
    /// `success_location`: the `Location` must match.
    pub success_location: Option<Pattern>,
    /// `failure_location`: a redirect whose `Location` matches is a
    /// failure. `None`: a redirect back to the form's own path is.
    pub failure_location: Option<Pattern>,
    /// `success_header`: a header the app adds on success (stripped before
    /// the response reaches the client).
    pub success_header: Option<HeaderRule>,
    /// `failure_body`: searched in the first `proxy.max_capture_body`
    /// bytes of an HTML answer.
    pub failure_body: Option<BodyPattern>,
}

/// Why a form post was not confirmed: the `reason` label of
/// `touchgate_conversions_unconfirmed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The status is not one that confirms (4xx/5xx, or not in `success_status`).
    Status,
    /// A redirect to the form's own path, or one `failure_location` matches.
    FailureLocation,
    /// `success_location` is set and the answer has no `Location` it matches.
    SuccessLocation,
    /// `success_header` is set and the answer does not carry it.
    MissingSuccessHeader,
    /// `failure_body` matched the start of the body.
    FailureBody,
    /// `failure_body` is set but the body is encoded (gzip, br, …) and
    /// cannot be searched.
    BodyEncoded,
    /// `failure_body` is set but the body ended early (the client went
    /// away, the app reset the stream) before it could be searched.
    BodyIncomplete,
    /// The app gave no answer (touchgate answered 502/503/504).
    UpstreamError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Status => "status",
            Reason::FailureLocation => "failure_location",
            Reason::SuccessLocation => "success_location",
            Reason::MissingSuccessHeader => "missing_success_header",
            Reason::FailureBody => "failure_body",
            Reason::BodyEncoded => "body_encoded",
            Reason::BodyIncomplete => "body_incomplete",
            Reason::UpstreamError => "upstream_error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Confirmed,
    Unconfirmed(Reason),
}

/// The decision on the response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    Decided(Verdict),
    /// Everything in the head passed and the rule reads the body: call
    /// [`decide_body`] with its first bytes.
    NeedBody,
}

/// Decide on the response head. `form_path` is the path the form was
/// posted to (the default failure location).
pub fn decide_head(
    rule: &SuccessRule,
    form_path: &str,
    status: u16,
    headers: &HeaderMap,
) -> HeadVerdict {
    use HeadVerdict::Decided;
    use Verdict::Unconfirmed;
    let allowed = if rule.status.is_empty() {
        (200..400).contains(&status)
    } else {
        rule.status.contains(&status)
    };
    if !allowed {
        return Decided(Unconfirmed(Reason::Status));
    }
    let location = headers
        .get(header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let target = location
        .as_deref()
        .map(|l| resolve_location(l, form_path).unwrap_or_else(|| l.trim().to_string()));
    if (300..400).contains(&status)
        && let Some(target) = &target
    {
        let failure = match &rule.failure_location {
            Some(p) => p.is_match(target),
            None => same_path(target, form_path),
        };
        if failure {
            return Decided(Unconfirmed(Reason::FailureLocation));
        }
    }
    if let Some(p) = &rule.success_location
        && !target.as_deref().is_some_and(|t| p.is_match(t))
    {
        return Decided(Unconfirmed(Reason::SuccessLocation));
    }
    if let Some(h) = &rule.success_header
        && !h.is_satisfied(headers)
    {
        return Decided(Unconfirmed(Reason::MissingSuccessHeader));
    }
    if rule.failure_body.is_some() && (200..300).contains(&status) && is_html(headers) {
        if !is_identity(headers) {
            return Decided(Unconfirmed(Reason::BodyEncoded));
        }
        return HeadVerdict::NeedBody;
    }
    Decided(Verdict::Confirmed)
}

/// Decide on the first bytes of the body (at most `proxy.max_capture_body`
/// of them), once [`decide_head`] asked for them.
pub fn decide_body(rule: &SuccessRule, prefix: &[u8]) -> Verdict {
    match &rule.failure_body {
        Some(p) if p.0.is_match(prefix) => Verdict::Unconfirmed(Reason::FailureBody),
        _ => Verdict::Confirmed,
    }
}

/// Whether the rule may read the response body (and so wants it
/// unencoded).
pub fn reads_body(rule: &SuccessRule) -> bool {
    rule.failure_body.is_some()
}

/// The path and query a `Location` points to, resolved against the path
/// the form was posted to (RFC 3986): `/signup?error=1` for `?error=1`,
/// `https://shop.example/signup`, or `/signup` itself. `None` when it is
/// not a URI reference.
pub fn resolve_location(location: &str, form_path: &str) -> Option<String> {
    // A placeholder origin: only the path and query are compared.
    static BASE: std::sync::LazyLock<Option<url::Url>> =
        std::sync::LazyLock::new(|| url::Url::parse("http://form.invalid/").ok());
    let base = BASE.as_ref()?.join(form_path).ok()?;
    let target = base.join(location.trim()).ok()?;
    if !matches!(target.scheme(), "http" | "https") {
        return None;
    }
    let mut out = target.path().to_string();
    if let Some(q) = target.query() {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

/// The resolved target's path is the form's own path, a trailing slash
/// aside (a redirect that only adds or drops one loses the post too).
fn same_path(target: &str, form_path: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or("");
    // The form path as the URL parser writes it (percent-encoding).
    let own = resolve_location(form_path, "/");
    let own = own.as_deref().unwrap_or(form_path);
    let own = own.split('?').next().unwrap_or("");
    trim_slash(path) == trim_slash(own)
}

fn trim_slash(p: &str) -> &str {
    match p.strip_suffix('/') {
        Some(s) if !s.is_empty() => s,
        _ => p,
    }
}

/// HTML, or no `Content-Type` at all (browsers sniff those as HTML).
fn is_html(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = ct.as_bytes().split(|b| *b == b';').next().unwrap_or(b"");
    let essence = essence.trim_ascii();
    essence.eq_ignore_ascii_case(b"text/html")
        || essence.eq_ignore_ascii_case(b"application/xhtml+xml")
}

fn is_identity(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case(b"identity"))
    })
}

/// A regex over text (`success_location`, `failure_location`), compiled
/// when the config is read.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        regex::Regex::new(source)
            .map(Pattern)
            .map_err(|e| format!("not a valid regex: {e}"))
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A regex over bytes (`failure_body`): a page need not be UTF-8.
#[derive(Debug, Clone)]
pub struct BodyPattern(regex::bytes::Regex);

impl BodyPattern {
    pub fn new(source: &str) -> Result<BodyPattern, String> {
        regex::bytes::Regex::new(source)
            .map(BodyPattern)
            .map_err(|e| format!("not a valid regex: {e}"))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for BodyPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BodyPattern, D::Error> {
        let s = String::deserialize(d)?;
        BodyPattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// `success_header`: `NAME` (present) or `NAME=VALUE` (present with that
/// value, whitespace around it aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub name: HeaderName,
    pub value: Option<String>,
}

impl HeaderRule {
    pub fn parse(s: &str) -> Result<HeaderRule, String> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
            None => (s.trim(), None),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header name (NAME or NAME=VALUE)"))?;
        if value.as_deref().is_some_and(|v| {
            v.is_empty() || !v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        }) {
            return Err("the value after = must be printable ASCII and not empty".into());
        }
        Ok(HeaderRule { name, value })
    }

    pub fn is_satisfied(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        match &self.value {
            None => values.next().is_some(),
            Some(want) => values.any(|v| v.as_bytes().trim_ascii() == want.as_bytes()),
        }
    }
}

impl std::fmt::Display for HeaderRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl<'de> Deserialize<'de> for HeaderRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HeaderRule, D::Error> {
        let s = String::deserialize(d)?;
        HeaderRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeadVerdict::{Decided, NeedBody};
    use Verdict::{Confirmed, Unconfirmed};

    fn heads(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// The success rule of a `[[form]]` table holding these keys.
    fn rule(toml: &str) -> SuccessRule {
        let table = format!("path = \"/signup\"\nevent = \"sign_up\"\n{toml}");
        toml::from_str::<crate::config::FormConfig>(&table)
            .unwrap()
            .success
    }

    const HTML: (&str, &str) = ("content-type", "text/html; charset=utf-8");

    /// (rule, form path, status, headers, body, expected verdict)
    #[test]
    fn decisions() {
        let fl = Unconfirmed(Reason::FailureLocation);
        let st = Unconfirmed(Reason::Status);
        type Case<'a> = (
            &'a str,
            &'a str,
            u16,
            &'a [(&'a str, &'a str)],
            &'a [u8],
            Verdict,
        );
        let cases: &[Case] = &[
            // The default: 2xx, or a 3xx anywhere but back to the form.
            ("", "/signup", 200, &[], b"", Confirmed),
            ("", "/signup", 201, &[], b"", Confirmed),
            ("", "/signup", 204, &[], b"", Confirmed),
            (
                "",
                "/signup",
                302,
                &[("location", "/thanks")],
                b"",
                Confirmed,
            ),
            ("", "/signup", 303, &[], b"", Confirmed),
            ("", "/signup", 302, &[("location", "/signup")], b"", fl),
            ("", "/signup", 302, &[("location", "/signup/")], b"", fl),
            (
                "",
                "/signup",
                303,
                &[("location", "/signup?error=email")],
                b"",
                fl,
            ),
            ("", "/signup", 302, &[("location", "?error=1")], b"", fl),
            (
                "",
                "/signup",
                302,
                &[("location", "http://shop.example/signup")],
                b"",
                fl,
            ),
            (
                "",
                "/signup",
                302,
                &[("location", "//shop.example/signup#top")],
                b"",
                fl,
            ),
            ("", "/a/signup", 302, &[("location", "signup")], b"", fl),
            (
                "",
                "/a/signup",
                302,
                &[("location", "../a/./signup")],
                b"",
                fl,
            ),
            (
                "",
                "/a/signup",
                302,
                &[("location", "thanks")],
                b"",
                Confirmed,
            ),
            (
                "",
                "/signup",
                302,
                &[("location", "/signup/thanks")],
                b"",
                Confirmed,
            ),
            (
                "",
                "/signup",
                302,
                &[("location", "/Signup")],
                b"",
                Confirmed,
            ),
            ("", "/signup", 400, &[], b"", st),
            ("", "/signup", 422, &[], b"", st),
            ("", "/signup", 500, &[], b"", st),
            ("", "/signup", 101, &[], b"", st),
            // success_status.
            (
                "success_status = [302, 303]",
                "/login/",
                200,
                &[HTML],
                b"",
                st,
            ),
            (
                "success_status = [302, 303]",
                "/login/",
                302,
                &[("location", "/admin/")],
                b"",
                Confirmed,
            ),
            (
                "success_status = [302, 303]",
                "/login/",
                302,
                &[("location", "/login/")],
                b"",
                fl,
            ),
            (
                "success_status = [200]",
                "/x",
                302,
                &[("location", "/y")],
                b"",
                st,
            ),
            ("success_status = [200]", "/x", 200, &[], b"", Confirmed),
            // success_location / failure_location.
            (
                "success_location = '^/thanks'",
                "/signup",
                302,
                &[("location", "/thanks?plan=pro")],
                b"",
                Confirmed,
            ),
            (
                "success_location = '^/thanks'",
                "/signup",
                302,
                &[("location", "https://shop.example/thanks")],
                b"",
                Confirmed,
            ),
            (
                "success_location = '^/thanks'",
                "/signup",
                302,
                &[("location", "/home")],
                b"",
                Unconfirmed(Reason::SuccessLocation),
            ),
            (
                "success_location = '^/thanks'",
                "/signup",
                200,
                &[],
                b"",
                Unconfirmed(Reason::SuccessLocation),
            ),
            (
                "failure_location = '^/register'",
                "/register/submit",
                302,
                &[("location", "http://app.test/register")],
                b"",
                fl,
            ),
            (
                "failure_location = '^/register'",
                "/register/submit",
                302,
                &[("location", "/home")],
                b"",
                Confirmed,
            ),
            (
                "failure_location = 'error='",
                "/signup",
                302,
                &[("location", "/signup")],
                b"",
                Confirmed,
            ),
            (
                "failure_location = 'error='",
                "/signup",
                302,
                &[("location", "/done?error=1")],
                b"",
                fl,
            ),
            // success_header.
            (
                "success_header = 'X-Signup-Ok'",
                "/s",
                200,
                &[("x-signup-ok", "1")],
                b"",
                Confirmed,
            ),
            (
                "success_header = 'X-Signup-Ok'",
                "/s",
                200,
                &[],
                b"",
                Unconfirmed(Reason::MissingSuccessHeader),
            ),
            (
                "success_header = 'X-Signup=created'",
                "/s",
                303,
                &[("x-signup", " created "), ("location", "/t")],
                b"",
                Confirmed,
            ),
            (
                "success_header = 'X-Signup=created'",
                "/s",
                303,
                &[("x-signup", "failed"), ("location", "/t")],
                b"",
                Unconfirmed(Reason::MissingSuccessHeader),
            ),
            (
                "success_header = 'X-Signup=created'",
                "/s",
                422,
                &[("x-signup", "created")],
                b"",
                st,
            ),
            // failure_body: 2xx HTML only.
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                200,
                &[HTML],
                b"<ul class=\"errorlist\"><li>x</li></ul>",
                Unconfirmed(Reason::FailureBody),
            ),
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                200,
                &[HTML],
                b"<p>Thanks</p>",
                Confirmed,
            ),
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                200,
                &[],
                b"<ul class=\"errorlist\">",
                Unconfirmed(Reason::FailureBody),
            ),
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                200,
                &[("content-type", "application/json")],
                b"class=\"errorlist",
                Confirmed,
            ),
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                302,
                &[HTML, ("location", "/ok")],
                b"class=\"errorlist",
                Confirmed,
            ),
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                200,
                &[HTML, ("content-encoding", "gzip")],
                b"",
                Unconfirmed(Reason::BodyEncoded),
            ),
            (
                "failure_body = 'class=\"errorlist'",
                "/f",
                200,
                &[HTML, ("content-encoding", "identity")],
                b"<p>ok</p>",
                Confirmed,
            ),
            (
                "failure_body = '(?i)invalid'",
                "/f",
                200,
                &[HTML],
                b"\xff\xfe INVALID email",
                Unconfirmed(Reason::FailureBody),
            ),
        ];
        for (toml, path, status, h, body, want) in cases {
            let r = rule(toml);
            let got = match decide_head(&r, path, *status, &heads(h)) {
                Decided(v) => v,
                NeedBody => decide_body(&r, body),
            };
            assert_eq!(got, *want, "{toml:?} {path} {status} {h:?} {body:?}");
        }
    }

    #[test]
    fn the_body_is_asked_for_only_when_the_head_passed() {
        let r = rule("success_status = [200]\nfailure_body = 'error'");
        assert_eq!(decide_head(&r, "/f", 200, &heads(&[HTML])), NeedBody);
        assert_eq!(
            decide_head(&r, "/f", 500, &heads(&[HTML])),
            Decided(Unconfirmed(Reason::Status))
        );
        assert!(reads_body(&r));
        assert!(!reads_body(&rule("success_status = [200]")));
    }

    #[test]
    fn header_rules_parse_or_say_why() {
        assert_eq!(
            HeaderRule::parse("X-Signup-Ok").unwrap(),
            HeaderRule {
                name: HeaderName::from_static("x-signup-ok"),
                value: None
            }
        );
        let r = HeaderRule::parse(" x-result = created ").unwrap();
        assert_eq!(r.value.as_deref(), Some("created"));
        assert_eq!(r.to_string(), "x-result=created");
        for bad in ["", "bad header", "x=", "é=1", "x=\u{7f}"] {
            assert!(HeaderRule::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pattern::new("(").is_err());
        assert!(BodyPattern::new("[").is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9_~-]{1,8}"
        }

        fn path() -> impl Strategy<Value = String> {
            (proptest::collection::vec(segment(), 1..4), any::<bool>()).prop_map(|(s, slash)| {
                let mut p = format!("/{}", s.join("/"));
                if slash {
                    p.push('/');
                }
                p
            })
        }

        proptest! {
            /// Any way of writing "back to the form" is a failure by default.
            #[test]
            fn a_redirect_back_to_the_form_fails_however_it_is_written(
                p in path(),
                query in proptest::option::of("[a-z]{1,5}=[a-z0-9]{0,5}"),
                host in "[a-z]{1,10}\\.example",
                form in 0..4usize,
                status in prop::sample::select(vec![301u16, 302, 303, 307, 308]),
            ) {
                let q = query.map(|q| format!("?{q}")).unwrap_or_default();
                let location = match form {
                    0 => format!("{p}{q}"),
                    1 => format!("https://{host}{p}{q}"),
                    2 => format!("//{host}{p}{q}#frag"),
                    _ => if q.is_empty() { "?".to_string() } else { q.clone() },
                };
                let h = heads(&[("location", &location)]);
                prop_assert_eq!(
                    decide_head(&SuccessRule::default(), &p, status, &h),
                    Decided(Unconfirmed(Reason::FailureLocation)),
                    "{} from {}", location, p
                );
            }

            /// A redirect to another path is a success by default.
            #[test]
            fn a_redirect_elsewhere_confirms(a in path(), b in path()) {
                let trim = |s: &str| s.trim_end_matches('/').to_string();
                prop_assume!(trim(&a) != trim(&b));
                let h = heads(&[("location", &b)]);
                prop_assert_eq!(
                    decide_head(&SuccessRule::default(), &a, 302, &h),
                    Decided(Confirmed)
                );
            }

            /// Whatever the app writes in `Location`, the decision is made
            /// (no panic), and an error status never confirms.
            #[test]
            fn any_location_is_decided(
                location in "[ -~]{0,40}",
                status in 100u16..600,
            ) {
                let mut h = HeaderMap::new();
                if let Ok(v) = http::HeaderValue::from_str(&location) {
                    h.insert(header::LOCATION, v);
                }
                let v = decide_head(&SuccessRule::default(), "/signup", status, &h);
                if !(200..400).contains(&status) {
                    prop_assert_eq!(v, Decided(Unconfirmed(Reason::Status)));
                }
                let _ = resolve_location(&location, "/signup");
            }

            /// `NAME=VALUE` reads back as itself, and the header it names
            /// satisfies it.
            #[test]
            fn header_rules_round_trip(
                name in "[a-z][a-z0-9-]{0,20}",
                value in proptest::option::of("[!-~]([ -~]{0,10}[!-~])?"),
            ) {
                let text = match &value {
                    Some(v) => format!("{name}={v}"),
                    None => name.clone(),
                };
                let r = HeaderRule::parse(&text).unwrap();
                prop_assert_eq!(r.to_string(), text);
                let mut h = HeaderMap::new();
                h.insert(r.name.clone(), value.as_deref().unwrap_or("1").parse().unwrap());
                prop_assert!(r.is_satisfied(&h));
            }
        }
    }
}
