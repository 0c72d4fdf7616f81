//! `kafka` sink.

use serde::Deserialize;

use super::DeliveryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub name: Option<String>,
    pub brokers: String,
    pub topic: String,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl KafkaSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        Vec::new()
    }
}
