//! Pure marketing rules: where a visit came from. No I/O, no clocks; every
//! function here is testable by table.
//!
//! Precedence: UTM parameters > click ids > referrer > direct.

pub mod canonical;
pub mod channel;
pub mod click_id;
pub mod host;
pub mod normalize;
pub mod params;
pub mod referrer;

use std::collections::HashMap;

use crate::config::TouchConfig;
use crate::event::Touch;

pub use canonical::canonical_url;
pub use channel::{RuleSet, SourceCategory, channel, channel_under, source_category};
pub use normalize::{clean, normalize};
pub use params::{CampaignParams, query_may_carry_campaign};
pub use referrer::{Referrer, ReferrerKind};

/// Built-in source aliases (normalized key → value). `[touch]
/// source_aliases` entries override them.
pub const DEFAULT_SOURCE_ALIASES: &[(&str, &str)] = &[
    ("fb", "facebook"),
    ("facebook.com", "facebook"),
    ("www.facebook.com", "facebook"),
    ("m.facebook.com", "facebook"),
    ("l.facebook.com", "facebook"),
    ("lm.facebook.com", "facebook"),
    ("ig", "instagram"),
    ("instagram.com", "instagram"),
    ("l.instagram.com", "instagram"),
    ("li", "linkedin"),
    ("linkedin.com", "linkedin"),
    ("lnkd.in", "linkedin"),
    ("tw", "twitter"),
    ("twitter.com", "twitter"),
    ("t.co", "twitter"),
    ("x.com", "twitter"),
    ("yt", "youtube"),
    ("youtube.com", "youtube"),
    ("m.youtube.com", "youtube"),
    ("youtu.be", "youtube"),
    ("tiktok.com", "tiktok"),
    ("pinterest.com", "pinterest"),
    ("reddit.com", "reddit"),
    ("google.com", "google"),
    ("www.google.com", "google"),
    ("adwords", "google"),
    ("googleads", "google"),
    ("google ads", "google"),
    ("google_ads", "google"),
    ("google-ads", "google"),
    ("bing.com", "bing"),
    ("www.bing.com", "bing"),
    ("duckduckgo.com", "duckduckgo"),
    // Matomo's search-engine list names it "Yahoo!"; GA4's lists say "yahoo".
    ("yahoo!", "yahoo"),
];

/// Built-in medium aliases (normalized key → value). `[touch]
/// medium_aliases` entries override them.
pub const DEFAULT_MEDIUM_ALIASES: &[(&str, &str)] = &[
    ("ppc", "cpc"),
    ("paid-search", "cpc"),
    ("paid_search", "cpc"),
    ("paidsearch", "cpc"),
    ("paid search", "cpc"),
    ("e-mail", "email"),
    ("e_mail", "email"),
    ("e mail", "email"),
    // GA4's paid pattern `paid.*` with a social source gives Paid Social;
    // one spelling keeps reports from splitting.
    ("paidsocial", "paid_social"),
    ("paid-social", "paid_social"),
    ("paid social", "paid_social"),
    ("social-media", "social"),
    ("social_media", "social"),
    ("social media", "social"),
    ("social-network", "social"),
    ("social network", "social"),
    ("sm", "social"),
    // GA4's Affiliates rule is `medium = affiliate` exactly.
    ("affiliates", "affiliate"),
];

/// Built once from `[touch]`: alias maps merged over the built-in ones.
#[derive(Debug, Clone)]
pub struct TouchRules {
    source_aliases: HashMap<String, String>,
    medium_aliases: HashMap<String, String>,
    channels: RuleSet,
}

impl TouchRules {
    /// Keys and values of the configured aliases are normalized like any
    /// campaign value; an entry that normalizes to nothing is ignored. Also
    /// loads the embedded referrer and channel tables, so the first landing
    /// does not pay for it.
    pub fn new(cfg: &TouchConfig) -> TouchRules {
        referrer::pattern_counts();
        channel::source_category_count();
        TouchRules {
            source_aliases: merge(DEFAULT_SOURCE_ALIASES, &cfg.source_aliases),
            medium_aliases: merge(DEFAULT_MEDIUM_ALIASES, &cfg.medium_aliases),
            channels: cfg.channels,
        }
    }

    /// The configured rule set (`touch.channels`).
    pub fn channels(&self) -> RuleSet {
        self.channels
    }

    /// The channel of a source/medium/campaign under the configured rules.
    pub fn channel(
        &self,
        source: Option<&str>,
        medium: Option<&str>,
        campaign: Option<&str>,
    ) -> &'static str {
        channel_under(self.channels, source, medium, campaign)
    }

    /// The alias of a normalized source, or the source itself.
    pub fn source_alias(&self, source: String) -> String {
        alias(&self.source_aliases, source)
    }

    /// The alias of a normalized medium, or the medium itself.
    pub fn medium_alias(&self, medium: String) -> String {
        alias(&self.medium_aliases, medium)
    }
}

impl Default for TouchRules {
    fn default() -> Self {
        TouchRules::new(&TouchConfig::default())
    }
}

fn merge(
    builtin: &[(&str, &str)],
    configured: &std::collections::BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = builtin
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in configured {
        if let (Some(k), Some(v)) = (clean(k), clean(v)) {
            map.insert(k, v);
        }
    }
    map
}

fn alias(map: &HashMap<String, String>, value: String) -> String {
    match map.get(&value) {
        Some(a) => a.clone(),
        None => value,
    }
}

/// What one request says about where the visitor came from.
// Built once per landing and destructured at once; boxing the touch would
// only add an allocation to the common case.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Campaign parameters, a click id, or an external referrer.
    Touch {
        touch: Touch,
        /// The raw `fbclid`, kept only for the Meta `fbc` match key.
        fbclid: Option<String>,
    },
    /// Referrer on the same registrable domain: navigation, not a touch.
    Internal,
    /// Nothing: no parameters, no referrer.
    Direct,
}

/// Read the touch from a request's query string and `Referer`.
///
/// UTM values win; a click id fills only what they leave empty (and is
/// recorded in `click_id_type` either way); under the extended rules, the
/// referrer then fills a missing source. Without either, the referrer
/// decides: same site → [`Observation::Internal`], search engine →
/// `organic`, social network → `social`, other site → `referral`; under the
/// extended rules also webmail → the provider and `email`, ad network → the
/// network and its medium, AI assistant or shop → its name and `referral`
/// (under GA4's they are the host and `referral`). No usable referrer →
/// [`Observation::Direct`]. Aliases apply to UTM source and medium and to
/// the lists' names, never to a host.
///
/// The touch carries the configured rule set's channel; under the extended
/// rules, `channel_ga4` holds GA4's when it is another.
pub fn observe(
    rules: &TouchRules,
    query: Option<&str>,
    referrer: Option<&str>,
    request_host: &str,
) -> Observation {
    let params = query.map(CampaignParams::parse).unwrap_or_default();
    // Parsed only when it decides something: most tagged landings name
    // their source.
    let referred = || {
        let (ref_host, path, ref_query) = referrer.and_then(referrer::parse_url)?;
        let internal = host::bare(request_host).is_some_and(|req| host::same_site(&ref_host, &req));
        Some((internal, ref_host, path, ref_query))
    };
    if !params.is_empty() {
        let click = params.click_id;
        let touch = Touch {
            source: params
                .source
                .map(|s| rules.source_alias(s))
                .or_else(|| click.map(|c| c.source.to_string())),
            medium: params
                .medium
                .map(|m| rules.medium_alias(m))
                .or_else(|| click.map(|c| c.medium.to_string())),
            campaign: params.campaign,
            term: params.term,
            content: params.content,
            campaign_id: params.campaign_id,
            click_id_type: click.map(|c| c.key.to_string()),
            ..Touch::default()
        };
        // GA4 leaves a missing source unset; the referrer usually names it.
        let mut extended = touch.clone();
        if extended.source.is_none()
            && let Some((false, ref_host, path, ref_query)) = referred()
        {
            let class = referrer::classify_url(ref_host, &path, &ref_query);
            extended.source = referrer_touch(rules, &class, RuleSet::Extended).0;
        }
        return Observation::Touch {
            touch: finish(rules, touch, extended),
            fbclid: params.fbclid,
        };
    }

    let Some((internal, ref_host, path, ref_query)) = referred() else {
        return Observation::Direct;
    };
    if internal {
        return Observation::Internal;
    }
    let class = referrer::classify_url(ref_host, &path, &ref_query);
    let touch_under = |set| {
        let (source, medium) = referrer_touch(rules, &class, set);
        Touch {
            source,
            medium: Some(medium),
            ..Touch::default()
        }
    };
    Observation::Touch {
        touch: finish(
            rules,
            touch_under(RuleSet::Ga4),
            touch_under(RuleSet::Extended),
        ),
        fbclid: None,
    }
}

/// Source and medium of a classified referrer under a rule set.
fn referrer_touch(rules: &TouchRules, class: &Referrer, set: RuleSet) -> (Option<String>, String) {
    let extended = set == RuleSet::Extended;
    // Aliases rename the list names ("yahoo!" → "yahoo"), never a host: the
    // host of an AI assistant (x.com/i/grok) is not the network it shares.
    let site = || clean(host::without_www(&class.host));
    let name = || class.name.clone().map(|n| rules.source_alias(n));
    match class.kind {
        ReferrerKind::SearchEngine if class.name.is_some() => (name(), "organic".into()),
        ReferrerKind::Social if class.name.is_some() => {
            let name = name();
            // GA4 puts video platforms (YouTube, Vimeo) in Organic Video;
            // "social" would force Organic Social.
            let video = name
                .as_deref()
                .is_some_and(|n| channel::source_category(n) == Some(SourceCategory::Video));
            let medium = if video { "referral" } else { "social" };
            (name, medium.into())
        }
        ReferrerKind::Webmail if extended => (name(), "email".into()),
        ReferrerKind::AdNetwork if extended => (
            name(),
            class.medium.clone().unwrap_or_else(|| "referral".into()),
        ),
        ReferrerKind::AiAssistant | ReferrerKind::Shopping if extended => {
            (name(), "referral".into())
        }
        _ => (site(), "referral".into()),
    }
}

/// The configured rule set's touch, its channel and validity; under the
/// extended rules, GA4's channel beside it when the two differ.
fn finish(rules: &TouchRules, ga4: Touch, extended: Touch) -> Touch {
    let ga4_channel = channel_under(
        RuleSet::Ga4,
        ga4.source.as_deref(),
        ga4.medium.as_deref(),
        ga4.campaign.as_deref(),
    );
    let (mut t, ch) = match rules.channels {
        RuleSet::Ga4 => (ga4, ga4_channel),
        RuleSet::Extended => {
            let ch = channel_under(
                RuleSet::Extended,
                extended.source.as_deref(),
                extended.medium.as_deref(),
                extended.campaign.as_deref(),
            );
            (extended, ch)
        }
    };
    t.valid = t.source.is_some() && t.medium.is_some() && ch != "Unassigned";
    t.channel = ch.to_string();
    t.channel_ga4 = (ch != ga4_channel).then(|| ga4_channel.to_string());
    t
}

/// The referrer's host, lowercase, without `www.`; None when unparseable.
pub fn referrer_host(referrer: &str) -> Option<String> {
    let (h, _) = referrer::parse(referrer)?;
    Some(host::without_www(&h).to_string())
}
