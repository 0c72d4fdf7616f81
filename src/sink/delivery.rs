//! Shared delivery machinery.
