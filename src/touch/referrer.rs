//! Referrer classification (search engine, social network, AI assistant,
//! website) from Matomo's CC0 lists in `data/matomo/`.
//!
//! The YAML is embedded and parsed once on first use (`TouchRules::new`
//! forces it): ~900 patterns load in a few milliseconds, once, the shipped files
//! stay the single source with no build script or generated code, and a test
//! proves they parse.

use std::collections::HashMap;
use std::sync::LazyLock;

use saphyr::{LoadableYamlNode, Scalar, Yaml};

use super::host;
use super::normalize::normalize;

const SEARCH_ENGINES_YML: &str = include_str!("../../data/matomo/SearchEngines.yml");
const SOCIALS_YML: &str = include_str!("../../data/matomo/Socials.yml");
const AI_ASSISTANTS_YML: &str = include_str!("../../data/matomo/AIAssistants.yml");

/// What kind of site sent the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrerKind {
    SearchEngine,
    Social,
    AiAssistant,
    Website,
}

/// A classified referrer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// Lowercase, without port or trailing dot (`www.` kept).
    pub host: String,
    pub kind: ReferrerKind,
    /// The list's name for the engine, network or assistant, normalized
    /// (`google`, `facebook`, `chatgpt`); `None` for a plain website.
    pub name: Option<String>,
}

/// Parse a `Referer` value: its bare host and path. `None` when it is not an
/// absolute URL with a host.
pub fn parse(referrer: &str) -> Option<(String, String)> {
    let url = url::Url::parse(referrer.trim()).ok()?;
    let host = host::bare(url.host_str()?)?;
    Some((host, url.path().to_string()))
}

/// Classify a `Referer` value; `None` when it has no host.
pub fn classify(referrer: &str) -> Option<Referrer> {
    let (host, path) = parse(referrer)?;
    Some(classify_host(host, &path))
}

/// Classify a bare host and its path. Assistants first (`x.com/i/grok` is
/// Grok, not Twitter), then social networks (`www.facebook.com` is also on
/// the search list, for its site search), then search engines.
///
/// Matching follows Matomo. Search engines: the exact host, then the lossy
/// host (see [`lossy`]), each with the list's path (`google.{}/imgres`)
/// before without. Social networks and assistants: the host or its nearest
/// listed parent domain (`l.facebook.com` is `facebook.com`), with an
/// optional path prefix. Matomo also wants a keyword parameter from a search
/// referrer; browsers stopped sending those, so the host alone decides.
pub fn classify_host(host: String, path: &str) -> Referrer {
    let t = &*TABLES;
    let found =
        t.ai.find_domain(&host, path)
            .map(|n| (ReferrerKind::AiAssistant, n))
            .or_else(|| {
                t.social
                    .find_domain(&host, path)
                    .map(|n| (ReferrerKind::Social, n))
            })
            .or_else(|| {
                t.search
                    .find_exact(&host, path)
                    .or_else(|| t.search.find_exact(&lossy(&host), path))
                    .map(|n| (ReferrerKind::SearchEngine, n))
            });
    match found {
        Some((kind, name)) => Referrer {
            host,
            kind,
            name: Some(name.to_string()),
        },
        None => Referrer {
            host,
            kind: ReferrerKind::Website,
            name: None,
        },
    }
}

/// Number of host patterns per list (search, social, AI); forces loading.
pub fn pattern_counts() -> (usize, usize, usize) {
    let t = &*TABLES;
    (t.search.len(), t.social.len(), t.ai.len())
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
}

#[derive(Default)]
struct Table {
    by_host: HashMap<String, Vec<Entry>>,
    patterns: usize,
}

impl Table {
    fn insert(&mut self, pattern: &str, name: &str) {
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
            });
    }

    fn len(&self) -> usize {
        self.patterns
    }

    /// Entries for exactly this host key: one whose path is a prefix of
    /// `path` (the longest) wins over one without a path.
    fn find_exact(&self, key: &str, path: &str) -> Option<&str> {
        let entries = self.by_host.get(key)?;
        entries
            .iter()
            .filter(|e| e.path.as_deref().is_some_and(|p| path_has_prefix(path, p)))
            .max_by_key(|e| e.path.as_ref().map_or(0, String::len))
            .or_else(|| entries.iter().find(|e| e.path.is_none()))
            .map(|e| e.name.as_str())
    }

    /// The host or its nearest parent domain that is listed.
    fn find_domain(&self, host: &str, path: &str) -> Option<&str> {
        let mut key = host;
        loop {
            if let Some(name) = self.find_exact(key, path) {
                return Some(name);
            }
            key = key.split_once('.')?.1;
        }
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
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    search: load(SEARCH_ENGINES_YML, true),
    social: load(SOCIALS_YML, false),
    ai: load(AI_ASSISTANTS_YML, false),
});

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
        let (search, social, ai) = pattern_counts();
        assert_eq!(search, 664);
        assert_eq!(social, 218);
        assert_eq!(ai, 25);
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
        assert_eq!(kind("https://mail.google.com/"), (Website, None));
        assert_eq!(kind("https://notfacebook.com/"), (Website, None));
        assert_eq!(
            kind("android-app://com.reddit.frontpage/"),
            (Social, s("reddit"))
        );
        assert_eq!(classify("not a url"), None);
    }
}
