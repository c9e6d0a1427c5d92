//! Image references: `name[:tag]`, the tag defaulting to `latest`.
//!
//! Names follow the Docker grammar: `/`-separated lowercase components made
//! of `[a-z0-9]` runs joined by `.`, `_`, `__` or dashes, optionally preceded
//! by a registry host (`localhost`, or a component containing `.` or `:port`).
//! No further normalisation (no implicit `docker.io/library/`) takes place.
//! Digest references (`name@sha256:…`) are not supported.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, StoreError};

/// The tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A validated `name:tag` reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    name: String,
    tag: String,
}

impl Reference {
    /// Parses `name[:tag]`; a missing tag means [`DEFAULT_TAG`].
    pub fn parse(text: &str) -> Result<Reference> {
        let invalid = |reason: &str| StoreError::InvalidReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("empty reference"));
        }
        if text.contains('@') {
            return Err(invalid("digest references (name@digest) are not supported"));
        }
        let (name, tag) = match text.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (text, DEFAULT_TAG),
        };
        if !is_valid_tag(tag) {
            return Err(invalid(
                "a tag is 1-128 characters of [A-Za-z0-9_.-] not starting with '.' or '-'",
            ));
        }
        validate_name(name).map_err(|reason| invalid(&reason))?;
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// Builds a reference from a name and a tag, validating both.
    pub fn new(name: &str, tag: &str) -> Result<Reference> {
        Reference::parse(&format!("{name}:{tag}"))
    }

    /// The repository name (everything before the tag).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        Reference::new(&self.name, tag)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl FromStr for Reference {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Reference, D::Error> {
        let text = String::deserialize(deserializer)?;
        Reference::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `tag` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() || first == b'_' => {}
        _ => return false,
    }
    tag.len() <= MAX_TAG_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name longer than {MAX_NAME_LEN} characters"));
    }
    let components: Vec<&str> = name.split('/').collect();
    let (host, path) = match components.split_first() {
        Some((first, rest)) if !rest.is_empty() && looks_like_host(first) => (Some(*first), rest),
        _ => (None, &components[..]),
    };
    if let Some(host) = host {
        if !is_valid_host(host) {
            return Err(format!("invalid registry host {host:?}"));
        }
    }
    for component in path {
        if !is_valid_path_component(component) {
            return Err(format!(
                "invalid name component {component:?}: use lowercase letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn looks_like_host(component: &str) -> bool {
    component == "localhost" || component.contains('.') || component.contains(':')
}

fn is_valid_host(host: &str) -> bool {
    let (domain, port) = match host.split_once(':') {
        Some((domain, port)) => (domain, Some(port)),
        None => (host, None),
    };
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    domain_ok && port_ok
}

fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Turns arbitrary text (a file stem) into a valid repository name:
/// lowercased, other characters replaced by `-`, `image` if nothing is left.
pub fn repository_from_text(text: &str) -> String {
    let mut name = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-');
    let name: String = name.chars().take(MAX_NAME_LEN).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "image".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_tags() {
        let cases = [
            ("busybox", "busybox", "latest"),
            ("busybox:1.36", "busybox", "1.36"),
            ("library/busybox:musl", "library/busybox", "musl"),
            ("localhost:5000/app", "localhost:5000/app", "latest"),
            ("localhost:5000/app:v2", "localhost:5000/app", "v2"),
            (
                "docker.io/library/alpine:3.19",
                "docker.io/library/alpine",
                "3.19",
            ),
            ("a__b.c-d--e:_X", "a__b.c-d--e", "_X"),
        ];
        for (text, name, tag) in cases {
            let reference = Reference::parse(text).unwrap();
            assert_eq!((reference.name(), reference.tag()), (name, tag), "{text}");
        }
        assert_eq!(Reference::parse("x").unwrap().to_string(), "x:latest");
    }

    #[test]
    fn rejects_malformed_references() {
        for text in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a b",
            "busybox@sha256:abcd",
            "host:abc/x",
            &format!("x:{}", "t".repeat(129)),
            &"a".repeat(256),
        ] {
            let err = Reference::parse(text).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidReference { .. }),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn repository_from_text_always_gives_a_valid_name() {
        for (text, expected) in [
            ("Alpine 3.19", "alpine-3-19"),
            ("my_image", "my-image"),
            ("...", "image"),
            ("ok", "ok"),
        ] {
            let name = repository_from_text(text);
            assert_eq!(name, expected);
            Reference::new(&name, "latest").unwrap();
        }
    }
}
