//! The demo's sample app: a small marketing site with a landing page, a
//! pricing page and a signup form, served by hyper on an internal port.
//! It knows nothing about touchgate except that it shows the `x-touch-*`
//! headers it receives, which is what an app behind touchgate gets.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const STYLE: &str = include_str!("style.css");
/// A signup form is a few hundred bytes; anything far larger is not ours.
const MAX_FORM_BODY: usize = 16 * 1024;

/// The campaign links the landing page offers, as (label, explanation, href).
pub const CAMPAIGN_LINKS: [(&str, &str, &str); 3] = [
    (
        "Google Ads click",
        "utm_source=google, utm_medium=cpc and a gclid: Paid Search",
        "/?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&utm_term=dashboards&gclid=EAIaIQobChMI-demo",
    ),
    (
        "Newsletter link",
        "utm_source=newsletter, utm_medium=email: Email",
        "/?utm_source=newsletter&utm_medium=email&utm_campaign=november_digest",
    ),
    (
        "Facebook ad",
        "utm_source=facebook, utm_medium=paid_social, lands on /pricing: Paid Social",
        "/pricing?utm_source=facebook&utm_medium=paid_social&utm_campaign=retargeting&fbclid=IwAR-demo",
    ),
];

/// The headers touchgate adds for the app, in the order the page shows them.
const TOUCH_HEADERS: [&str; 5] = [
    "x-touch-first",
    "x-touch-last",
    "x-touch-device",
    "x-touch-session",
    "x-touch-id",
];

pub struct SampleApp {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Bind 127.0.0.1 on a port the OS picks and serve until [`SampleApp::stop`].
pub async fn start() -> std::io::Result<SampleApp> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, stop.clone()));
    Ok(SampleApp { addr, stop, task })
}

impl SampleApp {
    /// Stop accepting; connections still open end with the runtime.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sample app: accept failed");
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let svc = service_fn(handle);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "sample app: connection ended with an error");
            }
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let form = if parts.method == Method::POST {
        match Limited::new(body, MAX_FORM_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return Ok(page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too large",
                    "<h1>That form was too large.</h1>".into(),
                ));
            }
        }
    } else {
        Bytes::new()
    };
    Ok(route(&parts.method, &parts.uri, &parts.headers, &form))
}

/// Every page of the sample app.
pub fn route(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    form: &[u8],
) -> Response<Full<Bytes>> {
    let query = uri.query().unwrap_or("");
    match (method.as_str(), uri.path()) {
        ("GET" | "HEAD", "/") => page(StatusCode::OK, "Lumen: dashboards your team reads", landing(headers)),
        ("GET" | "HEAD", "/pricing") => page(StatusCode::OK, "Pricing: Lumen", pricing(headers)),
        ("GET" | "HEAD", "/signup") => {
            let plan = field(query.as_bytes(), "plan").unwrap_or_default();
            page(StatusCode::OK, "Sign up: Lumen", signup_form("", &plan, None))
        }
        ("POST", "/signup") => signup(form),
        ("GET" | "HEAD", "/thanks") => {
            let plan = field(query.as_bytes(), "plan").unwrap_or_default();
            page(StatusCode::OK, "Welcome: Lumen", thanks(&plan, "via a 303 redirect to /thanks"))
        }
        (_, "/" | "/pricing" | "/signup" | "/thanks") => {
            let mut r = page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "<h1>Method not allowed</h1>".into(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            r
        }
        _ => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>Not found</h1><p class=\"lead\">This sample app has <a href=\"/\">a landing page</a>, \
             <a href=\"/pricing\">pricing</a> and <a href=\"/signup\">a signup form</a>.</p>"
                .into(),
        ),
    }
}

/// `POST /signup`: 400 without a plausible e-mail (no conversion: touchgate
/// only counts what the app confirms), 303 to `/thanks` for the team plan,
/// else 200 with the thank-you page.
fn signup(form: &[u8]) -> Response<Full<Bytes>> {
    let email = field(form, "email").unwrap_or_default();
    let plan = field(form, "plan").unwrap_or_default();
    let email = email.trim();
    if !plausible_email(email) {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign up: Lumen",
            signup_form(
                email,
                &plan,
                Some("Please enter an e-mail address like ada@example.com."),
            ),
        );
    }
    if plan == "team" {
        let mut r = page(
            StatusCode::SEE_OTHER,
            "Redirecting",
            "<p><a href=\"/thanks?plan=team\">Continue</a></p>".into(),
        );
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_static("/thanks?plan=team"),
        );
        return r;
    }
    page(
        StatusCode::OK,
        "Welcome: Lumen",
        thanks(&plan, "with a 200 answer to the form post"),
    )
}

fn plausible_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// The first value of a urlencoded field.
fn field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn attr(s: &str) -> String {
    html_escape::encode_double_quoted_attribute(s).into_owned()
}

fn page(status: StatusCode, title: &str, body: String) -> Response<Full<Bytes>> {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style>\
         <script src=\"/_tg/c.js\" defer></script></head><body>\
         <header><nav><a class=\"brand\" href=\"/\">Lumen<span>.</span></a>\
         <a href=\"/\">Home</a><a href=\"/pricing\">Pricing</a><a href=\"/signup\">Sign up</a></nav></header>\
         <main>{body}</main>\
         <footer><p>Lumen is touchgate's built-in sample app. It only knows what touchgate tells it in \
         <code>x-touch-*</code> headers; touchgate sets the cookies and writes the events.</p></footer>\
         </body></html>\n",
        title = esc(title),
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What touchgate told the app about this request.
fn touch_panel(headers: &HeaderMap) -> String {
    let rows: String = TOUCH_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(*name)?;
            Some(format!(
                "<tr><th>{name}</th><td class=\"mono\">{}</td></tr>",
                esc(&String::from_utf8_lossy(v.as_bytes()))
            ))
        })
        .collect();
    let table = if rows.is_empty() {
        "<p>No <code>x-touch-*</code> headers on this request: it did not come through touchgate.</p>".to_string()
    } else {
        format!("<table class=\"headers\">{rows}</table>")
    };
    format!(
        "<div class=\"card\" id=\"touch\"><h2>What the app received from touchgate</h2>\
         <p>touchgate strips any <code>x-touch-*</code> header a client sends, then adds its own: \
         hashed device and session ids and the first and last touch.</p>{table}</div>"
    )
}

fn landing(headers: &HeaderMap) -> String {
    let links: String = CAMPAIGN_LINKS
        .iter()
        .map(|(label, what, href)| {
            format!(
                "<li><a href=\"{}\">{}</a><code>{}</code></li>",
                attr(href),
                esc(label),
                esc(what)
            )
        })
        .collect();
    format!(
        "<h1>Dashboards your team actually reads.</h1>\
         <p class=\"lead\">Lumen turns your metrics into a one-page morning brief. \
         (A sample app: every page here goes through touchgate.)</p>\
         <div class=\"actions\"><a class=\"button\" href=\"/signup\">Start free trial</a>\
         <a class=\"button secondary\" href=\"/pricing\">See pricing</a></div>\
         <div class=\"card\"><h2>Arrive from a campaign</h2>\
         <p>Each link is a landing with campaign parameters. touchgate classifies it, \
         remembers it in signed cookies, and writes a <code>landing</code> event; \
         sign up afterwards and the conversion carries it as its last touch.</p>\
         <ul class=\"campaigns\">{links}</ul></div>{}",
        touch_panel(headers)
    )
}

fn pricing(headers: &HeaderMap) -> String {
    let plan = |id: &str, name: &str, price: &str, features: &[&str], featured: bool| {
        let items: String = features
            .iter()
            .map(|f| format!("<li>{}</li>", esc(f)))
            .collect();
        format!(
            "<div class=\"plan{}\"><h2>{}</h2><div class=\"price\">{}<small> / month</small></div>\
             <ul>{items}</ul><a class=\"button{}\" href=\"/signup?plan={id}\">Choose {}</a></div>",
            if featured { " featured" } else { "" },
            esc(name),
            esc(price),
            if featured { "" } else { " secondary" },
            esc(name),
        )
    };
    format!(
        "<h1>Simple pricing</h1><p class=\"lead\">Start free for 14 days. The Team plan signs you \
         up with a 303 redirect, the others answer 200: touchgate records both.</p>\
         <div class=\"plans\">{}{}{}</div>{}",
        plan(
            "starter",
            "Starter",
            "$0",
            &["1 dashboard", "Daily brief", "Community support"],
            false
        ),
        plan(
            "pro",
            "Pro",
            "$29",
            &["Unlimited dashboards", "Hourly brief", "E-mail support"],
            true
        ),
        plan(
            "team",
            "Team",
            "$99",
            &["Everything in Pro", "10 seats", "SSO"],
            false
        ),
        touch_panel(headers)
    )
}

fn signup_form(email: &str, plan: &str, error: Option<&str>) -> String {
    let option = |id: &str, name: &str| {
        format!(
            "<option value=\"{id}\"{}>{name}</option>",
            if plan == id { " selected" } else { "" }
        )
    };
    format!(
        "<h1>Start your free trial</h1><p class=\"lead\">No credit card. touchgate captures this form \
         as <code>signup_submitted</code> once the app has accepted it, with the e-mail only as a keyed hash.</p>\
         {}<form class=\"signup card\" method=\"post\" action=\"/signup\">\
         <label>Work e-mail<input type=\"email\" name=\"email\" value=\"{}\" placeholder=\"ada@example.com\" required></label>\
         <label>Plan<select name=\"plan\">{}{}{}</select></label>\
         <button class=\"button\" type=\"submit\">Create my account</button>\
         <p class=\"note\">Team answers with a 303 redirect to /thanks; Starter and Pro with 200.</p></form>",
        error
            .map(|e| format!("<p class=\"error\">{}</p>", esc(e)))
            .unwrap_or_default(),
        attr(email),
        option("starter", "Starter"),
        option("pro", "Pro"),
        option("team", "Team"),
    )
}

fn thanks(plan: &str, how: &str) -> String {
    let plan = if plan.is_empty() { "starter" } else { plan };
    format!(
        "<h1 class=\"ok\">Welcome aboard!</h1><p class=\"lead\">Your {} trial has started ({}). \
         touchgate has just written a <code>signup_submitted</code> event.</p>\
         <div class=\"actions\"><a class=\"button secondary\" href=\"/\">Back home</a></div>",
        esc(plan),
        esc(how)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response<Full<Bytes>> {
        route(&Method::GET, &path.parse().unwrap(), &HeaderMap::new(), b"")
    }

    async fn text(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_page_includes_the_snippet() {
        for path in ["/", "/pricing", "/signup", "/thanks", "/nope"] {
            let body = text(get(path)).await;
            assert!(
                body.contains("<script src=\"/_tg/c.js\" defer></script>"),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn landing_links_to_the_three_campaign_examples() {
        let body = text(get("/")).await;
        for (_, _, href) in CAMPAIGN_LINKS {
            assert!(body.contains(&attr(href)), "{href}");
        }
        assert!(body.contains("gclid="));
    }

    #[tokio::test]
    async fn signup_answers_303_for_team_200_otherwise_and_400_without_email() {
        let post = |body: &str| {
            route(
                &Method::POST,
                &"/signup".parse().unwrap(),
                &HeaderMap::new(),
                body.as_bytes(),
            )
        };
        let team = post("email=ada%40example.com&plan=team");
        assert_eq!(team.status(), StatusCode::SEE_OTHER);
        assert_eq!(team.headers()[header::LOCATION], "/thanks?plan=team");
        assert_eq!(
            post("email=ada%40example.com&plan=pro").status(),
            StatusCode::OK
        );
        assert_eq!(post("email=&plan=pro").status(), StatusCode::BAD_REQUEST);
        assert_eq!(post("plan=pro").status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn touch_headers_are_shown_escaped() {
        let mut h = HeaderMap::new();
        h.insert("x-touch-first", HeaderValue::from_static("source=\"<b>\""));
        let body = text(route(&Method::GET, &"/".parse().unwrap(), &h, b"")).await;
        assert!(
            body.contains("source=&quot;&lt;b&gt;&quot;") || body.contains("source=\"&lt;b&gt;\""),
            "{body}"
        );
        assert!(!body.contains("<b>"));
    }

    #[tokio::test]
    async fn a_submitted_email_is_escaped_when_the_form_is_shown_again() {
        let r = route(
            &Method::POST,
            &"/signup".parse().unwrap(),
            &HeaderMap::new(),
            b"email=%22%3E%3Cscript%3E&plan=pro",
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = text(r).await;
        assert!(!body.contains("\"><script>"));
    }
}
