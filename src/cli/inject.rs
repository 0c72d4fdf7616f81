//! touchgate inject
