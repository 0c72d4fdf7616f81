//! Per-request capture decisions.

pub mod context;
pub mod form;
pub mod identifier;
pub mod user_agent;
