//! `touchgate demo`: the proxy in front of a built-in sample app.

use std::net::SocketAddr;
use std::path::PathBuf;

pub struct DemoOptions {
    /// The proxy's public address (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Where events go (default ./touchgate-data).
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Start(String),
}

/// Runs until Ctrl-C.
pub async fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    let _ = opts;
    todo!("demo helper")
}
