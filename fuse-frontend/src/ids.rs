//! Owners as the merged view presents them and as it stores them.
//!
//! Two things stand between the ids a layer records and the ids the kernel
//! sees on the mount:
//!
//! - the store's [`Ownership`]: an unprivileged store keeps every object owned
//!   by its user and the image's owner, mode and device type in the
//!   `user.containers.override_stat` xattr (see `drivers::ownership`);
//! - uid/gid mappings like fuse-overlayfs's `uidmapping=`/`gidmapping=`:
//!   `CONTAINER:HOST:LEN` ranges. A stored id `c` in a range is presented as
//!   `HOST + (c - CONTAINER)`, and a caller's host id is stored as the
//!   container id it maps from. Ids outside every range are presented as the
//!   overflow id 65534 and cannot be stored (`EINVAL`, as in a user namespace).
//!   With a rootless runtime's mapping `0:UID:1` the container's root owns what
//!   the image's root owns.

use std::fmt;
use std::io;
use std::str::FromStr;

use drivers::fsutil::Meta;
use drivers::layer::FileKind;
use drivers::ownership::{Ownership, Target};
use fuser::FileAttr;

use crate::attr::file_type;
use crate::sys::{encode_dev, errno};

/// The id shown for ids no mapping range covers.
pub const OVERFLOW_ID: u32 = 65534;

/// One mapping range: `len` ids from `container` shown as ids from `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id as stored (inside the container).
    pub container: u32,
    /// First id as presented (on the host).
    pub host: u32,
    /// Number of ids.
    pub len: u32,
}

/// A uid or gid mapping; empty means ids are shown as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

/// Why a mapping does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid id mapping {text:?}: {reason} (expected CONTAINER:HOST:LEN[:CONTAINER:HOST:LEN...])"
)]
pub struct IdMapError {
    text: String,
    reason: String,
}

impl FromStr for IdMap {
    type Err = IdMapError;

    /// Parses fuse-overlayfs's form: `CONTAINER:HOST:LEN` triples joined by `:`
    /// (or `,`).
    fn from_str(text: &str) -> Result<IdMap, IdMapError> {
        let err = |reason: &str| IdMapError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let numbers = text
            .split([':', ','])
            .map(|n| n.trim().parse::<u32>())
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|e| err(&e.to_string()))?;
        if numbers.is_empty() || numbers.len() % 3 != 0 {
            return Err(err("the numbers do not come in triples"));
        }
        let mut ranges = Vec::new();
        for triple in numbers.chunks(3) {
            let range = IdRange {
                container: triple[0],
                host: triple[1],
                len: triple[2],
            };
            if range.len == 0 {
                return Err(err("a range has length 0"));
            }
            if range.container.checked_add(range.len - 1).is_none()
                || range.host.checked_add(range.len - 1).is_none()
            {
                return Err(err("a range runs past the largest id"));
            }
            ranges.push(range);
        }
        Ok(IdMap { ranges })
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|r| format!("{}:{}:{}", r.container, r.host, r.len))
            .collect();
        f.write_str(&parts.join(":"))
    }
}

impl IdMap {
    /// A mapping of one range.
    pub fn single(container: u32, host: u32, len: u32) -> IdMap {
        IdMap {
            ranges: vec![IdRange {
                container,
                host,
                len,
            }],
        }
    }

    /// Whether ids are shown as stored.
    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The presented (host) id of stored id `id`.
    pub fn to_host(&self, id: u32) -> u32 {
        if self.is_identity() {
            return id;
        }
        self.ranges
            .iter()
            .find(|r| id >= r.container && id - r.container < r.len)
            .map_or(OVERFLOW_ID, |r| r.host + (id - r.container))
    }

    /// The stored (container) id of presented id `id`, `None` when no range covers it.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        if self.is_identity() {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|r| id >= r.host && id - r.host < r.len)
            .map(|r| r.container + (id - r.host))
    }
}

/// How one mount translates owners between the store and the kernel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    /// How the upper directory keeps owners, modes and device nodes.
    pub ownership: Ownership,
    /// The uid mapping.
    pub uids: IdMap,
    /// The gid mapping.
    pub gids: IdMap,
}

impl Identity {
    /// Overwrites `attr` (built from `st`, a `stat` of the upper object
    /// `target`) with the image's owner, mode and type the store records for it.
    pub fn present_stored(
        &self,
        target: Target<'_>,
        st: &libc::stat,
        attr: &mut FileAttr,
    ) -> io::Result<()> {
        if self.ownership.is_native() {
            return Ok(());
        }
        let mut meta = Meta::from_stat(st);
        self.ownership.present(target, &mut meta)?;
        attr.uid = meta.uid;
        attr.gid = meta.gid;
        attr.perm = (meta.mode & 0o7777) as u16;
        if matches!(meta.kind, FileKind::CharDevice | FileKind::BlockDevice) {
            attr.kind = file_type(meta.kind);
            attr.rdev = encode_dev(meta.rdev);
            attr.size = 0;
        }
        Ok(())
    }

    /// Turns stored ids of `attr` into the ids the kernel is shown.
    pub fn to_host(&self, attr: &mut FileAttr) {
        attr.uid = self.uids.to_host(attr.uid);
        attr.gid = self.gids.to_host(attr.gid);
    }

    /// The stored uid of a caller's (or `chown`'s) host uid.
    pub fn store_uid(&self, uid: u32) -> io::Result<u32> {
        self.uids
            .to_container(uid)
            .ok_or_else(|| errno(libc::EINVAL))
    }

    /// The stored gid of a caller's (or `chown`'s) host gid.
    pub fn store_gid(&self, gid: u32) -> io::Result<u32> {
        self.gids
            .to_container(gid)
            .ok_or_else(|| errno(libc::EINVAL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_overlayfs_mappings() {
        let map: IdMap = "0:1000:1:1:110000:65536".parse().unwrap();
        assert_eq!(map.to_host(0), 1000);
        assert_eq!(map.to_host(1), 110000);
        assert_eq!(map.to_host(65536), 175535);
        assert_eq!(map.to_host(65537), OVERFLOW_ID);
        assert_eq!(map.to_container(1000), Some(0));
        assert_eq!(map.to_container(110005), Some(6));
        assert_eq!(map.to_container(5), None);
        assert_eq!(map.to_string(), "0:1000:1:1:110000:65536");
        assert!(IdMap::default().is_identity());
        assert_eq!(IdMap::default().to_host(33), 33);
        for bad in ["", "0:1000", "0:1000:0", "a:b:c", "4294967295:0:2"] {
            assert!(bad.parse::<IdMap>().is_err(), "{bad}");
        }
    }
}
