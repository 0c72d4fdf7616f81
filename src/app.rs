//! The running process: listeners, pipeline, spool, sinks, and the drain
//! sequence Kubernetes expects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin, Health};
use crate::capture::Capture;
use crate::config::Config;
use crate::identity::Keys;
use crate::metrics::Metrics;
use crate::pipeline::dedupe::Dedupe;
use crate::pipeline::spool;
use crate::pipeline::{self, EventQueue};
use crate::proxy;
use crate::proxy::upstream::Upstream;
use crate::request_path::Shared;
use crate::sink;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("identity.secret_env: environment variable {0} is not set")]
    MissingSecret(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("proxy TLS: {0}")]
    Tls(#[from] proxy::tls::TlsError),
    #[error("proxy.upstream: {0}")]
    Upstream(#[from] proxy::upstream::UpstreamError),
    #[error("spool at {dir}: {message}")]
    Spool { dir: String, message: String },
    #[error("sink {name}: {message}")]
    Sink { name: String, message: String },
    #[error("dedupe.redis_url: {0}")]
    Redis(String),
}

/// A started touchgate: where it listens, and how to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    cfg: Arc<Config>,
    stop_accepting: CancellationToken,
    stop_admin: CancellationToken,
    stop_sinks: CancellationToken,
    server: JoinHandle<Arc<proxy::Drain>>,
    shared: Arc<Shared>,
    admin: Arc<Admin>,
    pipeline: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
}

/// Start everything; listeners bound before this returns.
pub async fn start(
    cfg: Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Running, StartError> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::new());
    let secret = env(&cfg.identity.secret_env)
        .ok_or_else(|| StartError::MissingSecret(cfg.identity.secret_env.clone()))?;
    let keys = Keys::derive(secret.as_bytes());
    let previous_keys = cfg
        .identity
        .previous_secret_env
        .as_deref()
        .and_then(env)
        .map(|s| Keys::derive(s.as_bytes()));

    // Sinks and the spool first: a bad sink config fails the start, not
    // the first event.
    let mut built = Vec::new();
    for (i, sc) in cfg.sink.iter().enumerate() {
        let name = sink::unique_name(&cfg.sink, i);
        let s = sink::build(sc, &name, env, &keys).map_err(|message| StartError::Sink {
            name: name.clone(),
            message,
        })?;
        built.push((name, s, sc.delivery().clone()));
    }
    let names: Vec<String> = built.iter().map(|(n, _, _)| n.clone()).collect();
    let (writer, readers) =
        spool::open(&cfg.spool, &names, metrics.clone()).map_err(|e| StartError::Spool {
            dir: cfg.spool.dir.display().to_string(),
            message: e.to_string(),
        })?;
    let stop_sinks = CancellationToken::new();
    let mut sinks = Vec::new();
    for ((name, s, delivery), reader) in built.into_iter().zip(readers) {
        let dead_letter = sink::delivery::dead_letter_path(&delivery, &cfg.spool.dir, &name);
        let metrics = metrics.clone();
        let stop = stop_sinks.clone();
        sinks.push(tokio::spawn(async move {
            if let Err(e) =
                sink::delivery::run_sink(s, reader, delivery, dead_letter, metrics, stop).await
            {
                tracing::error!(sink = %name, error = %e, "sink stopped: spool failure");
            }
        }));
    }

    let dedupe = match cfg.redis_url(env) {
        Some(url) => Dedupe::with_redis(
            cfg.dedupe.window,
            cfg.dedupe.max_entries,
            &url,
            cfg.dedupe.redis_timeout,
        )
        .await
        .map_err(|e| StartError::Redis(e.to_string()))?,
        None => Dedupe::local(cfg.dedupe.window, cfg.dedupe.max_entries),
    };
    let (queue, rx) = EventQueue::new(cfg.queue.capacity, metrics.clone());
    let pipeline = tokio::spawn(pipeline::run(
        rx,
        dedupe,
        Box::new(pipeline::SpoolOutput::new(writer)),
        metrics.clone(),
    ));

    let upstream = Upstream::new(&cfg.proxy)?;
    if cfg.proxy.http1_direct_ignored.is_some() {
        tracing::warn!(
            "proxy.http1_direct is no longer read (hyper serves every request): remove it from the config"
        );
    }
    let capture = Capture::new(
        cfg.clone(),
        keys.clone(),
        previous_keys,
        metrics.clone(),
        queue.clone(),
    );
    let ingest = env(&cfg.admin.ingest_token_env)
        .filter(|t| !t.is_empty())
        .map(|token| {
            admin::ingest::Ingest::new(
                &token,
                keys,
                cfg.ingest.clone(),
                cfg.admin.clone(),
                capture.phone_country,
                queue.clone(),
                metrics.clone(),
            )
        });
    if ingest.is_none() {
        tracing::info!(env = %cfg.admin.ingest_token_env, "POST /v1/events disabled: token variable not set");
    }
    drop(queue);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        upstream: upstream.clone(),
        capture,
        metrics: metrics.clone(),
    });

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let listener = bind("proxy.listen", cfg.proxy.listen).await?;
    let admin_listener = bind("admin.listen", cfg.admin.listen).await?;
    let proxy_addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "proxy.listen",
        addr: cfg.proxy.listen,
        source,
    })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "admin.listen",
            addr: cfg.admin.listen,
            source,
        })?;
    let tls = match (&cfg.proxy.tls_cert, &cfg.proxy.tls_key) {
        (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(proxy::tls::server_config(
            c, k,
        )?)),
        _ => None,
    };

    let health = Arc::new(Health::default());
    let admin = Arc::new(Admin {
        health: health.clone(),
        metrics: metrics.clone(),
        upstream,
        ingest,
    });
    let stop_admin = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin.clone(),
        stop_admin.clone(),
    ));
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn(proxy::serve(
        listener,
        shared.clone(),
        tls,
        stop_accepting.clone(),
    ));
    health.set_sinks_started();
    tracing::info!(%proxy_addr, %admin_addr, upstream = %cfg.proxy.upstream, sinks = ?names, "touchgate started");
    Ok(Running {
        proxy_addr,
        admin_addr,
        metrics,
        health,
        cfg,
        stop_accepting,
        stop_admin,
        stop_sinks,
        server,
        shared,
        admin,
        pipeline,
        sinks,
    })
}

impl Running {
    /// The Kubernetes drain: `/readyz` fails at once, new connections are
    /// still accepted for `drain_delay` (endpoints take seconds to update),
    /// then in-flight requests get `drain_timeout`, then the pipeline is
    /// flushed into the spool and the sinks finish their current batch.
    pub async fn drain(self, delay: Duration) {
        self.health.set_draining();
        tracing::info!(?delay, "draining: readiness failing, still accepting");
        tokio::time::sleep(delay).await;
        self.stop_accepting.cancel();
        let timeout = self.cfg.proxy.drain_timeout;
        match self.server.await {
            Ok(drain) => {
                if tokio::time::timeout(timeout, drain.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        ?timeout,
                        "drain timeout: closing the connections still open"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "proxy task failed"),
        }
        self.stop_admin.cancel();
        // Every queue handle gone → the pipeline ends after appending the rest.
        drop(self.shared);
        drop(self.admin);
        if let Err(e) = self.pipeline.await {
            tracing::error!(error = %e, "pipeline task failed");
        }
        self.stop_sinks.cancel();
        for s in self.sinks {
            let _ = s.await;
        }
        tracing::info!("drained");
    }
}

/// `touchgate run`: start, wait for SIGTERM or SIGINT, drain, return.
pub async fn serve_until_signal(
    cfg: Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), StartError> {
    let delay = cfg.proxy.drain_delay;
    let running = start(cfg, env).await?;
    wait_for_signal().await;
    running.drain(delay).await;
    Ok(())
}

/// Wait for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
