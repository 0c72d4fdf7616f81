//! Field policy and PII guard.
