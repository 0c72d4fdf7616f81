//! Campaign parameters in a query string: UTM values and click ids.

use super::click_id::{self, ClickId};
use super::normalize::{clean, decode};

/// Is this (decoded) query parameter name a campaign parameter: `utm_*` or
/// a click id? These are the parameters the canonical URL keeps.
pub fn is_campaign_key(key: &str) -> bool {
    key.starts_with("utm_") || click_id::is_click_id_key(key)
}

/// Could this raw query carry a campaign parameter? A byte scan without
/// allocation, run on every navigation. It never answers `false` for a query
/// that [`CampaignParams::parse`] finds something in: a parameter name with a
/// `%` escape could decode to anything, so it counts as a maybe.
pub fn query_may_carry_campaign(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        key.starts_with("utm_") || key.contains('%') || click_id::is_click_id_key(key)
    })
}

/// What a query string says, values normalized (`None` = absent or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignParams {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub term: Option<String>,
    pub content: Option<String>,
    /// `utm_id`.
    pub campaign_id: Option<String>,
    /// The highest-precedence click id with a non-empty value.
    pub click_id: Option<&'static ClickId>,
    /// The raw `fbclid` (see [`click_id::fbclid_value`]).
    pub fbclid: Option<String>,
}

impl CampaignParams {
    /// The first non-empty occurrence of each parameter wins.
    pub fn parse(query: &str) -> CampaignParams {
        let mut p = CampaignParams::default();
        let mut best_click: Option<usize> = None;
        // As `form_urlencoded::parse`, but a value is decoded only when its
        // key is one we read and its slot is still empty.
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key);
            let slot = match key.as_ref() {
                "utm_source" => &mut p.source,
                "utm_medium" => &mut p.medium,
                "utm_campaign" => &mut p.campaign,
                "utm_term" => &mut p.term,
                "utm_content" => &mut p.content,
                "utm_id" => &mut p.campaign_id,
                other => {
                    let Some((rank, id)) = click_id::lookup(other) else {
                        continue;
                    };
                    let value = decode(value);
                    if !value.trim().is_empty() {
                        if best_click.is_none_or(|best| rank < best) {
                            best_click = Some(rank);
                            p.click_id = Some(id);
                        }
                        if id.key == "fbclid" && p.fbclid.is_none() {
                            p.fbclid = click_id::fbclid_value(&value);
                        }
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = clean(&decode(value));
            }
        }
        p
    }

    /// Any UTM value present?
    pub fn has_utm(&self) -> bool {
        self.source.is_some()
            || self.medium.is_some()
            || self.campaign.is_some()
            || self.term.is_some()
            || self.content.is_some()
            || self.campaign_id.is_some()
    }

    /// Nothing campaign-related at all?
    pub fn is_empty(&self) -> bool {
        !self.has_utm() && self.click_id.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parser before values were decoded lazily.
    fn reference(query: &str) -> CampaignParams {
        let mut p = CampaignParams::default();
        let mut best_click: Option<usize> = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "utm_source" => &mut p.source,
                "utm_medium" => &mut p.medium,
                "utm_campaign" => &mut p.campaign,
                "utm_term" => &mut p.term,
                "utm_content" => &mut p.content,
                "utm_id" => &mut p.campaign_id,
                other => {
                    if let Some((rank, id)) = click_id::lookup(other)
                        && !value.trim().is_empty()
                    {
                        if best_click.is_none_or(|best| rank < best) {
                            best_click = Some(rank);
                            p.click_id = Some(id);
                        }
                        if id.key == "fbclid" && p.fbclid.is_none() {
                            p.fbclid = click_id::fbclid_value(&value);
                        }
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = clean(&value);
            }
        }
        p
    }

    proptest! {
        #[test]
        fn parse_matches_the_reference(
            query in "((utm_source|utm_medium|utm_campaign|utm_term|utm_content|utm_id|utm%5Fid|gclid|fbclid|gad_source|srsltid|x|)(=[A-Za-z0-9 +%._-]{0,12})?&?){0,8}|\\PC{0,40}",
        ) {
            prop_assert_eq!(CampaignParams::parse(&query), reference(&query));
        }
    }
}
