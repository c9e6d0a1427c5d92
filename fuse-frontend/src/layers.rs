//! The layers of a stack and how names resolve through them.
//!
//! Layers are numbered top first. When the stack is writable, layer 0 is the
//! upper directory read through a [`DirLayer`] in the upper's whiteout format;
//! the read-only lowers follow. Resolution is overlayfs's: the topmost layer
//! having a name decides; a whiteout hides the name below it; a non-directory
//! hides everything below it; directories merge down to the first opaque one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use drivers::layer::{Entry, FileKind, LayerReader};

/// A name found in the merged view.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// What the name is.
    pub kind: FileKind,
    /// For a directory, every layer merging into it, top first; for anything
    /// else, the one layer holding it.
    pub layers: Vec<usize>,
    /// The entry in the topmost of those layers.
    pub entry: Entry,
}

/// The layers of a stack, top first.
pub(crate) struct Layers {
    readers: Vec<Arc<dyn LayerReader>>,
    has_upper: bool,
}

impl Layers {
    /// Layers from an optional upper reader and the lowers, top first.
    pub fn new(upper: Option<Arc<dyn LayerReader>>, lowers: Vec<Arc<dyn LayerReader>>) -> Layers {
        let has_upper = upper.is_some();
        let mut readers: Vec<Arc<dyn LayerReader>> = upper.into_iter().collect();
        readers.extend(lowers);
        Layers { readers, has_upper }
    }

    /// The reader of layer `index`.
    pub fn reader(&self, index: usize) -> &dyn LayerReader {
        self.readers[index].as_ref()
    }

    /// The index of the upper layer, if the stack is writable.
    pub fn upper_index(&self) -> Option<usize> {
        self.has_upper.then_some(0)
    }

    /// How many layers the stack has.
    pub fn count(&self) -> usize {
        self.readers.len()
    }

    /// Whether layer `index` is the writable upper.
    pub fn is_upper(&self, index: usize) -> bool {
        self.has_upper && index == 0
    }

    /// The layers merging into the root directory, top first.
    pub fn root(&self) -> io::Result<Found> {
        let mut layers = Vec::new();
        let mut top: Option<Entry> = None;
        for index in 0..self.readers.len() {
            let Some(entry) = self.reader(index).lookup(Path::new(""))? else {
                continue;
            };
            if entry.kind != FileKind::Directory {
                continue;
            }
            layers.push(index);
            let opaque = entry.opaque;
            top.get_or_insert(entry);
            if opaque {
                break;
            }
        }
        let entry =
            top.ok_or_else(|| io::Error::other("no layer of the stack has a root directory"))?;
        Ok(Found {
            kind: FileKind::Directory,
            layers,
            entry,
        })
    }

    /// Resolves `path`, a child of the directory merged from `parent_layers`.
    pub fn resolve(&self, parent_layers: &[usize], path: &Path) -> io::Result<Option<Found>> {
        for (pos, &index) in parent_layers.iter().enumerate() {
            let Some(entry) = self.reader(index).lookup(path)? else {
                continue;
            };
            return Ok(match entry.kind {
                FileKind::Whiteout => None,
                FileKind::Directory => {
                    let mut layers = vec![index];
                    if !entry.opaque {
                        for &below in &parent_layers[pos + 1..] {
                            match self.reader(below).lookup(path)? {
                                None => continue,
                                Some(e) if e.kind == FileKind::Directory => {
                                    layers.push(below);
                                    if e.opaque {
                                        break;
                                    }
                                }
                                Some(_) => break,
                            }
                        }
                    }
                    Some(Found {
                        kind: FileKind::Directory,
                        layers,
                        entry,
                    })
                }
                kind => Some(Found {
                    kind,
                    layers: vec![index],
                    entry,
                }),
            });
        }
        Ok(None)
    }

    /// Whether a read-only layer below the upper shows something at `path`, a
    /// child of the directory merged from `parent_layers`: deleting the name then
    /// needs a whiteout, and a directory put there must be opaque.
    pub fn lower_has(&self, parent_layers: &[usize], path: &Path) -> io::Result<bool> {
        for &index in parent_layers.iter().filter(|&&i| !self.is_upper(i)) {
            if let Some(entry) = self.reader(index).lookup(path)? {
                return Ok(entry.kind != FileKind::Whiteout);
            }
        }
        Ok(false)
    }

    /// The merged listing of the directory at `path` merged from `layers`:
    /// names with their kinds, whiteouts applied, sorted by name.
    pub fn list(&self, layers: &[usize], path: &Path) -> io::Result<Vec<(OsString, FileKind)>> {
        let mut names: BTreeMap<Vec<u8>, (OsString, FileKind)> = BTreeMap::new();
        for &index in layers {
            for entry in self.reader(index).read_dir(path)? {
                names
                    .entry(entry.name.as_bytes().to_vec())
                    .or_insert((entry.name, entry.kind));
            }
        }
        Ok(names
            .into_values()
            .filter(|(_, kind)| *kind != FileKind::Whiteout)
            .collect())
    }
}
