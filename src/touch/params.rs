//! Campaign parameters in a query string: UTM values and click ids.

use super::click_id::{self, ClickId};
use super::normalize::clean;

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
