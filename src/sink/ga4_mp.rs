//! `ga4_mp` sink: GA4 Measurement Protocol.

use serde::Deserialize;

use super::DeliveryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ga4MpSinkConfig {
    pub name: Option<String>,
    pub measurement_id: String,
    pub api_secret_env: String,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl Ga4MpSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        Vec::new()
    }
}
