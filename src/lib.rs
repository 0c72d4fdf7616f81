//! touchgate: a reverse-proxy sidecar for server-side marketing touchpoint
//! capture.
//!
//! The request path reads top to bottom in [`request_path`], as named
//! phases; every marketing rule is a pure function in [`touch`].

/// Admin listener: health, readiness, metrics, offline ingest.
pub mod admin;
/// The running process: listeners, pipeline, sinks, drain.
pub mod app;
/// Per-request decisions: classification, form bodies, client context.
pub mod capture;
/// The subcommands beyond `run`: demo, audit, report, inject.
pub mod cli;
/// Typed configuration with line-numbered errors.
pub mod config;
/// The event type, as CONTRACT.md fixes its JSON.
pub mod event;
/// Keyed hashes, signed cookies, client IP handling.
pub mod identity;
/// Prometheus metrics, one registry for the process.
pub mod metrics;
/// Queue, dedupe and spool between the request path and the sinks.
pub mod pipeline;
/// Field policy and the PII guard over every outgoing event.
pub mod privacy;
/// The public listener, upstream client, header hygiene, TLS and drain.
pub mod proxy;
/// The request path: named phases over one per-request context.
pub mod request_path;
/// Sinks behind one trait, with shared delivery machinery.
pub mod sink;
/// Pure marketing rules: touch, channel, canonical URL.
pub mod touch;
