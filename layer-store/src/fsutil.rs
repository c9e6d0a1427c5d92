//! Durable file operations: fsync'd atomic replacement and JSON record I/O.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{IoContext, Result, StoreError};
use crate::staging::StagingDir;

/// fsyncs a directory so that renames and unlinks inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .io_context(|| format!("syncing directory {}", dir.display()))
}

/// Replaces `target` with `bytes` atomically: write a temp file in `staging`,
/// fsync it, rename it over `target`, fsync the target's directory.
pub(crate) fn write_atomic(staging: &StagingDir, target: &Path, bytes: &[u8]) -> Result<()> {
    let (temp, mut file) = staging.new_file()?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .io_context(|| format!("writing {}", temp.display()))?;
    drop(file);
    fs::rename(&temp, target)
        .io_context(|| format!("renaming {} to {}", temp.display(), target.display()))?;
    if let Some(parent) = target.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Serialises `value` as pretty JSON and writes it with [`write_atomic`].
pub(crate) fn write_json_atomic<T: Serialize>(
    staging: &StagingDir,
    target: &Path,
    value: &T,
) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::InvalidJson {
        context: format!("serialising {}", target.display()),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(staging, target, &bytes)
}

/// Reads and parses a JSON record; `Ok(None)` when the file does not exist.
pub(crate) fn read_json_if_exists<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::InvalidJson {
            context: path.display().to_string(),
            source,
        })
}

/// Reads at most `limit` bytes of `reader`, failing with [`StoreError::MetadataTooLarge`] beyond that.
pub(crate) fn read_limited(reader: &mut dyn Read, limit: u64, context: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .io_context(|| format!("reading {context}"))?;
    if bytes.len() as u64 > limit {
        return Err(StoreError::MetadataTooLarge {
            context: context.to_string(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Names of the regular files in `dir` ending in `suffix`, with the suffix removed, sorted.
pub(crate) fn list_names(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                context: format!("listing {}", dir.display()),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.io_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(suffix)) {
            if !stem.is_empty() && !stem.starts_with('.') {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Removes a file; a file that is already gone is not an error.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StoreError::Io {
            context: format!("removing {}", path.display()),
            source,
        }),
    }
}
