//! The subcommands beyond `run` and `check-config`.

pub mod audit;
pub mod demo;
pub mod inject;
pub mod injector;
pub mod report;
