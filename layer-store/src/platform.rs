//! Image platforms (os/architecture) and the host's.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The platform an image manifest is built for, as index descriptors state it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go spelling (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on: `linux` and the host architecture.
    pub fn host() -> Platform {
        Platform {
            architecture: host_architecture().to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// Whether an image for `self` runs on the `host` platform (architecture
    /// spellings `amd64`/`x86_64` and `arm64`/`aarch64` are equivalent; the
    /// variant is ignored).
    pub fn runs_on(&self, host: &Platform) -> bool {
        self.os == host.os
            && normalize_architecture(&self.architecture)
                == normalize_architecture(&host.architecture)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The host CPU architecture in the Go spelling image configs use.
pub fn host_architecture() -> &'static str {
    normalize_architecture(std::env::consts::ARCH)
}

/// Maps Rust/kernel architecture names to the Go spelling (`x86_64` → `amd64`).
pub fn normalize_architecture(architecture: &str) -> &str {
    match architecture {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64le" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, architecture: &str) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: Some("v8".to_string()),
        }
    }

    #[test]
    fn architecture_spellings_are_equivalent() {
        let host = platform("linux", "amd64");
        assert!(platform("linux", "x86_64").runs_on(&host));
        assert!(platform("linux", "amd64").runs_on(&host));
        assert!(!platform("linux", "arm64").runs_on(&host));
        assert!(!platform("windows", "amd64").runs_on(&host));
        assert!(platform("linux", "aarch64").runs_on(&platform("linux", "arm64")));
    }

    #[test]
    fn host_platform_is_linux_in_go_spelling() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_ne!(host.architecture, "x86_64");
        assert_ne!(host.architecture, "aarch64");
        assert_eq!(platform("linux", "s390x").to_string(), "linux/s390x/v8");
    }
}
