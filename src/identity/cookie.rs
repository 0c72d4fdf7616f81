//! Identity cookies.
