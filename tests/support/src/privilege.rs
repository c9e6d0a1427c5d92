//! The gate of privileged tests: they need root and `/dev/fuse`. Without them a
//! test prints why it skips — unless `LAMINA_REQUIRE_PRIVILEGED=1` (CI), where
//! skipping would hide a broken setup, so the test fails instead.

use std::path::Path;

/// The environment variable that turns skips into failures.
pub const REQUIRE_ENV: &str = "LAMINA_REQUIRE_PRIVILEGED";

/// Why privileged tests cannot run here, or `None` when they can.
pub fn missing_privilege() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

/// Returns `true` when a privileged test may run. Otherwise prints the reason and
/// returns `false` (the test should return early), or panics when
/// `LAMINA_REQUIRE_PRIVILEGED=1`.
pub fn require_privileged(test: &str) -> bool {
    match missing_privilege() {
        None => true,
        Some(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {REQUIRE_ENV}=1 but privileged tests cannot run: {why}")
        }
        Some(why) => {
            eprintln!("skipped {test}: {why}");
            false
        }
    }
}
