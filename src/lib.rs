//! The `lamina` command as a library: argument parsing, the application context
//! and one module per group of subcommands. The storage work itself lives in the
//! `layer-store`, `drivers` and `fuse-frontend` crates.

pub mod app;
pub mod cli;
pub mod commands;
pub mod fuse_overlay;
pub mod human;
pub mod init_layer;
pub mod output;
pub mod registry;
pub mod runtime_spec;
