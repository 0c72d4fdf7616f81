//! touchgate demo
