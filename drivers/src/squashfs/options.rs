//! Settings of the squashfs driver, read from the environment.

use std::fmt;
use std::str::FromStr;

/// Environment variable choosing the compressor of new images (`zstd`, `gzip`,
/// `xz`, `lz4`), optionally with a level: `zstd:19`, `gzip:6`, `xz:9`.
pub const COMPRESSOR_ENV: &str = "LAMINA_SQUASHFS_COMPRESSOR";
/// Environment variable choosing the data block size of new images, in bytes
/// or with a `K`/`M` suffix: a power of two from 4K to 1M.
pub const BLOCK_SIZE_ENV: &str = "LAMINA_SQUASHFS_BLOCK_SIZE";
/// Environment variable sizing the in-process reader's cache of decompressed
/// blocks and metadata (shared by all images a driver opens), in MiB (0 disables it).
pub const CACHE_MB_ENV: &str = "LAMINA_SQUASHFS_CACHE_MB";

/// Default block size (squashfs' own default).
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;
/// Default zstd level: fast to write, close in size to the slow levels on
/// typical layers (see `docs/decisions.md`).
pub const DEFAULT_ZSTD_LEVEL: u32 = 6;
/// Default size of the reader cache.
pub const DEFAULT_CACHE_MB: usize = 64;

/// A compressor libsquashfs writes (its `SQFS_COMPRESSOR` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// zlib streams.
    Gzip,
    /// xz streams.
    Xz,
    /// LZ4 blocks.
    Lz4,
    /// Zstandard frames.
    Zstd,
}

impl Compressor {
    /// The id stored in the super block.
    pub fn id(self) -> u16 {
        match self {
            Compressor::Gzip => 1,
            Compressor::Xz => 4,
            Compressor::Lz4 => 5,
            Compressor::Zstd => 6,
        }
    }

    /// The compressor of a super block id, when libsquashfs can write it.
    pub fn from_id(id: u16) -> Option<Compressor> {
        match id {
            1 => Some(Compressor::Gzip),
            4 => Some(Compressor::Xz),
            5 => Some(Compressor::Lz4),
            6 => Some(Compressor::Zstd),
            _ => None,
        }
    }

    /// The levels this compressor accepts, if it has levels.
    pub fn levels(self) -> Option<(u32, u32)> {
        match self {
            Compressor::Gzip => Some((1, 9)),
            Compressor::Xz => Some((0, 9)),
            Compressor::Lz4 => None,
            Compressor::Zstd => Some((1, 22)),
        }
    }

    /// The level used when none is configured (`None`: libsquashfs' default).
    pub fn default_level(self) -> Option<u32> {
        match self {
            Compressor::Zstd => Some(DEFAULT_ZSTD_LEVEL),
            _ => None,
        }
    }
}

impl fmt::Display for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compressor::Gzip => "gzip",
            Compressor::Xz => "xz",
            Compressor::Lz4 => "lz4",
            Compressor::Zstd => "zstd",
        })
    }
}

impl FromStr for Compressor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zstd" => Ok(Compressor::Zstd),
            "gzip" => Ok(Compressor::Gzip),
            "xz" => Ok(Compressor::Xz),
            "lz4" => Ok(Compressor::Lz4),
            other => Err(format!(
                "unknown squashfs compressor {other:?} (zstd, gzip, xz or lz4)"
            )),
        }
    }
}

/// How new images are written and how images are read in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquashfsOptions {
    /// Compressor of new images.
    pub compressor: Compressor,
    /// Compression level (`None`: the compressor's default).
    pub level: Option<u32>,
    /// Data block size of new images.
    pub block_size: u32,
    /// Bytes of decompressed blocks and metadata the in-process reader caches
    /// (for all images a driver opens together).
    pub cache_bytes: usize,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compressor: Compressor::Zstd,
            level: Compressor::Zstd.default_level(),
            block_size: DEFAULT_BLOCK_SIZE,
            cache_bytes: DEFAULT_CACHE_MB << 20,
        }
    }
}

impl SquashfsOptions {
    /// The options given by [`COMPRESSOR_ENV`], [`BLOCK_SIZE_ENV`] and
    /// [`CACHE_MB_ENV`], defaults for unset ones.
    pub fn from_env() -> Result<Self, String> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::parse(
            get(COMPRESSOR_ENV).as_deref(),
            get(BLOCK_SIZE_ENV).as_deref(),
            get(CACHE_MB_ENV).as_deref(),
        )
    }

    /// Parses the three settings as the environment spells them.
    pub fn parse(
        compressor: Option<&str>,
        block_size: Option<&str>,
        cache_mb: Option<&str>,
    ) -> Result<Self, String> {
        let mut options = SquashfsOptions::default();
        if let Some(spec) = compressor {
            let (name, level) = match spec.split_once(':') {
                Some((n, l)) => (n, Some(l)),
                None => (spec, None),
            };
            let compressor: Compressor = name
                .trim()
                .parse()
                .map_err(|e| format!("{COMPRESSOR_ENV}: {e}"))?;
            options.compressor = compressor;
            options.level = compressor.default_level();
            if let Some(level) = level {
                let level: u32 = level
                    .trim()
                    .parse()
                    .map_err(|_| format!("{COMPRESSOR_ENV}: level {level:?} is not a number"))?;
                match compressor.levels() {
                    Some((lo, hi)) if (lo..=hi).contains(&level) => options.level = Some(level),
                    Some((lo, hi)) => {
                        return Err(format!(
                        "{COMPRESSOR_ENV}: {compressor} levels go from {lo} to {hi}, not {level}"
                    ))
                    }
                    None => return Err(format!("{COMPRESSOR_ENV}: {compressor} has no levels")),
                }
            }
        }
        if let Some(spec) = block_size {
            options.block_size = parse_block_size(spec)?;
        }
        if let Some(spec) = cache_mb {
            let mb: usize = spec
                .trim()
                .parse()
                .map_err(|_| format!("{CACHE_MB_ENV}: {spec:?} is not a number of MiB"))?;
            options.cache_bytes = mb
                .checked_mul(1 << 20)
                .ok_or_else(|| format!("{CACHE_MB_ENV}: {mb} MiB is too large"))?;
        }
        Ok(options)
    }
}

fn parse_block_size(spec: &str) -> Result<u32, String> {
    let s = spec.trim();
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let size = digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{BLOCK_SIZE_ENV}: {spec:?} is not a size"))?;
    if !size.is_power_of_two() || !(4096..=1 << 20).contains(&size) {
        return Err(format!(
            "{BLOCK_SIZE_ENV}: {spec} is not a power of two from 4K to 1M"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let d = SquashfsOptions::parse(None, None, None).unwrap();
        assert_eq!(d, SquashfsOptions::default());
        let o = SquashfsOptions::parse(Some("xz:9"), Some("1M"), Some("0")).unwrap();
        assert_eq!(o.compressor, Compressor::Xz);
        assert_eq!(o.level, Some(9));
        assert_eq!(o.block_size, 1 << 20);
        assert_eq!(o.cache_bytes, 0);
        assert_eq!(
            SquashfsOptions::parse(Some("gzip"), Some("65536"), None)
                .unwrap()
                .block_size,
            65536
        );
        assert!(SquashfsOptions::parse(Some("lzo"), None, None).is_err());
        assert!(SquashfsOptions::parse(Some("zstd:30"), None, None).is_err());
        assert!(SquashfsOptions::parse(Some("lz4:3"), None, None).is_err());
        assert!(SquashfsOptions::parse(None, Some("100000"), None).is_err());
        assert!(SquashfsOptions::parse(None, Some("2M"), None).is_err());
        assert!(SquashfsOptions::parse(None, None, Some("lots")).is_err());
    }
}
