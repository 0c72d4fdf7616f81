//! GA4's default channel grouping, rule for rule as Google publishes it,
//! with the source lists from `data/ga4-source-categories.csv`, and the
//! extended grouping: GA4's plus an `AI Assistants` channel and the sources
//! of `data/referrers-extra.csv` on the search, social and shopping lists.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use super::referrer;

/// Which channel rules apply (`touch.channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSet {
    /// GA4's published default channel grouping, exactly; referrers from
    /// webmail, AI assistants, ad networks and shops are referrals.
    Ga4,
    /// GA4's grouping plus what it gets wrong (see the README's table).
    #[default]
    Extended,
}

impl RuleSet {
    pub fn name(self) -> &'static str {
        match self {
            RuleSet::Ga4 => "ga4",
            RuleSet::Extended => "extended",
        }
    }
}

/// Which of GA4's source lists a source is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceCategory {
    Search,
    Social,
    Shopping,
    Video,
}

const SOURCE_CATEGORIES_CSV: &str = include_str!("../../data/ga4-source-categories.csv");
const EXTRA_CSV: &str = include_str!("../../data/referrers-extra.csv");

/// The names touchgate's own referrer list gives search engines, social
/// and community sites and shops, for the extended grouping only.
static EXTRA_CATEGORIES: LazyLock<HashMap<String, SourceCategory>> = LazyLock::new(|| {
    EXTRA_CSV
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.trim_end().split(',');
            let (_, kind, name) = (cols.next()?, cols.next()?, cols.next()?);
            let category = match kind {
                "search" => SourceCategory::Search,
                "social" => SourceCategory::Social,
                "shopping" => SourceCategory::Shopping,
                _ => return None,
            };
            (!name.is_empty()).then(|| (name.to_string(), category))
        })
        .collect()
});

static CATEGORIES: LazyLock<HashMap<String, SourceCategory>> = LazyLock::new(|| {
    SOURCE_CATEGORIES_CSV
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (source, category) = line.trim_end().split_once(',')?;
            let category = match category {
                "SOURCE_CATEGORY_SEARCH" => SourceCategory::Search,
                "SOURCE_CATEGORY_SOCIAL" => SourceCategory::Social,
                "SOURCE_CATEGORY_SHOPPING" => SourceCategory::Shopping,
                "SOURCE_CATEGORY_VIDEO" => SourceCategory::Video,
                _ => return None,
            };
            // GA4 compares without regard to case; "Google Shopping" is listed capitalized.
            Some((source.to_lowercase(), category))
        })
        .collect()
});

// GA4's own regexes, verbatim. `regex` is fine here: channel() runs on
// landings only, never on pass-through traffic.
static PAID_MEDIUM: LazyLock<Regex> =
    LazyLock::new(|| compile(r"^(.*cp.*|ppc|retargeting|paid.*)$"));
static SHOPPING_CAMPAIGN: LazyLock<Regex> =
    LazyLock::new(|| compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$"));
static VIDEO_MEDIUM: LazyLock<Regex> = LazyLock::new(|| compile(r"^(.*video.*)$"));

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a fixed, tested GA4 pattern compiles")
}

/// The GA4 source list a source is on (case-insensitive), if any.
pub fn source_category(source: &str) -> Option<SourceCategory> {
    CATEGORIES.get(lowercase(source).as_ref()).copied()
}

/// Number of sources on GA4's lists (and on the extended ones); forces
/// them to load.
pub fn source_category_count() -> usize {
    CATEGORIES.len() + EXTRA_CATEGORIES.len()
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

const SOCIAL_MEDIA: &[&str] = &[
    "social",
    "social-network",
    "social-media",
    "sm",
    "social network",
    "social media",
];
const DISPLAY_MEDIA: &[&str] = &["display", "banner", "expandable", "interstitial", "cpm"];
const REFERRAL_MEDIA: &[&str] = &["referral", "app", "link"];
const EMAIL_WORDS: &[&str] = &["email", "e-mail", "e_mail", "e mail"];

/// GA4 default channel group of a source/medium/campaign. Comparisons
/// ignore case, as GA4's do; absent and empty values are the same.
///
/// First match wins: Direct, Cross-network, Paid Shopping, Paid Search,
/// Paid Social, Paid Video, Display, Paid Other, Organic Shopping, Organic
/// Social, Organic Video, Organic Search, Referral, Email, Affiliates,
/// Audio, SMS, Mobile Push Notifications, else Unassigned.
pub fn channel(source: Option<&str>, medium: Option<&str>, campaign: Option<&str>) -> &'static str {
    grouping(RuleSet::Ga4, source, medium, campaign)
}

/// The channel under either rule set. `Extended` is [`channel`] with two
/// differences: a source on touchgate's own search, social or shopping
/// list counts as on GA4's, and an AI assistant's source (`chatgpt`,
/// `perplexity.ai`) with an unpaid medium is `AI Assistants`, and the
/// medium `email` is Email, both decided after the paid channels and before
/// the organic ones.
pub fn channel_under(
    rules: RuleSet,
    source: Option<&str>,
    medium: Option<&str>,
    campaign: Option<&str>,
) -> &'static str {
    grouping(rules, source, medium, campaign)
}

fn grouping(
    rules: RuleSet,
    source: Option<&str>,
    medium: Option<&str>,
    campaign: Option<&str>,
) -> &'static str {
    let extended = rules == RuleSet::Extended;
    let s = lowercase(source.unwrap_or(""));
    let m = lowercase(medium.unwrap_or(""));
    let c = lowercase(campaign.unwrap_or(""));
    let (s, m, c) = (s.as_ref(), m.as_ref(), c.as_ref());
    let category = if s.is_empty() {
        None
    } else {
        CATEGORIES
            .get(s)
            .or_else(|| extended.then(|| EXTRA_CATEGORIES.get(s)).flatten())
            .copied()
    };
    let is = |cat| category == Some(cat);
    let paid = PAID_MEDIUM.is_match(m);
    let shopping_campaign = SHOPPING_CAMPAIGN.is_match(c);

    if s == "(direct)" && (m == "(none)" || m == "(not set)") {
        "Direct"
    } else if c.contains("cross-network") {
        "Cross-network"
    } else if (is(SourceCategory::Shopping) || shopping_campaign) && paid {
        "Paid Shopping"
    } else if is(SourceCategory::Search) && paid {
        "Paid Search"
    } else if is(SourceCategory::Social) && paid {
        "Paid Social"
    } else if is(SourceCategory::Video) && paid {
        "Paid Video"
    } else if DISPLAY_MEDIA.contains(&m) {
        "Display"
    } else if paid {
        "Paid Other"
    } else if extended && !s.is_empty() && referrer::is_ai_assistant(s) {
        "AI Assistants"
    } else if extended && m == "email" {
        // GA4 puts `google / email` in Organic Search: its source lists
        // come before the Email rule.
        "Email"
    } else if is(SourceCategory::Shopping) || shopping_campaign {
        "Organic Shopping"
    } else if is(SourceCategory::Social) || SOCIAL_MEDIA.contains(&m) {
        "Organic Social"
    } else if is(SourceCategory::Video) || VIDEO_MEDIUM.is_match(m) {
        "Organic Video"
    } else if is(SourceCategory::Search) || m == "organic" {
        "Organic Search"
    } else if REFERRAL_MEDIA.contains(&m) {
        "Referral"
    } else if EMAIL_WORDS.iter().any(|w| s.contains(w) || m.contains(w)) {
        "Email"
    } else if m == "affiliate" {
        "Affiliates"
    } else if m == "audio" {
        "Audio"
    } else if s == "sms" || m == "sms" {
        "SMS"
    } else if m.ends_with("push")
        || m.contains("mobile")
        || m.contains("notification")
        || s == "firebase"
    {
        "Mobile Push Notifications"
    } else {
        "Unassigned"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_load_with_every_list() {
        assert!(source_category_count() > 800);
        assert_eq!(source_category("google"), Some(SourceCategory::Search));
        assert_eq!(source_category("Facebook"), Some(SourceCategory::Social));
        assert_eq!(
            source_category("google shopping"),
            Some(SourceCategory::Shopping)
        );
        assert_eq!(source_category("youtube"), Some(SourceCategory::Video));
        assert_eq!(source_category("example.org"), None);
    }
}
