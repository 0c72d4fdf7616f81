//! Between the request path and the sinks: queue, dedupe, spool.

pub mod dedupe;
pub mod spool;
