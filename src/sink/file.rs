//! `file` sink: JSON lines.

use serde::Deserialize;
use std::path::PathBuf;

use super::DeliveryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub name: Option<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl FileSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        Vec::new()
    }
}
