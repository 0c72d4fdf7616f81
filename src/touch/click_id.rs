//! Ad-platform click ids: which platform a parameter names, and what it
//! implies when the UTM parameters say nothing.

/// One click-id query parameter and the source/medium it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickId {
    /// The query parameter name, recorded as `click_id_type`.
    pub key: &'static str,
    pub source: &'static str,
    pub medium: &'static str,
}

const fn id(key: &'static str, source: &'static str, medium: &'static str) -> ClickId {
    ClickId {
        key,
        source,
        medium,
    }
}

/// Every recognised click id, in precedence order: when a URL carries
/// several, the first one listed here names the touch. Paid ids come before
/// the organic ones, and `gclid` before `gad_source`, which Google Ads adds
/// beside it.
pub const CLICK_IDS: &[ClickId] = &[
    id("gclid", "google", "cpc"),
    id("gbraid", "google", "cpc"),
    id("wbraid", "google", "cpc"),
    id("dclid", "google", "cpc"),
    // Google Ads' and Search Ads 360's companion of gclid (`aw.ds`, `ds`).
    id("gclsrc", "google", "cpc"),
    id("msclkid", "bing", "cpc"),
    // Yandex Direct.
    id("yclid", "yandex", "cpc"),
    id("ttclid", "tiktok", "cpc"),
    id("li_fat_id", "linkedin", "cpc"),
    id("twclid", "twitter", "cpc"),
    id("epik", "pinterest", "cpc"),
    id("sccid", "snapchat", "cpc"),
    // Snapchat's own spelling; keys are case-sensitive.
    id("ScCid", "snapchat", "cpc"),
    id("rdt_cid", "reddit", "cpc"),
    id("qclid", "quora", "cpc"),
    // Taboola's native ads.
    id("tblci", "taboola", "display"),
    // Affiliate networks: Impact, CJ, Awin.
    id("irclid", "impact", "affiliate"),
    id("cjevent", "cj", "affiliate"),
    id("awc", "awin", "affiliate"),
    id("gad_source", "google", "cpc"),
    // Meta adds fbclid to organic clicks too, so it alone means social.
    id("fbclid", "facebook", "social"),
    id("igshid", "instagram", "social"),
    // Klaviyo's e-mail and SMS click tracking.
    id("_kx", "klaviyo", "email"),
    // Google's free merchant listings (organic shopping results).
    id("srsltid", "google", "organic"),
];

/// The click id a query parameter names, if any (exact, case-sensitive).
pub fn lookup(key: &str) -> Option<(usize, &'static ClickId)> {
    CLICK_IDS.iter().enumerate().find(|(_, c)| c.key == key)
}

/// Is this a click-id parameter name? A `match`, not a scan of
/// [`CLICK_IDS`], because the pass-through pre-check calls it for every
/// parameter of every navigation; a test keeps the two in step.
pub fn is_click_id_key(key: &str) -> bool {
    matches!(
        key,
        "gclid"
            | "gbraid"
            | "wbraid"
            | "dclid"
            | "gclsrc"
            | "msclkid"
            | "yclid"
            | "ttclid"
            | "li_fat_id"
            | "twclid"
            | "epik"
            | "sccid"
            | "ScCid"
            | "rdt_cid"
            | "qclid"
            | "tblci"
            | "irclid"
            | "cjevent"
            | "awc"
            | "gad_source"
            | "fbclid"
            | "igshid"
            | "_kx"
            | "srsltid"
    )
}

/// Longest `fbclid` kept for the Meta `fbc` match key; a longer one is not
/// a real click id.
pub const MAX_FBCLID_LEN: usize = 500;

/// The raw fbclid as Meta wants it back, byte for byte: a value that is too
/// long or holds anything but printable ASCII is dropped rather than altered.
pub fn fbclid_value(decoded: &str) -> Option<String> {
    let ok = !decoded.is_empty()
        && decoded.len() <= MAX_FBCLID_LEN
        && decoded.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| decoded.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_match_agrees_with_the_table() {
        for c in CLICK_IDS {
            assert!(is_click_id_key(c.key), "{}", c.key);
        }
        let matched = [
            "gclid",
            "gbraid",
            "wbraid",
            "dclid",
            "gclsrc",
            "msclkid",
            "yclid",
            "ttclid",
            "li_fat_id",
            "twclid",
            "epik",
            "sccid",
            "ScCid",
            "rdt_cid",
            "qclid",
            "tblci",
            "irclid",
            "cjevent",
            "awc",
            "gad_source",
            "fbclid",
            "igshid",
            "_kx",
            "srsltid",
        ];
        assert_eq!(matched.len(), CLICK_IDS.len());
        for k in matched {
            assert!(lookup(k).is_some(), "{k}");
        }
        assert!(!is_click_id_key("gclid "));
        assert!(!is_click_id_key("GCLID"));
    }
}
