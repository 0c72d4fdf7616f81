//! Referrer classification (AI assistant, ad network, webmail, social
//! network, search engine, shop, website) from Matomo's CC0 lists in
//! `data/matomo/` and touchgate's own host lists (`data/webmail.csv`,
//! `data/ad-networks.csv`, `data/referrers-extra.csv`).
//!
//! The files are embedded and parsed once on first use (`TouchRules::new`
//! forces it): ~1,300 patterns load in a few milliseconds, once, into host
//! tables, so a request costs a few hash look-ups and no regex. The shipped
//! files stay the single source with no build script or generated code, and
//! a test proves they parse.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use saphyr::{LoadableYamlNode, Scalar, Yaml};

use super::host;
use super::normalize::normalize;

const SEARCH_ENGINES_YML: &str = include_str!("../../data/matomo/SearchEngines.yml");
const SOCIALS_YML: &str = include_str!("../../data/matomo/Socials.yml");
const AI_ASSISTANTS_YML: &str = include_str!("../../data/matomo/AIAssistants.yml");
const WEBMAIL_CSV: &str = include_str!("../../data/webmail.csv");
const AD_NETWORKS_CSV: &str = include_str!("../../data/ad-networks.csv");
const EXTRA_CSV: &str = include_str!("../../data/referrers-extra.csv");

/// First labels that name a webmail front end on any provider's domain
/// (`webmail.isp.example`, `mail.company.example/owa/`).
const WEBMAIL_LABELS: &[&str] = &[
    "mail",
    "webmail",
    "email",
    "e-mail",
    "correo",
    "poczta",
    "posta",
    "messagerie",
    "owa",
];
/// Path prefixes of the common self-hosted webmail applications.
const WEBMAIL_PATHS: &[&str] = &[
    "/owa/",
    "/webmail/",
    "/roundcube/",
    "/zimbra/",
    "/squirrelmail/",
    "/horde/",
    "/rainloop/",
    "/snappymail/",
    "/sogo/",
];
/// How many leading labels the parent-domain walk drops at most: enough for
/// `co106w.col106.mail.live.com`, and a bound on hostile hosts.
const MAX_PARENT_STEPS: usize = 8;
/// What kind of site sent the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrerKind {
    SearchEngine,
    Social,
    AiAssistant,
    /// A webmail front end: the visitor clicked a link in an e-mail.
    Webmail,
    /// An ad server's click or redirect host: the visit was paid.
    AdNetwork,
    /// A marketplace or shop (`amazon.de`, `etsy.com`).
    Shopping,
    Website,
}

/// A classified referrer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// Lowercase, without port or trailing dot (`www.` kept).
    pub host: String,
    pub kind: ReferrerKind,
    /// The list's name for the engine, network or assistant, normalized
    /// (`google`, `facebook`, `chatgpt`), the webmail provider (`gmail`),
    /// the ad network (`criteo`) or the shop (`amazon`); `None` for a plain
    /// website.
    pub name: Option<String>,
    /// The medium an ad network's click stands for (`cpc`, `display`,
    /// `affiliate`); `None` for every other kind.
    pub medium: Option<String>,
}

/// Parse a `Referer` value: its bare host and path. `None` when it is not an
/// absolute URL with a host.
pub fn parse(referrer: &str) -> Option<(String, String)> {
    parse_url(referrer).map(|(host, path, _)| (host, path))
}

/// [`parse`], with the query string (empty when absent).
pub fn parse_url(referrer: &str) -> Option<(String, String, String)> {
    let url = url::Url::parse(referrer.trim()).ok()?;
    let host = host::bare(url.host_str()?)?;
    Some((
        host,
        url.path().to_string(),
        url.query().unwrap_or_default().to_string(),
    ))
}

/// Classify a `Referer` value; `None` when it has no host.
pub fn classify(referrer: &str) -> Option<Referrer> {
    let (host, path, query) = parse_url(referrer)?;
    Some(classify_url(host, &path, &query))
}

/// Classify a bare host and its path (no query).
pub fn classify_host(host: String, path: &str) -> Referrer {
    classify_url(host, path, "")
}

/// Classify a bare host, its path and its query. First match wins:
///
/// 1. AI assistants (`x.com/i/grok` is Grok, not Twitter);
/// 2. ad networks' click and redirect hosts (`google.com/aclk` is a paid
///    click, not a search);
/// 3. webmail: the list, then a `mail.`/`webmail.`… first label or a webmail
///    application's path on any provider's domain;
/// 4. social networks, community and chat sites (`www.facebook.com` is also
///    on the search list, for its site search);
/// 5. hosts that belong to a search company but are no search
///    (`support.google.com`, Google Docs' `google.com/url?sa=D` links) are
///    websites;
/// 6. search engines; Google Custom Search on a partner's domain (a `cx`
///    parameter naming a `partner-pub-` engine) is Google;
/// 7. shops and marketplaces;
/// 8. any other host is a website.
///
/// Hosts match as Matomo intends: the exact host, then the lossy host (see
/// [`lossy`]; `{}` stands for a country), each with the list's path
/// (`google.{}/imgres`) before without, and then the same for each parent
/// domain (`de.images.search.yahoo.com` is `images.search.yahoo.com`,
/// `l.facebook.com` is `facebook.com`). Matomo also wants a keyword
/// parameter from a search referrer; browsers stopped sending those, so the
/// host alone decides.
pub fn classify_url(host: String, path: &str, query: &str) -> Referrer {
    let t = &*TABLES;
    let named = |kind, entry: &Entry| Referrer {
        host: host.clone(),
        kind,
        name: Some(entry.name.clone()),
        medium: entry.medium.clone(),
    };
    if let Some(e) = t.ai.find(&host, path) {
        return named(ReferrerKind::AiAssistant, e);
    }
    if let Some(e) = t.ads.find(&host, path) {
        return named(ReferrerKind::AdNetwork, e);
    }
    if let Some(e) = t.webmail.find(&host, path) {
        return named(ReferrerKind::Webmail, e);
    }
    if let Some(provider) = webmail_by_shape(&host, path) {
        return Referrer {
            kind: ReferrerKind::Webmail,
            name: Some(provider),
            ..website(&host)
        };
    }
    if let Some(e) = t.social.find(&host, path) {
        return named(ReferrerKind::Social, e);
    }
    if t.not_search.find(&host, path).is_some() || is_docs_link(&host, path, query) {
        return website(&host);
    }
    if let Some(e) = t.search.find(&host, path) {
        return named(ReferrerKind::SearchEngine, e);
    }
    if is_partner_search(query) {
        return Referrer {
            host: host.clone(),
            kind: ReferrerKind::SearchEngine,
            name: Some("google".into()),
            medium: None,
        };
    }
    if let Some(e) = t.shopping.find(&host, path) {
        return named(ReferrerKind::Shopping, e);
    }
    website(&host)
}

fn website(host: &str) -> Referrer {
    Referrer {
        host: host.to_string(),
        kind: ReferrerKind::Website,
        name: None,
        medium: None,
    }
}

/// A webmail host by its shape: a webmail first label below the provider's
/// registrable domain, or a webmail application's path. The provider is the
/// registrable domain (`webmail.example-isp.de` → `example-isp.de`).
fn webmail_by_shape(host: &str, path: &str) -> Option<String> {
    let site = host::site(host)?;
    let below = host.strip_suffix(site)?.strip_suffix('.');
    let by_label = below.is_some_and(|b| {
        let first = b.split('.').next().unwrap_or_default();
        WEBMAIL_LABELS.contains(&first) || first.starts_with("webmail")
    });
    let path = path.to_ascii_lowercase();
    let by_path = WEBMAIL_PATHS
        .iter()
        .any(|p| path.starts_with(p) || path == p.trim_end_matches('/'));
    (by_label || by_path).then(|| site.to_string())
}

/// Google's `/url` redirect with `sa=D` is a link followed out of Google
/// Docs, Sheets or Slides, not a search result.
fn is_docs_link(host: &str, path: &str, query: &str) -> bool {
    path == "/url"
        && host::site(host).is_some_and(|s| s.starts_with("google."))
        && form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "sa" && v == "D")
}

/// Google Custom Search hosted on a partner's own domain: the engine id in
/// `cx` is `partner-pub-…`.
fn is_partner_search(query: &str) -> bool {
    !query.is_empty()
        && form_urlencoded::parse(query.as_bytes())
            .any(|(k, v)| k == "cx" && v.starts_with("partner-pub-"))
}

/// Number of host patterns per list (search, social, AI, webmail, ad
/// networks, shopping, not search); forces loading.
pub fn pattern_counts() -> [usize; 7] {
    let t = &*TABLES;
    [
        t.search.len(),
        t.social.len(),
        t.ai.len(),
        t.webmail.len(),
        t.ads.len(),
        t.shopping.len(),
        t.not_search.len(),
    ]
}

/// Is this (normalized) source an AI assistant: a name on Matomo's list
/// (`chatgpt`) or one of its hosts (`chatgpt.com`, `www.perplexity.ai`)?
pub fn is_ai_assistant(source: &str) -> bool {
    let t = &*TABLES;
    t.ai_sources.contains(source) || t.ai_sources.contains(host::without_www(source))
}

/// Matomo's lossy host: leading `www.`/`ww2.`/`search.` and `m.` labels
/// dropped, a country TLD (with `com`/`co`/… before it) and country labels
/// replaced by `{}`: `www.google.co.uk` → `google.{}`,
/// `de.search.yahoo.com` → `{}.search.yahoo.com`.
fn lossy(host: &str) -> String {
    let mut labels: Vec<&str> = host.split('.').collect();
    if labels.len() > 1 && is_www_like(labels[0]) {
        labels.remove(0);
    }
    if let Some(tld) = labels.pop() {
        labels.retain(|l| *l != "m");
        labels.push(tld);
    }
    if labels.len() > 1 && labels.last().is_some_and(|l| host::is_country_code(l)) {
        labels.pop();
        if labels.len() > 1
            && labels
                .last()
                .is_some_and(|l| matches!(*l, "com" | "org" | "net" | "co" | "it" | "edu"))
        {
            labels.pop();
        }
        labels.push("{}");
    }
    let last = labels.len().saturating_sub(1);
    for label in labels.iter_mut().take(last) {
        if host::is_country_code(label) {
            *label = "{}";
        }
    }
    labels.join(".")
}

/// `www`, `ww2`, `w3`, … or `search` as a first label.
fn is_www_like(label: &str) -> bool {
    if label == "search" {
        return true;
    }
    let rest = label.trim_start_matches('w');
    rest.len() < label.len() && rest.bytes().all(|b| b.is_ascii_digit())
}

struct Entry {
    /// With its leading `/`; `None` matches any path.
    path: Option<String>,
    name: String,
    /// Ad networks only: the medium their click stands for.
    medium: Option<String>,
}

#[derive(Default)]
struct Table {
    by_host: HashMap<String, Vec<Entry>>,
    patterns: usize,
}

impl Table {
    fn insert(&mut self, pattern: &str, name: &str) {
        self.insert_with(pattern, name, None);
    }

    fn insert_with(&mut self, pattern: &str, name: &str, medium: Option<&str>) {
        let pattern = pattern.trim().to_lowercase();
        let (host, path) = match pattern.find('/') {
            Some(i) => (&pattern[..i], Some(pattern[i..].to_string())),
            None => (pattern.as_str(), None),
        };
        let host = host.trim_end_matches('.');
        if host.is_empty() {
            return;
        }
        self.patterns += 1;
        self.by_host
            .entry(host.to_string())
            .or_default()
            .push(Entry {
                path,
                name: name.to_string(),
                medium: medium.map(str::to_string),
            });
    }

    fn len(&self) -> usize {
        self.patterns
    }

    /// Entries for exactly this host key: one whose path is a prefix of
    /// `path` (the longest) wins over one without a path.
    fn find_exact(&self, key: &str, path: &str) -> Option<&Entry> {
        let entries = self.by_host.get(key)?;
        entries
            .iter()
            .filter(|e| e.path.as_deref().is_some_and(|p| path_has_prefix(path, p)))
            .max_by_key(|e| e.path.as_ref().map_or(0, String::len))
            .or_else(|| entries.iter().find(|e| e.path.is_none()))
    }

    /// The host, then its lossy form, then the same for each parent domain
    /// (at most [`MAX_PARENT_STEPS`] labels dropped, never down to a bare
    /// public suffix such as `co.uk`).
    fn find(&self, host: &str, path: &str) -> Option<&Entry> {
        if self.by_host.is_empty() {
            return None;
        }
        let mut key = host;
        for _ in 0..=MAX_PARENT_STEPS {
            if let Some(e) = self
                .find_exact(key, path)
                .or_else(|| self.find_exact(&lossy(key), path))
            {
                return Some(e);
            }
            key = key.split_once('.')?.1;
            // A bare public suffix (`co.uk`) names no one's site.
            host::site(key)?;
        }
        None
    }
}

fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

struct Tables {
    search: Table,
    social: Table,
    ai: Table,
    webmail: Table,
    ads: Table,
    shopping: Table,
    not_search: Table,
    /// Names and host patterns (without path) of the AI assistants.
    ai_sources: HashSet<String>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut search = load(SEARCH_ENGINES_YML, true);
    let mut social = load(SOCIALS_YML, false);
    let ai = load(AI_ASSISTANTS_YML, false);
    let mut webmail = Table::default();
    for row in csv_rows(WEBMAIL_CSV) {
        if let [pattern, provider] = row[..] {
            webmail.insert(pattern, provider);
        }
    }
    let mut ads = Table::default();
    for row in csv_rows(AD_NETWORKS_CSV) {
        if let [pattern, source, medium] = row[..] {
            ads.insert_with(pattern, source, Some(medium));
        }
    }
    let (mut shopping, mut not_search) = (Table::default(), Table::default());
    for row in csv_rows(EXTRA_CSV) {
        let [pattern, kind, name] = row[..] else {
            continue;
        };
        let table = match kind {
            "search" => &mut search,
            "social" => &mut social,
            "shopping" => &mut shopping,
            "website" => &mut not_search,
            _ => continue,
        };
        table.insert(pattern, name);
    }
    let mut ai_sources = HashSet::new();
    for (host, entries) in &ai.by_host {
        for e in entries {
            ai_sources.insert(e.name.clone());
            if e.path.is_none() {
                ai_sources.insert(host.clone());
            }
        }
    }
    Tables {
        search,
        social,
        ai,
        webmail,
        ads,
        shopping,
        not_search,
        ai_sources,
    }
});

/// The rows of a shipped CSV after its header, split on commas (no quoting:
/// the files hold hosts and plain names).
fn csv_rows(csv: &str) -> impl Iterator<Item = Vec<&str>> {
    csv.lines()
        .skip(1)
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::trim).collect())
}

/// Socials and AI assistants map a name to host patterns; search engines map
/// a name to a list of `{urls: [patterns], params, …}` blocks.
fn load(yaml: &str, search_format: bool) -> Table {
    let docs = Yaml::load_from_str(yaml).expect("the embedded Matomo list is valid YAML");
    let mut table = Table::default();
    let Some(root) = docs.first().and_then(Yaml::as_mapping) else {
        return table;
    };
    for (key, value) in root {
        let Some(name) = text(key).and_then(|n| normalize(&n)) else {
            continue;
        };
        for item in value.as_vec().into_iter().flatten() {
            if search_format {
                let urls = item.as_mapping_get("urls").and_then(Yaml::as_vec);
                for url in urls.into_iter().flatten() {
                    if let Some(pattern) = text(url) {
                        table.insert(&pattern, &name);
                    }
                }
            } else if let Some(pattern) = text(item) {
                table.insert(&pattern, &name);
            }
        }
    }
    table
}

fn text(node: &Yaml) -> Option<String> {
    match node {
        Yaml::Value(Scalar::String(s)) => Some(s.to_string()),
        Yaml::Value(Scalar::Integer(i)) => Some(i.to_string()),
        Yaml::Representation(s, ..) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_load() {
        let [search, social, ai, webmail, ads, shopping, not_search] = pattern_counts();
        assert!(search > 664, "Matomo's 664 and touchgate's own");
        assert!(social > 218, "Matomo's 218 and touchgate's own");
        assert_eq!(ai, 25);
        assert!(webmail > 100);
        assert!(ads > 50);
        assert!(shopping > 30);
        assert!(not_search > 30);
    }

    #[test]
    fn lossy_hosts() {
        assert_eq!(lossy("www.google.co.uk"), "google.{}");
        assert_eq!(lossy("google.de"), "google.{}");
        assert_eq!(lossy("de.search.yahoo.com"), "{}.search.yahoo.com");
        assert_eq!(lossy("m.baidu.com"), "baidu.com");
        assert_eq!(lossy("ww2.bing.com"), "bing.com");
        assert_eq!(lossy("go.mail.ru"), "go.mail.{}");
        assert_eq!(lossy("com"), "com");
    }

    #[test]
    fn paths() {
        assert!(path_has_prefix("/i/grok", "/i/grok"));
        assert!(path_has_prefix("/i/grok/x", "/i/grok"));
        assert!(!path_has_prefix("/i/grokked", "/i/grok"));
    }

    fn kind(url: &str) -> (ReferrerKind, Option<String>) {
        let r = classify(url).unwrap();
        (r.kind, r.name)
    }

    #[test]
    fn kinds() {
        use ReferrerKind::*;
        let s = |n: &str| Some(n.to_string());
        assert_eq!(
            kind("https://www.google.co.uk/"),
            (SearchEngine, s("google"))
        );
        assert_eq!(
            kind("https://images.google.de/x"),
            (SearchEngine, s("google images"))
        );
        assert_eq!(
            kind("https://www.google.com/imgres?x"),
            (SearchEngine, s("google images"))
        );
        assert_eq!(
            kind("https://fr.search.yahoo.com/"),
            (SearchEngine, s("yahoo!"))
        );
        assert_eq!(kind("https://x.com/i/grok?a"), (AiAssistant, s("grok")));
        assert_eq!(kind("https://x.com/home"), (Social, s("twitter")));
        assert_eq!(kind("https://www.facebook.com/"), (Social, s("facebook")));
        assert_eq!(
            kind("https://lm.facebook.com/l.php"),
            (Social, s("facebook"))
        );
        assert_eq!(kind("https://mail.google.com/"), (Webmail, s("gmail")));
        assert_eq!(kind("https://support.google.com/x"), (Website, None));
        assert_eq!(kind("https://notfacebook.com/"), (Website, None));
        assert_eq!(
            kind("android-app://com.reddit.frontpage/"),
            (Social, s("reddit"))
        );
        assert_eq!(classify("not a url"), None);
    }
}
