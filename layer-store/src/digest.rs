//! SHA-256 content digests (`sha256:<hex>`) and hashing while streaming.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Result, StoreError};

/// The algorithm prefix of every digest the store handles.
pub const SHA256_PREFIX: &str = "sha256:";

/// A SHA-256 content digest, written `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Builds a digest from 64 lowercase hex characters (without the `sha256:` prefix).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        if is_sha256_hex(hex) {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(StoreError::InvalidDigest {
                value: hex.to_string(),
                reason: "expected 64 lowercase hex characters".to_string(),
            })
        }
    }

    /// Parses `sha256:<hex>`. Other algorithms are rejected with a clear error.
    pub fn parse(value: &str) -> Result<Digest> {
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(StoreError::InvalidDigest {
                value: value.to_string(),
                reason: "expected <algorithm>:<hex>".to_string(),
            });
        };
        if algorithm != "sha256" {
            return Err(StoreError::InvalidDigest {
                value: value.to_string(),
                reason: format!("unsupported digest algorithm {algorithm:?} (only sha256)"),
            });
        }
        Digest::from_hex(hex).map_err(|_| StoreError::InvalidDigest {
            value: value.to_string(),
            reason: "expected 64 lowercase hex characters after sha256:".to_string(),
        })
    }

    /// The 64 hex characters, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as shown in listings.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }
}

/// Whether `s` is 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 that also counts bytes; usable as a [`Write`] sink.
#[derive(Clone, Default)]
pub struct DigestWriter {
    hasher: Sha256,
    len: u64,
}

impl DigestWriter {
    /// A fresh hasher.
    pub fn new() -> DigestWriter {
        DigestWriter::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything hashed, and its length.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.len)
    }
}

impl Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes everything read from `reader` until its end.
pub fn digest_reader(reader: &mut dyn Read) -> io::Result<(Digest, u64)> {
    let mut writer = DigestWriter::new();
    io::copy(reader, &mut writer)?;
    Ok(writer.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(Digest::of_bytes(b"").hex(), EMPTY);
        let (digest, len) = digest_reader(&mut &b""[..]).unwrap();
        assert_eq!((digest.hex(), len), (EMPTY, 0));
    }

    #[test]
    fn streaming_and_one_shot_hashes_agree() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = DigestWriter::new();
        for chunk in data.chunks(777) {
            writer.write_all(chunk).unwrap();
        }
        assert_eq!(
            writer.finish(),
            (Digest::of_bytes(&data), data.len() as u64)
        );
    }

    #[test]
    fn parse_accepts_sha256_and_rejects_others() {
        let digest = Digest::parse(&format!("sha256:{EMPTY}")).unwrap();
        assert_eq!(digest.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(digest.short(), &EMPTY[..12]);
        for bad in [
            EMPTY.to_string(),
            format!("sha512:{EMPTY}"),
            format!("sha256:{}", &EMPTY[1..]),
            format!("sha256:{}", EMPTY.to_uppercase()),
            format!("sha256:{}g", &EMPTY[1..]),
        ] {
            let err = Digest::parse(&bad).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidDigest { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        let digest = Digest::of_bytes(b"x");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{digest}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
