//! `meta_capi` sink: Meta Conversions API.

use serde::Deserialize;

use super::DeliveryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaCapiSinkConfig {
    pub name: Option<String>,
    pub pixel_id: String,
    pub access_token_env: String,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl MetaCapiSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        Vec::new()
    }
}
