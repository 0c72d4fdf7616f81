//! Pure marketing rules: where a visit came from. No I/O, no clocks; every
//! function here is testable by table.
//!
//! Precedence: UTM parameters > click ids > referrer > direct.

use crate::config::TouchConfig;
use crate::event::Touch;

/// Built once from `[touch]`: alias maps merged over the built-in ones.
#[derive(Debug, Clone)]
pub struct TouchRules {}

impl TouchRules {
    pub fn new(_cfg: &TouchConfig) -> TouchRules {
        todo!("touch helper")
    }
}

/// What one request says about where the visitor came from.
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

/// Cheap pre-check for the request classifier: could this query carry a
/// campaign parameter or click id? (No allocation.)
pub fn query_may_carry_campaign(_query: &str) -> bool {
    todo!("touch helper")
}

/// Read the touch from a request's query string and `Referer`.
pub fn observe(
    _rules: &TouchRules,
    _query: Option<&str>,
    _referrer: Option<&str>,
    _request_host: &str,
) -> Observation {
    todo!("touch helper")
}

/// The referrer's host, lowercase, without `www.`; None when unparseable.
pub fn referrer_host(_referrer: &str) -> Option<String> {
    todo!("touch helper")
}

/// Canonical page URL: lowercase scheme and host, no default port, no
/// fragment, only campaign parameters kept, sorted.
pub fn canonical_url(_scheme: &str, _host: &str, _path: &str, _query: Option<&str>) -> String {
    todo!("touch helper")
}

/// GA4 default channel group for a source/medium/campaign.
pub fn channel(_source: Option<&str>, _medium: Option<&str>, _campaign: Option<&str>) -> &'static str {
    todo!("touch helper")
}
