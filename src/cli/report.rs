//! touchgate report
