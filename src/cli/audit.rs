//! touchgate audit
