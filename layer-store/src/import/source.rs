//! Where import input is read from: a directory or an (uncompressed) tar file.
//!
//! Tar input is indexed once (member names, data offsets and sizes); members
//! are then read with random access by seeking, so large archives are never
//! buffered and can be read in any order.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::read_limited;

/// Largest JSON document (manifest, index, config) the importer reads.
pub(crate) const METADATA_LIMIT: u64 = 16 * 1024 * 1024;

/// How many symlinks/hardlinks are followed before giving up.
const MAX_LINK_HOPS: usize = 16;

/// Import input that can open its members by archive path.
pub(crate) trait Source {
    /// A human-readable name for errors.
    fn name(&self) -> String;

    /// The size of the member at `path` (normalised), `None` if absent.
    fn size_of(&self, path: &str) -> Result<Option<u64>>;

    /// Opens the member at `path` (normalised) and returns it with its size.
    fn open(&self, path: &str) -> Result<Option<(Box<dyn Read + '_>, u64)>>;
}

/// Checks and normalises a path named by the input (`./a//b` → `a/b`).
/// Absolute paths and `..` components are rejected as outside the archive.
pub(crate) fn checked_member_path(path: &str, context: &str) -> Result<String> {
    let outside = || StoreError::PathOutsideArchive {
        context: context.to_string(),
        path: path.to_string(),
    };
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(outside)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(outside())
            }
        }
    }
    if parts.is_empty() {
        return Err(StoreError::MissingFile {
            context: context.to_string(),
            path: path.to_string(),
            source_name: "the input".to_string(),
        });
    }
    Ok(parts.join("/"))
}

/// Opens a member, failing with [`StoreError::MissingFile`] when absent.
pub(crate) fn open_member<'a>(
    source: &'a dyn Source,
    path: &str,
    context: &str,
) -> Result<(Box<dyn Read + 'a>, u64)> {
    source.open(path)?.ok_or_else(|| StoreError::MissingFile {
        context: context.to_string(),
        path: path.to_string(),
        source_name: source.name(),
    })
}

/// Reads a (small) metadata member whole, refusing anything over [`METADATA_LIMIT`].
pub(crate) fn read_metadata(source: &dyn Source, path: &str, context: &str) -> Result<Vec<u8>> {
    let (mut reader, size) = open_member(source, path, context)?;
    if size > METADATA_LIMIT {
        return Err(StoreError::MetadataTooLarge {
            context: format!("{context} ({path})"),
            size,
            limit: METADATA_LIMIT,
        });
    }
    read_limited(&mut reader, METADATA_LIMIT, path)
}

/// A directory (an unpacked OCI layout or docker archive).
pub(crate) struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// Input read from directory `root`.
    pub(crate) fn new(root: &Path) -> Result<DirSource> {
        let root = fs::canonicalize(root).io_context(|| format!("opening {}", root.display()))?;
        Ok(DirSource { root })
    }

    /// The regular file at `path`, resolved through symlinks but never outside the root.
    fn resolve(&self, path: &str) -> Result<Option<PathBuf>> {
        let full = self.root.join(path);
        let resolved = match fs::canonicalize(&full) {
            Ok(resolved) => resolved,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).io_context(|| format!("resolving {}", full.display())),
        };
        if !resolved.starts_with(&self.root) {
            return Err(StoreError::PathOutsideArchive {
                context: self.name(),
                path: path.to_string(),
            });
        }
        Ok(resolved.is_file().then_some(resolved))
    }
}

impl Source for DirSource {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn size_of(&self, path: &str) -> Result<Option<u64>> {
        match self.resolve(path)? {
            Some(file) => Ok(Some(
                fs::metadata(&file)
                    .io_context(|| format!("reading {}", file.display()))?
                    .len(),
            )),
            None => Ok(None),
        }
    }

    fn open(&self, path: &str) -> Result<Option<(Box<dyn Read + '_>, u64)>> {
        let Some(resolved) = self.resolve(path)? else {
            return Ok(None);
        };
        let file =
            File::open(&resolved).io_context(|| format!("opening {}", resolved.display()))?;
        let size = file
            .metadata()
            .io_context(|| format!("reading {}", resolved.display()))?
            .len();
        Ok(Some((Box::new(file.take(size)), size)))
    }
}

/// What a tar member is, as far as the importer cares.
#[derive(Debug, Clone)]
enum Member {
    /// File data at `offset` in the archive.
    File { offset: u64, size: u64 },
    /// A symlink or hardlink to another member (normalised archive path, or
    /// `None` when the target lies outside the archive).
    Link { target: Option<String> },
}

/// An uncompressed tar file, indexed for random access.
pub(crate) struct TarSource {
    path: PathBuf,
    shown_as: PathBuf,
    members: HashMap<String, Member>,
}

impl TarSource {
    /// Indexes every member of the tar file at `path`; errors name it `shown_as`
    /// (the user's input when `path` is a decompressed copy).
    pub(crate) fn index(path: &Path, shown_as: &Path) -> Result<TarSource> {
        let corrupt = |reason: String| StoreError::Corrupt {
            context: shown_as.display().to_string(),
            reason,
        };
        let file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
        let archive_len = file
            .metadata()
            .io_context(|| format!("reading {}", path.display()))?
            .len();
        let mut archive = tar::Archive::new(file);
        let entries = archive
            .entries_with_seek()
            .map_err(|e| corrupt(format!("not a tar archive: {e}")))?;
        let mut members = HashMap::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| corrupt(format!("cannot read tar member header: {e}")))?;
            let Some(name) = entry.path().ok().and_then(|p| normalize_lenient(&p)) else {
                continue;
            };
            let header = entry.header();
            let kind = header.entry_type();
            let member = if kind.is_file() || kind == tar::EntryType::Continuous {
                let offset = entry.raw_file_position();
                let size = entry.size();
                if offset.checked_add(size).is_none_or(|end| end > archive_len) {
                    return Err(corrupt(format!(
                        "member {name} is truncated: it needs {size} bytes at offset {offset} but the archive has {archive_len} bytes"
                    )));
                }
                Member::File { offset, size }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let link = entry.link_name().ok().flatten();
                let target = link.and_then(|link| {
                    if kind.is_symlink() {
                        let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                        normalize_within(&parent.join(link))
                    } else {
                        normalize_within(&link)
                    }
                });
                Member::Link { target }
            } else {
                continue;
            };
            members.insert(name, member);
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            shown_as: shown_as.to_path_buf(),
            members,
        })
    }

    /// Whether the archive has no files or links.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Offset and size of the file data behind `path`, following links.
    fn locate(&self, path: &str) -> Result<Option<(u64, u64)>> {
        let mut current = path.to_string();
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&current) {
                None => return Ok(None),
                Some(Member::File { offset, size }) => return Ok(Some((*offset, *size))),
                Some(Member::Link {
                    target: Some(target),
                }) => current = target.clone(),
                Some(Member::Link { target: None }) => {
                    return Err(StoreError::PathOutsideArchive {
                        context: format!("link {current} in {}", self.name()),
                        path: path.to_string(),
                    })
                }
            }
        }
        Err(StoreError::Corrupt {
            context: self.name(),
            reason: format!("too many levels of links resolving {path}"),
        })
    }
}

impl Source for TarSource {
    fn name(&self) -> String {
        self.shown_as.display().to_string()
    }

    fn size_of(&self, path: &str) -> Result<Option<u64>> {
        Ok(self.locate(path)?.map(|(_, size)| size))
    }

    fn open(&self, path: &str) -> Result<Option<(Box<dyn Read + '_>, u64)>> {
        let Some((offset, size)) = self.locate(path)? else {
            return Ok(None);
        };
        let mut file =
            File::open(&self.path).io_context(|| format!("opening {}", self.path.display()))?;
        file.seek(SeekFrom::Start(offset))
            .io_context(|| format!("seeking to {path} in {}", self.path.display()))?;
        Ok(Some((Box::new(file.take(size)), size)))
    }
}

/// Normalises a member name, or `None` for names that escape the archive root.
fn normalize_lenient(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Normalises a link target, resolving `..` lexically; `None` if it leaves the archive root.
fn normalize_within(path: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_are_normalised_and_confined() {
        assert_eq!(checked_member_path("./a//b/./c", "t").unwrap(), "a/b/c");
        for outside in ["../x", "/etc/passwd", "a/../../x", "a/../b"] {
            let err = checked_member_path(outside, "manifest.json").unwrap_err();
            assert!(
                matches!(err, StoreError::PathOutsideArchive { .. }),
                "{outside}: {err}"
            );
            assert!(err.to_string().contains("outside the archive"));
        }
        assert!(matches!(
            checked_member_path("./", "t"),
            Err(StoreError::MissingFile { .. })
        ));
    }

    #[test]
    fn link_targets_resolve_lexically() {
        assert_eq!(
            normalize_within(Path::new("a/../b/layer.tar")).as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(normalize_within(Path::new("a/../../b")), None);
        assert_eq!(normalize_within(Path::new("/b")), None);
    }

    /// A test archive member.
    enum TestMember<'a> {
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
    }

    fn tar_with(entries: &[TestMember<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            match entry {
                TestMember::File(name, data) => {
                    header.set_size(data.len() as u64);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder.append_data(&mut header, name, *data).unwrap();
                }
                TestMember::Symlink(name, link) => {
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Symlink);
                    builder.append_link(&mut header, name, link).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn tar_members_open_by_seeking_and_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let big = vec![9u8; 10_000];
        let bytes = tar_with(&[
            TestMember::File("one/layer.tar", &big),
            TestMember::Symlink("./two/layer.tar", "../one/layer.tar"),
            TestMember::Symlink("evil", "../../etc/passwd"),
            TestMember::File("small.json", b"{}"),
        ]);
        fs::write(&path, &bytes).unwrap();
        let source = TarSource::index(&path, &path).unwrap();
        let read = |p: &str| {
            let (mut r, size) = source.open(p).unwrap().unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, size);
            out
        };
        assert_eq!(read("one/layer.tar"), big);
        assert_eq!(read("two/layer.tar"), big);
        assert_eq!(read("small.json"), b"{}");
        assert!(source.open("missing").unwrap().is_none());
        assert!(matches!(
            source.open("evil"),
            Err(StoreError::PathOutsideArchive { .. })
        ));

        fs::write(&path, &bytes[..2048]).unwrap();
        let err = TarSource::index(&path, &path).err().unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
