//! `postgres` sink.

use serde::Deserialize;

use super::DeliveryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    pub name: Option<String>,
    pub url_env: String,
    pub table: String,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl PostgresSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        Vec::new()
    }
}
