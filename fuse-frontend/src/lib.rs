//! Lamina's FUSE frontend: serves a [`drivers::MountSpec::Stack`] as one merged
//! filesystem in userspace. The implementation arrives with the FUSE frontend
//! issue; until then the CLI reports `--frontend fuse` as unavailable.

/// Why the FUSE frontend cannot serve mounts in this build.
pub const UNAVAILABLE: &str = "the FUSE frontend is not built yet; use --frontend kernel";
