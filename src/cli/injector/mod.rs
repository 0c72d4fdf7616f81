//! `touchgate injector`: the sidecar injector as a Kubernetes mutating
//! admission webhook. The API server sends it every pod created in a
//! namespace labelled `touchgate.io/inject=enabled`; it answers with the JSON
//! patch that adds the sidecar, computed as the difference
//! [`patch_pod_spec`](crate::cli::inject::patch_pod_spec), the code of
//! `touchgate inject`, makes to the pod.
//!
//! `review.rs` answers one AdmissionReview (pure), `diff.rs` is the JSON
//! patch, `certs.rs` the certificate and its reload, `server.rs` the HTTPS
//! server and its limits.

pub mod certs;
pub mod diff;
pub mod review;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::inject::{InjectOptions, SidecarArgs};

/// The injector's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectorArgs {
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM), re-read when it changes.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// Private key (PEM), re-read when it changes.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// Time a client has for the TLS handshake, for the request head and
    /// for the body, each.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    #[error(transparent)]
    Tls(#[from] crate::proxy::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind, then serve until SIGTERM or SIGINT.
pub async fn run(args: &InjectorArgs) -> Result<(), InjectorError> {
    let certs = certs::Certs::load(args.tls_cert.clone(), args.tls_key.clone())?;
    let listener =
        TcpListener::bind(args.listen)
            .await
            .map_err(|source| InjectorError::Listen {
                addr: args.listen,
                source,
            })?;
    let options: InjectOptions = args.sidecar.options();
    let bound = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(listen = %bound, image = %options.image, "injector serving");
    let injector = Arc::new(server::Injector {
        options,
        certs: Arc::new(certs),
        header_timeout: args.header_timeout,
    });
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server::serve(listener, injector, stop.clone()));
    crate::app::wait_for_signal().await;
    stop.cancel();
    // The server returns once in-flight reviews are done (or given up).
    if let Err(e) = serving.await {
        tracing::error!(error = %e, "the server task failed");
    }
    Ok(())
}
