//! First-party identity: keyed hashes, signed cookies, client IPs.

pub mod cookie;
pub mod hash;
pub mod ip;

pub use hash::{Keys, Purpose};
pub mod match_keys;
