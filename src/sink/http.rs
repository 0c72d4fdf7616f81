//! `http` sink: NDJSON batches, POST.

use serde::Deserialize;

use super::DeliveryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl HttpSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        Vec::new()
    }
}
